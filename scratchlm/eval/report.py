"""The report card of a run: RUN/report.md, rebuilt from the run folder's files alone.

    scratchlm eval --run runs/pretrain --report        # or: write_report("runs/pretrain")

What it shows, and where each number comes from (no model is loaded, so it takes a second):

| section | source |
|---|---|
| config | config.toml |
| parameters | the best checkpoint's config.json, counted by scratchlm.model.accounting |
| tokens seen, steps, wall time | the last rows of metrics.jsonl (else the DONE summary) |
| compute | training FLOPs = flops_per_token(model, seq_len) x tokens seen (6N + attention, PaLM appendix B) |
| loss curves | plots/loss.png (redrawn from metrics.jsonl when missing) and the validation rows of metrics.jsonl |
| evals | eval/<task>.json, written by `scratchlm eval` |
| samples | logs/samples.txt (the last training sample) and the examples stored with the evals |

The text holds no timestamps, so rebuilding an unchanged run gives the identical file.
"""

from __future__ import annotations

import json
from pathlib import Path

from scratchlm.runs import atomic_write_text, read_jsonl, require_run

from .results import format_table, load_results


def _human(n: float, unit: str = "") -> str:
    for div, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g} {suffix}{unit}"
    return f"{n:.3g} {unit}".rstrip()


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else (f"{m}m {s:02d}s" if m else f"{seconds:.1f} s")


def _model_config(run: Path):
    from scratchlm.model import ModelConfig
    from scratchlm.runs import resolve_checkpoint

    try:
        ckpt = resolve_checkpoint(run)
    except FileNotFoundError:
        return None, None
    try:
        return ModelConfig.from_dict(json.loads((ckpt / "config.json").read_text())), ckpt
    except (OSError, json.JSONDecodeError, TypeError, ValueError):
        return None, ckpt


def _train_seq_len(run: Path) -> int | None:
    from scratchlm.config import load_toml

    path = run / "config.toml"
    if not path.is_file():
        return None
    try:
        return int(load_toml(path).get("train", {}).get("seq_len") or 0) or None
    except (ValueError, TypeError):
        return None


def _last_sample(run: Path) -> str | None:
    path = run / "logs" / "samples.txt"
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    parts = text.split("=== step ")
    if len(parts) < 2:
        return text.strip() or None
    head, _, body = parts[-1].partition("\n")
    return f"(step {head.strip()})\n{body.strip()}"


def _fence(text: str, lang: str = "") -> str:
    return f"```{lang}\n{text.rstrip()}\n```"


