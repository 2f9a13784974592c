"""Compiled decoding (scratchlm/inference/compiled.py) vs eager and vs transformers' `generate`, same weights.

Batch 1, CPU, greedy, 256 new tokens (end-of-text ignored), on the ~8M and ~55M random Llamas of
benchmarks/inference_vs_hf.py. Rows: transformers fp32 (its default dynamic cache), ours eager fp32, and ours
compiled in fp32, bf16 and weight-only int8 (with float32 activations: int8 weights with bf16 activations do not
compile on CPU, see compiled.py). Decode speed is the best of --repeats runs after a warm-up that compiled the
graph; compile time (the warm-up's first decode step: tracing + inductor + the C++ build) is printed apart, since
a process pays it once per (batch size, length bucket). It also says whether compiled greedy tokens equal eager
ones (fp32; they must) and HF's.

    .venv/bin/python benchmarks/inference_compiled.py [--threads 2] [--new-tokens 256] [--repeats 3]
        [--sizes llama-8m llama-55m] [--mode default|max-autotune-no-cudagraphs]

Compile times depend on inductor's on-disk cache (/tmp/torchinductor_$USER): the first run on a machine pays
the full C++ build; set TORCHINDUCTOR_CACHE_DIR to an empty folder to measure that.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from scratchlm.inference.engine import Engine
from scratchlm.inference.quant import quantize_int8
from scratchlm.inference.sampling import SamplingParams

# the ~8M and ~55M random Llamas, the byte tokenizer widened to their vocabulary and the transformers twin: one
# definition, in the benchmark these figures are compared with (python puts this folder on the path)
from inference_vs_hf import SIZES, IdTokenizer, build, hf_model  # noqa: E402


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", 2)))
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--mode", default=None, help="torch.compile mode (default: compiled.py's choice for the device)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    N = args.new_tokens
    prompt = list(range(10, 42))  # 32 prompt tokens: 32 + 256 slots fall in the 512 bucket
    params = SamplingParams(max_new_tokens=N, temperature=0, ignore_eos=True)
    print(f"torch {torch.__version__}, {args.threads} threads, batch 1, greedy, {N} new tokens, "
          f"compile mode {args.mode or 'default'}, load average {open('/proc/loadavg').read().split()[0]}")
    for name in args.sizes:
        model = build(name)
        tok = IdTokenizer(model.config.vocab_size)
        rows: dict[str, float] = {}
        compile_s: dict[str, float] = {}
        outs: dict[str, list[int]] = {}

        hf = hf_model(model)
        x = torch.tensor([prompt])
        with torch.inference_mode():
            hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=8, do_sample=False, pad_token_id=0)
            t, hf_out = best_of(lambda: hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=N,
                                                    min_new_tokens=N, do_sample=False, pad_token_id=0), args.repeats)
        rows["hf fp32"], outs["hf"] = N / t, hf_out[0, len(prompt):].tolist()
        del hf

        variants = {"eager fp32": (model, False), "compiled fp32": (model, True),
                    "compiled bf16": (build(name).to(torch.bfloat16), True),
                    # float32 activations: inductor cannot lower int8 x bf16 (compiled.py says why)
                    "compiled int8": (quantize_int8(build(name), dtype=torch.float32), True)}
        for vname, (m, compile) in variants.items():
            eng = Engine(m, tok, compile=args.mode or True) if compile else Engine(m, tok)
            eng.generate([prompt], params)  # warm-up: compiles the (1, 512) graph
            if compile:
                compile_s[vname] = eng.compiled.compile_seconds
            t, seqs = best_of(lambda: eng.generate([prompt], params), args.repeats)
            rows[vname], outs[vname] = N / t, seqs[0].token_ids

        print(f"\n{name} ({model.num_params() / 1e6:.1f}M parameters):")
        for k, v in rows.items():
            extra = f"   (compile {compile_s[k]:.1f} s, once)" if k in compile_s else ""
            print(f"  {k:14s} {v:8.1f} tokens/s   {v / rows['hf fp32']:.2f}x HF{extra}")
        print(f"  compiled fp32 greedy tokens identical to eager: {outs['compiled fp32'] == outs['eager fp32']}, "
              f"to HF: {outs['compiled fp32'] == outs['hf']}")
    print(f"\nload average at the end: {open('/proc/loadavg').read().split()[0]}")


if __name__ == "__main__":
    main()
