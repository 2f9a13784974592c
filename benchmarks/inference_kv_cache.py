"""Decode speed with the KV cache vs recomputing the whole sequence every step, at 256 and 1024 new tokens.

Without a cache, step t runs the model over all t tokens so far: total work grows as n^2. With the cache, each
step processes one token against stored keys/values: total work grows as n (plus attention reads, n^2 but
tiny). Same model (~8M-parameter Llama, random weights), batch 1, greedy, CPU; outputs must be identical.

    .venv/bin/python benchmarks/inference_kv_cache.py [--threads 1] [--lengths 256 1024]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from scratchlm.inference.engine import Engine
from scratchlm.inference.sampling import SamplingParams
from scratchlm.inference.testing import ByteTokenizer
from scratchlm.model import ModelConfig, Transformer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", 1)))
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=261, d_model=256, n_layers=8, n_heads=4, n_kv_heads=2, max_seq_len=2048)
    model = Transformer(cfg).eval()
    engine = Engine(model, ByteTokenizer())
    prompt = engine.encode("The KV cache stores keys and values of past tokens.")
    print(f"{model.num_params() / 1e6:.1f}M-parameter Llama, {args.threads} thread(s), batch 1, greedy, "
          f"load average {open('/proc/loadavg').read().split()[0]}")
    for n in args.lengths:
        params = SamplingParams(max_new_tokens=n, temperature=0, ignore_eos=True)
        rates, outs = {}, {}
        for use_cache in (True, False):
            seq = engine.make_sequences([prompt], params)[0]
            t0 = time.perf_counter()
            for _ in engine.steps([seq], use_cache=use_cache):
                pass
            rates[use_cache] = n / (time.perf_counter() - t0)
            outs[use_cache] = seq.token_ids
        print(f"{n:5d} new tokens: with cache {rates[True]:8.1f} tok/s, without {rates[False]:7.1f} tok/s -> "
              f"{rates[True] / rates[False]:.1f}x; identical output: {outs[True] == outs[False]}")
    print(f"load average at the end: {open('/proc/loadavg').read().split()[0]}")


if __name__ == "__main__":
    main()
