"""Arithmetic with and without the calculator tool, on TinyWorld's held-out sums (issue 19.5).

    .venv/bin/python benchmarks/tool_use.py --work /tmp/tool_use                 # the whole chain, ~1 h on 2 cores
    .venv/bin/python benchmarks/tool_use.py --work /tmp/tool_use --base RUN      # from your pretrained run

1. The corpus (`data synth`, 20 MB) and a base model (`pretrain`, configs/pretrain_tinyworld.toml for a fixed
   number of steps, so the base does not depend on how busy the machine is), unless --base is given.
2. Two SFT runs from that base with the same config, steps and seed (configs/sft_tinyworld.toml):
   `sft` on instructions.jsonl (the peer: no tool data) and `sft_tools` on instructions.jsonl + tool_chats.jsonl.
3. Greedy replies to the first --n arithmetic tasks of TinyWorld's val split (only held-out (a, op, b) triples, so
   neither model saw these sums), graded by check_answer like every TinyWorld eval:
   - sft without tools (the peer), sft_tools with the calculator offered and its calls run, sft_tools without it;
   - and --n-other non-arithmetic val tasks (facts, story questions) with and without the calculator offered:
     how often the model calls it when it should not, and whether offering it costs accuracy.
Accuracy comes with n and a 95% Wilson interval; every comparison is on the same tasks, so differences get the paired
(Agresti-Min) interval and count the tasks that went each way (scratchlm/stats.py).
Results go to WORK/results.json; the commands the script runs are printed as it runs them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PY = [sys.executable, "-m", "scratchlm"]
ENV = dict(os.environ)


def run(cmd: list[str]) -> None:
    print("$ scratchlm " + " ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(PY + cmd + ["--quiet"], check=True, cwd=REPO, env=ENV)
    print(f"  ({time.time() - t0:.0f} s)", flush=True)


def build(work: Path, base: str | None, pretrain_steps: int, sft_steps: int, seed: int) -> tuple[Path, Path]:
    corpus = work / "corpus"
    if not (corpus / "manifest.json").is_file():
        run(["data", "synth", "--out", str(corpus), "--size", "20MB", "--seed", str(seed), "--overwrite"])
    if base is None:
        base = str(work / "pretrain")
        if not (Path(base) / "DONE").is_file():
            run(["pretrain", "--config", "configs/pretrain_tinyworld.toml", "--out", base, "--overwrite",
                 "--set", f"data.train_text={corpus / 'train.txt'}", "--set", f"data.val_text={corpus / 'val.txt'}",
                 "--set", "train.max_time=0", "--set", f"train.max_steps={pretrain_steps}", "--seed", str(seed)])
    mix = work / "mix"
    mix.mkdir(parents=True, exist_ok=True)
    for sfx in ("", "_val"):  # instructions + tool conversations; SFT shuffles them together
        text = "".join((corpus / f"{name}{sfx}.jsonl").read_text() for name in ("instructions", "tool_chats"))
        (mix / f"sft_tools{sfx}.jsonl").write_text(text)
    runs = {"sft": corpus / "instructions.jsonl", "sft_tools": mix / "sft_tools.jsonl"}
    for name, data in runs.items():
        if not (work / name / "DONE").is_file():
            run(["sft", "--config", "configs/sft_tinyworld.toml", "--base", base, "--data", str(data),
                 "--out", str(work / name), "--overwrite", "--set", "train.max_time=0",
                 "--set", f"train.max_steps={sft_steps}", "--seed", str(seed)])
    return work / "sft", work / "sft_tools"


def evaluate(engine, tasks: list[dict], tools: dict, max_new_tokens: int) -> dict:
    """Accuracy of greedy replies (after any tool calls), and what the calls were."""
    from scratchlm.data.tinyworld import check_answer
    from scratchlm.inference.calculator import CalculatorError, calculate
    from scratchlm.inference.chat_template import alpaca_prompt
    from scratchlm.inference.sampling import SamplingParams
    from scratchlm.inference.tools import chat_with_tools_batch, final_answer

    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0)
    convs = [alpaca_prompt(t) for t in tasks]
    results = chat_with_tools_batch(engine, convs, params, tools, max_rounds=2, batch_size=32)
    right = called = exact_call = copied = errors = 0
    per_task = []
    by_kind: dict[str, list[int]] = {}
    examples = []
    for t, new in zip(tasks, results):
        reply = final_answer(new)
        ok = check_answer(reply, t["answer"], t["question"])
        right += ok
        per_task.append(int(ok))
        by_kind.setdefault(t["kind"], [0, 0])[0] += ok
        by_kind[t["kind"]][1] += 1
        calls = [c["function"]["arguments"] for m in new for c in m.get("tool_calls", [])]
        results_ = [m["content"] for m in new if m["role"] == "tool"]
        called += bool(calls)
        errors += any(r.startswith("error:") for r in results_)
        if calls:
            try:
                exact_call += calculate(str(calls[0].get("expression"))) == t["answer"]
            except CalculatorError:
                pass
            # did the answer repeat what the tool said (right or wrong)? separates reading the problem from copying
            copied += bool(results_) and check_answer(reply, results_[-1])
        if len(examples) < 4:
            examples.append({"question": t["instruction"][:120], "turns": new, "answer": t["answer"], "correct": ok})
    return {"n": len(tasks), "right": right, "called": called, "call_gives_answer": exact_call,
            "answer_repeats_result": copied, "tool_errors": errors, "by_kind": by_kind, "examples": examples,
            "per_task": per_task}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="folder for the corpus, runs and results.json")
    p.add_argument("--base", help="a pretrained run to start both SFT runs from (default: pretrain one)")
    p.add_argument("--pretrain-steps", type=int, default=600)
    p.add_argument("--sft-steps", type=int, default=400)
    p.add_argument("--n", type=int, default=500, help="held-out arithmetic tasks")
    p.add_argument("--n-other", type=int, default=300, help="held-out non-arithmetic tasks")
    p.add_argument("--max-new-tokens", type=int, default=96, help="per reply (a calculator call is ~60 tokens)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads for every stage (0 = torch's default); 1 is several times faster on cores "
                        "that other programs are using, as OpenMP threads then wait on each other")
    args = p.parse_args()
    if args.threads:
        ENV["OMP_NUM_THREADS"] = str(args.threads)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from scratchlm.data.tinyworld import iter_tasks
    from scratchlm.inference.loading import load_engine
    from scratchlm.inference.tools import builtin_tools
    from scratchlm.stats import compare_paired, format_proportion

    torch.manual_seed(args.seed)
    sft, sft_tools = build(args.work, args.base, args.pretrain_steps, args.sft_steps, args.seed)
    val = list(itertools.islice(iter_tasks("val", args.seed), 4 * (args.n + args.n_other)))
    arith = [t for t in val if t["kind"] == "arithmetic"][:args.n]
    other = [t for t in val if t["kind"] != "arithmetic"][:args.n_other]
    calc = builtin_tools(["calculator"])
    rows = {}
    for label, run_dir, tasks, tools in (
            ("arithmetic: sft, no tools (peer)", sft, arith, {}),
            ("arithmetic: sft_tools, calculator", sft_tools, arith, calc),
            ("arithmetic: sft_tools, no tools", sft_tools, arith, {}),
            ("other tasks: sft_tools, calculator", sft_tools, other, calc),
            ("other tasks: sft_tools, no tools", sft_tools, other, {})):
        t0 = time.time()
        engine = load_engine(run_dir)
        rows[label] = evaluate(engine, tasks, tools, args.max_new_tokens)
        r = rows[label]
        print(f"{label:38s} {format_proportion(r['right'], r['n'])}   calls {r['called']}/{r['n']}, "
              f"call = answer {r['call_gives_answer']}, answer repeats result {r['answer_repeats_result']}, "
              f"tool errors {r['tool_errors']}  ({time.time() - t0:.0f} s)", flush=True)
        for kind, (k, n) in sorted(r["by_kind"].items()):
            print(f"    {kind:12s} {format_proportion(k, n)}")
    keys = list(rows)
    for a, b in ((0, 1), (2, 1), (0, 2), (4, 3)):
        ra, rb = rows[keys[a]], rows[keys[b]]
        c = compare_paired(ra["per_task"], rb["per_task"])  # the same tasks on both sides
        print(f"{keys[b]}  vs  {keys[a]}: {c['text']}")
        rows[f"{keys[b]} vs {keys[a]}"] = {k: c[k] for k in ("diff", "diff_ci", "within_noise", "gained",
                                                                       "lost", "text")}
    (args.work / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                         "rows": rows}, indent=1, ensure_ascii=False))
    print(f"results: {args.work / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
