"""A forward pass over packed rows: several samples per row, none attending to another.

The model's forward takes a (B, T) `valid` mask for left padding but no general attention mask, so packed rows
are run here through the model's own modules with a block-diagonal causal mask:

    mask[b, i, j] = doc[b, i] == doc[b, j] and j <= i          # (B, T, T), True = may attend
    positions restart at 0 inside each sample (RoPE / learned positions see what a lone sample sees)

This mirrors Transformer.hidden_states step for step (embeddings, blocks, final norm, head). It becomes one
line once the model's hidden_states/forward accept an `attn_mask` argument passed straight to the blocks
(`model(x, positions=pos, attn_mask=mask)`), which is the change proposed to model/ in the post-training report.
"""

from __future__ import annotations

import torch


def block_causal_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) sample ids -> (B, 1, T, T) bool mask: causal, and only inside one sample."""
    T = doc_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    same = doc_ids[:, :, None] == doc_ids[:, None, :]  # (B, T, T)
    return (same & causal).unsqueeze(1)  # (B, 1, T, T): broadcast over heads


def packed_hidden_states(model, idx: torch.Tensor, positions: torch.Tensor, doc_ids: torch.Tensor) -> torch.Tensor:
    """Final-norm'd hidden states (B, T, d) of packed rows."""
    mask = block_causal_mask(doc_ids)
    x = model.tok_emb(idx)  # (B, T, d)
    cos = sin = None
    if model.pos_emb is not None:
        x = x + model.pos_emb(positions)
    else:
        cos = model.rope_cos[positions].unsqueeze(1)  # (B, 1, T, hd/2)
        sin = model.rope_sin[positions].unsqueeze(1)
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        cos, sin = cos.to(dtype), sin.to(dtype)
    x = model.emb_dropout(x)
    x = model.blocks(x, cos, sin, mask, False)  # activation checkpointing applies here too
    return model.norm(x)


def forward_batch(model, batch) -> torch.Tensor:
    """Logits (B, T, V) for a Batch from tokenize.py: plain causal forward, or block-diagonal when packed."""
    if batch.doc_ids is None:
        return model(batch.x)
    return model.logits(packed_hidden_states(model, batch.x, batch.positions, batch.doc_ids))
