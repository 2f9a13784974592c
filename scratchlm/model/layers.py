"""The small building blocks of a transformer block: normalization, the feed-forward MLP, rotary embeddings.

RoPE layout. We use the *half-split* layout (GPT-NeoX / Hugging Face Llama): the rotation pairs dimension i with
dimension i + head_dim/2, not 2i with 2i+1 as in the RoFormer paper and Meta's original Llama code (the
*interleaved* layout). The two are the same function up to a fixed permutation of the q/k output rows, so
checkpoints load into Hugging Face's LlamaForCausalLM without any permutation, and the rotation is two
contiguous slices instead of a strided view (faster on CPU).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight (Zhang & Sennrich 2019). Statistics in float32, like Llama."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # One fused kernel with the weight: bit for bit the same numbers (forward and gradients) as the
            # two steps below, and 2x faster on CPU at training shapes (the unweighted kernel is not fused).
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        # Normalise in float32 (bf16 has 8 bits of mantissa: its mean of squares is too coarse), cast back,
        # then scale: the same order of operations as HF's LlamaRMSNorm, so bf16 results match too.
        y = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)
        return y * self.weight

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def make_norm(cfg: ModelConfig, dim: int | None = None) -> nn.Module:
    """The block's normalization layer: RMSNorm, or LayerNorm (with a bias when cfg.bias, as in GPT-2)."""
    dim = dim or cfg.d_model
    if cfg.norm == "rmsnorm":
        return RMSNorm(dim, cfg.norm_eps)
    return nn.LayerNorm(dim, eps=cfg.norm_eps, bias=cfg.bias)


class MLP(nn.Module):
    """The position-wise feed-forward network.

    swiglu: w_down(silu(w_gate x) * w_up x)   (Shazeer 2020, "GLU Variants Improve Transformer"; Llama)
    gelu:   w_down(gelu_tanh(w_up x))          (GPT-2; the tanh approximation is what its weights were trained with)
    gelu_exact: w_down(gelu_erf(w_up x))       (nanoGPT's nn.GELU(); same curve within 1e-3, cheaper on CPU)
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.swiglu = cfg.activation == "swiglu"
        self.approximate = "tanh" if cfg.activation == "gelu" else "none"
        if self.swiglu:
            self.w_gate = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=cfg.bias)
        self.w_up = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=cfg.bias)
        self.w_down = nn.Linear(cfg.ffn_hidden, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        if self.swiglu:
            h = F.silu(self.w_gate(x)) * self.w_up(x)  # (B, T, ffn_hidden)
        else:
            h = F.gelu(self.w_up(x), approximate=self.approximate)  # (B, T, ffn_hidden)
        return self.dropout(self.w_down(h))


# ---------------------------------------------------------------------------------------------- RoPE
def rope_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """Rotation speed of each pair of dimensions, theta^(-2i/head_dim), after optional frequency scaling. (hd/2,)"""
    hd = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    rs = cfg.rope_scaling
    if rs is None:
        return inv_freq
    kind = rs.get("rope_type", rs.get("type"))
    factor = float(rs["factor"])
    if kind == "linear":  # position interpolation (Chen et al. 2023): every frequency slowed by `factor`
        return inv_freq / factor
    # Llama 3.1: leave high frequencies (short wavelengths: local word order) alone, slow the low frequencies
    # (long wavelengths, which never completed a turn during pretraining) by `factor`, blend in between.
    old_len = float(rs["original_max_position_embeddings"])
    low, high = float(rs["low_freq_factor"]), float(rs["high_freq_factor"])
    wavelen = 2 * math.pi / inv_freq
    smooth = ((old_len / wavelen - low) / (high - low)).clamp(0.0, 1.0)
    scaled = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelen < old_len / high, inv_freq, scaled)
    return torch.where(wavelen > old_len / low, inv_freq / factor, scaled)


def rope_tables(cfg: ModelConfig, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position * inv_freq for every position < max_seq_len. Two (max_seq_len, hd/2) float32.

    Computed in float64 then rounded once: the angle of position 100k in float32 is off by ~0.01 rad."""
    inv_freq = rope_inv_freq(cfg).to(device)
    pos = torch.arange(cfg.max_seq_len, dtype=torch.float64, device=device)
    angles = torch.outer(pos, inv_freq)  # (max_seq_len, hd/2)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (x[i], x[i + hd/2]) pair by its position's angle.

    x: (B, H, T, hd); cos, sin: (T, hd/2) or (B, 1, T, hd/2), already in x's dtype. Returns a contiguous tensor."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
