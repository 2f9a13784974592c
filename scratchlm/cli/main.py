"""The `scratchlm` command: one subcommand per stage, each defined in its own module of this folder.

Each module listed in STAGE_MODULES exposes `register(subparsers)`; its handler returns an exit code. Handlers
import heavy libraries (torch, transformers) themselves, so `scratchlm tokenizer ...` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# In the order a build meets them. A module is listed only once its commands work.
STAGE_MODULES: list[str] = [
    "data",
    "tokenizer",
    "pretrain",
    "sft",
    "dpo",
    "rl",
    "generate",
    "chat",
    "serve",
    "eval",
    "plan",
    "interop",
    "guide",
    "demo",
]

EPILOG = """\
stages, in order:
  data        synthesize TinyWorld, filter, deduplicate and tokenize text into shards
  tokenizer   train / use a byte-level BPE tokenizer
  pretrain    next-token pretraining of a transformer
  sft, dpo, rl  post-training: instructions, preferences, rewards (reward: a reward model for rl)
  generate, chat, serve  inference: text, terminal chat, OpenAI-compatible API
  eval        bits per byte, HellaSwag, GSM8K, TinyWorld tasks
  plan        compute, memory and cost arithmetic before you train
  export, import  Hugging Face interop
  guide       the interactive build roadmap (HTML/PDF)
  demo        all of the above on the built-in TinyWorld corpus

examples:
  scratchlm demo                 # the whole pipeline on 2 CPU cores
  scratchlm demo --quick         # the same chain in about a minute
  scratchlm <command> --help     # every command has worked examples
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scratchlm",
        description="Build a large language model from scratch, end to end.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from scratchlm import __version__

    parser.add_argument("--version", action="version", version=f"scratchlm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_MODULES:
        importlib.import_module(f"scratchlm.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    verbosity = getattr(args, "verbose", 0) - getattr(args, "quiet", 0)
    logging.basicConfig(
        level=logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO,
        format="%(message)s",
    )
    debug = verbosity > 0 or os.environ.get("SCRATCHLM_DEBUG")
    try:
        from scratchlm.cli.common import check_finite_args

        check_finite_args(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError) as e:
        # User-fixable problems: one line, no traceback (run with -v for one).
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - only errors that carry their own exit code are handled here
        code = getattr(e, "exit_code", None)
        if code is None or (debug and not getattr(e, "resume_hint", False)):  # a signal is never a bug
            raise
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank stops the same way: say it once
            print(f"error: {e}" if code == 1 else str(e), file=sys.stderr)
            if getattr(e, "resume_hint", False) and hasattr(args, "resume"):  # (the demo has no --resume)
                print(resume_command(sys.argv[1:] if argv is None else argv), file=sys.stderr)
        return code


def resume_command(argv: list[str]) -> str:
    """The command that continues an interrupted run: the same one, with --resume and without --overwrite."""
    import shlex

    if os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get("LOCAL_RANK"):
        return "resume: run the same torchrun command again with --resume"
    args = [a for a in argv if a != "--overwrite"]
    if "--resume" not in args:
        args.append("--resume")
    return "resume with: scratchlm " + shlex.join(args)


if __name__ == "__main__":
    sys.exit(main())
