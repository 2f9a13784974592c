"""`scratchlm data synth`: write the built-in TinyWorld corpus (stories, facts, sums) and its post-training data."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from scratchlm.cli.common import add_common

log = logging.getLogger("scratchlm")

SYNTH_EXAMPLES = """\
examples:
  scratchlm data synth --out runs/tinyworld --size 20MB --seed 0
  scratchlm data synth --out /tmp/tw --size 500KB            # a few hundred stories, for a quick look
  scratchlm data synth --out runs/tw1 --size 1GB --seed 1 --instructions 50000
  scratchlm data synth --config tw.toml --set size=5MB --out runs/tw2   # settings as config keys (size = "5MB")

sizes: a number of bytes, or with a unit: 500KB, 20MB, 1GB (powers of 1000), 1GiB (powers of 1024).

writes into --out:
  train.txt, val.txt          one document per line, documents separated by a blank line
                              (val: held-out hero/place/plot combinations, fact wordings and sums)
  instructions.jsonl          Alpaca {instruction, input, output, kind, split}        (+ instructions_val.jsonl)
  preferences.jsonl           + {chosen, rejected, rejected_kind}; output == chosen    (+ preferences_val.jsonl)
  tasks.jsonl                 {id, kind, instruction, input, question, answer, output} (+ tasks_val.jsonl);
                              score replies with scratchlm.data.tinyworld.check_answer(reply, answer, question)
  tool_chats.jsonl            OpenAI messages that call the calculator (docs/tools.md) (+ tool_chats_val.jsonl)
  edits.jsonl                 Alpaca; output = input copied, renamed or cut to one child's sentences (+ _val);
                              teaches a model to copy, for prompt lookup (docs/inference.md)
  manifest.json               seed, sizes, counts, sha256 of every file, generator version

The same --seed and --size give byte-identical files. In Python: `scratchlm.data.tinyworld.iter_documents("train",
seed=0)` streams the same documents without writing anything.
"""


def add_synth_parser(data_subparsers) -> argparse.ArgumentParser:
    """Add `synth` under `scratchlm data` (called by scratchlm/cli/data.py)."""
    p = data_subparsers.add_parser(
        "synth", help="write the built-in TinyWorld corpus (stories, facts, sums, instructions, preferences, tasks)",
        description="Generate TinyWorld: simple English children's stories, world facts and arithmetic, "
                    "deterministic for a seed, with a held-out split of unseen combinations, plus instruction, "
                    "preference and verifiable-task data for SFT, DPO and RL.",
        epilog=SYNTH_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    # every setting is also a config key (data/tinyworld/config.py): defaults <- --config <- these flags <- --set,
    # so the flags default to None ("not given") and the defaults live in the dataclass
    p.add_argument("--size", default=None, help="text to write, train + val (default: 20MB)")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="share of --size that goes to val.txt (default: 0.02)")
    p.add_argument("--instructions", type=int, default=None, metavar="N",
                   help="train instruction records (default: one per KB of text, 200..20000; val gets N/10)")
    p.add_argument("--preferences", type=int, default=None, metavar="N", help="train preference pairs (default: N/2)")
    p.add_argument("--tasks", type=int, default=None, metavar="N", help="train verifiable tasks (default: N/2)")
    add_common(p, out="runs/tinyworld", config=True, device=False)
    p.set_defaults(func=synth_handler)
    return p


def synth_config(args):
    """The resolved settings (scratchlm/data/tinyworld/config.py): defaults <- --config <- flags given <- --set."""
    from scratchlm.config import load_config
    from scratchlm.data.tinyworld.config import SynthConfig

    for flag in ("instructions", "preferences", "tasks"):  # said with the flag's name; --set is checked by its range
        n = getattr(args, flag, None)
        if n is not None and n < 1:
            raise ValueError(f"--{flag} must be at least 1, got {n}")
    given = {k: getattr(args, k, None) for k in ("size", "val_fraction", "instructions", "preferences", "tasks",
                                                 "seed")}
    return load_config(SynthConfig, getattr(args, "config", None), getattr(args, "overrides", None),
                       flags={k: v for k, v in given.items() if v is not None})


def synth_handler(args) -> int:
    from scratchlm.data.tinyworld import parse_size, synthesize

    out = Path(args.out)
    cfg = synth_config(args)
    size = parse_size(cfg.size)
    from scratchlm.runs import claim_out_dir

    claim_out_dir(out, overwrite=getattr(args, "overwrite", False), finished="manifest.json", wipe=False,
                  kind="data synth")
    seed = cfg.seed
    t0 = time.perf_counter()
    m = synthesize(out, size, seed, val_fraction=cfg.val_fraction, n_instructions=cfg.instructions,
                   n_preferences=cfg.preferences, n_tasks=cfg.tasks,
                   progress=None if getattr(args, "quiet", 0) == 0 else False)
    dt = time.perf_counter() - t0
    text = m["files"]["train.txt"]["bytes"] + m["files"]["val.txt"]["bytes"]
    if getattr(args, "quiet", 0) <= 0:
        print(f"TinyWorld v{m['version']}, seed {seed}: {text / 1e6:.1f} MB of text and "
              f"{sum(f.get('records', 0) for f in m['files'].values()):,} records in {dt:.1f}s -> {out}")
        for name, f in m["files"].items():
            what = f.get("records", f.get("documents"))
            unit = "records" if "records" in f else "documents"
            print(f"  {name:<24} {f['bytes'] / 1e6:9.2f} MB  {what:>9,} {unit}")
    return 0
