"""The settings of `scratchlm plan`, as a config like every other command's (scratchlm/config.py).

A TOML file passed with --config and `--set KEY=VALUE` name these keys, the flags' names with underscores
(`--set gpus=8`, `--set cost_per_gpu_hour=2.5`); the command's flags set the same keys, above the file and below
--set. So a cluster can live in a file: `scratchlm plan --config h100_pod.toml --params 7e9`. Ranges are checked by
the planner, whose messages name the flag; the types and choices are checked here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class PlanConfig:
    # the model: one of params, preset, run; none = inverse mode (the compute-optimal model for a budget)
    params: float | None = None
    """Parameter count N, e.g. 7e9 (a Llama-style shape is assumed)."""
    preset: str | None = None
    """A model preset, e.g. gpt2-124m, llama-1b."""
    run: str | None = None
    """A run folder: plan for its checkpoint's model."""
    kv_heads: int | None = None
    """KV heads for `params` (None: n_heads, MHA)."""
    # the work: tokens or one budget (none: compute-optimal tokens for the model)
    tokens: float | None = None
    flops: float | None = None
    days: float | None = None
    budget_usd: float | None = None
    fit: Literal["chinchilla", "hoffmann", "besiroglu"] = "chinchilla"
    tokens_per_param: float = 20.0
    # hardware
    gpu: str = "H100"
    gpus: int = 1
    gpus_per_node: int = 8
    hardware: str | None = None
    """A TOML file of extra or overridden devices (docs/plan.md)."""
    mfu: float = 0.4
    cost_per_gpu_hour: float | None = None
    # training setup
    precision: Literal["bf16-mixed", "amp", "bf16", "fp8", "tf32", "fp32"] = "bf16-mixed"
    optimizer: Literal["adamw", "adam", "lion", "sgd", "none"] = "adamw"
    seq_len: int | None = None
    micro_batch: int = 1
    batch_tokens: float = 2**19
    attention: Literal["flash", "eager"] = "flash"
    # parallel layout: None = not given, the search chooses
    dp: int | None = None
    fsdp: int | None = None
    tp: int | None = None
    pp: int | None = None
    zero: int | None = field(default=None, metadata={"choices": (0, 1, 2, 3)})
    checkpointing: Literal["none", "selective", "full"] | None = None
    sequence_parallel: bool = False
    pp_schedule: Literal["1f1b", "gpipe"] = "1f1b"
    reserve_gib: float = 1.0
    # inference
    infer_batch: int = 1
    context: int | None = None
    kv_bytes: int = field(default=2, metadata={"choices": (1, 2, 4)})
