"""Where eval results live and how they print: RUN/eval/<task>.json, and one table for all of them.

Every task returns a flat dict of numbers plus a few descriptive fields; `save_result` writes it (with the
checkpoint it came from) into the run folder, so the report card can be rebuilt from files alone.

An accuracy is a proportion of n items, so it never prints alone: "accuracy 12.4% (n=500, 95% 9.8-15.6%)", with
the Wilson interval each task stores as `<metric>_ci` (scratchlm/stats.py); results saved before tasks stored one
get it computed from n.
"""

from __future__ import annotations

import json
from pathlib import Path

from scratchlm.runs import atomic_write_json
from scratchlm.stats import count_of, format_proportion, wilson_interval

# The number each task is judged by, first; the table shows these columns when present.
HEADLINE = {"bpb": ("bpb", "perplexity", "loss"), "hellaswag": ("acc_norm", "acc"), "gsm8k": ("exact_match",),
            "tinyworld": ("accuracy",)}
# Metrics that are a share of the task's n items: printed with n and a 95% interval.
PROPORTIONS = {"accuracy", "acc", "acc_norm", "exact_match"}


def proportion_fields(key: str, correct: int, n: int) -> dict:
    """{key: correct / n, key_ci: [lo, hi]}: how a task stores an accuracy, with its 95% Wilson interval."""
    return {key: correct / n if n else 0.0, f"{key}_ci": list(wilson_interval(correct, n))}


def run_dir_of(run_or_ckpt: str | Path) -> Path:
    """The run folder holding a checkpoint folder (run/checkpoints/step_x), or the run folder itself."""
    p = Path(run_or_ckpt)
    if (p / "model.safetensors").exists() and p.parent.name == "checkpoints":
        return p.parent.parent
    return p


def checkpoint_meta(ckpt: str | Path) -> dict:
    path = Path(ckpt) / "meta.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return {}
    return {}


def is_chat_model(ckpt: str | Path) -> bool:
    """A post-trained checkpoint (SFT, DPO, RL) speaks the chat template; a pretrained one continues text."""
    return checkpoint_meta(ckpt).get("stage", "pretrain") not in ("pretrain", "reward")


def save_result(run_or_ckpt: str | Path, task: str, result: dict) -> Path:
    """Write RUN/eval/<task>.json (atomically) and return its path."""
    return atomic_write_json(run_dir_of(run_or_ckpt) / "eval" / f"{task}.json", result)


def load_results(run_dir: str | Path) -> dict[str, dict]:
    """task -> result, from RUN/eval/*.json, sorted by task name."""
    folder = Path(run_dir) / "eval"
    out = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
    return out


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def headline(task: str, result: dict) -> list[tuple[str, object]]:
    keys = HEADLINE.get(result.get("task", task), ())
    return [(k, result[k]) for k in keys if k in result]


def format_metric(key: str, value, result: dict) -> str:
    """"accuracy 12.4% (n=500, 95% 9.8-15.6%)" for a proportion of the result's n items, else "bpb 1.2345"."""
    n = result.get("n")
    if key in PROPORTIONS and isinstance(n, int) and n > 0 and isinstance(value, (int, float)):
        ci = result.get(f"{key}_ci")
        return f"{key} {format_proportion(count_of(value, n), n, tuple(ci) if ci else None)}"
    return f"{key} {_fmt(value)}"


def format_metrics(task: str, result: dict) -> str:
    """The task's headline metrics on one line ("-" when it has none)."""
    return ", ".join(format_metric(k, v, result) for k, v in headline(task, result)) or "-"


def format_table(results: dict[str, dict], markdown: bool = False) -> str:
    """One row per task: task | metrics | n | checkpoint. Plain text for the terminal, or Markdown."""
    rows = [("task", "metrics", "n", "checkpoint")]
    for task, r in results.items():
        metrics = format_metrics(task, r)
        n = r.get("n", r.get("tokens", ""))
        ckpt = Path(str(r.get("checkpoint", ""))).name
        rows.append((task, metrics, _fmt(n) if n != "" else "", ckpt))
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
