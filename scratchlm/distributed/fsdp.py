"""Fully sharded data parallelism with FSDP2 (`torch.distributed.fsdp.fully_shard`; ZeRO-3, Rajbhandari et al.
2020).

Every parameter is a DTensor sharded on dim 0 over the fsdp ranks: each rank stores 1/N of the weights, of
their gradients and (since the optimizer only sees the shards) of the AdamW moments. Before a block runs,
its weights are all-gathered; after its backward, its gradients are reduce-scattered, so each rank ends up
with the mean gradient of its own shard. One `fully_shard` unit per block bounds the gathered memory to
about one block; the root unit holds the rest (embeddings, final norm, head).

With a 2-D mesh (dp, fsdp) FSDP replicates over dp and shards over fsdp (HSDP: shard within a node, replicate
across nodes). With TP, parameters are already DTensors on the tp axis and FSDP shards them further (2-D).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

from .config import ParallelConfig


def fsdp_policies(cfg: ParallelConfig) -> dict:
    """Keyword arguments for fully_shard from the [parallel] config (mixed precision, CPU offload)."""
    param_dtype = None if cfg.param_dtype == "float32" else getattr(torch, cfg.param_dtype)
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=getattr(torch, cfg.reduce_dtype))
    return {"mp_policy": mp, "offload_policy": CPUOffloadPolicy() if cfg.cpu_offload else OffloadPolicy()}


def apply_fsdp(model: nn.Module, mesh, cfg: ParallelConfig) -> nn.Module:
    """Shard `model` (a Transformer or a pipeline stage) in place: one unit per block, then the root."""
    kw = fsdp_policies(cfg)
    layers = list(model.layers.values() if isinstance(model.layers, nn.ModuleDict) else model.layers)
    for i, block in enumerate(layers):
        # The last block's backward starts right after its forward: resharding it would only re-gather it.
        reshard = cfg.reshard_after_forward and i < len(layers) - 1
        fully_shard(block, mesh=mesh, reshard_after_forward=reshard, **kw)
    # The root (embeddings, final norm, head) is needed again first thing in the backward: keep it gathered.
    fully_shard(model, mesh=mesh, reshard_after_forward=False, **kw)
    return model
