"""`scratchlm pretrain`: next-token pretraining from a TOML config (see configs/ and scratchlm/train/config.py)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from scratchlm.cli.common import add_common, quiet_rank_fails

log = logging.getLogger("scratchlm")

EXAMPLES = """\
examples:
  # your own token shards (from `scratchlm data tokenize`): the model is sized for the data and the budget
  scratchlm pretrain --data runs/shards --time 10m --out runs/mine
  scratchlm pretrain --data runs/shards --tokenizer runs/tok/tokenizer --tokens 50M --dry-run   # see the plan
  # your own text: filtered (a preset per file), deduplicated, tokenized and trained on, all inside --out
  scratchlm pretrain --input my_books/ notes/ --time 30m --out runs/mine

  # beat nanoGPT's CPU baby-GPT on Tiny Shakespeare in 71 s of wall clock (2 cores)
  scratchlm pretrain --config configs/shakespeare_cpu.toml --out runs/shakespeare

  # the TinyWorld demo model, with a shorter budget and a different learning rate
  scratchlm pretrain --config configs/pretrain_tinyworld.toml --set train.max_time=120 --set train.lr=2e-3

  # your own shards (from `scratchlm data tokenize`) on a GPU, gpt2-124m, bf16 + torch.compile
  scratchlm pretrain --config configs/pretrain_gpt2_124m.toml --set data.shards=runs/data --out runs/gpt2

  # continue a run exactly where it stopped (after a crash, Ctrl-C or kill -9), or extend it
  scratchlm pretrain --out runs/shakespeare --resume
  scratchlm pretrain --out runs/shakespeare --resume --set train.max_steps=4000

  # several processes (CPU: gloo, GPUs: NCCL): DDP, or FSDP2 with --set parallel.fsdp=N (docs/distributed.md)
  torchrun --standalone --nproc_per_node 2 -m scratchlm pretrain --config configs/shakespeare_cpu.toml \\
      --set parallel.fsdp=2 --out runs/shakespeare_fsdp

  # list every config key with its default and meaning
  scratchlm pretrain --list-keys

output: RUN/config.toml, tokenizer/, data/ (or a pointer to data.shards), checkpoints/step_XXXXXXX/
        {model.safetensors, config.json, state.pt, meta.json}, metrics.jsonl, plots/loss.png, logs/ (TensorBoard:
        tensorboard --logdir RUN/logs), DONE (the summary)
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain", help="next-token pretraining of a transformer",
        description="Pretrain a transformer on token shards (or a text file): AdamW/Muon, warmup+cosine/WSD, "
                    "bf16, gradient accumulation, budgets in steps/tokens/seconds, exact resume.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its latest checkpoint (its config.toml unless --config)")
    p.add_argument("--list-keys", action="store_true", help="print every config key, its default and help, then exit")
    p.add_argument("--dry-run", action="store_true",
                   help="print what will be read and the resolved config (valid TOML, the plan as comments), then exit")
    g = p.add_argument_group("your data in one command (no --config: the model is sized for the data and budget)")
    g.add_argument("--data", type=Path, default=None, metavar="SHARDS",
                   help="token-shard folder from `scratchlm data tokenize` / `data prepare` (sets data.shards)")
    g.add_argument("--input", nargs="+", default=None, metavar="PATH",
                   help="your text (files, folders, globs: .txt .md .jsonl .parquet, code, ...): prepared, a BPE "
                        "tokenizer trained and shards written inside --out, then trained on")
    g.add_argument("--tokenizer", type=Path, default=None, metavar="DIR",
                   help="the tokenizer folder the shards were made with (default: the one their manifest names)")
    g.add_argument("--time", default=None, metavar="DURATION",
                   help="training time budget, e.g. 90s, 10m, 2h (sets train.max_time)")
    g.add_argument("--tokens", default=None, metavar="COUNT",
                   help="training token budget, e.g. 50M, 1.5B (sets train.max_tokens)")
    add_common(p, out="runs/pretrain", config=True)
    p.set_defaults(func=handler)


def _budget(args) -> tuple[float | None, float | None]:
    from scratchlm.plan.sizing import parse_count, parse_duration

    if args.time is not None and args.tokens is not None:
        raise ValueError("give one budget: --time or --tokens, not both")
    return (parse_duration(args.time) if args.time is not None else None,
            parse_count(args.tokens) if args.tokens is not None else None)


BYTES_PER_TOKEN_GUESS = 3.5  # BPE at a few thousand tokens on English (TinyWorld: 3.16 at 8,192): --dry-run only


