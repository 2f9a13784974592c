"""One entry point: apply the [parallel] layout to a plain Transformer, from the outside (torchtitan's order).

    1. pp > 1: keep only this rank's pipeline stage (its layers; embedding / head on the ends)
    2. tp > 1: tensor-parallel the matmuls (DTensor, tp axis)
    3. fsdp > 1, or dp > 1 together with tp or pp: FSDP2 over the data axes (dp = its replicate axis: HSDP)
       otherwise dp > 1: DDP (DDP's reducer cannot follow a pipeline's many forwards before one backward,
       nor DTensor parameters; FSDP2 with a replicate axis of size dp is the same data parallelism)
    4. pp > 1: wrap the stage in a Pipeline (schedule + micro-batches)

TP goes first because FSDP shards the (already tensor-parallel) DTensors further; DDP goes last because it
wraps the module it is given.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.tensor import DTensor, Replicate

from .ddp import apply_ddp
from .fsdp import apply_fsdp
from .pp import Pipeline, build_stage
from .tp import apply_tp


def parallelize(model: nn.Module, ctx, batch_rows: int | None = None):
    """Apply ctx's layout to `model` (a scratchlm Transformer, same initial weights on every rank).

    Returns the model to train (possibly DDP-wrapped), or with pp > 1 a `Pipeline`; batch_rows (rows per rank
    and step) sets the pipeline's micro-batch count and must then be given."""
    cfg, d, mesh = ctx.cfg, ctx.degrees, ctx.mesh
    cfg.check_model(model.config)
    stage = None
    if d["pp"] > 1:
        if batch_rows is None:
            raise ValueError("parallelize with pp > 1 needs batch_rows (rows per rank and step) for micro-batching")
        n_micro = cfg.microbatches(batch_rows)  # checked before anything is built
        model = stage = build_stage(model, ctx.pp_rank, d["pp"])
    if d["tp"] > 1:
        apply_tp(model, mesh["tp"], cfg.sequence_parallel)
    if d["fsdp"] > 1 or (d["dp"] > 1 and (d["tp"] > 1 or d["pp"] > 1)):
        fsdp_mesh = mesh["dp", "fsdp"] if d["dp"] > 1 else mesh["fsdp"]
        apply_fsdp(model, fsdp_mesh, cfg)
    elif d["dp"] > 1:
        model = apply_ddp(model, mesh["dp"], ctx.device)
    if stage is not None:
        return Pipeline(model, stage, ctx, n_micro, cfg.pp_schedule)
    return model


def trainable(model_or_pipeline) -> nn.Module:
    """The nn.Module whose parameters the optimizer should see (the stage for a Pipeline)."""
    return model_or_pipeline.module if isinstance(model_or_pipeline, Pipeline) else model_or_pipeline


# ---------------------------------------------------------------------------------------------- gradient norm
@torch.no_grad()
def clip_grad_norm_(params, max_norm: float, ctx=None) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ for any layout: returns the global L2 norm, clips in place.

    Each gradient's squared norm is summed over its local shard, then over the mesh axes it is sharded on
    (FSDP and TP shards hold disjoint pieces; replicated axes hold copies, counted once), then over the
    pipeline stages (each holds different layers; a tied embedding copy is counted on one stage only).
    torch's own version cannot mix DTensors of different meshes (FSDP x TP: norms are 1-D, matmuls 2-D)."""
    params = [p for p in params if p.grad is not None]
    for p in params:
        g = p.grad
        if isinstance(g, DTensor) and any(pl.is_partial() for pl in g.placements):
            # A replicated weight applied to sharded activations (a norm under sequence parallelism in a pipeline
            # stage) gets a gradient that is still a sum of per-rank pieces: take the sum now, once. Squaring
            # the pieces and adding those would understate the norm.
            p.grad = g.redistribute(g.device_mesh, [Replicate() if pl.is_partial() else pl for pl in g.placements])
    device = params[0].grad.device if params else torch.device("cpu")
    groups: dict = {}
    for p in params:
        if getattr(p, "_pp_tied_copy", False):
            continue
        g = p.grad
        if isinstance(g, DTensor):
            key = (g.device_mesh, tuple(i for i, pl in enumerate(g.placements) if not pl.is_replicate()))  # Shard or _StridedShard
            local = g.to_local()
        else:
            key, local = None, g
        groups[key] = groups.get(key, 0.0) + local.float().pow(2).sum()
    total = torch.zeros((), device=device)
    for key, sq in groups.items():
        sq = torch.as_tensor(sq, device=device, dtype=torch.float32)
        if key is not None:
            mesh, dims = key
            for dim in dims:  # sum the disjoint shards
                dist.all_reduce(sq, group=mesh.get_group(dim))
        total += sq
    if ctx is not None and ctx.degrees["pp"] > 1:
        dist.all_reduce(total, group=ctx.mesh["pp"].get_group())
    norm = total.sqrt()
    if math.isfinite(max_norm):
        coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        for p in params:
            g = p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad
            g.mul_(coef.to(g.device, g.dtype))
    return norm