def build_report(run_dir: str | Path) -> str:
    """The Markdown of the report card (also redraws plots/loss.png if it is missing)."""
    from scratchlm.model.accounting import count_params, flops_per_token
    from scratchlm.train.metrics import plot_loss

    run = require_run(run_dir)
    rows = read_jsonl(run / "metrics.jsonl")
    done = {}
    if (run / "DONE").is_file():
        try:
            done = json.loads((run / "DONE").read_text() or "{}")
        except json.JSONDecodeError:
            done = {}
    out = [f"# Report card: {run.name}", ""]
    status = "finished" if (run / "DONE").exists() else "unfinished (no DONE file)"
    stage = done.get("stage", "pretrain" if rows else "unknown")
    out += [f"Stage: {stage}; status: {status}.", ""]

    # ---- the numbers
    cfg, ckpt = _model_config(run)
    tokens = max((r.get("tokens", 0) for r in rows), default=0) or done.get("tokens", 0)
    steps = max((r.get("step", 0) for r in rows), default=0) or done.get("steps", 0)
    elapsed = max((r.get("elapsed", 0.0) for r in rows), default=0.0) or done.get("elapsed", 0.0)
    table = [("checkpoint", f"{ckpt.name}" if ckpt else "none")]
    if cfg is not None:
        table += [("parameters", f"{count_params(cfg):,} ({count_params(cfg, non_embedding=True):,} non-embedding)"),
                  ("model", f"{cfg.family}, d_model {cfg.d_model}, {cfg.n_layers} layers, {cfg.n_heads} heads, "
                            f"vocab {cfg.vocab_size}, context {cfg.max_seq_len}")]
    table += [("steps", f"{steps:,}"), ("tokens seen", f"{tokens:,} ({_human(tokens)})")]
    if cfg is not None and tokens:
        seq_len = _train_seq_len(run) or cfg.max_seq_len
        fpt = flops_per_token(cfg, seq_len)
        flops = fpt * tokens
        table += [("compute", f"{flops:.3e} FLOPs ({_human(flops, 'FLOP')}; {fpt:.3e} per token at seq_len "
                              f"{seq_len}; {flops / 8.64e19:.3g} PF-days)")]
    table += [("wall time", _duration(elapsed) if elapsed else "unknown")]
    if elapsed and tokens:
        table += [("throughput", f"{tokens / elapsed:,.0f} tokens/s")]
    val = [r for r in rows if "val_loss" in r]
    if val:
        last = val[-1]
        best = min(val, key=lambda r: r["val_loss"])
        table += [("final val loss", f"{last['val_loss']:.4f}" + (f" ({last['val_bpb']:.4f} bits/byte)" if "val_bpb" in last else "")),
                  ("best val loss", f"{best['val_loss']:.4f} at step {best.get('step', '?')}")]
    if cfg is not None:
        import math

        table += [("loss of a uniform guess", f"{math.log(cfg.vocab_size):.4f} (ln vocab)")]
    out += ["## Summary", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in table] + [""]

    # ---- loss curves
    out += ["## Loss curves", ""]
    plot = run / "plots" / "loss.png"
    if not plot.is_file() and rows:
        plot_loss(run)
    if plot.is_file():
        out += ["![loss curves](plots/loss.png)", ""]
    if val:
        keep = val if len(val) <= 12 else [val[round(i * (len(val) - 1) / 11)] for i in range(12)]
        out += ["| step | tokens | val loss | val bits/byte |", "|---:|---:|---:|---:|"]
        for r in keep:
            bpb = f"{r['val_bpb']:.4f}" if "val_bpb" in r else ""
            out.append(f"| {r.get('step', '')} | {r.get('tokens', 0):,} | {r['val_loss']:.4f} | {bpb} |")
        out.append("")
    if not rows:
        out += ["No metrics.jsonl in this run.", ""]

    # ---- evals
    results = load_results(run)
    out += ["## Evaluations", ""]
    if results:
        out += [format_table(results, markdown=True), "",
                ("Accuracies are shares of n items with their 95% Wilson interval: two that overlap are within "
                 "noise. Full results: `eval/<task>.json`."), ""]
    else:
        out += ["None yet: run `scratchlm eval --run " + str(run) + " --task hellaswag` (or bpb, gsm8k, tinyworld).", ""]

    # ---- samples
    out += ["## Samples", ""]
    sample = _last_sample(run) or done.get("sample")
    if sample:
        out += ["Last training sample:", "", _fence(sample), ""]
    for task, r in results.items():
        for ex in r.get("examples", [])[:2]:
            mark = "right" if ex.get("correct") else "wrong"
            out += [f"{task} ({mark}; expected {ex.get('gold', ex.get('answer'))}):", "",
                    _fence(f"Q: {ex.get('question', '').strip()}\nA: {ex.get('reply', '').strip()}"), ""]
    if not sample and not any(r.get("examples") for r in results.values()):
        out += ["No samples recorded.", ""]

    # ---- config
    if (run / "config.toml").is_file():
        out += ["## Config", "", _fence((run / "config.toml").read_text(encoding="utf-8"), "toml"), ""]
    return "\n".join(out).rstrip() + "\n"


def write_report(run_dir: str | Path) -> Path:
    """Write RUN/report.md (atomically) and return its path."""
    return atomic_write_text(Path(run_dir) / "report.md", build_report(run_dir))
