"""Optimizers: AdamW with the usual LLM parameter groups, and Muon for the hidden matrices.

Weight decay groups. Decoupled weight decay (Loshchilov & Hutter 2019) pulls weights toward zero; it is
meant for the weight *matrices* that multiply activations. Norm gains and biases are offsets and scales
whose natural value is not zero (decaying an RMSNorm gain toward 0 fights the norm), and embeddings are
lookup tables whose rows get gradient only when their token appears, so decay would mostly shrink rare
tokens. Hence: decay = 2-D parameters that are not embeddings; no decay = everything else. A tied output head
shares the embedding matrix and follows the embedding's rule.

Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers"; used by the nanoGPT speedrun records)
replaces each 2-D hidden matrix's momentum update by the nearest semi-orthogonal matrix, computed with a
few Newton-Schulz iterations. All singular values of the update become ~1, so rare directions learn as fast
as common ones. It is only for the matrices inside the blocks: embeddings, the output head and 1-D
parameters stay with AdamW.
"""

from __future__ import annotations

import inspect
import logging

import torch
import torch.nn as nn

log = logging.getLogger("scratchlm")


def _embedding_params(model: nn.Module) -> set[int]:
    return {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}


def param_groups(model: nn.Module, weight_decay: float, decay_embeddings: bool = False) -> list[dict]:
    """Two AdamW groups: {"params": matrices, weight_decay} and {"params": the rest, weight_decay: 0}.

    Each group also carries "names" (for tests and logging). Shared parameters (tied embeddings) appear once.
    """
    emb = _embedding_params(model)
    decay, no_decay, decay_names, no_decay_names = [], [], [], []
    for name, p in model.named_parameters():  # named_parameters() yields a shared parameter once
        if not p.requires_grad:
            continue
        is_matrix = p.dim() >= 2 and (decay_embeddings or id(p) not in emb)
        (decay if is_matrix else no_decay).append(p)
        (decay_names if is_matrix else no_decay_names).append(name)
    return [
        {"params": decay, "weight_decay": weight_decay, "names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names},
    ]


def make_adamw(groups: list[dict], lr: float, betas: tuple[float, float], eps: float, fused: bool,
           device_type: str) -> torch.optim.AdamW:
    groups = [{k: v for k, v in g.items() if k != "names"} for g in groups if g["params"]]
    kwargs = {}
    # fused kernel: one launch for all parameters (CUDA; CPU since torch 2.4); else foreach (multi-tensor)
    if fused and "fused" in inspect.signature(torch.optim.AdamW).parameters and device_type in ("cuda", "cpu"):
        kwargs["fused"] = True
    else:
        kwargs["foreach"] = True
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **kwargs)


# ---------------------------------------------------------------------------------------------- Muon

def zeropower_newton_schulz(G: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately orthogonalise G (the U V^T of its SVD) with a quintic Newton-Schulz iteration.

    The coefficients (3.4445, -4.7750, 2.0315) are Jordan et al.'s: they push singular values into roughly
    [0.7, 1.2] in 5 steps instead of converging exactly, which is all an optimizer needs. Runs in bfloat16,
    which the iteration tolerates and which is 2x faster on GPUs and on AVX512-BF16 CPUs.
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.bfloat16()
    transposed = X.size(-2) > X.size(-1)
    if transposed:  # iterate on the smaller Gram matrix
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    if transposed:
        X = X.mT
    return X.to(G.dtype)


class Muon(torch.optim.Optimizer):
    """Momentum + Newton-Schulz orthogonalisation, for 2-D hidden weight matrices only.

    update = NS(nesterov momentum of the gradient) * sqrt(max(1, rows / cols)); decoupled weight decay as in
    AdamW. The aspect-ratio factor keeps the per-element update size comparable across matrix shapes.
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.0, ns_steps: int = 5):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, ns_steps=ns_steps)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"Muon takes 2-D matrices only, got a {p.dim()}-D parameter; give it to AdamW")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - mom)  # (1 - mom) * g + mom * buf
                g = p.grad.lerp(buf, mom) if group["nesterov"] else buf
                update = zeropower_newton_schulz(g, steps=group["ns_steps"])
                scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
                if wd:
                    p.mul_(1 - lr * wd)
                p.add_(update, alpha=-lr * scale)
        return loss


HEAD_NAMES = ("lm_head", "output", "head")


def muon_split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(hidden matrices for Muon, everything else for AdamW). Hidden = 2-D, not an embedding, not the head."""
    emb = _embedding_params(model)
    # the untied output head (a tied one is the embedding): it maps to logits, not to the residual stream
    head = {id(p) for name, p in model.named_parameters() if name.split(".")[0] in HEAD_NAMES}
    hidden, rest = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (hidden if p.dim() == 2 and id(p) not in emb and id(p) not in head else rest).append(p)
    return hidden, rest


class CombinedOptimizer:
    """Several optimizers stepped together, with one state_dict: what the loop sees when optimizer = "muon"."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        for o, s in zip(self.optimizers, state["optimizers"]):
            o.load_state_dict(s)


def build_optimizer(model: nn.Module, tc, device_type: str = "cpu"):
    """The optimizer named by TrainConfig `tc`. Every param group gets "peak_lr", which the schedule scales."""
    betas = (tc.beta1, tc.beta2)
    if tc.optimizer == "adamw":
        groups = param_groups(model, tc.weight_decay, tc.decay_embeddings)
        opt = make_adamw(groups, tc.lr, betas, tc.eps, tc.fused_optimizer, device_type)
        for g in opt.param_groups:
            g["peak_lr"] = tc.lr
        return opt
    if tc.optimizer == "muon":
        hidden, _ = muon_split(model)
        hidden_ids = {id(p) for p in hidden}
        groups = param_groups(model, tc.weight_decay, tc.decay_embeddings)
        for g in groups:  # AdamW keeps its decay rule for whatever Muon does not take
            keep = [(p, n) for p, n in zip(g["params"], g["names"]) if id(p) not in hidden_ids]
            g["params"], g["names"] = [p for p, _ in keep], [n for _, n in keep]
        adamw = make_adamw(groups, tc.lr, betas, tc.eps, tc.fused_optimizer, device_type)
        for g in adamw.param_groups:
            g["peak_lr"] = tc.lr
        muon = Muon(hidden, lr=tc.muon_lr, momentum=tc.muon_momentum, weight_decay=tc.weight_decay)
        for g in muon.param_groups:
            g["peak_lr"] = tc.muon_lr
        return CombinedOptimizer([adamw, muon])
    raise ValueError(f"unknown train.optimizer {tc.optimizer!r}; use adamw or muon")


def set_lr(optimizer, multiplier: float) -> float:
    """Scale every param group's peak_lr by the schedule's multiplier; returns the first group's lr."""
    for g in optimizer.param_groups:
        g["lr"] = g["peak_lr"] * multiplier
    return optimizer.param_groups[0]["lr"]
