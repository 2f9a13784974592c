"""`scratchlm chat`: an interactive terminal chat with a trained (ideally SFT'd) run, streaming its answers.

torch is imported inside the handler so that `scratchlm --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scratchlm.cli.common import add_common
from scratchlm.cli.generate import add_sampling_flags, load_engine_from_args, sampling_from_args

EXAMPLES = """\
examples:
  scratchlm chat --run runs/sft
  scratchlm chat --run runs/sft --system "You answer in one sentence." --temperature 0.7
  echo "Hello!" | scratchlm chat --run runs/sft --temperature 0     # one turn from a pipe

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
    add_sampling_flags(p, temperature=0.7, top_p=0.9, max_new_tokens=512)
    add_common(p, out=None, overrides=False)
    p.set_defaults(func=handler)


def fit_history(tokenizer, system: str, history: list[dict], context: int, reserve: int) -> tuple[list[dict], list[int]]:
    """Drop the oldest turns (never the system prompt or the newest message) until prompt + reserve fits."""
    from scratchlm.inference.chat_template import encode_chat

    while True:
        messages = ([{"role": "system", "content": system}] if system else []) + history
        ids = encode_chat(tokenizer, messages)
        if len(ids) + reserve <= context or len(history) <= 1:
            return history, ids
        history = history[2:] if len(history) > 2 else history[1:]


def handler(args: argparse.Namespace) -> int:
    from scratchlm.inference.chat_template import chat_stop_token_ids

    params = sampling_from_args(args)  # before loading: a bad flag is reported at once
    engine = load_engine_from_args(args)
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
                    print(f"[{m['role']}] {m['content']}")
            elif cmd == "/help":
                print(HELP, file=sys.stderr)
            else:
                print(f"unknown command {cmd}; {HELP}", file=sys.stderr)
            continue
        history.append({"role": "user", "content": line})
        reserve = min(params.max_new_tokens, engine.max_seq_len // 2)
        history, ids = fit_history(engine.tokenizer, system, history, engine.max_seq_len, reserve)
        if len(ids) >= engine.max_seq_len:
            print("(message too long for the model's context; try a shorter one)", file=sys.stderr)
            history.pop()
            continue
        if interactive:
            sys.stdout.write("assistant> ")
        answer = []
        try:
            for chunk in engine.stream(ids, params):
                answer.append(chunk.text)
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
        except KeyboardInterrupt:  # Ctrl-C stops the answer, not the chat
            sys.stdout.write(" [stopped]")
        sys.stdout.write("\n")
        sys.stdout.flush()
        history.append({"role": "assistant", "content": "".join(answer)})
    return 0
