"""`scratchlm eval`: evaluate a trained run. Tasks live in TASKS (name -> handler).

Every task's result is printed (a table, or JSON with --json) and saved as RUN/eval/<task>.json, which is what
the report card (`--report`, scratchlm/eval/report.py) reads.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from scratchlm.cli.common import add_common, add_renamed

log = logging.getLogger("scratchlm")

EXAMPLES = """\
examples:
  # bits per byte of a text file under the run's best checkpoint (sliding window, stride = half the context)
  scratchlm eval --run runs/shakespeare --task bpb --data ../shared/data/tinyshakespeare/input.txt

  # a specific checkpoint, full-context windows only (faster), JSON output
  scratchlm eval --run runs/shakespeare/checkpoints/step_0001000 --task bpb --data val.txt --stride 256 --json

  # HellaSwag (acc, acc_norm) on the first 500 items; GSM8K (5-shot, or chat for post-trained runs)
  scratchlm eval --run runs/pretrain --task hellaswag --data ../shared/data/hellaswag/hellaswag_val_full.txt --limit 500
  scratchlm eval --run runs/sft --task gsm8k --data ../shared/data/gsm8k/test.jsonl --limit 100

  # TinyWorld's arithmetic / fact / story questions (graded like the RL reward), then the report card
  scratchlm eval --run runs/sft --task tinyworld --limit 200
  scratchlm eval --run runs/sft --report          # writes runs/sft/report.md from the run folder's files

