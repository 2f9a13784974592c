"""A run's own numbers for the guide (`scratchlm guide --run RUN`): which stages it completed, and its figures.

RUN may be a demo folder (runs/demo: corpus/, data/, tokenizer/, shards/, pretrain/, draft/, sft/, dpo/, rl/,
report.json) or a single stage's run folder (runs/pretrain, runs/sft, a data or tokenizer run). Everything is
read from files; nothing heavier than the tokenizer and the planner is imported, and a missing or malformed file
only removes the figure that needed it.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from scratchlm.runs import list_checkpoints, read_jsonl

from .plots import line_chart

POSTTRAIN_STAGES = ("sft", "dpo", "reward", "rl", "grpo")


@dataclass
class Panel:
    """One figure: kind "svg" (body: svg markup), "table" (header + rows), "kv" (rows of (name, value)),
    or "pre" (body: text)."""

    kind: str
    title: str
    body: str = ""
    header: tuple = ()
    rows: list = field(default_factory=list)


@dataclass
class RunData:
    root: Path
    parts: dict[str, Path]                   # part name ("data", "pretrain", "sft", ...) -> its folder
    done: dict[str, bool]                    # guide stage key -> completed by this run
    panels: dict[str, list[Panel]]           # guide stage key -> figures
    notes: list[str] = field(default_factory=list)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_stage(folder: Path) -> str | None:
    """What kind of training run a folder is, from its config.toml: pretrain, sft, dpo, reward, rl; else None."""
    try:
        cfg = tomllib.loads((folder / "config.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    for key in ("sft", "dpo", "grpo", "reward"):
        if key in cfg:
            return "rl" if key == "grpo" else key
    return "pretrain" if "train" in cfg else None


def find_parts(root: Path) -> dict[str, Path]:
    """Locate each stage's output in a demo folder or a single run folder."""
    parts: dict[str, Path] = {}
    for cand in (root / "data", root):
        rep = read_json(cand / "report.json")
        if rep and "docs_in" in rep:
            parts["data"] = cand
            break
    for cand in (root / "tokenizer", root, root / "pretrain" / "tokenizer"):
        if (cand / "scratchlm_tokenizer.json").is_file():
            parts["tokenizer"] = cand
            break
    if (root / "shards" / "manifest.json").is_file():
        parts["shards"] = root / "shards"
    own = run_stage(root)
    if own:
        parts[own] = root
    for name in ("pretrain", "draft", *POSTTRAIN_STAGES):
        sub = root / name
        if sub.is_dir() and (sub / "config.toml").is_file():
            kind = run_stage(sub) or name
            parts[name if name == "draft" else kind] = sub
    demo = read_json(root / "report.json")
    if demo and "steps" in demo:
        parts["demo"] = root
    return parts


def finished(folder: Path | None) -> bool:
    return folder is not None and (folder / "DONE").is_file()


def eval_results(parts: dict[str, Path]) -> dict[str, dict[str, dict]]:
    """run part -> {task: result} from RUN/eval/*.json of every training run found (and the root's eval/)."""
    from scratchlm.eval.results import load_results

    out = {}
    for name, folder in parts.items():
        if name in ("data", "tokenizer", "shards"):
            continue
        res = load_results(folder)
        if res:
            out.setdefault(name, res)
    return out


# ---------------------------------------------------------------------------------------------------- figures
def data_panels(folder: Path) -> list[Panel]:
    rep = read_json(folder / "report.json") or {}
    n_in, b_in = rep.get("docs_in", 0), rep.get("bytes_in", 0)
    rows = [("input", f"{n_in:,}", "100.0%", f"{b_in / 1e6:.2f}")]
    removed = sorted(rep.get("removed", {}).items(), key=lambda kv: -kv[1].get("docs", 0))
    for name, r in removed:
        if name in ("exact_duplicate", "near_duplicate"):  # the dedup rows below say these
            continue
        mb = "" if r.get("bytes") is None else f"{r['bytes'] / 1e6:.2f}"
        rows.append((f"− {name}", f"{r.get('docs', 0):,}", f"{100 * r.get('docs', 0) / max(n_in, 1):.1f}%", mb))
    dd = rep.get("dedup") or {}
    if dd:
        rows.append(("− exact duplicates", f"{dd.get('exact_removed', 0):,}", "", ""))
        rows.append(("− MinHash near-duplicates", f"{(dd.get('near') or {}).get('removed', 0):,}", "", ""))
    rows.append(("output", f"{rep.get('docs_out', 0):,}", f"{100 * rep.get('docs_out', 0) / max(n_in, 1):.1f}%",
                 f"{rep.get('bytes_out', 0) / 1e6:.2f}"))
    panels = [Panel("table", "Filter report: documents removed by each rule", header=("rule", "documents", "%", "MB"),
                    rows=rows)]
    examples = [(name, r["examples"][0]) for name, r in removed if r.get("examples")]
    if examples:
        panels.append(Panel("table", "One rejected document per rule (first 200 characters)",
                            header=("rule", "document"),
                            rows=[(n, (e[:200] + "…") if len(e) > 200 else e) for n, e in examples]))
    near = dd.get("near") or {}
    if near:
        panels.append(Panel("kv", "Deduplication", rows=[
            ("candidate pairs (LSH edges)", f"{near.get('edges', 0):,}"),
            ("duplicate clusters", f"{near.get('clusters', 0):,}"), ("largest cluster", near.get("largest", 1))]))
    return panels


