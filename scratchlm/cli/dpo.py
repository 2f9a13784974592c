"""`scratchlm dpo`: direct preference optimisation of an (SFT) run on chosen/rejected pairs."""

from __future__ import annotations

import argparse

from scratchlm.cli.sft import add_stage_args, list_keys, load_stage, run_stage

EXAMPLES = """\
examples:
  # TinyWorld preferences on top of the SFT run: held-out preference accuracy before -> after
  scratchlm dpo --base runs/sft --data runs/tw/preferences.jsonl --out runs/dpo --set train.max_time=120

  # the shared sets: Alpaca-with-preference (LLMs-from-scratch) or ShareGPT preference (LLaMA-Factory)
  scratchlm dpo --base runs/sft --data ../shared/data/llama-factory/dpo_en_demo.json --set lora.rank=8

  # IPO, or conservative DPO (10% label noise), with a live frozen reference instead of precomputed log-probs
  scratchlm dpo --base runs/sft --data prefs.jsonl --set dpo.loss=ipo
  scratchlm dpo --base runs/sft --data prefs.jsonl --set dpo.label_smoothing=0.1 --set dpo.reference=model

  # several processes (CPU: gloo, GPUs: NCCL): DDP, or FSDP2 with parallel.fsdp=N (docs/distributed.md)
  torchrun --standalone --nproc_per_node 2 -m scratchlm dpo --base runs/sft --data prefs.jsonl \
      --set parallel.fsdp=2 --set dpo.grad_accum=2 --set train.max_steps=100

output: RUN/checkpoints/ (merged weights), metrics.jsonl (loss, rewards/chosen, rewards/rejected,
        rewards/margins, rewards/accuracies, val_* on held-out pairs, val_pref_acc), DONE (summary)
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "dpo", help="direct preference optimisation on chosen/rejected pairs",
        description="DPO (sigmoid / IPO / conservative) against a frozen reference (or its precomputed "
                    "log-probs), beta 0.1 by default, LoRA optional. Prints held-out preference accuracy "
                    "before/after.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_args(p, "runs/dpo", "preference pairs: Alpaca-with-preference or ShareGPT preference JSON/JSONL")
    p.set_defaults(func=handler)


def handler(args) -> int:
    from scratchlm.posttrain.config import DPOConfig

    if args.list_keys:
        return list_keys(DPOConfig)
    from scratchlm.posttrain import run_dpo

    return run_stage(run_dpo, load_stage(args, DPOConfig), args)
