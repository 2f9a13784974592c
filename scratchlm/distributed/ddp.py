"""Data parallelism with DistributedDataParallel (Li et al. 2020, "PyTorch Distributed").

Every rank holds the whole model and a different slice of the batch. During the backward, DDP all-reduces
gradients in ~25 MB buckets as soon as a bucket is ready, overlapping communication with the rest of the
backward; after it, every rank holds the mean gradient and takes the same optimizer step.

Gradient accumulation: wrap every micro-step but the last in `model.no_sync()` (DistContext.no_sync does),
so gradients add up locally and are all-reduced once per optimizer step instead of once per micro-batch.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel


def apply_ddp(model: nn.Module, dp_mesh, device: torch.device) -> DistributedDataParallel:
    """Wrap `model` in DDP over the ranks of `dp_mesh` (a 1-D DeviceMesh). Weights are broadcast from the
    group's first rank at construction, so every replica starts identical."""
    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        process_group=dp_mesh.get_group(),
    )