def tokenizer_panels(folder: Path, demo: dict | None) -> list[Panel]:
    cfg = read_json(folder / "scratchlm_tokenizer.json") or {}
    rows = [("type", cfg.get("type", "?")), ("vocabulary size", f"{cfg.get('vocab_size', 0):,}"),
            ("split pattern", cfg.get("pattern", "?")), ("special tokens", len(cfg.get("special_tokens", {})))]
    bpt = ((demo or {}).get("steps", {}).get("tokenizer") or {}).get("bytes_per_token")
    if bpt:
        rows.append(("bytes per token (held-out text)", bpt))
    panels = [Panel("kv", "This run's tokenizer", rows=rows)]
    try:
        from scratchlm.tokenizer import load_tokenizer

        tok = load_tokenizer(folder)
        text = "Once upon a time, Mia found 12 shiny stones."
        ids = tok.encode(text)
        pieces = [tok.decode([i]) for i in ids]
        panels.append(Panel("table", f"{text!r} in {len(ids)} tokens", header=("id", "token"),
                            rows=[(i, repr(p)) for i, p in zip(ids, pieces)]))
        if hasattr(tok, "token_bytes"):
            tb = tok.token_bytes
            special = set(cfg.get("special_tokens", {}).values())
            longest = sorted((i for i in range(256, len(tb)) if i not in special and tb[i]),
                             key=lambda i: (-len(tb[i]), i))[:12]
            panels.append(Panel("table", "The longest learned tokens", header=("id", "bytes", "token"),
                                rows=[(i, len(tb[i]), repr(tb[i].decode("utf-8", "replace"))) for i in longest]))
    except Exception as e:  # the stats above are still worth showing
        panels.append(Panel("pre", "Tokenizer could not be loaded", body=f"{type(e).__name__}: {e}"))
    return panels


def model_config(run: Path) -> dict | None:
    ckpts = list_checkpoints(run)  # complete checkpoints only, the ones the planner and loaders read
    return read_json(ckpts[-1] / "config.json") if ckpts else None


def model_panels(run: Path) -> list[Panel]:
    cfg = model_config(run)
    if not cfg:
        return []
    keys = ("n_layers", "d_model", "n_heads", "n_kv_heads", "ffn_hidden", "vocab_size", "max_seq_len", "activation",
            "norm", "pos_emb", "tie_embeddings")
    rows = [(k, cfg[k]) for k in keys if k in cfg]
    done = read_json(run / "DONE") or {}
    if done.get("params"):
        rows.insert(0, ("parameters", f"{done['params']:,}"))
    return [Panel("kv", f"The model of {run.name}", rows=rows)]


def _series(rows: list[dict], key: str) -> list[tuple[float, float]]:
    return [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and "step" in r]


def curve_panels(run: Path, label: str) -> list[Panel]:
    """Loss (and friends) curves of a training run from its metrics.jsonl, plus its DONE summary."""
    rows = read_jsonl(run / "metrics.jsonl")
    panels = []
    loss = [(n, _series(rows, k)) for n, k in (("train loss", "loss"), ("val loss", "val_loss"))]
    svg = line_chart(loss, f"{label}: loss", ylabel="nats / token")
    if svg:
        panels.append(Panel("svg", f"{label}: loss", body=svg))
    extras = [k for k in ("rewards/margins", "rewards/accuracies", "reward", "accuracy", "val_accuracy",
                          "val_pref_acc", "kl") if any(k in r for r in rows)]
    if extras:
        svg = line_chart([(k, _series(rows, k)) for k in extras[:4]], f"{label}: {', '.join(extras[:4])}")
        if svg:
            panels.append(Panel("svg", f"{label}: other metrics", body=svg))
    lr = _series(rows, "lr")
    if len(lr) > 1:
        panels.append(Panel("svg", f"{label}: learning rate", body=line_chart([("lr", lr)], f"{label}: learning rate")))
    done = read_json(run / "DONE") or {}
    summary = [(k, _short(v)) for k, v in done.items()
               if isinstance(v, (int, float, str)) and not isinstance(v, bool) and k not in ("run_dir", "checkpoint")]
    if summary:
        panels.append(Panel("kv", f"{label}: summary (DONE)", rows=summary))
    return panels


