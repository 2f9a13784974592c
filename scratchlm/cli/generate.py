"""`scratchlm generate`: text from a trained run, with optional speculative decoding and speed statistics.

torch is imported inside the handler so that `scratchlm --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scratchlm.cli.common import add_common, add_renamed

EXAMPLES = """\
examples:
  scratchlm generate --run runs/pretrain --prompt "Once upon a time"
  scratchlm generate --run runs/pretrain --prompt "Once upon a time" --temperature 0 --max-new-tokens 100 --stats
  scratchlm generate --run runs/pretrain --input prompts.txt --json > out.jsonl
  scratchlm generate --run runs/pretrain --draft runs/draft --temperature 0 --prompt "Lily" --stats
  scratchlm generate --run runs/pretrain --prompt "Once upon a time" --quant int4 --quant-group-size 64 --stats
  scratchlm generate --run runs/sft --chat --prompt "What is the capital of France?"
  scratchlm generate --run runs/sft_tools --chat --tools calculator --prompt "What is 12 times 7?"
"""


def add_tool_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tools")
    g.add_argument("--tools", action="append", default=[], metavar="NAME",
                   help="offer a built-in tool to the model and run its calls (repeatable; built in: calculator). "
                        "Models learn to call it from tool conversations in SFT (docs/tools.md)")
    g.add_argument("--max-tool-calls", type=int, default=4, metavar="N",
                   help="rounds of tool calls per answer before the model must answer in words (default: 4)")


def add_sampling_flags(p: argparse.ArgumentParser, temperature: float = 0.8, top_p: float = 0.95,
                       max_new_tokens: int = 256) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--max-new-tokens", type=int, default=max_new_tokens, metavar="N",
                   help=f"tokens to generate at most (default: {max_new_tokens})")
    g.add_argument("--temperature", type=float, default=temperature, metavar="T",
                   help=f"0 = greedy; higher = more varied (default: {temperature})")
    g.add_argument("--top-k", type=int, default=0, metavar="K", help="keep the K most likely tokens (0 = off)")
    g.add_argument("--top-p", type=float, default=top_p, metavar="P",
                   help=f"nucleus sampling: keep the most likely tokens covering P (default: {top_p}; 1 = off)")
    g.add_argument("--min-p", type=float, default=0.0, metavar="P",
                   help="drop tokens below P x the top token's probability (0 = off; try 0.05)")
    g.add_argument("--repetition-penalty", type=float, default=1.0, metavar="R",
                   help="> 1 discourages repeating context tokens (default: 1 = off; try 1.1)")
    g.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop at this string (repeatable)")
    add_quant_flags(p)


def add_quant_flags(p: argparse.ArgumentParser) -> None:
    """--quant and --quant-group-size (generate, chat, serve); --int8 is the old spelling of --quant int8."""
    g = p.add_argument_group("quantization")
    add_renamed(g, "--quant", "--int8", old_value="int8", choices=["int8", "int4"], default=None,
                help="weight-only quantization: int8 per channel (4x smaller weights, faster on CPU) or int4 per "
                     "group (~7x smaller; unpacked on the fly, so slower on CPU). Default: none")
    g.add_argument("--quant-group-size", type=int, default=None, metavar="N",
                   help="inputs sharing one int4 scale: 32, 64, 128 or 256 (default: 64; smaller = closer, larger)")


def quant_from_args(args: argparse.Namespace) -> tuple[str | None, int | None]:
    """(quantize, group_size) for load_engine, checked before any weight is read."""
    size = args.quant_group_size
    if size is not None and args.quant != "int4":
        raise ValueError(f"--quant-group-size {size} applies to --quant int4 only; add --quant int4 or drop it")
    if size is not None and size not in (32, 64, 128, 256):
        raise ValueError(f"--quant-group-size must be 32, 64, 128 or 256, got {size}")
    return args.quant, size


def sampling_from_args(args: argparse.Namespace, **extra):
    """The sampling flags as validated SamplingParams: argparse's float() takes "nan" and "inf", validate() refuses
    them (a ValueError, which main() prints as one line with exit code 2)."""
    from scratchlm.inference.sampling import SamplingParams

    return SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                          top_p=args.top_p, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                          stop=list(args.stop), seed=args.seed, **extra).validate()


def load_engine_from_args(args: argparse.Namespace, run: Path | None = None):
    from scratchlm.inference.loading import load_engine

    quantize, group_size = quant_from_args(args)
    engine = load_engine(run or args.run, device=args.device, dtype=args.dtype, quantize=quantize,
                         group_size=group_size)
    if getattr(args, "compile", False):
        engine.enable_compile()
    return engine


def add_compile_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compile", action="store_true",
                   help="decode with a torch.compile'd step over a static KV cache: faster per token after a "
                        "one-time compile per batch size and length bucket (docs/inference.md)")


def add_speculative_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speculative decoding")
    g.add_argument("--draft", type=Path, metavar="RUN", help="a small draft model's run (same tokenizer)")
    g.add_argument("--prompt-lookup", action="store_true",
                   help="draft by copying n-grams from the context: pays when replies repeat the prompt (edits, "
                        "extraction, summaries) on a model that copies (docs/inference.md)")
    g.add_argument("--gamma", type=int, default=4, help="tokens drafted per round (default: 4)")
    g.add_argument("--adaptive-gamma", action="store_true", help="adapt gamma to the acceptance rate")


def check_speculative_args(args: argparse.Namespace) -> bool:
    """Refuse speculative flags that cannot be honoured (before any model loads); True if speculation is on."""
    if args.draft is not None and args.prompt_lookup:
        raise ValueError("use either --draft or --prompt-lookup, not both")
    if args.gamma < 1:
        raise ValueError(f"--gamma must be >= 1, got {args.gamma}")
    if args.draft is None and not args.prompt_lookup:
        if args.adaptive_gamma or args.gamma != 4:
            raise ValueError("--gamma / --adaptive-gamma set how speculative decoding drafts: add --draft RUN or "
                             "--prompt-lookup (or drop them)")
        return False
    if getattr(args, "compile", False) and args.adaptive_gamma:
        raise ValueError("--compile compiles one verify graph per gamma, so gamma must stay fixed: "
                         "drop --adaptive-gamma (or --compile)")
    if getattr(args, "tools", None):
        raise ValueError("--tools runs plain decoding; drop --draft / --prompt-lookup")
    return True


def speculative_from_args(args: argparse.Namespace, engine):
    """The SpeculativeDecoder the flags ask for, or None without --draft / --prompt-lookup."""
    if not check_speculative_args(args):
        return None
    from scratchlm.inference.loading import load_model
    from scratchlm.inference.speculative import SpeculativeConfig, SpeculativeDecoder

    draft = None
    if args.draft is not None:
        draft, _ = load_model(args.draft, device=str(engine.device), dtype=args.dtype)
    return SpeculativeDecoder(engine, draft, SpeculativeConfig(gamma=args.gamma, adaptive=args.adaptive_gamma,
                                                               gamma_max=max(16, args.gamma)))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate", help="generate text from a trained run",
        description="Generate text with a trained model: KV-cache decoding, sampling controls, batched prompts, "
                    "and speculative decoding with a draft run (--draft) or prompt lookup (--prompt-lookup).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run folder (or checkpoint folder) of the model")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="the prompt text")
    add_renamed(p, "--input", "--prompts-file", group=src, type=Path, metavar="FILE",
                help='prompts to read: one per line (.txt) or JSON lines (.jsonl) with a "prompt" field or Alpaca '
                     '"instruction" (+ "input") fields, e.g. edits_val.jsonl')
    p.add_argument("--chat", action="store_true", help="wrap each prompt as a user message in the chat template")
    p.add_argument("--batch-size", type=int, default=8, help="prompts generated together from --input (default: 8)")
    p.add_argument("--json", action="store_true", help="print one JSON object per prompt instead of plain text")
    p.add_argument("--stats", action="store_true", help="print tokens/s (and speculative acceptance) to stderr")
    add_sampling_flags(p)
    add_tool_flags(p)
    add_compile_flag(p)
    add_speculative_flags(p)
    add_common(p, out=None, overrides=False)
    p.set_defaults(func=handler)


def read_prompts(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"prompts file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        prompts = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                    if "prompt" not in rec and isinstance(rec.get("instruction"), str):
                        # an Alpaca record (e.g. TinyWorld's edits_val.jsonl): its user turn, as SFT trains it
                        rec = {"prompt": "\n\n".join(x.strip() for x in (rec["instruction"], rec.get("input") or "")
                                                      if x.strip())}
                    if not isinstance(rec["prompt"], str):
                        raise TypeError
                    prompts.append(rec["prompt"])
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                    raise ValueError(f'{path}:{i} is not a JSON object with a "prompt" field (or an Alpaca '
                                     '"instruction" and optional "input")') from None
    else:
        prompts = [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return prompts


def handler(args: argparse.Namespace) -> int:
    import time

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.tools and not args.chat:
        raise ValueError("--tools needs --chat: tools are offered and called in the chat template")
    check_speculative_args(args)
    if args.max_tool_calls < 0:
        raise ValueError(f"--max-tool-calls must be >= 0, got {args.max_tool_calls}")
    from scratchlm.inference.tools import builtin_tools

    tools = builtin_tools(args.tools)
    params = sampling_from_args(args)
    engine = load_engine_from_args(args)
    prompts = [args.prompt] if args.prompt is not None else read_prompts(args.input)
    if tools:
        return generate_with_tools(args, engine, prompts, params, tools)

    def encode(text: str) -> list[int]:
        if args.chat:
            from scratchlm.inference.chat_template import encode_chat

            return encode_chat(engine.tokenizer, [{"role": "user", "content": text}])
        return engine.encode(text)

    if args.chat:
        from scratchlm.inference.chat_template import chat_stop_token_ids

        params.stop_token_ids = chat_stop_token_ids(engine.tokenizer)
    ids = [encode(p) for p in prompts]

    spec = speculative_from_args(args, engine)

    stream = len(prompts) == 1 and not args.json
    results = []
    spec_totals = {"drafted": 0, "accepted": 0, "target_calls": 0, "generated": 0}  # over every prompt
    compiling = lambda: spec._compile_seconds() if spec is not None else (  # noqa: E731
        engine.compiled.compile_seconds if engine.compiled is not None else 0.0)
    c0 = compiling()
    t0 = time.perf_counter()
    if spec is not None or stream:
        for p_ids in ids:  # one at a time: speculative decoding is batch 1; a single prompt streams
            if spec is not None:
                seq = engine.make_sequences([p_ids], params)[0]
                gen = spec.steps(seq)
            else:
                seq = engine.make_sequences([p_ids], params)[0]
                gen = engine.steps([seq])
            for _ in gen:
                if stream:
                    text = "".join(e.text for e in seq.drain())
                    if text:
                        sys.stdout.write(text)
                        sys.stdout.flush()
            results.append(seq)
            if spec is not None:
                for k in spec_totals:
                    spec_totals[k] += getattr(spec.stats, k)
        if stream:
            sys.stdout.write("\n")
    else:
        for i in range(0, len(ids), max(1, args.batch_size)):
            results += engine.generate(ids[i:i + args.batch_size], params)
    seconds = time.perf_counter() - t0
    compile_s = compiling() - c0

    if not stream:
        for prompt, seq in zip(prompts, results):
            if args.json:
                print(json.dumps({"prompt": prompt, "completion": seq.text, "finish_reason": seq.finish_reason,
                                  "tokens": len(seq.token_ids)}, ensure_ascii=False))
            else:
                print(f"{prompt}{seq.text}\n" if not args.chat else f"{seq.text}\n")
    if args.stats:
        n = sum(len(s.token_ids) for s in results)
        lines = [f"generated {n} tokens in {seconds:.2f} s: {n / max(seconds, 1e-9):.1f} tokens/s"]
        if engine.compiled is not None:  # compile time is paid once per shape; decode speed is the rest
            graphs = engine.compiled.graphs_compiled + (spec._draft_compiled.graphs_compiled
                                                        if spec is not None and spec._draft_compiled else 0)
            lines.append(f"of which compiling: {compile_s:.1f} s ({graphs} graph(s)); "
                         f"without it: {n / max(seconds - compile_s, 1e-9):.1f} tokens/s")
        if spec is not None:
            tot = spec_totals
            lines.append(f"speculative ({'prompt lookup' if args.prompt_lookup else 'draft ' + str(args.draft)}, "
                         f"gamma {args.gamma}{', adaptive' if args.adaptive_gamma else ''}): acceptance "
                         f"{tot['accepted'] / max(1, tot['drafted']):.1%}, "
                         f"{tot['generated'] / max(1, tot['target_calls']):.2f} tokens per target call")
            # the speedup is measured, not estimated: plain decoding of the same prompt(s), compiling apart
            c1 = engine.compiled.compile_seconds if engine.compiled is not None else 0.0
            t1 = time.perf_counter()
            plain = [engine.generate([p_ids], params)[0] for p_ids in ids]
            base = time.perf_counter() - t1
            base -= (engine.compiled.compile_seconds if engine.compiled is not None else 0.0) - c1
            same = all(a.token_ids == b.token_ids for a, b in zip(plain, results))
            lines.append(f"plain decoding: {base:.2f} s -> speedup {base / max(seconds - compile_s, 1e-9):.2f}x"
                         + (" (compiling excluded on both sides)" if engine.compiled is not None else "")
                         + (f", identical output: {same}" if params.greedy else ""))
        print("\n".join(lines), file=sys.stderr)
    return 0


def generate_with_tools(args: argparse.Namespace, engine, prompts: list[str], params, tools) -> int:
    """--chat --tools: each prompt is a user turn; the model's calls run and it goes on until it answers."""
    import time

    from scratchlm.inference.tools import chat_with_tools_batch, final_answer

    def show_call(name: str, arguments: dict, result: str) -> None:
        if stream:
            args_text = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
            sys.stdout.write(f"[{name}({args_text}) -> {result}]\n")

    def show(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    stream = len(prompts) == 1 and not args.json
    t0 = time.perf_counter()
    convs = [[{"role": "user", "content": p}] for p in prompts]
    results = chat_with_tools_batch(engine, convs, params, tools, args.max_tool_calls, max(1, args.batch_size),
                                    on_text=show if stream else None, on_tool=show_call)
    seconds = time.perf_counter() - t0
    if stream:
        sys.stdout.write("\n")
    for prompt, new in zip(prompts, results):
        if args.json:
            calls = sum(len(m.get("tool_calls", [])) for m in new)
            print(json.dumps({"prompt": prompt, "completion": final_answer(new), "tool_calls": calls,
                              "messages": new}, ensure_ascii=False))
        elif not stream:
            print(f"{final_answer(new)}\n")
    if args.stats:
        print(f"{len(prompts)} prompt(s) with tools in {seconds:.2f} s", file=sys.stderr)
    return 0
