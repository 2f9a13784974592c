"""The decoder-only transformer: embeddings, n_layers pre-norm blocks, final norm, output head.

    x = tok_emb[idx] (+ pos_emb[positions])
    for each block:  x = x + attn(norm(x));  x = x + mlp(norm(x))
    logits = lm_head(norm(x))

Parameter names (what checkpoints contain; hf.py maps them to Hugging Face's):

    tok_emb.weight                          (padded_vocab_size, d_model)
    pos_emb.weight                          (max_seq_len, d_model)        pos_emb="learned" only
    layers.{i}.attn_norm.weight [.bias]     (d_model,)
    layers.{i}.attn.wq / wk / wv / wo .weight [.bias]                     see attention.py
    layers.{i}.attn.q_norm / k_norm .weight (head_dim,)                   qk_norm only
    layers.{i}.mlp_norm.weight [.bias]      (d_model,)
    layers.{i}.mlp.w_gate / w_up / w_down .weight [.bias]                 w_gate for SwiGLU only
    norm.weight [.bias]                     (d_model,)
    lm_head.weight                          (padded_vocab_size, d_model)  untied only; tied reuses tok_emb

Logits have width `vocab_size`, not `padded_vocab_size`: the head multiplies by all padded rows (the fast,
aligned matmul) and returns a view without the padding columns, so no caller can ever sample a padding id.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .accounting import flops_per_token
from .attention import Attention
from .config import ModelConfig
from .kv_cache import KVCache, attention_mask
from .layers import MLP, RMSNorm, make_norm, rope_tables


class Block(nn.Module):
    """One pre-norm transformer block: attention then feed-forward, each added to the residual stream."""

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = make_norm(cfg)
        self.attn = Attention(cfg, layer_idx)
        self.mlp_norm = make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None,
                attn_mask: torch.Tensor | None = None, is_causal: bool = True, cache: KVCache | None = None):
        x = x + self.attn(self.attn_norm(x), cos, sin, attn_mask, is_causal, cache)  # (B, T, d)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    """A GPT-2- or Llama-style language model. `model(idx)` -> logits (B, T, vocab_size)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = cfg = config
        self.tok_emb = nn.Embedding(cfg.padded_vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.pos_emb == "learned" else None
        self.emb_dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = make_norm(cfg)
        # Tied: the head reuses tok_emb.weight (one tensor, one entry in the state dict, nothing to re-tie).
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.padded_vocab_size, bias=False)
        if cfg.pos_emb == "rope":
            # Non-persistent: derived from the config, so not saved in checkpoints and recomputed by init_weights.
            cos, sin = rope_tables(cfg, device=self.tok_emb.weight.device)
            self.register_buffer("rope_cos", cos, persistent=False)  # (max_seq_len, hd/2)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.checkpoint_every = 0
        if not self.tok_emb.weight.is_meta:
            self.init_weights()

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """(Re-)initialise every parameter and buffer in place.

        Also the way to finish a model built on the meta device:
            with torch.device("meta"): model = Transformer(cfg)
            model.to_empty(device="cuda"); model.init_weights()
        """
        cfg = self.config
        gen = None
        if seed is not None:
            gen = torch.Generator(device=self.tok_emb.weight.device).manual_seed(seed)
        std_out = cfg.init_std / math.sqrt(2 * cfg.n_layers)  # scaled residual init (GPT-2 paper, 2.3)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                out_proj = name.endswith(("attn.wo", "mlp.w_down"))
                if out_proj and cfg.zero_init_out_proj:
                    nn.init.zeros_(module.weight)
                else:
                    nn.init.normal_(module.weight, 0.0, std_out if out_proj else cfg.init_std, generator=gen)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, cfg.init_std, generator=gen)
            elif isinstance(module, (nn.LayerNorm, RMSNorm)):
                module.reset_parameters()  # weight 1, bias 0
        if cfg.pos_emb == "rope":
            cos, sin = rope_tables(cfg, device=self.rope_cos.device)
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)

    # ------------------------------------------------------------------ memory
    def set_activation_checkpointing(self, every: int = 1) -> None:
        """Recompute the activations of every `every`-th block in the backward pass instead of storing them.

        every=1: all blocks (memory ~ one block's activations + the residual stream per layer, ~30% more
        compute); every=2: half of them; 0: off. Only active in training with gradients enabled."""
        if every < 0:
            raise ValueError(f"activation checkpointing 'every' must be >= 0, got {every}")
        self.checkpoint_every = int(every)

    # ------------------------------------------------------------------ accounting
    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters of the real tensors (tied weights counted once). non_embedding: see accounting.py."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.tok_emb.weight.numel()
            if self.pos_emb is not None:
                total -= self.pos_emb.weight.numel()
            if self.lm_head is not None:
                total -= self.lm_head.weight.numel()
        return total

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward) at this context length: 6N + 12 L H hd T."""
        return flops_per_token(self.config, seq_len or self.config.max_seq_len)

    # ------------------------------------------------------------------ forward
    def hidden_states(self, idx: torch.Tensor, positions: torch.Tensor | None = None, cache: KVCache | None = None,
                      valid: torch.Tensor | None = None) -> torch.Tensor:
        """The final-norm'd residual stream (B, T, d_model): the input of the output head (or a reward head)."""
        cfg = self.config
        B, T = idx.shape
        attn_mask, is_causal = None, True
        if cache is not None:
            positions, attn_mask, is_causal = cache.begin(T, positions, valid)
        elif T > cfg.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds model.max_seq_len {cfg.max_seq_len}; "
                             "use shorter sequences or a model with a longer max_seq_len")
        elif valid is not None:  # padded batch without a cache: hide padding, count positions per row
            if positions is None:
                positions = (valid.long().cumsum(dim=1) - 1).clamp_min(0)  # (B, T)
            attn_mask, is_causal = attention_mask(T, T, valid), False

        x = self.tok_emb(idx)  # (B, T, d)
        cos = sin = None
        if self.pos_emb is not None:
            x = x + (self.pos_emb.weight[:T] if positions is None else self.pos_emb(positions))
        else:
            if positions is None:
                cos, sin = self.rope_cos[:T], self.rope_sin[:T]  # (T, hd/2)
            else:
                cos, sin = self.rope_cos[positions], self.rope_sin[positions]  # (T, hd/2) or (B, T, hd/2)
                if positions.ndim == 2:
                    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, hd/2): broadcast over heads
            dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
            cos, sin = cos.to(dtype), sin.to(dtype)
        x = self.emb_dropout(x)
        x = self.blocks(x, cos, sin, attn_mask, is_causal, cache)
        if cache is not None:
            cache.commit()
        return self.norm(x)

    def blocks(self, x: torch.Tensor, cos, sin, attn_mask=None, is_causal: bool = True, cache=None) -> torch.Tensor:
        """The residual stream (B, T, d) through every block, with activation checkpointing when it is on: the
        one loop that the plain forward, packed rows (post-training) and pipeline stages all run."""
        return run_blocks(self.layers, x, cos, sin, attn_mask, is_causal, cache,
                          every=self.checkpoint_every if self.training else 0)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Output head: (..., d_model) -> (..., vocab_size)."""
        weight = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        logits = F.linear(h, weight)  # (..., padded_vocab_size)
        if self.config.padded_vocab_size != self.config.vocab_size:
            logits = logits[..., : self.config.vocab_size]
        return logits

    def forward(self, idx: torch.Tensor, positions: torch.Tensor | None = None, cache: KVCache | None = None,
                valid: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, vocab_size) (or (B, 1, vocab_size) with last_only).

        positions: (T,) or (B, T) position of each token; default 0..T-1, or continuing the cache.
        cache: a KVCache to read and extend (prefill / decode); see kv_cache.py.
        valid: (B, T) bool, False on (left) padding tokens, which are then neither attended to nor counted.
        last_only: compute logits for the last position only (generation: saves a (T, vocab) matmul)."""
        h = self.hidden_states(idx, positions, cache, valid)
        if last_only:
            h = h[:, -1:]
        return self.logits(h)


def run_blocks(layers, x: torch.Tensor, cos, sin, attn_mask=None, is_causal: bool = True, cache=None, every: int = 0,
               first: int = 0) -> torch.Tensor:
    """x (B, T, d) through `layers` (blocks first, first + 1, ... of the model). every > 0: the activations of
    every `every`-th block (counted in the whole model, so a pipeline stage checkpoints the blocks the full model
    would) are recomputed in the backward pass instead of stored; only with gradients on and no KV cache."""
    use_ckpt = every > 0 and cache is None and torch.is_grad_enabled()
    for i, layer in enumerate(layers, start=first):
        if use_ckpt and i % every == 0:
            x = checkpoint(layer, x, cos, sin, attn_mask, is_causal, None, use_reentrant=False)
        else:
            x = layer(x, cos, sin, attn_mask, is_causal, cache)
    return x
