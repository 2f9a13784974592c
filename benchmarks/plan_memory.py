"""Planner memory estimates vs measurement, and vs Korthikanti et al.'s formula (the named peer).

    .venv/bin/python benchmarks/plan_memory.py            # CPU: saved-activation bytes of one forward
    .venv/bin/python benchmarks/plan_memory.py --cuda     # also a full AdamW step on CUDA vs max_memory_allocated

Prints, per config, the planner's estimate, the measurement and their ratio; and the paper's per-layer formula
(34 s b h + 5 a s^2 b, for a GPT layer with dropout and materialised scores) against our per-layer count, to
show how far the textbook number is from what a flash-attention, SwiGLU model saves.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F

from scratchlm.model import ModelConfig, Transformer
from scratchlm.plan.layout import Layout, memory_per_gpu
from scratchlm.plan.measure import saved_activation_bytes
from scratchlm.plan.memory import activation_bytes_per_layer, korthikanti_layer_bytes
from scratchlm.plan.shape import ModelShape

MIB = 2**20
CPU_CASES = [  # preset, overrides, precision, micro-batch, seq
    ("llama-5m", {}, "fp32", 4, 512),
    ("llama-5m", {}, "amp", 4, 512),
    ("llama-20m", {}, "amp", 2, 1024),
    ("gpt2-124m", {"n_layers": 4}, "fp32", 2, 1024),
    ("gpt2-124m", {"n_layers": 4}, "amp", 2, 1024),
]


def estimate(cfg, precision, B, T, ckpt="none"):
    mem = memory_per_gpu(ModelShape.from_config(cfg), Layout(micro_batch=B, seq_len=T, checkpointing=ckpt), precision)
    return mem["bytes"]


def cpu(ckpt: str) -> None:
    print(f"CPU, saved tensors at the forward/backward boundary (checkpointing={ckpt})")
    print(f"{'config':34s} {'planner MiB':>12s} {'measured MiB':>13s} {'ratio':>7s}")
    for name, ov, prec, B, T in CPU_CASES:
        torch.manual_seed(0)
        cfg = ModelConfig.from_preset(name, **ov)
        model = Transformer(cfg)
        idx = torch.randint(0, cfg.vocab_size, (B, T))
        meas = saved_activation_bytes(model, idx, torch.bfloat16 if prec == "amp" else None,
                                      checkpointing=1 if ckpt == "full" else 0)["total"]
        b = estimate(cfg, prec, B, T, ckpt)
        est = b["activations"] + b.get("weight copies", 0)
        print(f"{name + ' ' + prec + f' b{B} s{T}':34s} {est / MIB:12.1f} {meas / MIB:13.1f} {est / meas:7.3f}")


def korthikanti_vs_ours() -> None:
    print("\nper-layer activations, 16-bit, b=1: Korthikanti's GPT formula vs our model's count (flash, SwiGLU)")
    for name, T in (("llama-1b", 2048), ("gpt2-124m", 1024)):
        cfg = ModelConfig.from_preset(name)
        shape = ModelShape.from_config(cfg)
        ours = activation_bytes_per_layer(shape, 1, T, 2, "flash")["stored"]
        paper = korthikanti_layer_bytes(T, 1, cfg.d_model, cfg.n_heads)
        paper_sel = korthikanti_layer_bytes(T, 1, cfg.d_model, cfg.n_heads, recompute="selective")
        print(f"  {name:10s} s={T}: paper {paper / MIB:7.1f} MiB (selective {paper_sel / MIB:6.1f}), "
              f"ours {ours / MIB:6.1f} MiB, ratio ours/paper-selective {ours / paper_sel:.2f}")


def cuda() -> None:
    print("\nCUDA, one AdamW step: max_memory_allocated vs planner total")
    print(f"{'config':34s} {'planner MiB':>12s} {'measured MiB':>13s} {'ratio':>7s}")
    cases = (("llama-125m", "amp", 8, 2048), ("llama-350m", "amp", 4, 2048), ("gpt2-124m", "amp", 8, 1024))
    for name, prec, B, T in cases:
        torch.manual_seed(0)
        cfg = ModelConfig.from_preset(name)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        model = Transformer(cfg).cuda()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        idx = torch.randint(0, cfg.vocab_size, (B, T), device="cuda")
        for _ in range(2):  # the second step has optimizer states allocated from the start
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(idx)
            loss = F.cross_entropy(logits.float().flatten(0, 1), idx.flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            del logits, loss
        meas = torch.cuda.max_memory_allocated() - base
        est = estimate(cfg, prec, B, T)["total"]
        print(f"{name + ' ' + prec + f' b{B} s{T}':34s} {est / MIB:12.1f} {meas / MIB:13.1f} {est / meas:7.3f}")
        del model, opt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cuda", action="store_true", help="also measure a training step on CUDA")
    args = ap.parse_args()
    print(f"loadavg: {open('/proc/loadavg').read().strip() if os.path.exists('/proc/loadavg') else 'n/a'}")
    cpu("none")
    cpu("full")
    korthikanti_vs_ours()
    if args.cuda or torch.cuda.is_available():
        if torch.cuda.is_available():
            cuda()
        else:
            print("\nno CUDA device: skipped the GPU comparison")


if __name__ == "__main__":
    main()
