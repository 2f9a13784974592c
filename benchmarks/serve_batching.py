"""Static vs continuous batching in `scratchlm serve`: streaming clients with replies of mixed lengths.

Each of N concurrent clients sends --requests streaming completions one after another (greedy, ignore_eos, so
the reply lengths are exactly the max_tokens cycled from --lengths), against the same model served with
`batching="static"` (a batch runs to its end; newcomers wait) and `"continuous"` (newcomers join at the next
step). Per request: time to first token (TTFT: request sent -> first streamed token) and time per output token
(TPOT: the rest of the reply over its remaining tokens); per run: aggregate output tokens/s over the wall time.
The goal at 16 clients: continuous p95 TTFT <= 1/3 of static's, throughput not lower.

    .venv/bin/python benchmarks/serve_batching.py [--threads 1] [--clients 1 4 16] [--requests 3]
        [--lengths 16 64 160] [--stagger 0.05] [--run runs/sft]

Without --run the model is a random ~8M-parameter Llama with the byte tokenizer (what it says does not matter,
only how long it takes). The machine should be otherwise idle when the numbers are meant to be kept.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import httpx
import torch

from scratchlm.inference.engine import Engine
from scratchlm.inference.server import ServerThread, create_app
from scratchlm.inference.testing import ByteTokenizer
from scratchlm.model import ModelConfig, Transformer

PROMPTS = ["Once upon a time", "The weather today is", "Write a short poem about the sea.", "List three colours:"]


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q  # linear interpolation between the two nearest ranks (numpy's default)
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


async def one_request(client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int) -> dict:
    """Stream one completion; return its TTFT, TPOT and token count."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first = last = None
    tokens = 0
    async with client.stream("POST", url + "/v1/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"]:
                last = time.perf_counter()
                first = first or last
    if first is None or tokens == 0:
        raise RuntimeError(f"no tokens streamed for a {max_tokens}-token request")
    return {"ttft": first - t0, "tpot": (last - first) / max(tokens - 1, 1), "tokens": tokens}


async def run_clients(url: str, n_clients: int, n_requests: int, lengths: list[int], stagger: float) -> dict:
    """n_clients concurrent clients, each sending n_requests one after another, client c starting c * stagger
    seconds in. One event loop drives them all (threads would fight the server's threads for the GIL)."""
    limits = httpx.Limits(max_connections=n_clients + 1)
    async with httpx.AsyncClient(limits=limits) as client:
        await one_request(client, url, PROMPTS[0], 4)  # warm-up: first-call allocations are not what we measure

        async def one_client(c: int) -> list[dict]:
            await asyncio.sleep(c * stagger)
            out = []
            for r in range(n_requests):
                i = c * n_requests + r  # cycling the lengths over every request mixes long and short at all times
                out.append(await one_request(client, url, PROMPTS[i % len(PROMPTS)], lengths[i % len(lengths)]))
            return out

        t0 = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(one_client(c) for c in range(n_clients))) for r in rs]
        wall = time.perf_counter() - t0
    ttft = [r["ttft"] for r in results]
    return {"tok_s": sum(r["tokens"] for r in results) / wall, "ttft_p50": percentile(ttft, 0.5),
            "ttft_p95": percentile(ttft, 0.95), "tpot": sum(r["tpot"] for r in results) / len(results),
            "requests": len(results)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", 1)))
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, default=3, help="requests each client sends, one after another")
    ap.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 160], help="reply lengths, cycled")
    ap.add_argument("--max-batch", type=int, default=16, help="sequences in a batch at most (both modes)")
    ap.add_argument("--stagger", type=float, default=0.05, metavar="SECONDS",
                    help="client c starts c * SECONDS in (0: all at once, a burst whose one shared prefill then "
                         "dominates p95 TTFT in both modes)")
    ap.add_argument("--run", default=None, help="a run folder to serve instead of the random model")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.run:
        from scratchlm.inference.loading import load_engine

        engine = load_engine(args.run)
        model = engine.model
    else:
        torch.manual_seed(0)
        model = Transformer(ModelConfig(vocab_size=261, d_model=256, n_layers=8, n_heads=4, n_kv_heads=2,
                                        max_seq_len=512)).eval()
        engine = Engine(model, ByteTokenizer())
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {args.threads} thread(s), "
          f"max batch {args.max_batch}, reply lengths {args.lengths}, {args.requests} requests per client, "
          f"clients {args.stagger:g} s apart, "
          f"load average {open('/proc/loadavg').read().split()[0]}")
    print(f"{'clients':>7} {'batching':>10} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p95':>9} {'TPOT':>8}")
    for n in args.clients:
        row = {}
        for mode in ("static", "continuous"):  # the same clients, model and machine, one after the other
            with ServerThread(create_app(engine, model_id="bench", max_batch=args.max_batch, batching=mode)) as srv:
                row[mode] = m = asyncio.run(run_clients(srv.url, n, args.requests, args.lengths, args.stagger))
            print(f"{n:7d} {mode:>10} {m['tok_s']:8.1f} {m['ttft_p50'] * 1e3:7.0f}ms {m['ttft_p95'] * 1e3:7.0f}ms "
                  f"{m['tpot'] * 1e3:6.1f}ms")
        s, c = row["static"], row["continuous"]
        print(f"{n:7d} {'ratio c/s':>10} {c['tok_s'] / s['tok_s']:7.2f}x {c['ttft_p50'] / s['ttft_p50']:8.2f}x "
              f"{c['ttft_p95'] / s['ttft_p95']:8.2f}x {c['tpot'] / s['tpot']:7.2f}x")
    print(f"load average at the end: {open('/proc/loadavg').read().split()[0]}")


if __name__ == "__main__":
    main()
