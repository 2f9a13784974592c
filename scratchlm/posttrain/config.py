"""Configs of the post-training stages. Each is `base` + data + a stage section + [lora] + [train].

[train] is pretraining's TrainConfig (lr, schedule, budgets, eval/log/checkpoint cadence, device, dtype, seed),
with post-training defaults (below) in place of pretraining's; train.seq_len is the longest sample kept (tokens),
train.micro_batch_size the rows per forward. train.global_batch_tokens is not used: batches here are counted in
samples, and `grad_accum` micro-batches make one optimizer step.

    base = "runs/demo/pretrain"
    data = "runs/demo/corpus/instructions.jsonl"
    [sft]
    batching = "pack"
    [train]
    lr = 1e-3
    max_time = 60
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from scratchlm.config import load_config
from scratchlm.train.config import TrainConfig

from scratchlm.distributed.config import ParallelConfig

from .lora import LoRAConfig

# What post-training changes from pretraining's TrainConfig defaults: small lr (the model already knows the
# language), short warmup, frequent held-out evaluation, no text samples (stages print their own), constant
# schedule tail close to the peak (min_lr_ratio) because runs are short.
TRAIN_DEFAULTS = {"lr": 3e-4, "warmup_steps": 10, "weight_decay": 0.0, "eval_every": 50, "log_every": 5,
                  "sample_tokens": 0, "seq_len": 512, "micro_batch_size": 8, "max_steps": 0, "min_lr_ratio": 0.1}


@dataclass
class SFTOptions:
    assistant_only: bool = True
    """Loss on the assistant's replies only (prompt tokens masked); false: on every token."""
    batching: Literal["pad", "pack"] = "pack"
    """"pack": several samples per row, each attending only to itself (no compute on padding); "pad":
    length-grouped right padding, one sample per row."""
    grad_accum: int = field(default=1, metadata={"range": (1, None)})
    """Micro-batches per optimizer step, over all data-parallel ranks (a multiple of their number; each runs
    grad_accum / N of them). The loss is normalised by the number of target tokens in all of them."""


@dataclass
class SFTConfig:
    """`scratchlm sft`: supervised fine-tuning on instruction/chat data."""

    base: str = ""
    """The run (or checkpoint) to start from: a pretraining run, or an earlier SFT run."""
    data: str = ""
    """Training data: JSON or JSONL, Alpaca (instruction/input/output) or messages (OpenAI / ShareGPT)."""
    val_data: str = ""
    """Held-out data in the same formats; "" holds out val_fraction of `data` (or its *_val twin if present)."""
    val_fraction: float = field(default=0.05, metadata={"range": (0.0, 0.5)})
    """Share of `data` held out when there is no val_data."""
    max_val: int = field(default=200, metadata={"range": (1, None)})
    """Evaluate on at most this many held-out samples."""
    sft: SFTOptions = field(default_factory=SFTOptions)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """Under torchrun: data-parallel layout (dp: DDP, fsdp: FSDP2); tp and pp are not supported here."""


@dataclass
class DPOOptions:
    beta: float = field(default=0.1, metadata={"range": (0.0, None)})
    """Strength of the pull towards the reference: the implicit reward is beta * log(pi / pi_ref). 0.1 is the
    DPO paper's and TRL's default; lower lets the policy drift further."""
    loss: Literal["sigmoid", "ipo"] = "sigmoid"
    """"sigmoid": DPO (Rafailov et al. 2023). "ipo": IPO (Azar et al. 2023), a squared loss that keeps the
    log-ratio margin near 1/(2 beta) instead of pushing it to infinity on deterministic preferences."""
    label_smoothing: float = field(default=0.0, metadata={"range": (0.0, 0.5)})
    """Conservative DPO (cDPO): assume this fraction of the labels is flipped (sigmoid loss only). 0 = plain DPO."""
    reference: Literal["model", "precompute"] = "precompute"
    """"model": a frozen copy of the base (with LoRA: the base itself, adapters off) scores every batch.
    "precompute": the reference log-probs of every pair are computed once before training, and the reference
    model is freed (half the forward passes, no second model in memory)."""
    grad_accum: int = field(default=1, metadata={"range": (1, None)})
    """Micro-batches (of pairs) per optimizer step, over all data-parallel ranks (a multiple of their number;
    each runs grad_accum / N of them)."""


@dataclass
class DPOConfig:
    """`scratchlm dpo`: direct preference optimisation on chosen/rejected pairs."""

    base: str = ""
    """The run to start from (usually an SFT run); it is also the reference model."""
    data: str = ""
    """Preference pairs: Alpaca-with-preference (instruction, input, chosen, rejected) or ShareGPT preference."""
    val_data: str = ""
    """Held-out pairs; "" holds out val_fraction of `data` (or uses its *_val twin if present)."""
    val_fraction: float = field(default=0.1, metadata={"range": (0.0, 0.5)})
    """Share of `data` held out when there is no val_data."""
    max_val: int = field(default=200, metadata={"range": (1, None)})
    """Evaluate on at most this many held-out pairs."""
    dpo: DPOOptions = field(default_factory=DPOOptions)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """Under torchrun: data-parallel layout (dp: DDP, fsdp: FSDP2); tp and pp are not supported here."""


