"""Making a model ready for training steps: the one place pretraining and every post-training stage go through.

    apply_runtime(tc)                   # threads, deterministic algorithms
    prepare_model(model, tc)            # before any parallel wrapper: settings that change the model itself
    forward = compiled(module, tc)      # after it: what a training step calls
    refuse_unhonoured(tc, defaults, UNHONOURED_POSTTRAIN, "scratchlm sft")   # settings a stage cannot honour

The order matters and is the same everywhere: activation checkpointing is a property of the blocks, so it is set
on the bare model (a pipeline stage copies it, FSDP/DDP/TP wrap blocks that already have it); torch.compile goes
around the outermost module the step calls (the DDP/FSDP wrapper, or the bare model in one process), so the
wrapper's hooks stay outside the graph breaks they would cause inside. A setting a stage has no use for is not
silently dropped: `refuse_unhonoured` turns it into a one-line error naming it.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn


def apply_runtime(tc) -> None:
    """Process-wide settings of [train]: train.num_threads (CPU threads; 0: torch's default) and
    train.deterministic (deterministic algorithms: bitwise-reproducible runs on GPU, slower)."""
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    if tc.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


def prepare_model(model: nn.Module, tc) -> None:
    """Settings of [train] that change the model: train.activation_checkpointing (every Nth block recomputes its
    activations in the backward pass; 0: off)."""
    model.set_activation_checkpointing(tc.activation_checkpointing)


def compiled(module: nn.Module, tc):
    """torch.compile(module) when train.compile is on, else the module itself (same call signature)."""
    return torch.compile(module) if tc.compile else module


# [train] settings that post-training has no use for, and why (what to use instead). Everything else in [train]
# takes effect in every post-training stage (tests/test_posttrain_settings.py).
UNHONOURED_POSTTRAIN = {
    "global_batch_tokens": "post-training counts its batches in rows (train.micro_batch_size and the stage's "
                           "grad_accum), not tokens",
    "optimizer": "post-training uses AdamW for every parameter",
    "muon_lr": "post-training uses AdamW for every parameter (train.lr)",
    "muon_momentum": "post-training uses AdamW for every parameter",
    "eval_tokens": "post-training scores its held-out set whole",
    "sample_every": "post-training prints no samples while it trains (the summary shows replies before/after)",
    "sample_tokens": "post-training prints no samples while it trains (the summary shows replies before/after)",
    "sample_prompt": "post-training prints no samples while it trains (the summary shows replies before/after)",
    "peak_tflops": "post-training reports no MFU",
}

# ... and what GRPO does not use on top of those: its batch is prompts x replies, its lengths the prompt plus
# grpo.max_new_tokens.
UNHONOURED_GRPO = {
    "seq_len": "GRPO's rows are a prompt and up to grpo.max_new_tokens of reply, within the model's context",
    "micro_batch_size": "GRPO's batch is grpo.prompts_per_step x grpo.group_size replies (split by "
                        "grpo.minibatches)",
}


def refuse_unhonoured(tc, defaults, unhonoured: dict[str, str], where: str) -> None:
    """ValueError naming the first [train] setting in `unhonoured` that differs from `defaults` (the stage's own
    default TrainConfig): a value that would have no effect is an error, not a silent no-op."""
    for name, why in unhonoured.items():
        value, default = getattr(tc, name), getattr(defaults, name)
        if value != default:
            raise ValueError(f"train.{name} = {value!r} has no effect in {where}: {why}; remove the setting "
                             f"(default {default!r})")
