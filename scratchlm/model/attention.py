"""Causal self-attention with grouped-query heads, rotary positions and an optional KV cache.

Two implementations of the same function:

- `sdpa`: torch.nn.functional.scaled_dot_product_attention, which dispatches to FlashAttention-2 / memory-
  efficient kernels on GPU and a fused flash kernel on CPU: the T x T score matrix is never stored. GQA goes
  through `enable_gqa=True`, so the n_heads / n_kv_heads copies of K and V are never materialised.
- `reference`: softmax(Q K^T / sqrt(head_dim) + mask) V written out, with K/V expanded per query head. Slow and
  memory-hungry (O(T^2) per head), but it is the definition, and the tests hold `sdpa` to it.

Parameter names: wq (n_heads*hd, d), wk/wv (n_kv_heads*hd, d), wo (d, n_heads*hd); they map one-to-one to
Hugging Face Llama's q_proj/k_proj/v_proj/o_proj (see hf.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .layers import RMSNorm, apply_rope

# enable_gqa appeared in torch 2.5; older versions get K/V expanded instead.
_SDPA_HAS_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
                        is_causal: bool = False, dropout_p: float = 0.0) -> torch.Tensor:
    """The textbook attention, same contract as F.scaled_dot_product_attention (with enable_gqa).

    q: (B, H, T, hd); k, v: (B, KV, L, hd) with KV dividing H; attn_mask: bool, True = may attend,
    broadcastable to (B, H, T, L); is_causal: query i sees keys <= i. Returns (B, H, T, hd)."""
    rep = q.shape[1] // k.shape[1]
    if rep > 1:  # query head h uses KV head h // rep
        k = k.repeat_interleave(rep, dim=1)  # (B, H, L, hd)
        v = v.repeat_interleave(rep, dim=1)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, T, L)
    if is_causal:
        T, L = scores.shape[-2:]
        attn_mask = torch.ones(T, L, dtype=torch.bool, device=q.device).tril()
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # softmax in fp32: bf16 exp overflows/rounds badly
    if dropout_p > 0:
        probs = F.dropout(probs, p=dropout_p)
    return probs @ v  # (B, H, T, hd)


class Attention(nn.Module):
    """Multi-head (MHA), grouped-query (GQA) or multi-query (MQA) causal self-attention."""

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx  # which slice of the KV cache is ours
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        qkv_bias = cfg.bias or cfg.qkv_bias  # Qwen2: biases on q/k/v only, o_proj without
        self.wq = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=qkv_bias)
        self.wk = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=qkv_bias)
        self.wv = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=qkv_bias)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=cfg.bias)
        self.qk_norm = cfg.qk_norm
        if cfg.qk_norm:  # one RMSNorm over head_dim shared by all heads (Qwen3)
            self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)
            self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)
        self.dropout_p = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.impl = cfg.attn_impl

    def forward(self, x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None,
                attn_mask: torch.Tensor | None = None, is_causal: bool = True, cache=None) -> torch.Tensor:
        """x: (B, T, d) -> (B, T, d). cos/sin: RoPE tables for these positions (None without RoPE)."""
        B, T, _ = x.shape
        H, KV, hd = self.n_heads, self.n_kv_heads, self.head_dim
        q = self.wq(x).view(B, T, H, hd).transpose(1, 2)  # (B, H, T, hd)
        k = self.wk(x).view(B, T, KV, hd).transpose(1, 2)  # (B, KV, T, hd)
        v = self.wv(x).view(B, T, KV, hd).transpose(1, 2)  # (B, KV, T, hd)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if cos is not None:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, KV, L, hd): everything this row has seen
            if k.dtype != q.dtype:
                k, v = k.to(q.dtype), v.to(q.dtype)
        dropout_p = self.dropout_p if self.training else 0.0
        if self.impl == "reference":
            y = reference_attention(q, k, v, attn_mask, is_causal, dropout_p)
        elif KV == H or _SDPA_HAS_GQA:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                               dropout_p=dropout_p, enable_gqa=KV != H)
        else:
            k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                               dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(B, T, H * hd)  # (B, T, H*hd): heads side by side again
        return self.resid_dropout(self.wo(y))