def _data_flags(args, overrides: list[str]) -> tuple[dict, dict]:
    """The [data] section that --data / --input stand for (replacing a config's own text route), and what the
    sizing needs: {"vocab_size", "train_tokens", "estimated", "built"}. --input builds the corpus inside the run
    folder (scratchlm/data/build.py) unless this is a --dry-run, which estimates from the input's size instead."""
    if args.data is not None and args.input:
        raise ValueError("give --data SHARDS or --input FILES, not both")
    if args.tokenizer is not None and args.data is None:
        raise ValueError("--tokenizer goes with --data SHARDS (the tokenizer those shards were made with)")
    if args.data is None and not args.input:
        return {}, {}
    from scratchlm.data.shards import read_manifest

    if args.data is not None:
        m = read_manifest(args.data)  # a clear error now if the folder is not complete shards
        # absolute: the run's config.toml must still point at them when --resume runs from another folder
        data = {"shards": str(args.data.resolve()),
                "tokenizer": str(args.tokenizer.resolve()) if args.tokenizer else "auto"}
        return {**data, "train_text": None, "val_text": None}, \
            {"vocab_size": m["vocab_size"], "train_tokens": m["n_tokens"]["train"], "estimated": False, "built": False}
    from scratchlm.data.build import build_corpus, corpus_ready, default_vocab_size
    from scratchlm.data.sources import expand_inputs
    from scratchlm.runs import check_out_path, claim_out_dir

    run = check_out_path(args.out).resolve()
    data = {"shards": str(run / "data"), "tokenizer": str(run / "tokenizer"), "train_text": None, "val_text": None}
    vocab = next((int(float(o.split("=", 1)[1])) for o in reversed(overrides)
                  if o.replace(" ", "").startswith("data.vocab_size=")), None)
    if args.dry_run and not corpus_ready(run):
        n_bytes = sum(Path(p).stat().st_size for p in expand_inputs([str(i) for i in args.input]) if Path(p).is_file())
        return data, {"vocab_size": vocab or default_vocab_size(n_bytes), "estimated": True, "built": False,
                      "train_tokens": max(1, int(0.9 * n_bytes / BYTES_PER_TOKEN_GUESS)), "input_bytes": n_bytes}
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--input prepares the data in one process; run `scratchlm data prepare` first and pass its "
                         "folder as --data under torchrun")
    claim_out_dir(run, overwrite=args.overwrite, resume=args.resume, kind="pretrain",  # (a finished run needs
                  inputs=[str(i) for i in args.input])                                 # --overwrite)
    built = build_corpus(args.input, run, vocab_size=vocab, progress=args.quiet <= 0)
    m = read_manifest(built["shards"])
    return data, {"vocab_size": m["vocab_size"], "train_tokens": m["n_tokens"]["train"], "estimated": False,
                  "built": not built["reused"]}


def _as_overrides(section: str, values: dict) -> list[str]:
    import json as _json

    return [f"{section}.{k}=" + ("none" if v is None else _json.dumps(v)) for k, v in values.items()]


def _auto(args, overrides: list[str], data: dict, info: dict):
    """No --config: the model sized by the planner for the data and --time / --tokens (scratchlm/train/recipe.py)."""
    from scratchlm.train.recipe import auto_config

    seconds, tokens = _budget(args)
    if not data:
        raise ValueError("no data: pass --data SHARDS (from `scratchlm data tokenize`) or --input FILES, with --time "
                         "or --tokens; or --config FILE (see configs/)")
    if seconds is None and tokens is None:
        raise ValueError("no budget: pass --time (e.g. 10m) or --tokens (e.g. 50M) to size the model")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("sizing measures this machine's speed in one process; write the plan once with "
                         "`scratchlm pretrain --data ... --time ... --dry-run > run.toml`, then start torchrun with "
                         "--config run.toml")
    return auto_config({k: v for k, v in data.items() if v is not None}, info["vocab_size"], info["train_tokens"],
                       seconds=seconds, tokens=tokens, overrides=overrides)


def _load(args):
    """(PretrainConfig, AutoSize or None, data info): from --config (or the run's config.toml on --resume), else
    sized by the planner."""
    from scratchlm.train.config import load_pretrain_config

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if getattr(args, "device", "auto") != "auto":
        overrides.append(f"train.device={args.device}")
    if getattr(args, "dtype", "auto") != "auto":
        overrides.append(f"train.dtype={args.dtype}")
    path = args.config
    if path is None and args.resume:
        path = Path(args.out) / "config.toml"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: nothing to resume in {args.out}; pass --config to start a run")
    _budget(args)  # bad budget flags fail before any data is prepared
    data, info = _data_flags(args, overrides)
    auto = None
    if path is None:
        cfg, auto = _auto(args, overrides, data, info)
    else:  # a config keeps its model; the flags set what they name, before --set (which wins)
        seconds, tokens = _budget(args)
        budget = {"max_time": seconds} if seconds else {"max_tokens": int(tokens)} if tokens else {}
        cfg = load_pretrain_config(path, _as_overrides("data", data) + _as_overrides("train", budget) + overrides)
    if args.verbose <= 0 and args.quiet > 0:
        cfg.train.progress = False
    return cfg, auto, info


