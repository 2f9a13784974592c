"""`scratchlm data download`: a pretraining corpus from the Hugging Face Hub (or a local mirror), verified."""

from __future__ import annotations

import argparse
from pathlib import Path

from scratchlm.cli.common import out_dir

EXAMPLES = """\
examples:
  # 4 parquet files of FineWeb-Edu's 10B-token sample (each ~2 GB of compressed text), resumable
  scratchlm data download fineweb-edu --shards 4 --out data/fineweb-edu
  scratchlm data prepare --input data/fineweb-edu --out runs/fwe          # reads the folder as it is

  # any dataset on the Hub: name the files with --pattern; --revision pins a commit or branch
  scratchlm data download hf:HuggingFaceFW/fineweb --pattern "sample/10BT/*.parquet" --shards 2 --out data/fw

  # a copy of a dataset repository on a shared disk (no network): same layout, same checks
  scratchlm data download /mnt/datasets/fineweb-edu --shards 4 --out data/fineweb-edu

known names: fineweb-edu, fineweb (HuggingFaceFW/*, the sample/10BT parquet files).
Running the same command again skips the complete files and resumes the others. Every file is checked against
the size and SHA-256 the Hub records; .download.json in --out lists them with the pinned revision.
"""


def add_download_parser(data_subparsers) -> argparse.ArgumentParser:
    """Add `download` under `scratchlm data` (called by scratchlm/cli/data.py)."""
    p = data_subparsers.add_parser(
        "download", help="download a pretraining corpus (FineWeb-Edu, FineWeb, any hf: dataset), verified",
        description="Download the files of a dataset repository into --out, resumable, each checked against its "
                    "recorded size and SHA-256.", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="fineweb-edu, fineweb, hf:OWNER/NAME, or a local folder laid out like a repository")
    p.add_argument("--shards", type=int, default=None, metavar="N",
                   help="the first N matching files, in path order (default: all of them)")
    p.add_argument("--pattern", default=None, metavar="GLOB",
                   help="which files of the repository (default for the known names: sample/10BT/*.parquet)")
    p.add_argument("--revision", default=None, help="a commit, branch or tag of the repository (default: main)")
    p.add_argument("--out", type=out_dir, default=Path("data/download"), help="folder to write (default: data/download)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete --out (only if scratchlm created it) and download again; without it, resume")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (and tracebacks)")
    p.add_argument("-q", "--quiet", action="count", default=0, help="no progress bar")
    p.set_defaults(func=download_handler)
    return p


def download_handler(args) -> int:
    from scratchlm.data.download import download

    m = download(args.source, Path(args.out), shards=args.shards, pattern=args.pattern, revision=args.revision,
                 progress=args.quiet == 0, overwrite=args.overwrite)
    if args.quiet <= 0:
        print(f"{args.out}: {len(m['files'])} files, {m['bytes'] / 1e9:.2f} GB from {m['repository']}; next: "
              f"scratchlm data prepare --input {args.out} --out runs/prepared")
    return 0