@dataclass
class RewardConfig:
    """`scratchlm reward`: a reward model (our transformer + a scalar head) trained on preference pairs."""

    base: str = ""
    """The run whose transformer becomes the reward model's body (usually the SFT run)."""
    data: str = ""
    """Preference pairs, as for DPO."""
    val_data: str = ""
    """Held-out pairs; "" holds out val_fraction of `data` (or its *_val twin)."""
    val_fraction: float = field(default=0.1, metadata={"range": (0.0, 0.5)})
    """Share of `data` held out when there is no val_data."""
    max_val: int = field(default=200, metadata={"range": (1, None)})
    """Evaluate on at most this many held-out pairs."""
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class GRPOOptions:
    group_size: int = field(default=8, metadata={"range": (2, None)})
    """Completions sampled per prompt. Advantages are rewards normalised inside each group, so a group needs
    both successes and failures to teach anything: 8-16 is typical."""
    prompts_per_step: int = field(default=4, metadata={"range": (1, None)})
    """Prompts per rollout batch (each with group_size completions), shared by its `minibatches` optimizer steps."""
    max_new_tokens: int = field(default=48, metadata={"range": (1, None)})
    """Longest completion sampled."""
    temperature: float = field(default=1.0, metadata={"range": (0.0, None)})
    """Sampling temperature of the rollouts (1.0: the policy's own distribution, which the ratio assumes)."""
    top_k: int = field(default=0, metadata={"range": (0, None)})
    """Top-k for the rollouts (0: off)."""
    clip_eps: float = field(default=0.2, metadata={"range": (0.0, 1.0)})
    """PPO clip: the ratio pi/pi_old is clipped to [1 - eps, 1 + eps] where that would increase the objective."""
    kl_coef: float = field(default=0.04, metadata={"range": (0.0, None)})
    """Weight of the KL penalty to the reference (DeepSeekMath: 0.04; 0 = no penalty)."""
    track_kl: bool = True
    """Log the KL to the reference even when kl_coef is 0 (one more forward per rollout batch; without LoRA, a
    copy of the weights). How far the policy has moved is the first thing to look at when RL goes wrong."""
    updates_per_batch: int = field(default=1, metadata={"range": (1, None)})
    """Passes (PPO epochs) over each batch of rollouts. With more than one optimizer step per batch (this x
    minibatches), later steps start from a policy that has left pi_old: that is where clipping acts."""
    minibatches: int = field(default=1, metadata={"range": (1, None)})
    """Optimizer steps per pass over a rollout batch, each on an equal share of its groups (prompts_per_step must
    be a multiple). More steps per rollout reuse each expensive generation."""
    scale_rewards: bool = True
    """Divide advantages by the group's reward std (GRPO); false: mean-centring only (Dr. GRPO)."""
    eval_tasks: int = field(default=100, metadata={"range": (1, None)})
    """Held-out tasks scored greedily before training, every train.eval_every steps and at the end; the best
    checkpoint by this accuracy (the base included) is the run's best, which later stages load."""


@dataclass
class GRPOConfig:
    """`scratchlm rl`: GRPO with verifiable rewards (TinyWorld, GSM8K) or a reward model."""

    base: str = ""
    """The run to improve (usually the SFT or DPO run); also the KL reference."""
    task: Literal["tinyworld", "gsm8k", "reward-model"] = "tinyworld"
    """Where rewards come from: "tinyworld": TinyWorld arithmetic/lookup answers checked by check_answer;
    "gsm8k": the last number of the reply == the answer after '####'; "reward-model": a `scratchlm reward` run."""
    data: str = ""
    """Task file (JSONL with instruction/question and answer); "" = generate TinyWorld tasks or read GSM8K from
    ../shared/data."""
    val_data: str = ""
    """Held-out tasks; "" = the *_val twin of data, TinyWorld's val split, or GSM8K's test split."""
    reward_model: str = ""
    """A `scratchlm reward` run, for task = "reward-model"."""
    grpo: GRPOOptions = field(default_factory=GRPOOptions)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """Under torchrun: data-parallel layout (dp: DDP, fsdp: FSDP2); each rank rolls out grpo.prompts_per_step / N
    prompts. tp and pp are not supported here."""


STAGE_DEFAULTS = {
    SFTConfig: {"train": {**TRAIN_DEFAULTS}},
    DPOConfig: {"train": {**TRAIN_DEFAULTS, "lr": 1e-4, "micro_batch_size": 4}},
    RewardConfig: {"train": {**TRAIN_DEFAULTS, "lr": 1e-4, "micro_batch_size": 4}},
    GRPOConfig: {"train": {**TRAIN_DEFAULTS, "lr": 1e-4, "warmup_steps": 2, "eval_every": 0, "log_every": 1,
                           "grad_clip": 1.0}},
}


def stage_train_defaults(cls: type) -> TrainConfig:
    """The [train] section a stage has when nothing is set: pretraining's defaults with the stage's own."""
    from scratchlm.config import from_dict

    return from_dict(TrainConfig, STAGE_DEFAULTS[cls]["train"])


def load_stage_config(cls: type, path: str | Path | None = None, overrides: list[str] | None = None,
                      defaults: dict | None = None):
    """Stage defaults <- `defaults` <- TOML file <- --set overrides -> a validated stage config."""
    from scratchlm.config import merge

    return load_config(cls, path, overrides, merge(STAGE_DEFAULTS[cls], defaults or {}))
