"""`scratchlm pretrain`: next-token pretraining from a TOML config (see configs/ and scratchlm/train/config.py)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from scratchlm.cli.common import add_common

log = logging.getLogger("scratchlm")

EXAMPLES = """\
examples:
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
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    add_common(p, out="runs/pretrain", config=True)
    p.set_defaults(func=handler)


def _load(args):
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
    if path is None:
        raise ValueError("no config: pass --config FILE (see configs/, e.g. configs/shakespeare_cpu.toml)")
    cfg = load_pretrain_config(path, overrides)
    if args.verbose <= 0 and args.quiet > 0:
        cfg.train.progress = False
    return cfg


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
    cfg = _load(args)
    if args.dry_run:
        from scratchlm.config import dumps_toml

        print(dumps_toml(cfg))
        return 0
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun: only rank 0 talks
    if not main_rank:
        logging.getLogger("scratchlm").setLevel(logging.WARNING)
    from scratchlm.train import TrainingStopped, pretrain

    try:
        summary = pretrain(cfg, args.out, resume=args.resume, overwrite=args.overwrite)
    except TrainingStopped as e:
        if main_rank:
            print(f"error: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, FileExistsError):
        if main_rank:
            raise  # the one-line "error: ..." and exit code 2 of scratchlm.cli.main
        return 2  # every rank failed the same check: rank 0 says it once
    summary.pop("sample", None)
    if args.quiet <= 0 and main_rank:
        print(json.dumps(summary, indent=2))
    return 0
