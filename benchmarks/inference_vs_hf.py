"""Decode speed of our engine vs Hugging Face transformers' `generate` on the same weights.

Batch 1, CPU, greedy, 256 new tokens (end-of-text ignored so both generate exactly 256), on a ~8M and a ~55M
Llama with random weights (speed does not depend on what the weights learned). Ours runs float32, bfloat16 and
weight-only int8; HF runs float32 with its default dynamic cache. Each figure is the best of --repeats runs, so
background load hurts less; the ratios come from the same run.

    .venv/bin/python benchmarks/inference_vs_hf.py [--threads 2] [--new-tokens 256] [--repeats 3]

Also reports the quality cost of bf16 and int8 against float32: mean KL(fp32 || variant) of next-token
distributions over the generated text and the fraction of positions where the greedy token agrees.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from scratchlm.inference.engine import Engine
from scratchlm.inference.quant import quantize_int8
from scratchlm.inference.sampling import SamplingParams
from scratchlm.inference.testing import ByteTokenizer
from scratchlm.model import ModelConfig, Transformer
from scratchlm.model.hf import hf_config_from, to_hf_state_dict

# ~8M and ~55M parameters (total) at an 8192 vocabulary
SIZES = {
    "llama-8m": dict(d_model=256, n_layers=8, n_heads=4, n_kv_heads=2, max_seq_len=1024),
    "llama-55m": dict(d_model=512, n_layers=17, n_heads=8, n_kv_heads=4, max_seq_len=1024),
}


class IdTokenizer(ByteTokenizer):
    """Byte tokenizer padded to the model's vocabulary (ids >= 261 decode to nothing)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab_size = vocab

    def decode_bytes(self, ids):
        return super().decode_bytes([i for i in ids if i < 261])


def build(name: str, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=8192, **SIZES[name])
    return Transformer(cfg).eval()


def hf_model(model: Transformer):
    import transformers

    hf_cfg = hf_config_from(model.config)
    config = transformers.LlamaConfig(**{k: v for k, v in hf_cfg.items() if k not in ("architectures", "model_type")})
    hf = transformers.LlamaForCausalLM(config).eval()
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model, model.config), strict=False)
    assert not unexpected and all("lm_head" in m for m in missing), (missing, unexpected)
    hf.tie_weights()
    return hf


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


@torch.inference_mode()
def quality(ref: Transformer, other: Transformer, ids: list[int]) -> tuple[float, float]:
    x = torch.tensor([ids])
    p = torch.log_softmax(ref(x).float(), -1)
    q = torch.log_softmax(other(x).float(), -1)
    kl = float((p.exp() * (p - q)).sum(-1).mean())
    agree = float((p.argmax(-1) == q.argmax(-1)).float().mean())
    return kl, agree


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", 2)))
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", nargs="+", default=list(SIZES))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    N = args.new_tokens
    prompt = list(range(10, 42))  # 32 prompt tokens
    print(f"torch {torch.__version__}, {args.threads} threads, batch 1, greedy, {N} new tokens, "
          f"load average {open('/proc/loadavg').read().split()[0]}")
    for name in args.sizes:
        model = build(name)
        n_params = model.num_params()
        tok = IdTokenizer(model.config.vocab_size)
        params = SamplingParams(max_new_tokens=N, temperature=0, ignore_eos=True)
        row = {}

        # --- Hugging Face
        hf = hf_model(model)
        x = torch.tensor([prompt])
        with torch.inference_mode():
            hf.generate(x, max_new_tokens=8, do_sample=False)  # warm-up
            t_hf, hf_out = best_of(lambda: hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=N,
                                                       min_new_tokens=N, do_sample=False, pad_token_id=0), args.repeats)
        hf_tokens = hf_out[0, len(prompt):].tolist()
        row["hf fp32"] = N / t_hf

        # --- ours
        variants = {"fp32": model, "bf16": build(name).to(torch.bfloat16), "int8": quantize_int8(build(name))}
        outs = {}
        for vname, m in variants.items():
            eng = Engine(m, tok)
            eng.generate([prompt], SamplingParams(max_new_tokens=8, temperature=0, ignore_eos=True))  # warm-up
            t, seqs = best_of(lambda: eng.generate([prompt], params), args.repeats)
            outs[vname] = seqs[0].token_ids
            row[f"ours {vname}"] = N / t
        print(f"\n{name} ({n_params / 1e6:.1f}M parameters):")
        for k, v in row.items():
            print(f"  {k:10s} {v:8.1f} tokens/s   {v / row['hf fp32']:.2f}x HF")
        same = outs["fp32"] == hf_tokens
        print(f"  greedy tokens identical to HF (fp32): {same}")
        ids = prompt + outs["fp32"]
        for vname in ("bf16", "int8"):
            kl, agree = quality(model, variants[vname], ids)
            print(f"  quality {vname}: KL(fp32||{vname}) = {kl:.2e} nats/token, greedy agreement {agree:.1%}")
    print(f"\nload average at the end: {open('/proc/loadavg').read().split()[0]}")


if __name__ == "__main__":
    main()
