"""`scratchlm chat`: an interactive terminal chat with a trained (ideally SFT'd) run, streaming its answers.

torch is imported inside the handler so that `scratchlm --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scratchlm.cli.common import add_common
from scratchlm.cli.generate import (add_compile_flag, add_sampling_flags, add_speculative_flags, add_tool_flags,
                                    check_speculative_args, load_engine_from_args, sampling_from_args,
                                    speculative_from_args)

EXAMPLES = """\
examples:
  scratchlm chat --run runs/sft
  scratchlm chat --run runs/sft --system "You answer in one sentence." --temperature 0.7
  echo "Hello!" | scratchlm chat --run runs/sft --temperature 0     # one turn from a pipe
  scratchlm chat --run runs/sft_tools --tools calculator            # the model may call the calculator
  scratchlm chat --run runs/edit --prompt-lookup --compile --temperature 0   # replies that repeat the prompt

commands inside the chat:
  /reset           forget the conversation (keeps the system prompt)
  /system TEXT     set the system prompt (and reset); "/system" alone clears it
  /history         show the conversation so far
  /help            this list
  /exit, /quit     leave (or Ctrl-D)
"""

HELP = "commands: /reset, /system TEXT, /history, /help, /exit"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "chat", help="interactive terminal chat with a run",
        description="Chat with a model in the terminal. Messages are rendered with the chat template "
                    "(<|im_start|>role ... <|im_end|>) and answers stream as they are generated.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run folder (or checkpoint folder) of the model")
    p.add_argument("--system", default="", help="system prompt (default: none)")
    add_tool_flags(p)
    add_sampling_flags(p, temperature=0.7, top_p=0.9, max_new_tokens=512)
    add_compile_flag(p)
    add_speculative_flags(p)
    add_common(p, out=None, overrides=False)
    p.set_defaults(func=handler)


def fit_history(tokenizer, system: str, history: list[dict], context: int, reserve: int,
                tools: list[dict] | None = None) -> tuple[list[dict], list[int]]:
    """Drop the oldest exchanges (never the system prompt or the newest message) until prompt + reserve fits.
    An exchange is a user message and everything up to the next one (replies, tool calls and their results)."""
    from scratchlm.inference.chat_template import encode_chat

    while True:
        messages = ([{"role": "system", "content": system}] if system else []) + history
        ids = encode_chat(tokenizer, messages, tools=tools)
        if len(ids) + reserve <= context or len(history) <= 1:
            return history, ids
        nxt = next((i for i in range(1, len(history)) if history[i]["role"] == "user"), len(history) - 1)
        history = history[nxt:]


def handler(args: argparse.Namespace) -> int:
    from scratchlm.inference.chat_template import chat_stop_token_ids

    from scratchlm.inference.tools import builtin_tools, chat_with_tools

    params = sampling_from_args(args)  # before loading: a bad flag is reported at once
    tools = builtin_tools(args.tools)
    if args.max_tool_calls < 0:
        raise ValueError(f"--max-tool-calls must be >= 0, got {args.max_tool_calls}")
    check_speculative_args(args)
    engine = load_engine_from_args(args)
    spec = speculative_from_args(args, engine)  # draft or prompt lookup: the same text, sooner (greedy: identical)
    params.stop_token_ids = chat_stop_token_ids(engine.tokenizer)
    interactive = sys.stdin.isatty()
    system, history = args.system, []
    if interactive:
        print(f"chatting with {args.run} ({engine.max_seq_len}-token context). {HELP}", file=sys.stderr)
    while True:
        try:
            line = input("you> " if interactive else "")
        except EOFError:
            break
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            cmd, _, rest = text.partition(" ")
            if cmd in ("/exit", "/quit"):
                break
            elif cmd == "/reset":
                history = []
                print("(conversation reset)", file=sys.stderr)
            elif cmd == "/system":
                system, history = rest.strip(), []
                print(f"(system prompt {'set' if system else 'cleared'}; conversation reset)", file=sys.stderr)
            elif cmd == "/history":
                for m in ([{"role": "system", "content": system}] if system else []) + history:
                    calls = [f"{c['function']['name']}({json.dumps(c['function']['arguments'])})"
                             for c in m.get("tool_calls", [])]
                    print(f"[{m['role']}] {' '.join([m['content']] + calls).strip()}")
            elif cmd == "/help":
                print(HELP, file=sys.stderr)
            else:
                print(f"unknown command {cmd}; {HELP}", file=sys.stderr)
            continue
        history.append({"role": "user", "content": line})
        reserve = min(params.max_new_tokens, engine.max_seq_len // 2)
        specs = [t.spec for t in tools.values()]
        history, ids = fit_history(engine.tokenizer, system, history, engine.max_seq_len, reserve, specs)
        if len(ids) >= engine.max_seq_len:
            print("(message too long for the model's context; try a shorter one)", file=sys.stderr)
            history.pop()
            continue
        if interactive:
            sys.stdout.write("assistant> ")
        if tools:
            def show(text: str) -> None:
                sys.stdout.write(text)
                sys.stdout.flush()

            def show_call(name: str, arguments: dict, result: str) -> None:
                args = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
                sys.stdout.write(f"[{name}({args}) -> {result}]\n")

            messages = ([{"role": "system", "content": system}] if system else []) + history
            try:
                new = chat_with_tools(engine, messages, params, tools, args.max_tool_calls, show, show_call)
            except KeyboardInterrupt:  # Ctrl-C stops the answer, not the chat (the unanswered turn is dropped)
                sys.stdout.write(" [stopped]\n")
                history.pop()
                continue
            if new[-1]["role"] == "tool":
                print("(no room left in the model's context for an answer; /reset to start again)", file=sys.stderr)
            sys.stdout.write("\n")
            sys.stdout.flush()
            history += new
            continue
        answer = []
        try:
            for chunk in (spec or engine).stream(ids, params):
                answer.append(chunk.text)
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
        except KeyboardInterrupt:  # Ctrl-C stops the answer, not the chat
            sys.stdout.write(" [stopped]")
        sys.stdout.write("\n")
        sys.stdout.flush()
        history.append({"role": "assistant", "content": "".join(answer)})
    return 0
