"""`scratchlm rl` (GRPO with verifiable or reward-model rewards) and `scratchlm reward` (train a reward model)."""

from __future__ import annotations

import argparse

from scratchlm.cli.sft import add_stage_args, list_keys, load_stage, print_summary, run_stage

EXAMPLES = """\
examples:
  # GRPO on TinyWorld arithmetic / lookup tasks (generated on the fly): task accuracy before -> after
  scratchlm rl --base runs/sft --task tinyworld --out runs/rl --set train.max_time=300

  # the same tasks from `scratchlm data synth`, 16 replies per prompt, no KL penalty (no reference model)
  scratchlm rl --base runs/sft --task tinyworld --data runs/tw/tasks.jsonl --set grpo.group_size=16 \\
      --set grpo.kl_coef=0

  # GSM8K (../shared/data/gsm8k), answers matched on the last number
  scratchlm rl --base runs/sft-gsm8k --task gsm8k --set grpo.max_new_tokens=256

  # two processes (CPU: gloo, GPUs: NCCL), each rolling out half of every step's prompts
  torchrun --standalone --nproc_per_node 2 -m scratchlm rl --base runs/sft --task tinyworld \\
      --set parallel.dp=2 --set grpo.prompts_per_step=8 --set train.max_time=300

  # rewards from a reward model trained with `scratchlm reward`
  scratchlm reward --base runs/sft --data runs/tw/preferences.jsonl --out runs/rm
  scratchlm rl --base runs/sft --task reward-model --data runs/tw/instructions.jsonl --set reward_model=runs/rm

output: RUN/checkpoints/, metrics.jsonl (reward, accuracy, kl, clip_frac, val_accuracy), DONE (summary)
"""

REWARD_EXAMPLES = """\
examples:
  scratchlm reward --base runs/sft --data runs/tw/preferences.jsonl --out runs/rm --set train.max_steps=200
  scratchlm reward --base runs/sft --data ../shared/data/llms-from-scratch/instruction-data-with-preference.json

output: RUN/checkpoints/ (the transformer body; the score head is in state.pt), metrics.jsonl (loss, accuracy,
        val_accuracy), DONE (held-out accuracy before/after). Use it with `scratchlm rl --task reward-model`.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "rl", help="reinforcement learning (GRPO) with verifiable rewards or a reward model",
        description="GRPO: sample groups of replies per prompt with the KV-cache engine, score them (TinyWorld "
                    "answers, GSM8K numbers, or a reward model), group-normalised advantages, clipped ratio, KL "
                    "to the reference. Prints held-out task accuracy before/after.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="tinyworld", choices=["tinyworld", "gsm8k", "reward-model"],
                   help="where rewards come from (default: tinyworld)")
    add_stage_args(p, "runs/rl", "task file (JSONL: instruction/question + answer); default: built-in tasks",
                   data_required=False)
    p.set_defaults(func=handler)

    r = subparsers.add_parser(
        "reward", help="train a reward model (Bradley-Terry) on preference pairs",
        description="A reward model: the base transformer plus a scalar head on the reply's last token, trained "
                    "with the Bradley-Terry loss. Prints held-out pair accuracy before/after.",
        epilog=REWARD_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_args(r, "runs/reward", "preference pairs: Alpaca-with-preference or ShareGPT preference JSON/JSONL")
    r.set_defaults(func=reward_handler)


def handler(args) -> int:
    from scratchlm.posttrain.config import GRPOConfig

    if args.list_keys:
        return list_keys(GRPOConfig)
    from scratchlm.posttrain import run_grpo

    return run_stage(run_grpo, load_stage(args, GRPOConfig, {"task": args.task}), args)


def reward_handler(args) -> int:
    from scratchlm.posttrain.config import RewardConfig

    if args.list_keys:
        return list_keys(RewardConfig)
    from scratchlm.posttrain import run_reward

    cfg = load_stage(args, RewardConfig)
    print_summary(run_reward(cfg, args.out, resume=args.resume, overwrite=args.overwrite), args.quiet)
    return 0
