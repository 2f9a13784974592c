"""Speculative decoding vs plain decoding: a draft/target pair of run folders, greedy, batch 1.

    .venv/bin/python benchmarks/inference_speculative.py --target runs/pretrain --draft runs/draft
    .venv/bin/python benchmarks/inference_speculative.py            # random-init pair (a smoke test)

Reports, per drafter (the draft model, and prompt lookup), tokens/s of both, the speedup, the acceptance
rate, tokens per target forward, and whether the output is identical to plain greedy decoding (it must be).
A random-init pair is only a smoke test: untrained models tend to repeat one token, so they agree far more
than trained models do and the speedup says nothing about real text. The goal is >= 1.8x at identical greedy
output with a trained draft ~5-10x smaller than the target.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from scratchlm.inference.engine import Engine
from scratchlm.inference.sampling import SamplingParams
from scratchlm.inference.speculative import SpeculativeConfig, SpeculativeDecoder

PROMPTS = ["Once upon a time, there was a little girl named Lily.", "The little dog ran to the park and",
           "Tom and his mom went to the store. They bought"]


def random_pair():
    from scratchlm.inference.testing import ByteTokenizer
    from scratchlm.model import ModelConfig, Transformer

    torch.manual_seed(0)
    target = Transformer(ModelConfig(vocab_size=261, d_model=512, n_layers=14, n_heads=8, n_kv_heads=4,
                                     max_seq_len=1024)).eval()
    torch.manual_seed(1)
    draft = Transformer(ModelConfig(vocab_size=261, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2,
                                    max_seq_len=1024)).eval()
    return Engine(target, ByteTokenizer()), draft


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=Path, help="target run folder (default: random-init models)")
    ap.add_argument("--draft", type=Path, help="draft run folder (same tokenizer)")
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--adaptive", action="store_true")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", 1)))
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.target is not None:
        if args.draft is None:
            ap.error("--target needs --draft")
        from scratchlm.inference.loading import load_engine, load_model

        engine = load_engine(args.target, device="cpu", dtype=args.dtype)
        draft, _ = load_model(args.draft, device="cpu", dtype=args.dtype)
        desc = f"target {args.target} ({engine.model.num_params() / 1e6:.1f}M), draft {args.draft} " \
               f"({draft.num_params() / 1e6:.1f}M)"
    else:
        engine, draft = random_pair()
        desc = f"random-init target ({engine.model.num_params() / 1e6:.1f}M) and draft ({draft.num_params() / 1e6:.1f}M)"
    print(f"{desc}; greedy, {args.new_tokens} new tokens, {args.threads} thread(s), "
          f"load average {open('/proc/loadavg').read().split()[0]}")
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0, ignore_eos=True)
    cfg = SpeculativeConfig(gamma=args.gamma, adaptive=args.adaptive, gamma_max=max(16, args.gamma))
    prompts = [engine.encode(p) for p in PROMPTS]
    engine.generate([prompts[0]], SamplingParams(max_new_tokens=4, temperature=0))  # warm-up

    t0 = time.perf_counter()
    plain = [engine.generate([p], params)[0] for p in prompts]
    t_plain = time.perf_counter() - t0
    n = sum(len(s.token_ids) for s in plain)
    print(f"plain:          {n / t_plain:8.1f} tokens/s")
    for name, d in (("draft model", draft), ("prompt lookup", None)):
        spec = SpeculativeDecoder(engine, d, cfg)
        t0 = time.perf_counter()
        outs, drafted, accepted, calls = [], 0, 0, 0
        for p in prompts:
            outs.append(spec.generate(p, params))
            drafted, accepted, calls = drafted + spec.stats.drafted, accepted + spec.stats.accepted, \
                calls + spec.stats.target_calls
        t = time.perf_counter() - t0
        same = all(a.token_ids == b.token_ids for a, b in zip(outs, plain))
        print(f"{name:15s} {n / t:8.1f} tokens/s -> speedup {t_plain / t:.2f}x; acceptance "
              f"{accepted / max(1, drafted):.1%}, {n / max(1, calls):.2f} tokens per target call; "
              f"identical to plain greedy: {same}")
    print(f"load average at the end: {open('/proc/loadavg').read().split()[0]}")


if __name__ == "__main__":
    main()
