"""TinyWorld generation speed vs. reading real text from disk.

    .venv/bin/python benchmarks/tinyworld_synth.py [--mb 20]

Peer: reading the same number of bytes of TinyStories (../shared/data/tinystories/tinystories_val_head.txt,
re-read as often as needed) and splitting it into documents, i.e. what using a real corpus costs at the minimum.
Prints MB/s for both, their ratio, the end-to-end `synthesize` time and the load average (other processes on a
shared machine slow both sides).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scratchlm.data.tinyworld import iter_documents, synthesize  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=20.0, help="megabytes of text to generate (default 20)")
    args = ap.parse_args()
    n = int(args.mb * 1e6)
    print(f"load average before: {os.getloadavg()}")

    t = time.perf_counter()
    size = docs = 0
    for d in iter_documents("train", seed=0, max_bytes=n):
        size += len(d) + 2
        docs += 1
    gen = time.perf_counter() - t
    print(f"TinyWorld iter_documents: {size / 1e6:.1f} MB, {docs:,} docs in {gen:.2f}s = {size / 1e6 / gen:.1f} MB/s")

    peer = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinystories" / "tinystories_val_head.txt"
    if peer.exists():
        t = time.perf_counter()
        got = pdocs = 0
        while got < n:
            with open(peer, encoding="utf-8") as f:
                for doc in f.read().split("\n\n"):
                    got += len(doc) + 2
                    pdocs += 1
        read = time.perf_counter() - t
        print(f"peer, read+split TinyStories: {got / 1e6:.1f} MB, {pdocs:,} docs in {read:.2f}s = "
              f"{got / 1e6 / read:.1f} MB/s")
        print(f"ratio TinyWorld generation / reading real text: {(size / gen) / (got / read):.3f}")
    else:
        print(f"peer skipped: {peer} not found")

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        m = synthesize(tmp, n, seed=0, progress=False)
        dt = time.perf_counter() - t
        recs = sum(f.get("records", 0) for f in m["files"].values())
        print(f"synthesize({args.mb:g}MB): text + {recs:,} JSONL records in {dt:.2f}s")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
