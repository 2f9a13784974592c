"""Speculative decoding vs plain decoding, eager and compiled: a draft/target pair of run folders, greedy, batch 1.

    .venv/bin/python benchmarks/inference_speculative.py --target /tmp/demo1/pretrain --draft /tmp/demo1/draft
    .venv/bin/python benchmarks/inference_speculative.py            # random-init pair (a smoke test)
    # prompt lookup on a model that copies: the demo's chat model fine-tuned on TinyWorld's edit conversations
    # (docs/inference.md, "A model that copies"), on held-out edit requests
    .venv/bin/python benchmarks/inference_speculative.py --target /tmp/demo1/pretrain --draft /tmp/demo1/draft \
        --lookup-target runs/edit --lookup-data /tmp/demo1/corpus/edits_val.jsonl

Reports, in one run, tokens/s of plain eager, plain compiled, speculative eager and speculative compiled decoding
with the draft model, and prompt lookup (eager and compiled; compiled also without its back-off) on a
summarisation-style prompt that repeats its input (the target, which does not copy) and, with --lookup-target,
on held-out edit requests whose replies repeat their input (chat template, greedy to the end of the reply),
each the median of --repeats runs taken in turns (plain, speculative, plain, ...); speedups against
plain decoding of the same kind; acceptance, tokens per target call; whether the output
is identical to plain greedy decoding (it must be); compile time apart (paid in a warm-up); and the cost of one
compiled draft step, target step and target verify forward, which decide whether speculation can pay:
a round costs gamma draft steps + one verify and yields tokens-per-target-call tokens.
A random-init pair is only a smoke test: untrained models tend to repeat one token, so they agree far more
than trained models do and the speedup says nothing about real text.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from pathlib import Path

import torch

from scratchlm.inference.engine import Engine
from scratchlm.inference.sampling import SamplingParams
from scratchlm.inference.speculative import SpeculativeConfig, SpeculativeDecoder

PROMPTS = ["Once upon a time, there was a little girl named Lily.", "The little dog ran to the park and",
           "Tom and his mom went to the store. They bought"]
# summarisation-style: the answer repeats the input, which is what prompt lookup copies from
STORY = ("Lily had a red ball. She played with the ball in the park every day. One day the ball rolled into the "
         "pond. Lily was sad. Her friend Tom got a long stick and pulled the ball out of the pond. Lily was happy.")
LOOKUP_PROMPT = f"{STORY}\n\nThe same story again:\n\n{STORY}\n\nAnd once more:\n\n{STORY.split('.')[0]}."


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
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--adaptive", action="store_true")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", 1)))
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved runs of every row; figures are medians")
    ap.add_argument("--lookup-target", type=Path, help="a run that copies its input (e.g. fine-tuned on edits.jsonl)")
    ap.add_argument("--lookup-data", type=Path, help="Alpaca JSONL of requests for --lookup-target (edits_val.jsonl)")
    ap.add_argument("--lookup-prompts", type=int, default=20, help="how many --lookup-data records to time")
    ap.add_argument("--lookup-kind", help="only --lookup-data records of this kind (edits: copy, rename, extract)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if (args.lookup_target is None) != (args.lookup_data is None):
        ap.error("--lookup-target and --lookup-data go together")
    if args.lookup_kind is not None and args.lookup_target is None:
        ap.error("--lookup-kind picks records of --lookup-data: add --lookup-target and --lookup-data")
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
    lookup = [engine.encode(LOOKUP_PROMPT)]
    compiled = Engine(engine.model, engine.tokenizer, compile=True)
    draft_spec = {"eager": SpeculativeDecoder(engine, draft, cfg), "compiled": SpeculativeDecoder(compiled, draft, cfg)}
    # cases: (label, plain engines, prompts, sampling params per prompt, speculative decoders)
    cases = [("draft model", {"eager": engine, "compiled": compiled}, prompts, [params] * len(prompts), draft_spec),
             ("prompt lookup, target", {"eager": engine, "compiled": compiled}, lookup, [params],
              lookup_specs(engine, compiled, cfg))]
    if args.lookup_target is not None:
        cases.append(lookup_case(args, cfg))
        print(f"lookup target {args.lookup_target} ({cases[-1][1]['eager'].model.num_params() / 1e6:.1f}M): "
              f"{len(cases[-1][2])} requests from {args.lookup_data}, greedy to the end of each reply")
    # warm-up: compiles every graph the timed runs use (same buckets), so the timings below exclude compiling
    t0 = time.perf_counter()
    for _, engs, ps, pps, specs in cases:
        engs["compiled"].generate([ps[0]], pps[0])
        for p, pp in zip(ps, pps):  # every prompt: rounds differ (e.g. the 2-token draft graph after a full round)
            for k, spec in specs.items():
                if k != "eager":
                    spec.generate(p, pp)
        engs["eager"].generate(ps, SamplingParams(max_new_tokens=4, temperature=0))
    print(f"compile (warm-up, all graphs): {time.perf_counter() - t0:.1f} s, of which target "
          f"{compiled.compiled.compile_seconds:.1f} s, draft {draft_spec['compiled']._draft_compiled.compile_seconds:.1f} s")

    def plain(eng, ps, pps):
        t = time.perf_counter()
        outs = [eng.generate([p], pp)[0] for p, pp in zip(ps, pps)]
        return outs, time.perf_counter() - t

    def spec_run(spec, ps, pps):
        t, outs, drafted, accepted, calls = time.perf_counter(), [], 0, 0, 0
        for p, pp in zip(ps, pps):
            outs.append(spec.generate(p, pp))
            if spec.stats.compile_seconds:
                print(f"   (compiled a new graph for {spec.stats.compile_seconds:.1f} s inside this timing)")
            drafted, accepted, calls = drafted + spec.stats.drafted, accepted + spec.stats.accepted, \
                calls + spec.stats.target_calls
        return outs, time.perf_counter() - t, accepted / max(1, drafted), calls

    for label, engs, ps, pps, specs in cases:
        print(f"-- {label}: {len(ps)} prompt(s), median of {args.repeats} interleaved runs")
        times: dict[str, list[float]] = {}
        base, spec_out = {}, {}
        for _ in range(args.repeats):  # plain and speculative take turns, so background load falls on both
            for kind, eng in engs.items():
                base[kind] = plain(eng, ps, pps)
                times.setdefault(f"plain {kind}", []).append(base[kind][1])
            for kind in specs:
                spec_out[kind] = spec_run(specs[kind], ps, pps)
                times.setdefault(f"spec {kind}", []).append(spec_out[kind][1])
        med = {k: statistics.median(v) for k, v in times.items()}
        for kind in ("eager", "compiled"):
            outs, t = base[kind][0], med[f"plain {kind}"]
            base[kind] = (outs, t)
            n = sum(len(s.token_ids) for s in outs)
            print(f"plain {kind:9s}    {n / t:8.1f} tokens/s" + (f" ({base['eager'][1] / t:.2f}x eager)"
                                                                 if kind == "compiled" else ""))
        for kind in specs:
            outs, _, acc, calls = spec_out[kind]
            t = med[f"spec {kind}"]
            n = sum(len(s.token_ids) for s in outs)
            same = all(a.token_ids == b.token_ids for a, b in zip(outs, base["eager"][0]))
            plain_kind = "eager" if kind == "eager" else "compiled"
            print(f"speculative {kind:9s} {n / t:8.1f} tokens/s -> {base[plain_kind][1] / t:.2f}x plain {plain_kind}, "
                  f"{base['eager'][1] / t:.2f}x plain eager; acceptance {acc:.1%}, {n / max(1, calls):.2f} tokens "
                  f"per target call; identical to plain greedy: {same}")
    step_costs(compiled, draft_spec["compiled"], prompts[0], args.gamma)
    print(f"load average at the end: {open('/proc/loadavg').read().split()[0]}")


def lookup_specs(eng: Engine, comp: Engine, cfg: SpeculativeConfig) -> dict:
    """Prompt lookup eager, compiled, and compiled without its back-off (to show what the back-off costs or saves)."""
    no_backoff = dataclasses.replace(cfg, lookup_backoff=0)
    return {"eager": SpeculativeDecoder(eng, None, cfg), "compiled": SpeculativeDecoder(comp, None, cfg),
            "compiled, no back-off": SpeculativeDecoder(comp, None, no_backoff)}


def lookup_case(args, cfg: SpeculativeConfig) -> tuple:
    """The --lookup-target case: held-out requests in the chat template, each greedy to the end of its reply."""
    import json

    from scratchlm.inference.chat_template import alpaca_prompt, chat_stop_token_ids, encode_chat
    from scratchlm.inference.loading import load_engine

    eng = load_engine(args.lookup_target, device="cpu", dtype=args.dtype)
    comp = Engine(eng.model, eng.tokenizer, compile=True)
    recs = [json.loads(line) for line in args.lookup_data.read_text().splitlines() if line.strip()]
    recs = [r for r in recs if args.lookup_kind in (None, r.get("kind"))]
    if not recs:
        raise SystemExit(f"{args.lookup_data} has no records of kind {args.lookup_kind!r}")
    ps = [encode_chat(eng.tokenizer, alpaca_prompt(r)) for r in recs[:args.lookup_prompts]]
    stops = chat_stop_token_ids(eng.tokenizer)
    pps = [SamplingParams(max_new_tokens=eng.max_seq_len - len(p), temperature=0, stop_token_ids=stops) for p in ps]
    specs = lookup_specs(eng, comp, cfg)
    label = f"prompt lookup, {args.lookup_kind or 'edit'} requests"
    return label, {"eager": eng, "compiled": comp}, ps, pps, specs


def step_costs(compiled: Engine, spec: SpeculativeDecoder, prompt: list[int], gamma: int, n: int = 200) -> None:
    """Milliseconds per compiled call: the target's decode step and verify forward, the draft's decode step."""
    from scratchlm.inference.compiled import CompiledDecoder

    idx = torch.tensor([prompt])
    total = len(prompt) + 128 + gamma + 1

    def per_call(dec: CompiledDecoder, width: int, fused: int = 0) -> float:
        _, cache = dec.open(idx, None, total)
        x = torch.tensor([prompt[-1:] * width])
        call = (lambda c, t: dec.draft_greedy(c, t, fused)) if fused else dec.step if width == 1 else dec.verify
        wrote = width + max(0, fused - 1)
        call(cache, x)
        cache.rewind(wrote)
        t = time.perf_counter()
        for _ in range(n):
            call(cache, x)
            cache.rewind(wrote)
        return (time.perf_counter() - t) / n * 1e3

    def per_round(tgt: CompiledDecoder, drf: CompiledDecoder) -> float:
        """compiled.py's fused greedy round (draft, verify, accept, rewind in one graph), rewound after each."""
        (_, tcache), (_, dcache) = tgt.open(idx, None, total), drf.open(idx, None, total)
        last, live = torch.tensor([prompt[-1:]]), torch.ones(1, dtype=torch.bool)
        t = 0.0
        for i in range(n + 1):
            t0 = time.perf_counter()
            kept = 1 + int(tgt.spec_round(tcache, last, drf, dcache, last, live, gamma)[0, gamma + 1])
            t += (time.perf_counter() - t0) if i else 0.0  # the first call may compile
            tcache.rewind(kept)
            dcache.rewind(kept)
        return t / n * 1e3

    tgt, drf = compiled.compiled, spec._draft_compiled
    with torch.inference_mode():  # the static caches are inference tensors
        t_step, t_verify, d_step = per_call(tgt, 1), per_call(tgt, gamma + 1), per_call(drf, 1)
        d_round = per_call(drf, 1, fused=gamma)
        fused = per_round(tgt, drf)
    print(f"per compiled call: target step {t_step:.2f} ms, target verify ({gamma + 1} tokens) {t_verify:.2f} ms, "
          f"draft step {d_step:.2f} ms, draft round ({gamma} steps in one graph) {d_round:.2f} ms; a greedy round "
          f"costs {d_round + t_verify:.2f} ms = {(d_round + t_verify) / t_step:.2f} target steps "
          f"(one step per draft: {(gamma * d_step + t_verify) / t_step:.2f}); the whole round as one graph "
          f"(what greedy speculation runs): {fused:.2f} ms = {fused / t_step:.2f} target steps")


if __name__ == "__main__":
    main()
