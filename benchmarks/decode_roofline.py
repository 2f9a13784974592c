"""Decode speed of our engine, eager and compiled, as MFU and MBU of the device (scratchlm/plan/roofline.py).

For each model size and batch: prompts of --prompt-len random tokens, greedy decoding of --new-tokens (end-of-text
ignored), random weights in --dtype. Decode tokens/s counts the steps after the prefill only (batch x (n - 1)
forwards over the decode wall time, the prefill timed apart), best of --repeats after a warm-up that compiled the
graphs. MFU and MBU use the mean context of those steps, prompt + n/2 keys; the compiled path attends to its whole
power-of-two cache bucket (inference/compiled.py), so it reads more than the MBU counts, which is the useful part.

    .venv/bin/python benchmarks/decode_roofline.py                        # CPU: an ~8M Llama, batch 1
    .venv/bin/python benchmarks/decode_roofline.py --sizes llama-1b llama-125m --batch 1 16 --json out.json  # GPU

The peaks come from the device name (plan/roofline.py: hardware_for_device) or --hardware NAME (a catalog name,
e.g. H100 or CPU, the catalog's generic server socket); on a device the catalog does not know, MFU and MBU print
as unknown and only the achieved FLOP/s and bytes/s are shown.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from scratchlm.inference.engine import Engine
from scratchlm.inference.sampling import SamplingParams
from scratchlm.model import PRESETS, ModelConfig, Transformer
from scratchlm.plan.hardware import lookup
from scratchlm.plan.roofline import decode_roofline, hardware_for_device

from inference_vs_hf import SIZES as CPU_SIZES, IdTokenizer  # noqa: E402  (python puts this folder on the path)

# inference_vs_hf.py's CPU sizes (one definition), beside the model presets (llama-125m, llama-350m, llama-1b, ...)
SIZES = {k: ModelConfig(vocab_size=8192, **v) for k, v in CPU_SIZES.items()} | {
    k: v for k, v in PRESETS.items() if k.startswith("llama-")}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def build(cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> Transformer:
    """Random weights made on the device (a 1B model initialised on the CPU takes a minute of the GPU budget)."""
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device=device)
    model.init_weights(seed=0)
    return model.to(dtype).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_decode(engine: Engine, prompts: list[list[int]], params: SamplingParams) -> tuple[float, float, list]:
    """(prefill seconds, decode seconds, sequences): Engine.steps yields once after the prefill, then per step."""
    seqs = engine.make_sequences(prompts, params)
    t0 = time.perf_counter()
    t_prefill = None
    for _ in engine.steps(seqs):
        if t_prefill is None:
            sync(engine.device)
            t_prefill = time.perf_counter()
    sync(engine.device)
    return t_prefill - t0, time.perf_counter() - t_prefill, seqs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=None, choices=list(SIZES),
                    help="default: llama-8m on CPU, llama-1b and llama-125m on a GPU")
    ap.add_argument("--batch", nargs="+", type=int, default=[1])
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hardware", default=None, help="catalog name for the peaks (default: from the device name)")
    ap.add_argument("--no-compile", action="store_true", help="eager only (no torch.compile, no C++ compiler needed)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", 2)))
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    hw = lookup(args.hardware) if args.hardware else hardware_for_device(device_name)
    sizes = args.sizes or (["llama-1b", "llama-125m"] if device.type == "cuda" else ["llama-8m"])
    P, N = args.prompt_len, args.new_tokens
    if N < 2:
        raise SystemExit("--new-tokens must be >= 2: the first token comes from the prefill, decode starts after it")
    params = SamplingParams(max_new_tokens=N, temperature=0, ignore_eos=True)
    peaks = (f"{hw.name}: {hw.peak_flops(args.dtype) / 1e12:.0f} TFLOP/s {args.dtype}, {hw.bandwidth_gbs:.0f} GB/s"
             if hw else "peaks unknown (pass --hardware NAME for a catalog entry): MFU and MBU not computed")
    print(f"torch {torch.__version__}, {device_name}, {args.dtype}, prompt {P}, {N} new tokens, greedy; {peaks}")
    if device.type == "cpu":
        print(f"{args.threads} threads, load average {open('/proc/loadavg').read().split()[0]}")
    rows = []
    for name in sizes:
        cfg = SIZES[name]
        if P + N > cfg.max_seq_len:
            raise SystemExit(f"--prompt-len + --new-tokens = {P + N} exceeds {name}'s context {cfg.max_seq_len}")
        model = build(cfg, device, DTYPES[args.dtype])
        tok = IdTokenizer(cfg.vocab_size)
        print(f"\n{name} ({model.num_params() / 1e6:.0f}M parameters)")
        for B in args.batch:
            gen = torch.Generator().manual_seed(B)
            prompts = torch.randint(300, cfg.vocab_size, (B, P), generator=gen).tolist()
            outs = {}
            for variant in ["eager"] + ([] if args.no_compile else ["compiled"]):
                engine = Engine(model, tok, compile=variant == "compiled")
                timed_decode(engine, prompts, params)  # warm-up; compiles this (batch, bucket) graph
                compile_s = engine.compiled.compile_seconds if engine.compiled else 0.0
                best = min((timed_decode(engine, prompts, params) for _ in range(args.repeats)), key=lambda r: r[1])
                prefill_s, decode_s, seqs = best
                outs[variant] = [s.token_ids for s in seqs]
                tps = B * (N - 1) / decode_s
                r = decode_roofline(cfg, B, P + N // 2, args.dtype, tps, hw)
                row = dict(size=name, batch=B, variant=variant, decode_tokens_per_s=tps, prefill_s=prefill_s,
                           compile_s=compile_s, device=device_name, dtype=args.dtype, prompt_len=P, new_tokens=N,
                           **r)
                rows.append(row)
                util = (f"MFU {100 * r['mfu']:6.2f}%  MBU {100 * r['mbu']:5.1f}%  (roof {r['bound_tokens_per_s']:,.0f}"
                        f" tokens/s)" if hw else f"{r['flops_per_s'] / 1e9:8.2f} GFLOP/s  {r['bytes_per_s'] / 1e9:6.2f}"
                        " GB/s  (MFU, MBU unknown)")
                extra = f"  compile {compile_s:.1f} s, once" if variant == "compiled" else ""
                print(f"  batch {B:3d} {variant:8s} {tps:10,.1f} tokens/s  {util}{extra}")
            if "compiled" in outs:
                print(f"  batch {B:3d} compiled greedy ids identical to eager: {outs['compiled'] == outs['eager']}")
        del model
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(rows, f, indent=1)
        os.replace(tmp, args.json)  # atomic: a killed run leaves the old file, never half of one
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
