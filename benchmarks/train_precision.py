"""bf16 vs fp32 on this CPU: matrix products, then whole training steps at growing widths.

    .venv/bin/python benchmarks/train_precision.py              # ~2 minutes on 2 cores
    .venv/bin/python benchmarks/train_precision.py --widths 128 256 --seq 128

Why: `train.dtype = "auto"` picks bf16 autocast on CPUs with AVX512-BF16 or AMX (scratchlm/device.py). Those
units run bf16 products faster than fp32 ones, but autocast also adds casts (weights every step, activations
at every matmul boundary) that cost the same at any width, so the win must grow with the model. This prints
both halves of that argument; the peer in each row is fp32, measured in the same process, interleaved.

Part 1: GEMM throughput (GFLOP/s) of torch.mm in fp32 and bf16, square and transformer-shaped.
Part 2: Trainer.train_step tokens/s, fp32 vs bf16 autocast, Llama-style 4-layer models of each width
        (head_dim 64, SwiGLU, RoPE, SDPA), batch x seq tokens of Tiny Shakespeare characters.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


def gflops(fn, flop: float, min_time: float = 0.3) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_time:
        fn()
        n += 1
    return flop * n / (time.perf_counter() - t0) / 1e9


def gemm_table(sizes: list[tuple[int, int, int]]) -> None:
    print(f"{'GEMM m x k x n':>22s} {'fp32 GFLOP/s':>13s} {'bf16 GFLOP/s':>13s} {'bf16 / fp32':>12s}")
    for m, k, n in sizes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        a16, b16 = a.bfloat16(), b.bfloat16()
        f32 = gflops(lambda: a @ b, 2 * m * k * n)
        f16 = gflops(lambda: a16 @ b16, 2 * m * k * n)
        print(f"{f'{m} x {k} x {n}':>22s} {f32:13.0f} {f16:13.0f} {f16 / f32:11.2f}x")


def trainer(width: int, dtype: str, seq: int, batch: int, run_dir: Path):
    from scratchlm.train import Trainer, load_pretrain_config

    cfg = load_pretrain_config(None, [], defaults={
        "data": {"train_text": str(SHAKESPEARE), "tokenizer": "char"},
        "model": {"d_model": width, "n_layers": 4, "n_heads": max(1, width // 64), "max_seq_len": seq},
        "train": {"seq_len": seq, "micro_batch_size": batch, "max_steps": 10**6, "warmup_steps": 0,
                  "eval_every": 0, "sample_tokens": 0, "tensorboard": False, "progress": False, "device": "cpu",
                  "dtype": dtype}})
    t = Trainer(cfg, run_dir)
    return t, (lambda: t.train_step(*t.loader.next_batch()))


def step_table(widths: list[int], seq: int, batch: int, rounds: int, steps: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="scratchlm_precision_"))
    print(f"\n{'width':>6s} {'params':>9s} {'fp32 tok/s':>11s} {'bf16 tok/s':>11s} {'bf16 / fp32':>12s}"
          f"   (batch {batch} x {seq}, 4 layers)")
    for w in widths:
        t32, s32 = trainer(w, "float32", seq, batch, tmp / f"{w}_fp32")
        _, s16 = trainer(w, "bfloat16", seq, batch, tmp / f"{w}_bf16")
        for s in (s32, s16):  # warm-up
            for _ in range(2):
                s()
        tok = batch * seq
        r32, r16, ratios = [], [], []
        for r in range(rounds):
            pair = []
            for s in ((s32, s16) if r % 2 == 0 else (s16, s32)):  # alternate: a slow-down mid-round is shared
                t0 = time.perf_counter()
                for _ in range(steps):
                    s()
                pair.append(steps * tok / (time.perf_counter() - t0))
            a, b = pair if r % 2 == 0 else pair[::-1]
            r32.append(a)
            r16.append(b)
            ratios.append(b / a)
        n = sum(p.numel() for p in t32.model.parameters())
        print(f"{w:6d} {n / 1e6:8.2f}M {statistics.median(r32):11,.0f} {statistics.median(r16):11,.0f} "
              f"{statistics.median(ratios):11.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512, 768])
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per precision per round")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    gemm_table([(2048, 2048, 2048), (1024, 1024, 1024), (512, 512, 512),
                (args.batch * args.seq, 768, 768), (args.batch * args.seq, 768, 2048), (args.batch * args.seq, 128, 512)])
    if not SHAKESPEARE.exists():
        print(f"\n(no {SHAKESPEARE}: skipping the training-step table)")
        return 0
    step_table(args.widths, args.seq, args.batch, args.rounds, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