def _what_is_read(cfg, args, info: dict) -> list[str]:
    """What the run will really read, as the data section resolves (shown by --dry-run and before training)."""
    from scratchlm.data.shards import read_manifest

    d = cfg.data
    if info.get("estimated"):  # --input --dry-run: nothing prepared yet
        from scratchlm.data.pipeline import plan_inputs

        plan = plan_inputs([str(i) for i in args.input])
        return ([f"data: {len(plan.files):,} input file(s), {info['input_bytes']:,} bytes, to be prepared into "
                 f"{d.shards} (filters, dedup, then shards)"] + plan.describe() +
                [f"tokenizer: BPE with {info['vocab_size']:,} tokens, trained there on the cleaned text",
                 f"estimated: ~{info['train_tokens']:,} train tokens ({BYTES_PER_TOKEN_GUESS} bytes a token, before "
                 "filtering); the real run sizes on the real count"])
    if d.mix:  # [data.mix]: every folder, its weight and size (train/data.py normalises the weights)
        total = sum(e["weight"] for e in d.mix.values())
        lines = []
        for name, e in d.mix.items():
            m = read_manifest(e["shards"])
            lines.append(f"data: mix {name} {e['weight'] / total:.1%}: shards {Path(e['shards']).resolve()} "
                         f"({m['n_tokens']['train']:,} train / {m['n_tokens']['val']:,} val tokens)")
        first = read_manifest(next(iter(d.mix.values()))["shards"])
        tok = d.tokenizer if d.tokenizer != "auto" else (first.get("tokenizer") or {}).get("path")
        return lines + [f"tokenizer: {tok} (vocabulary {first['vocab_size']:,})"]
    if d.shards:
        m = read_manifest(d.shards)
        tok = d.tokenizer if d.tokenizer != "auto" else (m.get("tokenizer") or {}).get("path")
        return [f"data: shards {Path(d.shards).resolve()} ({m['n_tokens']['train']:,} train / "
                f"{m['n_tokens']['val']:,} val tokens, {m['n_docs']['train']:,} + {m['n_docs']['val']:,} documents)",
                f"tokenizer: {tok} (vocabulary {m['vocab_size']:,})"]
    if d.train_text:
        size = Path(d.train_text).stat().st_size if Path(d.train_text).is_file() else None
        val = d.val_text or f"the last {d.val_fraction:.0%} of it"
        return [f"data: text {d.train_text} ({'missing' if size is None else f'{size:,} bytes'}), validation: {val}",
                f"tokenizer: {d.tokenizer} (vocabulary {d.vocab_size:,} if trained here)"]
    return ["data: none configured (set data.shards, data.mix or data.train_text)"]


def field_docs(cls) -> dict[str, str]:
    """The docstring under each field of a dataclass (the convention of our configs), first sentence only."""
    import ast
    import inspect
    import re
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr) \
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
            text = " ".join(nxt.value.value.split())
            docs[node.target.id] = re.split(r"(?<!e\.g)(?<!i\.e)\. (?=[A-Z])", text)[0]
    return docs


def handler(args) -> int:
    if args.list_keys:
        from scratchlm.config import describe
        from scratchlm.distributed.config import ParallelConfig
        from scratchlm.model.config import ModelConfig
        from scratchlm.train.config import DataConfig, PretrainConfig, TrainConfig

        docs = {"": field_docs(PretrainConfig)}
        for section, cls in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig),
                             ("parallel", ParallelConfig)):
            docs[section] = field_docs(cls)
        for key, tp, default, help_ in describe(PretrainConfig):
            section, _, name = key.rpartition(".")
            print(f"{key:30s} {tp:24s} {default!r:12}  {help_ or docs.get(section, {}).get(name, '')}")
        return 0
    cfg, auto, info = _load(args)
    plan = _what_is_read(cfg, args, info) + (auto.describe().splitlines() if auto else [])
    if args.dry_run:  # TOML with the plan as comments: redirect it into a file and pass it as --config
        from scratchlm.config import dumps_toml

        print("\n".join(f"# {line}" for line in plan))
        print(dumps_toml(cfg))
        return 0
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun: only rank 0 talks
    if main_rank and args.quiet <= 0:
        print("\n".join(plan), file=sys.stderr)
    if not main_rank:
        logging.getLogger("scratchlm").setLevel(logging.WARNING)
    from scratchlm.train import TrainingStopped, pretrain

    try:
        # a corpus just built into --out is this run's: --overwrite already cleared the folder before it
        summary = pretrain(cfg, args.out, resume=args.resume, overwrite=args.overwrite and not info.get("built"))
    except TrainingStopped as e:
        if main_rank:
            print(f"error: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, FileExistsError):
        if main_rank:
            raise  # the one-line "error: ..." and exit code 2 of scratchlm.cli.main
        return quiet_rank_fails()  # every rank failed the same check: rank 0 says it once
    summary.pop("sample", None)
    if args.quiet <= 0 and main_rank:
        print(json.dumps(summary, indent=2))
    return 0