bits per byte = total -log2 p(token | context) over the text / its UTF-8 bytes: it compares models with
different tokenizers fairly (for ASCII text, nats per character = bpb x ln 2).
Results are saved as RUN/eval/<task>.json (--no-save to skip). Data defaults to $SCRATCHLM_DATA or
../shared/data (hellaswag/hellaswag_val_full.txt, gsm8k/test.jsonl).
"""

DEFAULT_DATA = {"hellaswag": "hellaswag/hellaswag_val_full.txt", "gsm8k": "gsm8k/test.jsonl"}


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a trained model (bits per byte, HellaSwag, GSM8K, TinyWorld)",
                              description="Evaluate a trained run or checkpoint, and write its report card.",
                              epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run folder (its best checkpoint) or a checkpoint folder")
    p.add_argument("--task", default=None, choices=sorted(TASKS),
                   help="what to evaluate (default: bpb; none with --report)")
    p.add_argument("--report", action="store_true", help="(re)write RUN/report.md from the run folder's files")
    p.add_argument("--seq-len", type=int, default=None, help="bpb: window length (default: the model's max_seq_len)")
    p.add_argument("--stride", type=int, default=None, help="bpb: window step (default: half the window)")
    add_renamed(p, "--data", "--text", type=Path, default=None, metavar="FILE",
                help="the task's data: bpb: the text to score (required; any format `scratchlm data` reads); "
                     "hellaswag/gsm8k: JSONL, or HellaSwag's 6-line text layout (default: under $SCRATCHLM_DATA)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N items (bpb: the first N characters; "
                   "tinyworld: N tasks, default 200)")
    p.add_argument("--shots", type=int, default=5, help="gsm8k: solved examples before the question (default: 5)")
    p.add_argument("--chat", choices=["auto", "yes", "no"], default="auto",
                   help="gsm8k/tinyworld: prompt with the chat template (auto: yes for SFT/DPO/RL checkpoints)")
    p.add_argument("--split", default="val", choices=["train", "val"], help="tinyworld: task split (default: val)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="gsm8k/tinyworld: reply length limit (default: 256 / 48)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per forward pass (default: 8 for bpb, 32 "
                   "for hellaswag and tinyworld, 16 for gsm8k)")
    p.add_argument("--no-save", action="store_true", help="do not write RUN/eval/<task>.json")
    p.add_argument("--json", action="store_true", help="print the result as JSON only")
    add_common(p, out=None, overrides=False)
    p.set_defaults(func=handler)


def _tokenizer_for(run: Path):
    from scratchlm.tokenizer import load_tokenizer

    for folder in (run / "tokenizer", run.parent.parent / "tokenizer"):  # run folder, or run/checkpoints/step_x
        if folder.is_dir():
            return load_tokenizer(folder)
    raise FileNotFoundError(f"no tokenizer/ folder found for {run}; pass a run folder made by `scratchlm pretrain`")


def _progress(args) -> bool:
    return not args.json and args.quiet <= 0


def _bpb(args) -> dict:
    import math

    import torch

    from scratchlm.device import resolve_device
    from scratchlm.eval.bpb import bits_per_byte
    from scratchlm.train.checkpoint import load_model

    if args.data is None:
        raise ValueError("--task bpb needs --data FILE (the text to score)")
    if not args.data.is_file():
        raise FileNotFoundError(f"--data {args.data} not found")
    device = resolve_device(args.device)
    model, meta = load_model(args.run, device=device)
    tokenizer = _tokenizer_for(args.run)
    dtype = None if args.dtype in ("auto", "float32") else getattr(torch, args.dtype)
    text, invalid = _read_text(args.data)
    if args.limit:
        text = text[: args.limit]
    result = bits_per_byte(model, tokenizer, text, seq_len=args.seq_len,
                           stride=args.stride, batch_size=args.batch_size or 8, device=device, dtype=dtype,
                           progress=_progress(args))
    result["perplexity"] = math.exp(result["loss"])
    return {"task": "bpb", "text": str(args.data), "checkpoint": meta["checkpoint"], "invalid_utf8": invalid, **result}


def _read_text(path: Path) -> tuple[str, int]:
    """The file through the reader every command shares (.txt .md .jsonl .json .parquet, .gz/.zst): plain text
    exactly as written, records joined by blank lines; invalid UTF-8 replaced by U+FFFD and counted."""
    from scratchlm.data.sources import SourceConfig, SourceStats, format_of, read_sources

    stats = SourceStats()
    docs = [d["text"] for d in read_sources([str(path)], SourceConfig(split_long_files=True), stats,
                                            replace_invalid=True)]
    if not docs:
        raise ValueError(f"--data {path} holds no text to score: {stats.summary()}")
    for p in stats.problems:
        print(f"skipped {p}", file=sys.stderr)
    if stats.invalid_utf8:
        print(f"{path}: {stats.invalid_utf8:,} invalid UTF-8 byte(s) replaced by U+FFFD", file=sys.stderr)
    return ("" if format_of(str(path)) == "text" else "\n\n").join(docs), stats.invalid_utf8


def _data_file(args, task: str) -> Path:
    if args.data is not None:
        return args.data
    root = Path(os.environ.get("SCRATCHLM_DATA", "../shared/data"))
    path = root / DEFAULT_DATA[task]
    if not path.is_file():
        raise FileNotFoundError(f"--task {task} needs --data FILE (looked for {path}; set SCRATCHLM_DATA to the "
                                "shared data folder or pass --data)")
    return path


def _chat(args, ckpt) -> bool:
    from scratchlm.eval.results import is_chat_model

    return is_chat_model(ckpt) if args.chat == "auto" else args.chat == "yes"


def _hellaswag(args) -> dict:
    from scratchlm.eval.hellaswag import evaluate_hellaswag, load_hellaswag
    from scratchlm.inference.loading import load_model, load_tokenizer_for
    from scratchlm.runs import resolve_checkpoint

    path = _data_file(args, "hellaswag")
    items = load_hellaswag(path, limit=args.limit)
    model, _ = load_model(args.run, args.device, args.dtype)
    result = evaluate_hellaswag(model, load_tokenizer_for(args.run), items, batch_size=args.batch_size or 32,
                                progress=_progress(args))
    return {**result, "data": str(path), "checkpoint": str(resolve_checkpoint(args.run))}


def _gsm8k(args) -> dict:
    from scratchlm.eval.gsm8k import evaluate_gsm8k, load_gsm8k
    from scratchlm.inference.loading import load_engine
    from scratchlm.runs import resolve_checkpoint

    path = _data_file(args, "gsm8k")
    problems = load_gsm8k(path, limit=args.limit)
    shots = []
    train = path.with_name("train.jsonl")
    if args.shots > 0:
        if not train.is_file() or train == path:
            raise FileNotFoundError(f"few-shot examples are read from {train}, which is missing; pass --shots 0")
        shots = load_gsm8k(train, limit=args.shots)
    ckpt = resolve_checkpoint(args.run)
    engine = load_engine(args.run, args.device, args.dtype)
    result = evaluate_gsm8k(engine, problems, chat=_chat(args, ckpt), shots=shots,
                            max_new_tokens=args.max_new_tokens or 256, batch_size=args.batch_size or 16,
                            progress=_progress(args))
    return {**result, "data": str(path), "checkpoint": str(ckpt)}


def _tinyworld(args) -> dict:
    from scratchlm.eval.tinyworld import evaluate_tinyworld, load_tinyworld_tasks
    from scratchlm.inference.loading import load_engine
    from scratchlm.runs import resolve_checkpoint

    tasks = load_tinyworld_tasks(args.split, n=200 if args.limit is None else args.limit,
                                 seed=0 if args.seed is None else args.seed)
    ckpt = resolve_checkpoint(args.run)
    engine = load_engine(args.run, args.device, args.dtype)
    result = evaluate_tinyworld(engine, tasks, chat=_chat(args, ckpt), max_new_tokens=args.max_new_tokens or 48,
                                batch_size=args.batch_size or 32, progress=_progress(args))
    return {**result, "split": args.split, "checkpoint": str(ckpt)}


TASKS = {"bpb": _bpb, "hellaswag": _hellaswag, "gsm8k": _gsm8k, "tinyworld": _tinyworld}


def handler(args) -> int:
    from scratchlm.eval.results import format_metrics, format_table, save_result

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    task = args.task or (None if args.report else "bpb")
    if task is not None:
        if args.seed is not None:
            from scratchlm.cli.common import seed_everything

            seed_everything(args.seed)
        t0 = time.perf_counter()
        result = TASKS[task](args)
        result["seconds"] = round(time.perf_counter() - t0, 2)
        if not args.no_save:
            path = save_result(args.run, task, result)
            log.info("saved %s", path)
        if args.json:
            print(json.dumps(result))
        elif task == "bpb":
            print(f"{result['bpb']:.4f} bits per byte ({result['nats_per_byte']:.4f} nats per byte, "
                  f"{result['loss']:.4f} nats per token, perplexity {result['perplexity']:.2f}) on "
                  f"{result['bytes']:,} bytes / {result['tokens']:,} tokens of {result['text']} "
                  f"[{result['checkpoint']}, window {result['seq_len']}, stride {result['stride']}]")
        else:
            print(format_table({task: result}))
            for kind, r in result.get("by_kind", {}).items():  # tinyworld: each kind is its own, smaller sample
                print(f"  {kind}: {format_metrics(task, {'task': task, **r})}")
    if args.report:
        from scratchlm.eval.report import write_report
        from scratchlm.eval.results import run_dir_of

        path = write_report(run_dir_of(args.run))
        if not args.json:
            print(f"report card: {path}")
    return 0
