"""Decode speed of our engine vs Hugging Face transformers' `generate` on the same weights.

Batch 1, CPU, greedy, 256 new tokens (end-of-text ignored so both generate exactly 256), on a ~8M and a ~55M
Llama with random weights (speed does not depend on what the weights learned). Ours runs float32, bfloat16,
weight-only int8 and weight-only int4 (groups of --group-size) through both of its matmuls: "int4" is torch's fused
CPU kernel with bf16 activations, "int4-unpack" dequantizes on every call in float32 (the fallback for other
devices). HF runs float32 with its default dynamic cache.
Each figure is the best of --repeats runs, so background load hurts less; the ratios come from the same run.
Each variant's size is given in memory (its state dict) and on disk (that state dict as safetensors).

    .venv/bin/python benchmarks/inference_vs_hf.py [--threads 2] [--new-tokens 256] [--repeats 3] [--group-size 64]

Also reports the quality cost of bf16, int8 and int4 against float32: mean KL(fp32 || variant) of next-token
distributions and the fraction of positions where the greedy token agrees, first over the generated text of the
random models, then, where it means more, on held-out TinyWorld text for a small byte-level model trained here
for --train-steps steps (int4 at group sizes 32, 64 and 128).
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

import torch

from scratchlm.inference.engine import Engine
from scratchlm.inference.quant import quantize_int4, quantize_int8
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
def quality(ref: Transformer, other: Transformer, ids: list[int], window: int = 1024) -> tuple[float, float]:
    kls, agree = [], []
    for k in range(0, len(ids), window):
        x = torch.tensor([ids[k:k + window]])
        p = torch.log_softmax(ref(x).float(), -1)  # (1, T, V)
        q = torch.log_softmax(other(x).float(), -1)
        kls.append((p.exp() * (p - q)).sum(-1).flatten())
        agree.append((p.argmax(-1) == q.argmax(-1)).flatten())
    return float(torch.cat(kls).mean()), float(torch.cat(agree).float().mean())


def sizes_mb(model: torch.nn.Module) -> tuple[float, float]:
    """(MB in memory, MB on disk): the model's state dict, and that state dict written as safetensors."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items() if v is not None}
    memory = sum(v.numel() * v.element_size() for v in state.values())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file(state, str(path))
        disk = path.stat().st_size
    return memory / 1e6, disk / 1e6


def trained_byte_model(steps: int, seed: int = 0) -> tuple[Transformer, list[int]]:
    """A 0.8M-parameter byte-level Llama trained `steps` steps on TinyWorld, and 4096 held-out bytes of its val split:
    trained weights have the uneven rows and outlier columns that random ones lack, which is what int4 meets."""
    import torch.nn.functional as F

    from scratchlm.data.tinyworld import iter_documents

    data = torch.tensor(list("\n".join(iter_documents("train", seed=seed, max_bytes=2_000_000)).encode()))
    held_out = list("\n".join(iter_documents("val", seed=seed, max_bytes=8192)).encode())[:4096]
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(vocab_size=261, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2,
                                    max_seq_len=256))
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    for step in range(steps):
        starts = torch.randint(0, len(data) - 129, (8,))
        x = torch.stack([data[s:s + 129] for s in starts])  # (8, 129)
        loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"  trained {steps} steps: train loss {loss.item():.3f} nats/byte")
    return model.eval().requires_grad_(False), held_out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", 2)))
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", nargs="+", default=list(SIZES))
    ap.add_argument("--group-size", type=int, default=64, help="int4 group size of the speed runs (default: 64)")
    ap.add_argument("--train-steps", type=int, default=200,
                    help="steps of the trained model that the held-out quality report uses (0 = skip it)")
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
        variants = {"fp32": model, "bf16": build(name).to(torch.bfloat16), "int8": quantize_int8(build(name)),
                    "int4": quantize_int4(build(name), args.group_size, kernel="fused"),
                    "int4-unpack": quantize_int4(build(name), args.group_size, kernel="unpack")}
        outs = {}
        for vname, m in variants.items():
            eng = Engine(m, tok)
            eng.generate([prompt], SamplingParams(max_new_tokens=8, temperature=0, ignore_eos=True))  # warm-up
            t, seqs = best_of(lambda: eng.generate([prompt], params), args.repeats)
            outs[vname] = seqs[0].token_ids
            row[f"ours {vname}"] = N / t
        print(f"\n{name} ({n_params / 1e6:.1f}M parameters):")
        for k, v in row.items():
            size = "" if k == "hf fp32" else "   {:6.1f} MB in memory, {:6.1f} MB on disk".format(
                *sizes_mb(variants[k.split()[1]]))
            print(f"  {k:16s} {v:8.1f} tokens/s   {v / row['hf fp32']:.2f}x HF{size}")
        same = outs["fp32"] == hf_tokens
        print(f"  greedy tokens identical to HF (fp32): {same}")
        ids = prompt + outs["fp32"]
        for vname in ("bf16", "int8", "int4", "int4-unpack"):
            kl, agree = quality(model, variants[vname], ids)
            print(f"  quality {vname}: KL(fp32||{vname}) = {kl:.2e} nats/token, greedy agreement {agree:.1%}")
    if args.train_steps > 0:
        print("\nquality on held-out TinyWorld text (byte-level model trained here, vs its fp32 self):")
        model, held_out = trained_byte_model(args.train_steps)
        variants = {"bf16": copy.deepcopy(model).to(torch.bfloat16), "int8": quantize_int8(copy.deepcopy(model))}
        for g in (32, 64, 128):
            variants[f"int4 g{g}"] = quantize_int4(copy.deepcopy(model), g)
        for vname, m in variants.items():
            kl, agree = quality(model, m, held_out, window=256)
            print(f"  {vname:9s} KL(fp32||{vname}) = {kl:.2e} nats/token, greedy agreement {agree:.1%} "
                  f"({len(held_out)} tokens)   {sizes_mb(m)[0]:.2f} MB in memory (fp32 {sizes_mb(model)[0]:.2f})")
    print(f"\nload average at the end: {open('/proc/loadavg').read().split()[0]}")


if __name__ == "__main__":
    main()
