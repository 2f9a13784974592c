"""Compiled decoding (scratchlm/inference/compiled.py) vs eager and vs transformers' `generate`, same weights.

Batch 1, CPU, greedy, 256 new tokens (end-of-text ignored), on the ~8M and ~55M random Llamas of
benchmarks/inference_vs_hf.py. Rows: transformers fp32 (its default dynamic cache), ours eager fp32, and ours
compiled in fp32, bf16 and weight-only int8 (with float32 activations: int8 weights with bf16 activations do not
compile on CPU, see compiled.py); --python-wrapper adds compiled fp32 without inductor's cpp_wrapper (the
setting compiled.py adds on CPU), to show what it pays. After a warm-up that compiled every graph, the rows run
interleaved (HF, ours, ..., HF, ours, ...) --repeats times and each figure is the median, so load from other
programs on a shared machine falls on every row alike; ratios are of medians, and "paired" is the median
over rounds of HF's time over the row's time in the same round. Compile time (the warm-up's first
decode step: tracing + inductor + the C++ build) is printed apart, since a process pays it once per (batch
size, length bucket). It also says whether compiled greedy tokens equal eager ones (fp32; they must) and HF's.

    .venv/bin/python benchmarks/inference_compiled.py [--threads 2] [--new-tokens 256] [--repeats 5]
        [--sizes llama-8m llama-55m] [--mode default|max-autotune-no-cudagraphs] [--python-wrapper]
        [--rows bf16 int8]

Compile times depend on inductor's on-disk cache (/tmp/torchinductor_$USER): the first run on a machine pays
the full C++ build; set TORCHINDUCTOR_CACHE_DIR to an empty folder to measure that.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from scratchlm.inference.compiled import CompiledDecoder
from scratchlm.inference.engine import Engine
from scratchlm.inference.quant import quantize_int8
from scratchlm.inference.sampling import SamplingParams

# the ~8M and ~55M random Llamas, the byte tokenizer widened to their vocabulary and the transformers twin: one
# definition, in the benchmark these figures are compared with (python puts this folder on the path)
from inference_vs_hf import SIZES, IdTokenizer, build, hf_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", 2)))
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--mode", default=None, help="torch.compile mode (default: compiled.py's choice for the device)")
    ap.add_argument("--python-wrapper", action="store_true", help="add compiled fp32 without inductor's cpp_wrapper")
    ap.add_argument("--rows", nargs="*", default=["bf16", "int8"], choices=["bf16", "int8"],
                    help="compiled rows besides fp32 (--rows with nothing after it: fp32 only)")
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
        compile_s: dict[str, float] = {}
        outs: dict[str, list[int]] = {}

        hf = hf_model(model)
        x = torch.tensor([prompt])

        def hf_run():
            with torch.inference_mode():
                out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=N, min_new_tokens=N,
                                  do_sample=False, pad_token_id=0)
            return out[0, len(prompt):].tolist()

        runs = {"hf fp32": hf_run}
        variants = {"eager fp32": (model, False), "compiled fp32": (model, True),
                    "compiled bf16": (build(name).to(torch.bfloat16), True),
                    # float32 activations: inductor cannot lower int8 x bf16 (compiled.py says why)
                    "compiled int8": (quantize_int8(build(name), dtype=torch.float32), True)}
        if args.python_wrapper:
            variants["compiled fp32 py"] = (model, "py")
        variants = {k: v for k, v in variants.items() if "fp32" in k or k.split()[-1] in args.rows}
        for vname, (m, compile) in variants.items():
            eng = Engine(m, tok, compile=args.mode or True) if compile is True else Engine(m, tok)
            if compile == "py":
                eng.compiled = CompiledDecoder(m, mode=args.mode, cpp_wrapper=False)
            t0 = time.perf_counter()
            eng.generate([prompt], params)  # warm-up: compiles the (1, 512) graph
            if compile:
                compile_s[vname] = eng.compiled.compile_seconds
                print(f"  {name} {vname}: warm-up {time.perf_counter() - t0:.1f} s", flush=True)
            runs[vname] = (lambda e: lambda: e.generate([prompt], params)[0].token_ids)(eng)
        hf_run()  # warm-up
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.repeats):  # interleaved: every row sees the same background load
            for k, fn in runs.items():
                t0 = time.perf_counter()
                outs[k] = fn()
                times[k].append(time.perf_counter() - t0)
        rows = {k: N / statistics.median(v) for k, v in times.items()}
        outs["hf"] = outs["hf fp32"]

        print(f"\n{name} ({model.num_params() / 1e6:.1f}M parameters):")
        for k, v in rows.items():
            extra = f"   (compile {compile_s[k]:.1f} s, once)" if k in compile_s else ""
            # paired: HF's time over this row's in the same round, median over rounds: robust to load that
            # changes between rounds, which moves both runs of a round alike
            paired = statistics.median(h / t for h, t in zip(times["hf fp32"], times[k]))
            spread = f"[{min(N / t for t in times[k]):.1f}-{max(N / t for t in times[k]):.1f}]"
            print(f"  {k:16s} {v:8.1f} tokens/s {spread:>13s}  {v / rows['hf fp32']:.2f}x HF (paired "
                  f"{paired:.2f}x){extra}")
        print(f"  compiled fp32 greedy tokens identical to eager: {outs['compiled fp32'] == outs['eager fp32']}, "
              f"to HF: {outs['compiled fp32'] == outs['hf']}")
    print(f"\nload average at the end: {open('/proc/loadavg').read().split()[0]}")


if __name__ == "__main__":
    main()
