"""Post-training: turn a pretrained text continuer into an assistant that follows instructions.

    from scratchlm.posttrain import run_sft, run_dpo, run_grpo, run_reward
    run_sft(load_sft_config(None, ["base=runs/demo/pretrain", "data=runs/demo/corpus/instructions.jsonl"]),
            "runs/sft")                          # -> {"val_loss_before": ..., "val_loss_after": ...}

Files, in the order a learner meets them:
    formats.py   read SFT (Alpaca / messages) and preference (Alpaca-with-preference / ShareGPT) data
    tokenize.py  the chat template as token ids with an assistant-only loss mask; padding and packing
    lora.py      low-rank adapters: add, merge, save
    loop.py      what the three stages share: load the base run, optimizer, budgets, checkpoints, metrics
    sft.py       supervised fine-tuning (masked next-token loss)
    dpo.py       direct preference optimisation (sigmoid, IPO, conservative)
    reward.py    a reward model (transformer + scalar head, Bradley-Terry loss)
    rewards.py   verifiable rewards: TinyWorld answers, GSM8K numbers, or the reward model
    grpo.py      group-relative policy optimisation with sampled completions
The chat template itself lives in scratchlm/inference/chat_template.py: one template for training and serving
(an imported Hugging Face model trains in its own template: inference/hf_chat.py).
"""

from .config import DPOConfig, GRPOConfig, LoRAConfig, RewardConfig, SFTConfig, load_stage_config

__all__ = ["SFTConfig", "DPOConfig", "GRPOConfig", "RewardConfig", "LoRAConfig", "load_stage_config",
           "run_sft", "run_dpo", "run_grpo", "run_reward"]


def run_sft(cfg, run_dir, resume: bool = False, overwrite: bool = False) -> dict:
    from .sft import run_sft as f

    return f(cfg, run_dir, resume=resume, overwrite=overwrite)


def run_dpo(cfg, run_dir, resume: bool = False, overwrite: bool = False) -> dict:
    from .dpo import run_dpo as f

    return f(cfg, run_dir, resume=resume, overwrite=overwrite)


def run_reward(cfg, run_dir, resume: bool = False, overwrite: bool = False) -> dict:
    from .reward import run_reward as f

    return f(cfg, run_dir, resume=resume, overwrite=overwrite)


def run_grpo(cfg, run_dir, resume: bool = False, overwrite: bool = False) -> dict:
    from .grpo import run_grpo as f

    return f(cfg, run_dir, resume=resume, overwrite=overwrite)
