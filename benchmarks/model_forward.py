"""Training-step throughput of our Transformer vs Hugging Face transformers on the same weights.

Forward + backward (cross-entropy computed outside both models, the same way), tokens per second, median of
interleaved rounds so that background load hits both sides alike.

    .venv/bin/python benchmarks/model_forward.py                       # llama-5m-shaped, fp32, CPU
    .venv/bin/python benchmarks/model_forward.py --arch gpt2 --preset gpt2-124m --d-model 384 --layers 6
    .venv/bin/python benchmarks/model_forward.py --dtype bf16          # bf16 autocast on both sides
    .venv/bin/python benchmarks/model_forward.py --device cuda --preset llama-125m --batch 16 --seq 1024 --compile
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scratchlm.model import ModelConfig, Transformer  # noqa: E402
from scratchlm.model.hf import hf_config_from, to_hf_state_dict  # noqa: E402


def build(args):
    overrides = {"vocab_size": args.vocab, "max_seq_len": max(args.seq, 64)}
    if args.d_model:
        overrides.update(d_model=args.d_model, n_heads=max(1, args.d_model // 64))
        if args.arch == "llama":
            overrides["n_kv_heads"] = overrides["n_heads"]  # keep GQA ratio simple when resizing
    if args.layers:
        overrides["n_layers"] = args.layers
    cfg = ModelConfig.from_preset(args.preset, **overrides)
    torch.manual_seed(0)
    ours = Transformer(cfg).to(args.device)
    import transformers

    hf_cls = transformers.LlamaForCausalLM if cfg.family == "llama" else transformers.GPT2LMHeadModel
    hf_cfg = hf_cls.config_class.from_dict(hf_config_from(cfg))
    hf_cfg._attn_implementation = "sdpa"
    hf = hf_cls(hf_cfg).to(args.device)
    hf.load_state_dict(to_hf_state_dict(ours, cfg), strict=False)
    if cfg.tie_embeddings:
        hf.tie_weights()
    return cfg, ours, hf


def step_fn(model, is_hf, args):
    def run(idx, targets):
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
            logits = model(idx).logits if is_hf else model(idx)
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))
        loss.backward()
        return loss

    return torch.compile(run) if args.compile else run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=["llama", "gpt2"], default="llama")
    ap.add_argument("--preset", default=None, help="default: llama-5m or gpt2-124m")
    ap.add_argument("--d-model", type=int, default=None)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="steps per round")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.preset = args.preset or ("llama-5m" if args.arch == "llama" else "gpt2-124m")

    cfg, ours, hf = build(args)
    idx = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device=args.device)
    targets = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device=args.device)
    sides = {"scratchlm": step_fn(ours, False, args), "transformers": step_fn(hf, True, args)}
    models = {"scratchlm": ours, "transformers": hf}
    losses = {}
    for name, fn in sides.items():  # warm-up (and compile)
        for _ in range(2):
            models[name].zero_grad(set_to_none=True)
            losses[name] = fn(idx, targets).item()
    times = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, fn in sides.items():
            if args.device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                models[name].zero_grad(set_to_none=True)
                fn(idx, targets)
            if args.device == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - t0) / args.steps)
    tokens = args.batch * args.seq
    tps = {name: tokens / statistics.median(t) for name, t in times.items()}
    print(f"model: {args.preset} d={cfg.d_model} L={cfg.n_layers} H={cfg.n_heads} KV={cfg.n_kv_heads} "
          f"vocab={cfg.vocab_size} params={ours.num_params():,}  batch={args.batch}x{args.seq} {args.dtype} "
          f"device={args.device} threads={torch.get_num_threads()} compile={args.compile}")
    print(f"same loss on both sides: {losses['scratchlm']:.5f} vs {losses['transformers']:.5f}")
    for name, v in tps.items():
        print(f"{name:>13}: {v:10,.0f} tokens/s  (fwd+bwd, median of {args.rounds} rounds)")
    print(f"ratio scratchlm / transformers: {tps['scratchlm'] / tps['transformers']:.2f}x")
    if hasattr(os, "getloadavg"):
        print("load average: %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()
