"""Measure what the planner estimates, on real tensors: model-state bytes and saved activations.

Activations are measured with `torch.autograd.graph.saved_tensors_hooks`: every tensor autograd stores for the
backward pass goes through the pack hook, so summing their storages (once each, parameters excluded) gives the
activation memory held at the forward/backward boundary, which is when it peaks. This is exact and repeatable on
a shared CPU, unlike process RSS (allocator caching, other threads) and it needs no GPU. The logits the caller
keeps are added, since a training step holds them too.
"""

from __future__ import annotations

from contextlib import nullcontext


def saved_activation_bytes(model, idx, autocast_dtype=None, checkpointing: int = 0) -> dict:
    """Run one training forward + loss on `idx` (B, T) and return the bytes autograd saved, by dtype.

    Returns {"saved": bytes of unique saved storages (no parameters), "logits": bytes of the logits storage,
    "total": their sum, "by_dtype": {dtype: bytes}}. `autocast_dtype`: e.g. torch.bfloat16 to run under autocast.
    """
    import torch
    import torch.nn.functional as F

    model.train()
    if checkpointing:
        model.set_activation_checkpointing(checkpointing)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, tuple[int, str]] = {}

    def pack(t):
        st = t.untyped_storage()
        ptr = st.data_ptr()
        # a non-reentrant checkpoint re-packs during recomputation in backward; we only run the forward
        if ptr not in params and ptr not in seen and st.nbytes() > 0:
            seen[ptr] = (st.nbytes(), str(t.dtype).replace("torch.", ""))
        return t

    ctx = torch.autocast(idx.device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
        logits = model(idx)  # (B, T, vocab)
        targets = torch.roll(idx, -1, dims=1)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
    by_dtype: dict[str, int] = {}
    for nbytes, dtype in seen.values():
        by_dtype[dtype] = by_dtype.get(dtype, 0) + nbytes
    saved = sum(n for n, _ in seen.values())
    logit_bytes = logits.untyped_storage().nbytes() if logits.untyped_storage().data_ptr() not in seen else 0
    del loss
    if checkpointing:
        model.set_activation_checkpointing(0)
    return {"saved": saved, "logits": logit_bytes, "total": saved + logit_bytes, "by_dtype": by_dtype}


def model_state_tensor_bytes(model, optimizer) -> dict:
    """Bytes of the real parameter, gradient and optimizer-state tensors (unique storages)."""
    import torch

    def unique_bytes(tensors):
        seen = {}
        for t in tensors:
            if t is not None and isinstance(t, torch.Tensor) and t.numel():
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return sum(seen.values())

    params = list(model.parameters())
    states = list(optimizer.state.values())
    moments = [v for st in states for v in st.values() if isinstance(v, torch.Tensor) and v.dim() > 0]
    steps = [v for st in states for v in st.values() if isinstance(v, torch.Tensor) and v.dim() == 0]
    return {
        "params": unique_bytes(params),
        "grads": unique_bytes(p.grad for p in params),
        "optimizer": unique_bytes(moments),
        "optimizer_step_counters": sum(s.nbytes for s in steps),
    }
