"""A preallocated (static) key/value cache for fast autoregressive decoding.

Without a cache, generating token t+1 recomputes keys and values of all t previous tokens in every layer.
With one, the prompt is run once (*prefill*, T > 1 tokens), every layer's K and V are stored, and each new
token (*decode*, T = 1) only computes its own K/V and attends to the stored ones. Memory per layer is
2 * B * n_kv_heads * max_len * head_dim numbers, which is why GQA (fewer KV heads) matters for inference.

Layout. `cache.k[layer]` and `cache.v[layer]` are (B, n_kv_heads, max_len, head_dim), allocated once (one tensor
of shape (n_layers, B, n_kv_heads, max_len, head_dim) each). All rows of the batch share one write pointer,
`cache.length` (the number of *slots* used). A per-row boolean `cache.valid` (B, max_len) says which slots hold
real tokens; attention never looks at invalid slots, and a token's RoPE/position index is the number of valid
slots before it in its row. That one mechanism covers:

- **Batches of prompts of different lengths**: left-pad them to a common length and pass `valid` (B, T) with
  False on the padding to the prefill call: `model(idx, cache=cache, valid=valid)`. Every row's first real
  token gets position 0, as if it had been run alone; later decode steps need no `valid` argument.
- **Speculative decoding**: the target model scores k drafted tokens in one forward (T = k + 1 with a cache
  that is not empty: causal within the chunk, full attention to the past), then `cache.rollback(n)` forgets the
  rejected ones: `n` is an int (every row keeps n slots) or a (B,) tensor of per-row lengths, in which case the
  shared pointer stays at the longest row and the shorter rows' rejected slots become invalid holes.
- **Chunked prefill**: any T on any non-empty cache is handled the same way.

Example (batched greedy decoding):

    cache = KVCache.for_model(model, batch_size=B, max_len=prompt_len + 100)
    logits = model(prompts, cache=cache, valid=prompt_mask)   # (B, T0, vocab); prompts left-padded
    for _ in range(100):
        nxt = logits[:, -1:].argmax(-1)                       # (B, 1)
        logits = model(nxt, cache=cache)                      # (B, 1, vocab)

`cache.positions()` gives each row's next position, `cache.reset()` empties it for reuse. The cache dtype
should be the dtype attention runs in (bf16 under bf16 autocast), else K/V are cast at every step.

Speed. While no row has holes (no padding, no per-row rollback) the attention uses no mask at all (prefill runs
the causal flash kernel, decode attends to the filled prefix), so plain single-stream decoding pays nothing
for the generality. Attention reads only the filled prefix `[:length]`, which is fastest in eager mode; to
torch.compile the decode step, compile with dynamic=True (the prefix length changes every step).
"""

from __future__ import annotations

import torch


