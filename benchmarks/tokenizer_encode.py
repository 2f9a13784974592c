"""Encode throughput (MB/s, one process, one thread): our BPE with the tiktoken backend vs tiktoken running GPT-2's
encoding on the same text; plus our pure-Python fallback. Best of --repeats runs, after one warm-up.
Text: the ~8 MB training corpus (TinyStories, Gutenberg, Tiny Shakespeare); the fallback gets the first 1 MB.
Run: .venv/bin/python benchmarks/tokenizer_encode.py [--tokenizer DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
TRAIN = [DATA / "tinystories", DATA / "gutenberg", DATA / "tinyshakespeare"]


def best_mb_s(fn, text: str, repeats: int) -> tuple[float, int]:
    n = len(fn(text))  # warm-up (regex compile, caches)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - t0)
    return len(text.encode("utf-8")) / 1e6 / best, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", type=Path, default=None, help="a saved tokenizer (default: train one, 8192)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} not found; this benchmark needs ../shared/data")
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    from scratchlm.tokenizer import BPETokenizer, load_tokenizer, train_bpe
    from scratchlm.tokenizer.pretokenize import GPT2_PATTERN

    files = sorted(str(f) for d in TRAIN for f in d.rglob("*.txt"))
    text = "".join(Path(f).read_bytes().decode("utf-8") for f in files)
    ours = load_tokenizer(args.tokenizer) if args.tokenizer else train_bpe(files, 8192, progress=False)
    fallback = BPETokenizer(ours.merges, pattern=ours.pattern, backend="python")
    gpt2_dir = DATA / "gpt2-tokenizer"
    gpt2 = tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, special_tokens={"<|endoftext|>": 50256},
                             mergeable_ranks=data_gym_to_mergeable_bpe_ranks(str(gpt2_dir / "vocab.bpe"),
                                                                             str(gpt2_dir / "encoder.json")))
    mb = len(text.encode("utf-8")) / 1e6
    ours_s, n_ours = best_mb_s(ours.encode, text, args.repeats)
    gpt2_s, n_gpt2 = best_mb_s(lambda t: gpt2.encode(t, disallowed_special=()), text, args.repeats)
    small = text[:1_000_000]
    fb_s, _ = best_mb_s(fallback.encode, small, 1)
    fallback._cache.clear()
    t0 = time.perf_counter()
    fallback.encode(small)
    cold = len(small.encode()) / 1e6 / (time.perf_counter() - t0)
    print(f"text: {mb:.1f} MB; ours vocab {ours.vocab_size} ({n_ours:,} tokens), GPT-2 ({n_gpt2:,} tokens)")
    print(f"ours (tiktoken backend)   : {ours_s:7.2f} MB/s")
    print(f"tiktoken GPT-2            : {gpt2_s:7.2f} MB/s")
    print(f"ratio ours / tiktoken     : {ours_s / gpt2_s:7.2f}x   (goal >= 0.9x)")
    print(f"ours (pure-Python fallback): {fb_s:6.2f} MB/s warm cache, {cold:.2f} MB/s cold (first 1 MB)")
    print(f"loadavg: {open('/proc/loadavg').read().strip()}   cpus: {os.cpu_count()}")


if __name__ == "__main__":
    main()
