"""Distributed training on torch.distributed: DDP, FSDP2, tensor and pipeline parallelism, DCP checkpoints.

    ctx = setup(ParallelConfig(fsdp=2, tp=2))   # under torchrun: process group + DeviceMesh
    model = ctx.wrap(Transformer(cfg))           # the model code stays plain PyTorch

Importing this package is cheap (no torch): the config dataclass is what train configs embed; the rest is
imported on first use.
"""

from .config import ParallelConfig

__all__ = ["ParallelConfig", "setup", "DistContext", "parallelize", "clip_grad_norm_", "Pipeline"]

_LAZY = {"setup": "mesh", "DistContext": "mesh", "parallelize": "parallelize", "clip_grad_norm_": "parallelize",
         "trainable": "parallelize", "Pipeline": "pp"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