class KVCache:
    """Per-layer K/V of shape (B, n_kv_heads, max_len, head_dim), a shared write pointer and per-row validity."""

    def __init__(self, n_layers: int, batch_size: int, max_len: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        shape = (n_layers, batch_size, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.valid = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)  # (B, max_len)
        self.length = 0  # slots written so far, shared by all rows
        self.ragged = False  # True once some row has an invalid slot: attention then needs an explicit mask
        self._start = self._end = 0  # the slots the forward in progress writes

    @classmethod
    def for_model(cls, model_or_config, batch_size: int, max_len: int | None = None,
                  dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> "KVCache":
        """A cache sized for a Transformer (or ModelConfig): dtype/device default to the model's parameters."""
        cfg = getattr(model_or_config, "config", model_or_config)
        max_len = max_len or cfg.max_seq_len
        if max_len > cfg.max_seq_len:
            raise ValueError(f"KV cache max_len {max_len} exceeds the model's max_seq_len {cfg.max_seq_len}; "
                             "generate fewer tokens or use a model with a longer max_seq_len")
        if hasattr(model_or_config, "parameters"):
            p = next(model_or_config.parameters())
            dtype, device = dtype or p.dtype, device or p.device
        return cls(cfg.n_layers, batch_size, max_len, cfg.n_kv_heads, cfg.head_dim,
                   dtype=dtype or torch.float32, device=device)

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def reset(self) -> None:
        """Forget everything (the memory is reused; stale values are never read)."""
        self.length, self.ragged = 0, False
        self.valid.zero_()

    def positions(self) -> torch.Tensor:
        """(B,) the position the next token of each row will get (= its number of valid tokens)."""
        return self.valid[:, : self.length].sum(dim=1)

    def rollback(self, length: int | torch.Tensor) -> None:
        """Shrink to `length` slots: an int for all rows, or a (B,) tensor of per-row lengths (speculative
        decoding accepting a different number of drafted tokens per row)."""
        if isinstance(length, torch.Tensor) and length.ndim == 1:
            lengths = length.to(self.valid.device)
            new_len = int(lengths.max())
            slots = torch.arange(new_len, device=self.valid.device)
            holes = slots[None, :] >= lengths[:, None]  # (B, new_len)
            if bool(holes.any()):
                self.valid[:, :new_len] &= ~holes
                self.ragged = True
            length = new_len
        length = int(length)
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot roll back to length {length}: the cache holds {self.length} slots")
        self.length = length

    # ------------------------------------------------------------------ used by Transformer.forward
    def begin(self, T: int, positions: torch.Tensor | None, valid: torch.Tensor | None):
        """Reserve T slots for the forward about to run; return (positions, attn_mask, is_causal) for it."""
        start, end = self.length, self.length + T
        if end > self.max_len:
            raise ValueError(f"KV cache is full: {self.length} + {T} tokens > max_len {self.max_len}; "
                             "allocate the cache with a larger max_len")
        if valid is not None:
            self.valid[:, start:end] = valid
            self.ragged = True
        else:
            self.valid[:, start:end] = True
        self._start, self._end = start, end
        if positions is None:
            if self.ragged:
                before = self.valid[:, :start].sum(dim=1, keepdim=True)  # (B, 1)
                positions = (before + self.valid[:, start:end].cumsum(dim=1) - 1).clamp_min(0)  # (B, T)
            else:
                positions = torch.arange(start, end, device=self.valid.device)  # (T,)
        if self.ragged:
            return positions, attention_mask(T, end, self.valid[:, :end]), False
        if start == 0:
            return positions, None, T > 1  # plain causal prefill: the flash kernel's is_causal path
        if T == 1:
            return positions, None, False  # decode: the new token sees every filled slot
        return positions, attention_mask(T, end, device=self.valid.device), False  # chunk on a non-empty cache (e.g. speculative verify)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this forward's K/V (B, n_kv, T, hd) for `layer`; return all filled K/V (B, n_kv, end, hd)."""
        self.k[layer, :, :, self._start:self._end] = k
        self.v[layer, :, :, self._start:self._end] = v
        return self.k[layer, :, :, : self._end], self.v[layer, :, :, : self._end]

    def commit(self) -> None:
        """The forward finished: the reserved slots are now part of the cache."""
        self.length = self._end


def attention_mask(T: int, L: int, valid: torch.Tensor | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean mask (True = may attend) for T queries that are the last T of L key slots.

    Causal: query i sits at slot L - T + i and sees slots <= that. With `valid` (B, L) it also hides invalid
    slots, returning (B, 1, T, L); each query always sees its own slot so that padding rows never softmax over
    nothing (which would give NaN). Without `valid`: (T, L)."""
    device = valid.device if valid is not None else device
    q_slot = torch.arange(L - T, L, device=device)[:, None]  # (T, 1)
    k_slot = torch.arange(L, device=device)[None, :]  # (1, L)
    causal = k_slot <= q_slot  # (T, L)
    if valid is None:
        return causal
    return (causal & valid[:, None, None, :]) | (k_slot == q_slot)  # (B, 1, T, L)
