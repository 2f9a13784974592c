"""The model: a decoder-only transformer, Llama-style or GPT-2-style, and everything needed to use it.

    from scratchlm.model import ModelConfig, Transformer, KVCache
    cfg = ModelConfig.from_preset("llama-5m", vocab_size=8192)
    model = Transformer(cfg)
    logits = model(idx)                      # (B, T, vocab_size)

This package imports nothing else from scratchlm, so it can be copied out and used on its own.
"""

from .accounting import count_params, flops_per_token, matmul_params
from .attention import Attention, reference_attention
from .config import PRESETS, ModelConfig
from .kv_cache import KVCache
from .layers import MLP, RMSNorm
from .transformer import Block, Transformer

__all__ = [
    "ModelConfig", "PRESETS", "Transformer", "Block", "Attention", "MLP", "RMSNorm", "KVCache",
    "reference_attention", "count_params", "flops_per_token", "matmul_params",
]
