"""LoRA: train a low-rank update B @ A beside each frozen weight matrix (Hu et al. 2021).

    y = W x + (alpha / r) * B (A dropout(x))         A: (r, in) random, B: (out, r) zeros -> starts as W x

Only A and B train (a few % of the parameters), so optimizer state is tiny and the base weights can be shared.
For export and serving, `merge_lora` folds the update into W (W' = W + alpha/r * B A) and restores plain
nn.Linear layers: the merged model has the original parameter names and is exactly as fast as the base.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn as nn


@dataclass
class LoRAConfig:
    """Low-rank adapters. rank 0 = off (full fine-tuning)."""

    rank: int = field(default=0, metadata={"range": (0, None)})
    """Rank r of the update (0: LoRA off, train all weights). 8-16 is typical; tiny models do well with 8."""
    alpha: float = field(default=16.0, metadata={"range": (0.0, None)})
    """Scale: the update is multiplied by alpha / rank (so changing the rank does not change the step size much)."""
    dropout: float = field(default=0.0, metadata={"range": (0.0, 1.0)})
    """Dropout on the adapter's input (0.05-0.1 on small datasets)."""
    targets: list[str] = field(default_factory=lambda: ["wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"])
    """Names of the nn.Linear modules to adapt (matched on the last part of the module name): attention
    wq/wk/wv/wo and MLP w_gate/w_up/w_down. Adapting all of them is the QLoRA paper's advice."""


class LoRALinear(nn.Module):
    """An nn.Linear (frozen) plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.rank, self.scale = rank, alpha / rank
        dev, dt = base.weight.device, base.weight.dtype
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=dev, dtype=dt))  # (r, in)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=dev, dtype=dt))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # nn.Linear's init, as in the paper's code
        self.dropout = nn.Dropout(dropout)
        self.enabled = True

    @property
    def weight(self) -> torch.Tensor:  # code that reads .weight (accounting, export) sees the merged matrix
        return self.base.weight + self.scale * (self.lora_b @ self.lora_a)

    @property
    def bias(self):
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if not self.enabled:
            return y
        return y + self.scale * ((self.dropout(x) @ self.lora_a.t()) @ self.lora_b.t())  # (..., out)


def apply_lora(model: nn.Module, cfg: LoRAConfig) -> list[str]:
    """Freeze `model` and wrap every targeted nn.Linear in a LoRALinear; returns the wrapped module names."""
    if cfg.rank <= 0:
        raise ValueError("lora.rank must be > 0 to add adapters (e.g. --set lora.rank=8)")
    model.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child_name in cfg.targets:
                setattr(module, child_name, LoRALinear(child, cfg.rank, cfg.alpha, cfg.dropout))
                wrapped.append(f"{name}.{child_name}" if name else child_name)
    if not wrapped:
        raise ValueError(f"lora.targets {cfg.targets} matched no nn.Linear in the model; "
                         "use names like wq, wk, wv, wo, w_gate, w_up, w_down")
    return wrapped


def lora_modules(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors (what a LoRA checkpoint needs on top of its base)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if ".lora_" in k}


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the merged model, under the base model's parameter names, without changing `model`."""
    out = {}
    for k, v in model.state_dict().items():
        if ".lora_" in k:
            continue
        out[k.replace(".base.", ".")] = v
    with torch.no_grad():
        for name, m in lora_modules(model):
            out[f"{name}.weight"] = m.weight.detach().clone()
    return out


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put plain nn.Linear layers back (in place)."""
    for name, m in lora_modules(model):
        m.base.weight.copy_(m.weight)
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        setattr(parent, name.rsplit(".", 1)[-1], m.base)
    return model


@contextmanager
def adapters_disabled(model: nn.Module):
    """Run the base model (adapters off): with LoRA, the DPO/GRPO reference model costs no extra memory."""
    mods = [m for _, m in lora_modules(model)]
    for m in mods:
        m.enabled = False
    try:
        yield model
    finally:
        for m in mods:
            m.enabled = True