def _short(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return v if len(str(v)) < 80 else str(v)[:77] + "…"


def plan_panels(run: Path) -> list[Panel]:
    """The planner's arithmetic for this run's model: compute-optimal tokens, FLOPs, memory on one H100."""
    try:
        from scratchlm.plan.hardware import lookup
        from scratchlm.plan.planner import PlanRequest, make_plan
        from scratchlm.plan.shape import shape_from_run

        plan = make_plan(PlanRequest(), shape_from_run(run), lookup("H100"))
    except Exception as e:  # the guide still builds; say why the numbers are missing
        return [Panel("pre", "Planner numbers unavailable", body=f"{type(e).__name__}: {e}")]
    c, m = plan["compute"], plan["memory"]["requested"]["memory_per_gpu"]
    done = read_json(run / "DONE") or {}
    rows = [("parameters N", f"{c['n_params']:,}"), ("training FLOPs per token", f"{c['flops_per_token']:.3g}"),
            ("compute-optimal tokens (20 N)", f"{c['tokens']:.3g}"),
            ("FLOPs for those tokens (6ND + attention)", f"{c['flops']:.3g}")]
    if done.get("tokens"):
        rows.append(("tokens this run trained on", f"{done['tokens']:,} ({done['tokens'] / c['tokens']:.2%} of 20 N)"))
    rows += [("weights + grads + AdamW (bf16-mixed)", f"{(m['params'] + m['grads'] + m['optimizer']) / 2**20:.2f} MiB"),
             ("activations (micro-batch 1, full context)", f"{m['activations'] / 2**20:.2f} MiB"),
             ("time on one H100 at 40% MFU", f"{plan['time']['seconds']:.3g} s")]
    return [Panel("kv", f"Planner numbers for this model (scratchlm plan --run {run} --gpu H100)", rows=rows)]


def demo_generate_panels(demo: dict) -> list[Panel]:
    gen = (demo.get("steps") or {}).get("generate") or {}
    panels = []
    if gen.get("samples"):
        panels.append(Panel("pre", "Samples from this run's model", body="\n\n".join(gen["samples"])))
    if gen.get("speculative"):
        panels.append(Panel("kv", "Speculative decoding on this run (draft model, greedy)",
                            rows=list(gen["speculative"].items())))
    return panels


def eval_panels(results: dict[str, dict[str, dict]]) -> list[Panel]:
    from scratchlm.eval.results import format_metrics

    rows = []
    for part, tasks in results.items():
        for task, r in tasks.items():
            metrics = format_metrics(task, r)  # accuracies with n and their 95% interval
            rows.append((part, task, metrics, _short(r.get("n", r.get("tokens", "")))))
    return [Panel("table", "Evaluation results (RUN/eval/*.json)", header=("run", "task", "metrics", "n"),
                  rows=rows)] if rows else []


def load_run(root: str | Path) -> RunData:
    """Everything the guide shows about one run folder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--run {root}: no such folder; give a run folder such as runs/demo or runs/pretrain")
    parts = find_parts(root)
    if not parts:
        raise ValueError(f"--run {root}: no stage output found (report.json, tokenizer/, config.toml + metrics.jsonl);"
                         " run `scratchlm demo` or a stage command first")
    demo = read_json(root / "report.json") if "demo" in parts else None
    demo_steps = (demo or {}).get("steps", {})
    pretrain = parts.get("pretrain")
    evals = eval_results(parts)
    post = [parts[k] for k in POSTTRAIN_STAGES if k in parts]
    model_run = pretrain or next((p for p in post if model_config(p)), None)

    done = {
        "data": "data" in parts,
        "tokenizer": "tokenizer" in parts,
        "model": model_run is not None and model_config(model_run) is not None,
        "pretrain": finished(pretrain),
        "scaling": model_run is not None and model_config(model_run) is not None,
        "posttrain": any(finished(p) for p in post),
        "inference": "generate" in demo_steps or bool((read_json(pretrain / "DONE") or {}).get("sample")
                                                      if pretrain else False),
        "eval": bool(evals) or "eval" in demo_steps,
    }
    panels: dict[str, list[Panel]] = {k: [] for k in done}
    if "data" in parts:
        panels["data"] += data_panels(parts["data"])
    if "tokenizer" in parts:
        panels["tokenizer"] += tokenizer_panels(parts["tokenizer"], demo)
    if model_run is not None:
        panels["model"] += model_panels(model_run)
        panels["scaling"] += plan_panels(model_run)
    for name in ("pretrain", "draft"):
        if name in parts:
            panels["pretrain"] += curve_panels(parts[name], name)
    for name in POSTTRAIN_STAGES:
        if name in parts:
            panels["posttrain"] += curve_panels(parts[name], name)
    if demo:
        panels["inference"] += demo_generate_panels(demo)
    elif pretrain and (read_json(pretrain / "DONE") or {}).get("sample"):
        panels["inference"].append(Panel("pre", "A sample from this run's model",
                                         body=str(read_json(pretrain / "DONE")["sample"])))
    panels["eval"] += eval_panels(evals)
    return RunData(root, parts, done, panels)

