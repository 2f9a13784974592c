"""What a training run reports: metrics.jsonl, TensorBoard scalars, a loss-curve PNG, and MFU.

MFU (model FLOPs utilisation, PaLM appendix B) = achieved model FLOP/s / the device's peak FLOP/s, where the
achieved figure counts only the model's own arithmetic (6N + attention per token, from model accounting),
not recomputation or overheads. It answers "how much of the hardware am I using", comparably across runs.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from scratchlm.runs import append_jsonl, atomic_write, atomic_write_text, read_jsonl

log = logging.getLogger("scratchlm")

# Dense (no sparsity) peak TFLOP/s from the vendors' datasheets, by dtype. Matched on the device name.
GPU_PEAK_TFLOPS = {
    "H200": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0},
    "H100 PCIe": {"bfloat16": 756.0, "float16": 756.0, "float32": 51.0},
    "H100": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0},  # SXM
    "GH200": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0},
    "B200": {"bfloat16": 2250.0, "float16": 2250.0, "float32": 80.0},
    "A100": {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5},
    "A10G": {"bfloat16": 70.0, "float16": 70.0, "float32": 31.2},
    "L40S": {"bfloat16": 362.0, "float16": 362.0, "float32": 91.6},
    "L4": {"bfloat16": 121.0, "float16": 121.0, "float32": 30.3},
    "RTX 4090": {"bfloat16": 165.0, "float16": 165.0, "float32": 82.6},
    "RTX 3090": {"bfloat16": 71.0, "float16": 71.0, "float32": 35.6},
    "V100": {"bfloat16": 0.0, "float16": 125.0, "float32": 15.7},
    "T4": {"bfloat16": 0.0, "float16": 65.0, "float32": 8.1},
}

_CPU_PEAK_CACHE: dict[str, float] = {}


def measure_cpu_peak_tflops(dtype: str = "float32", seconds: float = 0.3) -> float:
    """Best matmul throughput of this CPU in TFLOP/s, measured on a large square product.

    A virtual machine's share of a CPU has no datasheet figure (clock, cores and vector units vary), so on
    CPU the peak is what the BLAS reaches on an ideal shape: MFU then says how close training gets to it.
    """
    if dtype in _CPU_PEAK_CACHE:
        return _CPU_PEAK_CACHE[dtype]
    import torch

    dt = getattr(torch, dtype)
    n = 1024
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    a @ b  # warm up
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    _CPU_PEAK_CACHE[dtype] = best / 1e12
    return _CPU_PEAK_CACHE[dtype]


def device_peak_tflops(device: str, dtype: str, override: float = 0.0) -> float:
    """Peak TFLOP/s of `device` at `dtype` (float32 for no autocast). 0.0 when unknown (MFU is then not logged)."""
    if override:
        return override
    if device.startswith("cuda"):
        import torch

        name = torch.cuda.get_device_name(device)
        for key, table in GPU_PEAK_TFLOPS.items():  # "H100 PCIe" is listed before "H100": first match wins
            if key in name:
                return table.get(dtype, 0.0)
        log.info("unknown GPU %r: MFU is not reported (set train.peak_tflops)", name)
        return 0.0
    if device == "cpu":
        return measure_cpu_peak_tflops(dtype)
    return 0.0


def mfu(flops_per_token: float, tokens_per_second: float, peak_tflops: float) -> float | None:
    if not peak_tflops:
        return None
    return flops_per_token * tokens_per_second / (peak_tflops * 1e12)


class MetricsLogger:
    """One JSON object per logged step in metrics.jsonl, mirrored to TensorBoard scalars and, when the run's
    config sets train.wandb_project (`--wandb PROJECT`), to Weights & Biases (tracking.py).

    Pretraining and every post-training stage write their metrics through this class, so each gets TensorBoard
    and W&B without code of its own. The W&B settings and wandb.config come from the run folder's config.toml,
    which every stage writes (resolved) before it starts logging."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, wandb: bool = True):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.writer = None
        self.wandb = None
        if wandb and (self.run_dir / "config.toml").is_file():
            from scratchlm.config import load_toml

            from .tracking import start_wandb

            self.wandb = start_wandb(self.run_dir, load_toml(self.run_dir / "config.toml"))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(self.run_dir / "logs"))
            except ImportError:  # pragma: no cover - tensorboard is a dependency, but keep training without it
                log.warning("tensorboard is not installed: no event files (pip install tensorboard)")

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step`: a resumed run re-logs the steps a kill lost after its checkpoint."""
        rows = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(_dumps(r) + "\n" for r in rows))

    def log(self, row: dict) -> None:
        row = {k: v for k, v in row.items() if v is not None}
        append_jsonl(self.path, row)
        step = row.get("step", 0)
        scalars = {_tb_name(k): v for k, v in row.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(step, scalars)

    def text(self, tag: str, text: str, step: int) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def _dumps(row: dict) -> str:
    import json

    return json.dumps(row)


def _tb_name(key: str) -> str:
    # group in TensorBoard: train/loss, val/loss, val/bpb, perf/tokens_per_sec, ...
    if key.startswith("val_"):
        return "val/" + key[4:]
    if key in ("tokens_per_sec", "mfu", "mem_gb", "step_time"):
        return "perf/" + key
    return "train/" + key


def plot_loss(run_dir: str | Path) -> Path | None:
    """plots/loss.png from metrics.jsonl: train loss (and val loss) against tokens seen; lr underneath."""
    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    if train:
        ax.plot([r["tokens"] for r in train], [r["loss"] for r in train], label="train loss", lw=1)
    if val:
        ax.plot([r["tokens"] for r in val], [r["val_loss"] for r in val], "o-", label="val loss", lw=1.5)
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(run_dir.name)
    lr_rows = [r for r in train if "lr" in r]
    if lr_rows:
        ax_lr.plot([r["tokens"] for r in lr_rows], [r["lr"] for r in lr_rows], color="gray", lw=1)
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("tokens seen")
    ax_lr.grid(alpha=0.3)
    return save_figure(fig, run_dir / "plots" / "loss.png")


def save_figure(fig, out: Path) -> Path:
    """A matplotlib figure as a PNG, written atomically (a reader never sees half a file), then closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return out


def plot_rl(run_dir: str | Path) -> Path | None:
    """plots/reward.png for an RL run: mean training reward per step (raw and a running mean) with the held-out
    accuracy (greedy, 95% Wilson interval from its n) on top; KL to the reference and clip fraction underneath."""
    from scratchlm.stats import wilson_interval

    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    train = [r for r in rows if "reward" in r]
    val = [r for r in rows if "val_accuracy" in r or "val_reward" in r]
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    if train:
        steps, reward = [r["step"] for r in train], [r["reward"] for r in train]
        ax.plot(steps, reward, lw=0.8, alpha=0.35, color="C0", label="train reward (mean per step)")
        k = max(1, len(reward) // 20)  # running mean over ~5% of the run
        smooth = [sum(reward[max(0, i - k + 1): i + 1]) / len(reward[max(0, i - k + 1): i + 1]) for i in range(len(reward))]
        ax.plot(steps, smooth, lw=1.8, color="C0", label=f"train reward (running mean of {k})")
    if val:
        key = "val_accuracy" if "val_accuracy" in val[-1] else "val_reward"
        xs, ys = [r["step"] for r in val], [r[key] for r in val]
        n = val[-1].get("val_n")
        if key == "val_accuracy" and n:
            ci = [wilson_interval(round(y * n), n) for y in ys]
            err = [[y - lo for y, (lo, _) in zip(ys, ci)], [hi - y for y, (_, hi) in zip(ys, ci)]]
            ax.errorbar(xs, ys, yerr=err, fmt="o-", color="C3", lw=1.5, capsize=3,
                        label=f"held-out accuracy, greedy (n={n}, 95% interval)")
        else:
            ax.plot(xs, ys, "o-", color="C3", lw=1.5, label=key.replace("_", " "))
    ax.set_ylabel("reward / accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"{run_dir.name}: reward")
    for key, color in (("kl", "C2"), ("clip_frac", "C4")):
        pts = [(r["step"], r[key]) for r in train if key in r]
        if pts:
            ax2.plot(*zip(*pts), lw=1, color=color, label={"kl": "KL to reference", "clip_frac": "clip fraction"}[key])
    ax2.set_xlabel("step")
    ax2.grid(alpha=0.3)
    if ax2.lines:
        ax2.legend(loc="best", fontsize=8)
    return save_figure(fig, run_dir / "plots" / "reward.png")
