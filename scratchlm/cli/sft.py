"""`scratchlm sft`: supervised fine-tuning of a pretrained run on chat / instruction data.

Also holds the small helpers the other post-training commands (dpo.py, rl.py) share.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scratchlm.cli.common import add_common, quiet_rank_fails

EXAMPLES = """\
examples:
  # TinyWorld: make the data, then teach the demo model to answer in the chat template
  scratchlm data synth --out runs/tw --size 2MB
  scratchlm sft --base runs/demo/pretrain --data runs/tw/instructions.jsonl --out runs/sft --set train.max_time=120

  # Alpaca-format JSON, LoRA rank 8 on every linear layer, packed rows, 4 micro-batches per step
  scratchlm sft --base runs/pretrain --data ../shared/data/alpaca/alpaca_data.json \\
      --set lora.rank=8 --set sft.batching=pack --set sft.grad_accum=4 --set train.max_steps=500

  # loss on every token instead of the replies only; continue a stopped run
  scratchlm sft --base runs/pretrain --data chats.jsonl --set sft.assistant_only=false
  scratchlm sft --base runs/pretrain --data chats.jsonl --resume

  # several processes (CPU: gloo, GPUs: NCCL): DDP, or FSDP2 with parallel.fsdp=N (docs/distributed.md)
  torchrun --standalone --nproc_per_node 2 -m scratchlm sft --base runs/pretrain --data chats.jsonl \\
      --set parallel.dp=2 --set sft.grad_accum=2 --set train.max_steps=200

output: RUN/config.toml, tokenizer/ (with the chat template for HF), checkpoints/ (merged weights: generate,
        chat, serve and `scratchlm dpo --base RUN` load them directly), metrics.jsonl (loss, val_loss,
        in_template), DONE (summary: held-out loss before/after)
"""


def add_stage_args(p: argparse.ArgumentParser, out: str, data_help: str, data_required: bool = True) -> None:
    p.add_argument("--base", default="", help="run (or checkpoint) to start from (required)")
    p.add_argument("--data", required=data_required, default="", help=data_help)
    p.add_argument("--val-data", default="", help="held-out file (default: the *_val twin of --data, else a split)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--list-keys", action="store_true", help="print every config key, its default and help, then exit")
    add_common(p, out=out, config=True)


def load_stage(args, cls, extra: dict | None = None):
    """Stage config: defaults <- --config (or the run's config.toml on --resume) <- flags <- --set."""
    from scratchlm.posttrain.config import load_stage_config

    flags = {"base": args.base, **({"data": args.data} if args.data else {}),
             **({"val_data": args.val_data} if args.val_data else {}), **(extra or {})}
    overrides = [f"{k}={json.dumps(str(v))}" for k, v in flags.items()] + list(args.overrides)
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.device != "auto":
        overrides.append(f"train.device={args.device}")
    if args.dtype != "auto":
        overrides.append(f"train.dtype={args.dtype}")
    if args.quiet > 0 and args.verbose <= 0:
        overrides.append("train.progress=false")
    path = args.config
    if path is None and args.resume and (Path(args.out) / "config.toml").is_file():
        path = Path(args.out) / "config.toml"
    return load_stage_config(cls, path, overrides)


def list_keys(cls) -> int:
    from scratchlm.config import describe

    for key, tp, default, help_ in describe(cls):
        print(f"{key:34s} {tp:28s} {default!r:14}  {help_}")
    return 0


def print_summary(summary: dict, quiet: int) -> None:
    if quiet <= 0:
        print(json.dumps({k: v for k, v in summary.items() if not k.startswith("samples")}, indent=2))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sft", help="supervised fine-tuning on chat / instruction data",
        description="Fine-tune a pretrained run on conversations (Alpaca, OpenAI messages or ShareGPT; JSON or "
                    "JSONL) in the chat template, with the loss on the assistant's replies, packed rows, LoRA, "
                    "budgets, checkpoints and resume. Prints held-out loss before/after.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_args(p, "runs/sft", "training data: JSON/JSONL in Alpaca or messages form")
    p.set_defaults(func=handler)


def handler(args) -> int:
    from scratchlm.posttrain.config import SFTConfig

    if args.list_keys:
        return list_keys(SFTConfig)
    from scratchlm.posttrain import run_sft

    return run_stage(run_sft, load_stage(args, SFTConfig), args)


def run_stage(run, cfg, args) -> int:
    """run(cfg, out, ...) for a stage command, in one process or as one of torchrun's: there only rank 0 logs,
    shows progress and prints the summary, and a check every rank fails is reported once, by rank 0."""
    import logging
    import os

    main_rank = os.environ.get("RANK", "0") == "0"
    if not main_rank:
        logging.getLogger("scratchlm").setLevel(logging.WARNING)
        cfg.train.progress = False
    try:
        summary = run(cfg, args.out, resume=args.resume, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError):
        if main_rank:
            raise  # the one-line "error: ..." and exit code 2 of scratchlm.cli.main
        return quiet_rank_fails()  # every rank failed the same check: rank 0 says it once
    if main_rank:
        print_summary(summary, args.quiet)
    return 0
