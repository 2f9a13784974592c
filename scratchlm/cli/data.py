"""`scratchlm data ...`: the data pipeline's commands (prepare, filter, dedup, toxicity, tokenize, synth).

Heavy or optional libraries (pyarrow, zstandard, ray, datasets) are imported inside handlers, so the CLI starts fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from scratchlm.cli.common import add_common

log = logging.getLogger("scratchlm")

RAW = argparse.RawDescriptionHelpFormatter


def _add_source_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input")
    g.add_argument("--input", "-i", nargs="+", required=True, metavar="PATH",
                   help="files, folders or globs (.txt .json .jsonl .parquet, optionally .gz/.zst), or hf:NAME[:CONFIG]")
    g.add_argument("--text-field", default="text", help="JSON/Parquet/HF field holding the text (default: text)")
    g.add_argument("--text-split", default="file",
                   help='plain text: "file" (one document each, default), "paragraph", "line", or a separator such as "<|endoftext|>"')
    g.add_argument("--hf-split", default="train", help="split of hf: datasets (default: train)")


def _source_config(args):
    from scratchlm.data.sources import SourceConfig

    return SourceConfig(text_field=args.text_field, text_split=args.text_split, hf_split=args.hf_split)


def _add_executor_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--workers", type=int, default=None, help="worker processes (default: number of CPUs, at most 8)")
    g.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local process pool (default) or Ray (pip install 'ray[data]')")
    g.add_argument("--ray-address", default=None, help="Ray cluster to join, e.g. ray://head:10001 (default: start a local one)")


def _check_out(out: Path, overwrite: bool, marker: str) -> None:
    if (out / marker).exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a finished result ({marker}); pass --overwrite or choose another --out")


# --------------------------------------------------------------------------------------------------
# tokenize

TOKENIZE_EXAMPLES = """\
examples:
  # 10% of the stories (chosen by a hash of each document) go to val.bin
  scratchlm data tokenize --tokenizer runs/tok/tokenizer --input stories.txt --text-split paragraph --out runs/data
  # explicit validation files, JSONL input with a "content" field
  scratchlm data tokenize --tokenizer runs/tok/tokenizer --input train/*.jsonl.gz --val-input val.jsonl \\
      --text-field content --out runs/data

output: runs/data/{train,val}.bin, {train,val}.idx.npy, manifest.json (format in scratchlm/data/shards.py)
"""


def _texts(docs):
    """Document dicts -> text, with invalid UTF-8 (kept by the readers as surrogates) replaced by U+FFFD."""
    from scratchlm.data.normalize import to_valid_utf8

    for d in docs:
        yield to_valid_utf8(d["text"])


def _tokenize(args) -> int:
    from scratchlm.data.shards import write_shards, write_shards_split
    from scratchlm.data.sources import SourceStats, read_sources

    tok_dir = Path(args.tokenizer)
    if not tok_dir.is_dir():
        raise FileNotFoundError(f"--tokenizer {tok_dir} is not a folder; train one with `scratchlm tokenizer train`")
    _check_out(args.out, args.overwrite, "manifest.json")
    cfg = _source_config(args)
    stats = SourceStats()
    source = {"inputs": [str(p) for p in args.input], "val_inputs": [str(p) for p in args.val_input or []],
              "val_fraction": None if args.val_input else args.val_fraction, "seed": args.seed or 0}
    kw = dict(num_workers=args.workers, batch_size=args.batch_size, source=source, progress=not args.quiet)
    if args.val_input:
        val_stats = SourceStats()
        manifest = write_shards(args.out, _texts(read_sources(args.input, cfg, stats)),
                                _texts(read_sources(args.val_input, cfg, val_stats)), str(tok_dir), **kw)
        stats.problems += val_stats.problems
    else:
        manifest = write_shards_split(args.out, _texts(read_sources(args.input, cfg, stats)), str(tok_dir),
                                      val_fraction=args.val_fraction, seed=args.seed or 0, **kw)
    for p in stats.problems:
        print(f"skipped {p.path}: {p.problem} ({p.detail})", file=sys.stderr)
    n_tok, n_doc = manifest["n_tokens"], manifest["n_docs"]
    print(f"wrote {args.out}: train {n_doc['train']:,} docs / {n_tok['train']:,} tokens, "
          f"val {n_doc['val']:,} docs / {n_tok['val']:,} tokens ({manifest['dtype']})")
    if n_doc["val"] == 0 and not args.val_input and args.val_fraction > 0:
        print("warning: no document landed in val; raise --val-fraction or pass --val-input", file=sys.stderr)
    return 0


def _register_tokenize(sub) -> None:
    p = sub.add_parser("tokenize", help="tokenize documents into train/val token shards",
                       description="Encode documents with a trained tokenizer into flat train/val token shards "
                                   "(each document = BOS + tokens), in parallel.",
                       epilog=TOKENIZE_EXAMPLES, formatter_class=RAW)
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer folder (from `scratchlm tokenizer train`)")
    _add_source_flags(p)
    g = p.add_argument_group("validation split")
    g.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of documents sent to val, chosen by content hash (default: 0.1)")
    g.add_argument("--val-input", nargs="+", metavar="PATH", default=None,
                   help="use these inputs as the val split instead of --val-fraction")
    p.add_argument("--workers", type=int, default=None, help="encoding processes (default: CPUs, at most 8)")
    p.add_argument("--batch-size", type=int, default=256, help="documents per encoding task (default: 256)")
    add_common(p, out="runs/data", overrides=False, device=False)
    p.set_defaults(func=_tokenize)


# --------------------------------------------------------------------------------------------------

DATA_EXAMPLES = """\
examples:
  scratchlm data prepare --input raw/ --tokenizer runs/tok/tokenizer --out runs/data
  scratchlm data filter --input raw.jsonl --out runs/filtered
  scratchlm data dedup --input runs/filtered/kept.jsonl --out runs/dedup
  scratchlm data tokenize --tokenizer runs/tok/tokenizer --input clean.jsonl --out runs/data
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="ingest, filter, deduplicate and tokenize text",
                              description="The data pipeline: sources -> normalise -> quality and toxicity filters "
                                          "-> exact and MinHash dedup -> token shards.",
                              epilog=DATA_EXAMPLES, formatter_class=RAW)
    sub = p.add_subparsers(dest="data_command", metavar="COMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    _register_tokenize(sub)
    try:  # TinyWorld's `data synth`, when that module exists
        from scratchlm.cli.data_synth import add_synth_parser
    except ModuleNotFoundError as e:
        if e.name != "scratchlm.cli.data_synth":
            raise
    else:
        add_synth_parser(sub)
