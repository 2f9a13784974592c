"""`scratchlm serve`: an OpenAI-compatible HTTP API (and a chat page) for a trained run.

torch, fastapi and uvicorn are imported inside the handler so that `scratchlm --help` stays fast.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from scratchlm.cli.common import add_common
from scratchlm.cli.generate import add_compile_flag, add_quant_flags

EXAMPLES = """\
examples:
  scratchlm serve --run runs/sft                        # http://127.0.0.1:8000 (chat page at /)
  scratchlm serve --run runs/sft --port 8080 --api-key sk-local-123
  scratchlm serve --run runs/sft --host 0.0.0.0 --api-key "$KEY"   # reachable from other machines

then, from Python:
  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="sk-local-123")
  client.chat.completions.create(model="sft", messages=[{"role": "user", "content": "Hi!"}])

or with curl:
  curl http://127.0.0.1:8000/v1/completions -H "Content-Type: application/json" \\
       -d '{"model": "sft", "prompt": "Once upon a time", "max_tokens": 50}'
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="OpenAI-compatible HTTP server and chat page",
        description="Serve a run over HTTP: GET /v1/models, POST /v1/completions (logprobs, echo), "
                    "POST /v1/chat/completions, streaming with stream: true, and a chat page at /.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run folder (or checkpoint folder) of the model")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--api-key", default=os.environ.get("SCRATCHLM_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $SCRATCHLM_API_KEY, else no key)")
    p.add_argument("--model-name", default=None, help="model id in the API (default: the run folder's name)")
    p.add_argument("--max-batch", type=int, default=8, help="requests generated together at most (default: 8)")
    p.add_argument("--batching", choices=("continuous", "static"), default="continuous",
                   help="continuous: requests join and leave the running batch at every decode step; static: a "
                        "batch runs to its end before the next starts, for comparison (default: continuous)")
    p.add_argument("--read-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="close a connection whose request (head and body) takes longer than this to arrive; "
                        "the body gets a 408 (default: 30)")
    add_quant_flags(p)
    add_compile_flag(p)
    add_common(p, out=None, overrides=False, seed=False)  # seeds come with each request (OpenAI's `seed`)
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from scratchlm.cli.generate import load_engine_from_args
    from scratchlm.inference.server import create_app, run_server

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    if args.max_batch < 1:
        raise ValueError(f"--max-batch must be >= 1, got {args.max_batch}")
    if not (math.isfinite(args.read_timeout) and args.read_timeout > 0):
        raise ValueError(f"--read-timeout must be a finite number of seconds > 0, got {args.read_timeout}")
    if args.compile and args.batching != "static":  # continuous.py's slot cache runs its own (eager) decode
        raise ValueError("--compile decodes whole batches (--batching static); add --batching static or drop --compile")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"warning: serving on {args.host} without --api-key: anyone who can reach this port can use the model",
              file=sys.stderr)
    engine = load_engine_from_args(args)
    name = args.model_name or Path(args.run).resolve().name
    app = create_app(engine, model_id=name, api_key=args.api_key, max_batch=args.max_batch,
                     read_timeout=args.read_timeout, batching=args.batching)
    print(f"serving {name} on http://{args.host}:{args.port}  (chat page: /, API: /v1)", file=sys.stderr)
    run_server(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info")
    return 0
