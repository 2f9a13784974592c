"""Post-training under torchrun: SFT, DPO and GRPO spread over data-parallel ranks (DDP or FSDP2), the same
training as one process. (The reward model runs in one process and refuses torchrun.)

    torchrun --standalone --nproc_per_node 2 -m scratchlm sft --base RUN --data FILE --set parallel.fsdp=2
    torchrun --standalone --nproc_per_node 2 -m scratchlm dpo --base RUN --data PAIRS --set parallel.fsdp=2
    torchrun --standalone --nproc_per_node 2 -m scratchlm rl --base RUN --task tinyworld --set parallel.dp=2

What changes with N data-parallel ranks (and what does not):
- sft.grad_accum / dpo.grad_accum count the micro-batches of one optimizer step over *all* ranks; every rank
  builds the same epoch of micro-batches (same seed) and runs micro-batches r, r+N, r+2N, ... of each step, so
  the global batch is the single-process one.
- SFT divides the loss by the target tokens of the whole step, counted on every rank and all-reduced (DPO: the
  mean over the step's pairs); the gradient wrappers average over ranks, so each rank scales its loss by N (a
  sum over ranks, as in one process). Logged numbers are all-reduced sums of the ranks' shares.
- GRPO: every rank draws the step's same P prompts and rolls out its own P/N of them (an equal part of every
  minibatch), each reply with its own seed (prompt index, reply index), so N ranks sample the replies one process
  samples; advantages are computed inside each group (a group never spans ranks); the loss is divided by the
  reply tokens of the step on all ranks. Under FSDP each rank samples with a full copy gathered from the shards.
- only rank 0 writes; checkpoints hold the full (LoRA-merged) model.safetensors that inference reads, gathered
  from the shards by every rank. Evaluation runs on rank 0 on that gathered copy (FSDP) or on its own replica
  (DDP); its numbers are broadcast so every rank takes the same decisions.
Tensor and pipeline parallelism are not wired for post-training (packed rows call the model's parts directly).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist
import torch.nn as nn


def start_posttrain(pc, device: str):
    """The DistContext for a post-training [parallel] section (ValueError, in every rank, for a bad layout)."""
    from scratchlm.distributed.mesh import env_world, setup

    if pc.tp > 1 or pc.pp > 1:
        raise ValueError("post-training supports data parallelism only (parallel.dp / parallel.fsdp); set "
                         "parallel.tp = 1 and parallel.pp = 1")
    if device == "cpu" and pc.backend == "auto":
        pc = dataclasses.replace(pc, backend="gloo")  # CPU training on a GPU machine: no NCCL
    if env_world()[1] == 1 and pc.fsdp == 1 and pc.dp in (-1, 1):
        return None  # one process: the plain loop, unchanged
    return setup(pc)


class PackedForward(nn.Module):
    """forward_batch as a module forward, so DDP's and FSDP's root hooks run for packed rows too (their
    forward calls the model's parts, not model.forward)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, y, positions=None, doc_ids=None):
        from .packing import forward_batch
        from .tokenize import Batch

        return forward_batch(self.model, Batch(x, y, positions, doc_ids))  # (B, T, V)


def wrap_data_parallel(model: nn.Module, ctx) -> nn.Module:
    """DDP (fsdp = 1) or FSDP2 (one unit per block + the root wrapper) around PackedForward(model); the
    model's parameters stay the ones the optimizer must step (FSDP turns them into sharded DTensors in place)."""
    root = PackedForward(model)
    if ctx.degrees["fsdp"] == 1:
        from scratchlm.distributed.ddp import apply_ddp

        return apply_ddp(root, ctx.mesh["dp"], ctx.device)
    from torch.distributed.fsdp import fully_shard

    from scratchlm.distributed.fsdp import fsdp_policies

    mesh = ctx.mesh["fsdp"] if ctx.degrees["dp"] == 1 else ctx.mesh["dp", "fsdp"]  # (dp, fsdp): HSDP
    kw = fsdp_policies(ctx.cfg)
    for block in model.layers:
        fully_shard(block, mesh=mesh, reshard_after_forward=ctx.cfg.reshard_after_forward, **kw)
    fully_shard(root, mesh=mesh, reshard_after_forward=False, **kw)
    return root


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict on every rank (collective with FSDP: each sharded tensor is all-gathered)."""
    from torch.distributed.tensor import DTensor

    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu().clone()
            for k, v in model.state_dict().items()}


def merge_lora_dict(sd: dict, scale: float) -> dict[str, torch.Tensor]:
    """A LoRA model's state dict -> the merged model's (W' = W + scale * B A under the base names)."""
    out = {k.replace(".base.", "."): v for k, v in sd.items() if ".lora_" not in k}
    for k in sd:
        if k.endswith(".lora_a"):
            name = k[: -len(".lora_a")]
            out[f"{name}.weight"] = sd[f"{name}.base.weight"] + scale * (sd[f"{name}.lora_b"] @ sd[k])
    return out


def all_reduce_sum(ctx, value: float | int) -> float:
    """Sum of a number over the data-parallel ranks (float64, so token counts stay exact)."""
    t = torch.tensor([float(value)], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, group=ctx.data_group)
    return t.item()


def all_gather_rows(ctx, t: torch.Tensor) -> torch.Tensor:
    """Every data-parallel rank's (n, ...) tensor, concatenated in rank order (each rank holds the same n)."""
    t = t.to(ctx.device)
    parts = [torch.empty_like(t) for _ in range(ctx.dp_size)]
    dist.all_gather(parts, t.contiguous(), group=ctx.data_group)
    return torch.cat(parts).cpu()


def broadcast(ctx, obj):
    """Rank 0's picklable `obj` on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
