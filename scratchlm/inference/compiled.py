"""A compiled decode step: a static-shape KV cache and torch.compile, gpt-fast style.

At the sizes this project trains (8M-55M parameters), one eager decode step is a few hundred small kernels
launched from Python, and the Python between them costs about as much as the arithmetic: our eager engine is
only ~1.1x transformers' `generate` (BENCHMARKS.md). torch.compile removes that overhead by tracing the step
once and running it as fused C++ (CPU) or Triton kernels replayed as one CUDA graph (GPU) -- but only if every
decode step has the *same shapes*, or it would recompile every token. The eager cache (model/kv_cache.py)
attends to the filled prefix `[:length]`, whose length grows each step; this one attends to all `max_len`
slots every step and hides the unfilled ones with its validity mask, and it keeps the write slot and each
row's position in tensors rather than Python ints, so the traced graph never sees a changing number.

    decoder = CompiledDecoder(model)                      # or Engine(model, tok, compile=True)
    logits, step = decoder.prefill(idx, valid, total)     # (B, V): eager prefill into a fresh static cache
    logits = step(next_tokens)                            # (B, 1) -> (B, V): the compiled graph

Prefill stays eager: it runs once per request with a different prompt length each time, its matmuls over T
tokens dominate its Python overhead, and a dynamic-length prefill graph would add compile time (and a second
set of recompiles) for little gain. Its K/V are copied into the static cache (B x T0 slots per layer, cheap).

Shapes are bucketed so that graphs are reused across requests: the cache length is `total` (prompt + new
tokens) rounded up to a power of two (at least 64, at most the model's context), and each (batch size, cache
length) pair compiles once per process -- a server or a chat session pays compile time on its first request
of each bucket only (`compiled_shapes`, `compile_seconds`). Attending to up to 2x the filled slots costs
little at these sizes, where the step is bound by overhead and weight reads, not attention.

Greedy output equals the eager engine's token for token in float32 (tests/test_inference_compiled.py); the
logits differ by float rounding (~1e-6), as fused kernels sum in a different order.
"""

from __future__ import annotations

import shutil
import time
from typing import Callable

import torch

from scratchlm.model.kv_cache import KVCache

# Each (batch, cache length) bucket is one dynamo cache entry of the same decode function; the default limit (8)
# would silently fall back to eager after the 8th, so it is raised while compiling, and hitting it is an error.
MAX_SHAPES = 64


class StaticKVCache:
    """Decode-only K/V cache whose tensors never change shape: what a compiled step can be traced against.

    Per layer (B, n_kv_heads, max_len, head_dim); `valid` (B, max_len) marks filled slots; `slot` (1,) is the
    next slot to write (shared by all rows, as in KVCache) and `pos` (B, 1) each row's next RoPE position
    (its number of real tokens, so left padding does not shift it). It speaks the same three calls as KVCache
    (begin / update / commit), so the model runs it unchanged."""

    def __init__(self, n_layers: int, batch_size: int, max_len: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        shape = (batch_size, n_kv_heads, max_len, head_dim)
        # One tensor per layer, not slices of one big tensor: an in-place write to a slice of a graph input
        # makes the compiled graph copy the whole base back every step.
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.valid = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)
        self.slot = torch.zeros(1, dtype=torch.long, device=device)
        self.pos = torch.zeros(batch_size, 1, dtype=torch.long, device=device)
        # Fixed addresses let CUDA graphs replay without copying the cache in and out (reduce-overhead).
        for t in [*self.k, *self.v, self.valid, self.slot, self.pos]:
            torch._dynamo.mark_static_address(t)

    @property
    def max_len(self) -> int:
        return self.valid.shape[1]

    def load(self, cache: KVCache) -> None:
        """Take over a prefilled eager cache: its K/V, validity and positions; the rest of the slots empty."""
        T0 = cache.length
        for layer, (k, v) in enumerate(zip(self.k, self.v)):
            k[:, :, :T0].copy_(cache.k[layer, :, :, :T0])
            v[:, :, :T0].copy_(cache.v[layer, :, :, :T0])
        self.valid.zero_()
        self.valid[:, :T0] = cache.valid[:, :T0]
        self.slot.fill_(T0)
        self.pos.copy_(cache.positions()[:, None])

    # ------------------------------------------------------------------ the hooks Transformer.forward calls
    def begin(self, T: int, positions: torch.Tensor | None, valid: torch.Tensor | None):
        """Reserve T slots per row: (positions (B, T), mask (B, 1, T, max_len), is_causal). T = 1 is a decode
        step; T > 1 is speculative decoding's verify forward (speculative.py), causal within its T tokens."""
        if positions is not None or valid is not None:
            raise ValueError("StaticKVCache decodes at each row's own positions; prefill with KVCache")
        self._width = T
        if T == 1:
            self.valid.index_fill_(1, self.slot, True)
            # Stale slots of an earlier request are finite and masked, so they add exactly 0 to the softmax.
            return self.pos, self.valid[:, None, None, :], False
        offsets = torch.arange(T, device=self.slot.device)
        slots = self.slot + offsets  # (T,)
        self.valid.index_fill_(1, slots, True)
        causal = torch.arange(self.max_len, device=slots.device)[None, :] <= slots[:, None]  # (T, max_len)
        return self.pos + offsets, self.valid[:, None, None, :] & causal, False  # (B, T), (B, 1, T, max_len)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this forward's K/V (B, n_kv, T, hd) from `slot` on; return the whole (B, n_kv, max_len, hd) cache."""
        T = k.shape[2]
        slots = self.slot if T == 1 else self.slot + torch.arange(T, device=self.slot.device)
        self.k[layer].index_copy_(2, slots, k)
        self.v[layer].index_copy_(2, slots, v)
        return self.k[layer], self.v[layer]

    def commit(self) -> None:
        self.slot.add_(self._width)
        self.pos.add_(self._width)

    def rewind(self, n: int) -> None:
        """Forget the last n slots of every row (speculative decoding's rejected drafts): move the write slot and
        the positions back and mark the slots empty, so later steps overwrite them and never attend to them."""
        if n > 0:
            self.slot.sub_(n)
            self.valid.index_fill_(1, self.slot + torch.arange(n, device=self.slot.device), False)
            self.pos.sub_(n)

    def forget(self, n: torch.Tensor) -> None:
        """rewind by a tensor n (0-dim), inside a compiled graph: no sync to learn n. Every slot from the new
        write slot on is marked empty (they hold only this round's rejected tokens or were never filled)."""
        self.slot.sub_(n)
        self.pos.sub_(n)
        self.valid.logical_and_(torch.arange(self.max_len, device=self.slot.device)[None, :] < self.slot)


def _decode_step(model: torch.nn.Module, cache: StaticKVCache, tokens: torch.Tensor) -> torch.Tensor:
    """tokens (B, 1) -> next-token logits (B, V). The function torch.compile traces."""
    return model(tokens, cache=cache, last_only=True)[:, -1]


def _verify_step(model: torch.nn.Module, cache: StaticKVCache, tokens: torch.Tensor) -> torch.Tensor:
    """tokens (B, T) -> logits (B, T, V) of every position: speculative decoding's verify forward (one graph per T)."""
    return model(tokens, cache=cache)


def _draft_greedy(model: torch.nn.Module, cache: StaticKVCache, tokens: torch.Tensor, n: int) -> torch.Tensor:
    """tokens (B, P) -> (B, n) greedy guesses: a draft model's n decode steps unrolled into one graph (the first
    feeds the P tokens it has not seen), so speculative decoding pays one call's overhead per round, not n."""
    out = []
    for _ in range(n):
        tokens = model(tokens, cache=cache, last_only=True)[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        out.append(tokens)
    return torch.cat(out, 1)


def _spec_round(target: torch.nn.Module, tcache: StaticKVCache, last: torch.Tensor, draft: torch.nn.Module,
                dcache: StaticKVCache, pending: torch.Tensor, live: torch.Tensor, n: int) -> torch.Tensor:
    """One greedy speculative round as one graph (speculative.py's lockstep rule, decided on the tensors):
    the draft guesses n tokens after `pending` (B, P) and also feeds its last guess, the target scores
    `last` (B, 1) + the guesses, every live row's accepted count is compared, the fewest (m) is kept, and
    both caches forget what was not kept. Returns (B, n + 3): the n guesses, the token every row takes at
    position m (the target's choice there, which equals the guess of rows that agreed beyond m), m, and the
    row's own accepted count (for SpecStats.agreed).
    Feeding the last guess costs one more draft step but makes the next round's `pending` always (B, 1):
    one graph, where a P = 2 pending after a fully accepted round would compile a second."""
    drafts = _draft_greedy(draft, dcache, pending, n)  # (B, n)
    draft(drafts[:, -1:], cache=dcache, last_only=True)  # the draft now holds pending + all n guesses
    choice = target(torch.cat([last, drafts], 1), cache=tcache).argmax(-1)  # (B, n + 1)
    agreed = (choice[:, :n] == drafts).long().cumprod(1).sum(1)  # (B,) guesses each row accepts
    m = torch.where(live, agreed, n).min()  # finished rows do not hold the others back
    tcache.forget(n - m)  # the target keeps last + m guesses
    dcache.forget(n - m)  # the draft keeps pending + m guesses
    nxt = choice.gather(1, m.expand(choice.shape[0], 1))  # (B, 1)
    return torch.cat([drafts, nxt, m.expand(choice.shape[0], 1), agreed[:, None]], 1)


def default_mode(device: torch.device) -> str:
    """CUDA: CUDA graphs replay the whole step as one launch. CPU: plain inductor, the cheaper compile;
    max-autotune-no-cudagraphs (benchmarks GEMM templates while compiling) measured no faster on the demo's 2M
    pair (plain compiled 1,152 vs 1,168 tokens/s, interleaved, 2026-12-06) for a 60 s compile."""
    return "reduce-overhead" if device.type == "cuda" else "default"


def cpu_options(mode: str, cpp_wrapper: bool = True) -> dict:
    """Inductor settings for a CPU decode graph: `mode`'s own settings plus cpp_wrapper, which launches the
    graph's ~220 kernels (54M model) from generated C++ instead of a generated Python function. Measured on the
    2-core machine, interleaved (BENCHMARKS.md, issue 21): 54M fp32 1.62x transformers vs 1.44x without it; the
    demo's 2M target +12%. It costs a second C++ build on the first compile of a shape (30-90 s cold on a busy
    machine instead of 10-30 s); inductor's on-disk cache makes later processes cheap.
    Freezing (constant-folding the weights) is not used: it applies only to torch.compile(module), and here the
    model is an argument of the step function, so its weights stay graph inputs -- which also means loading new
    weights into the model can never be served from a stale graph."""
    import torch._inductor

    return {**torch._inductor.list_mode_options(mode), "cpp_wrapper": cpp_wrapper}


def bucket(total: int, max_seq_len: int) -> int:
    """The static cache length for `total` slots: the next power of two >= total, at least 64, at most the context."""
    return min(max_seq_len, max(64, 1 << (max(total, 1) - 1).bit_length()))


class CompiledDecoder:
    """Eager prefill + a torch.compile'd decode step over bucketed static caches, kept for the process's life."""

    def __init__(self, model: torch.nn.Module, mode: str | None = None, cpp_wrapper: bool = True):
        from scratchlm.model import Transformer

        if not isinstance(model, Transformer):
            raise ValueError(f"compile needs a scratchlm Transformer, got {type(model).__name__}; run without compile")
        p = next(model.parameters())
        self.model, self.device = model, p.device
        cache_dtype = KVCache.for_model(model, 1, 1).k.dtype  # what the eager engine stores (bf16 model: bf16)
        self.cache_dtype = cache_dtype
        self.mode = mode or default_mode(self.device)
        if self.device.type == "cpu" and shutil.which("g++") is None and shutil.which("c++") is None:
            raise RuntimeError("compile on CPU needs a C++ compiler (torch inductor builds C++ kernels): "
                               "install g++ (apt-get install g++), or run without --compile")
        if self.device.type == "mps":
            raise RuntimeError("compile is not supported on mps here; run without --compile")
        from .quant import Int8Linear

        if (self.device.type == "cpu" and cache_dtype in (torch.bfloat16, torch.float16)
                and any(isinstance(m, Int8Linear) for m in model.modules())):
            # measured with torch 2.13: inductor's lowering of torch._weight_int8pack_mm (the fused kernel
            # Int8Linear calls for bf16 activations) fails with "LoweringException: AssertionError: Pointwise";
            # int8 weights with float32 activations compile (inductor fuses the dequantize into the same kernel)
            raise RuntimeError("compile cannot build int8 weights with bf16/fp16 activations on CPU (inductor fails "
                               "on torch._weight_int8pack_mm); run int8 without --compile, or compile bf16/float32")
        # CPU: the mode's settings as explicit options, plus cpp_wrapper (cpu_options); CUDA: the mode as given
        how = {"options": cpu_options(self.mode, cpp_wrapper)} if self.device.type == "cpu" else {"mode": self.mode}
        self.cpp_wrapper = cpp_wrapper and self.device.type == "cpu"
        self._step = torch.compile(_decode_step, fullgraph=True, dynamic=False, **how)
        self._verify = torch.compile(_verify_step, fullgraph=True, dynamic=False, **how)
        self._draft = torch.compile(_draft_greedy, fullgraph=True, dynamic=False, **how)
        self._round = torch.compile(_spec_round, fullgraph=True, dynamic=False, **how)
        self._caches: dict[tuple[int, int], StaticKVCache] = {}
        self.compile_seconds = 0.0
        """Seconds spent in first calls of new shapes (tracing + inductor), reported apart from decode time."""
        self.graphs_compiled = 0
        """First calls so far: one per (graph, width, cache shape): decode steps, verifies, draft rounds."""

    @property
    def compiled_shapes(self) -> list[tuple[int, int]]:
        """(batch size, cache length) of every graph compiled so far."""
        return sorted(self._caches)

    def prefill(self, idx: torch.Tensor, valid: torch.Tensor | None,
                total: int) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """Run the (B, T0) prompts eagerly and load their K/V into the static cache of their bucket; returns the
        (B, V) logits of each row's first new token and `step`, which decodes (B, 1) tokens -> (B, V) logits.
        `total` is the most slots the batch will use (prompt + new tokens), as for the eager engine."""
        logits, cache = self.open(idx, valid, total)
        return logits, (lambda tokens: self._run(cache, tokens))

    def open(self, idx: torch.Tensor, valid: torch.Tensor | None, total: int) -> tuple[torch.Tensor, StaticKVCache]:
        """prefill, returning the static cache itself: speculative decoding calls `step`, `verify` and
        `cache.rewind` on it."""
        B, T0 = idx.shape
        cfg = self.model.config
        key = (B, bucket(total, cfg.max_seq_len))
        eager = KVCache.for_model(self.model, batch_size=B, max_len=T0)
        logits = self.model(idx, cache=eager, valid=valid, last_only=True)[:, -1]  # (B, V)
        if key not in self._caches:
            self._caches[key] = StaticKVCache(cfg.n_layers, B, key[1], cfg.n_kv_heads, cfg.head_dim,
                                              self.cache_dtype, self.device)
        cache = self._caches[key]
        cache.load(eager)
        return logits, cache

    def step(self, cache: StaticKVCache, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 1) tokens -> (B, V) logits through the compiled decode graph."""
        return self._run(cache, tokens)

    def verify(self, cache: StaticKVCache, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) tokens -> (B, T, V) logits in one compiled forward writing T slots (one graph per T and shape).
        The caller keeps slot + T <= cache.max_len (no check here: it would sync the GPU)."""
        return self._run(cache, tokens, self._verify)

    def draft_greedy(self, cache: StaticKVCache, tokens: torch.Tensor, n: int) -> torch.Tensor:
        """(B, P) tokens -> (B, n) greedy next tokens, feeding each back, in one compiled call (one graph per P, n)."""
        return self._run(cache, tokens, self._draft, n)

    def spec_round(self, cache: StaticKVCache, last: torch.Tensor, draft: "CompiledDecoder", dcache: StaticKVCache,
                   pending: torch.Tensor, live: torch.Tensor, n: int) -> torch.Tensor:
        """A whole greedy speculative round in one compiled call (_spec_round); (B, n + 3) on the device. The
        caller keeps n + 1 target slots and P + n draft slots free (no check: it would sync)."""
        return self._run(cache, last, self._round, draft.model, dcache, pending, live, n,
                         key=(self._round, draft.model, pending.shape[1], n))

    def _run(self, cache: StaticKVCache, tokens: torch.Tensor, fn=None, *extra, key=None) -> torch.Tensor:
        # no bounds check here (it would sync the GPU every step): total <= the bucket, and the engine stops there
        fn = fn or self._step
        done = cache.__dict__.setdefault("_compiled_widths", set())
        key = key or (fn, tokens.shape[1], *extra)
        if key not in done:  # this shape's first call compiles it
            t0 = time.perf_counter()
            try:
                with torch._dynamo.config.patch(recompile_limit=MAX_SHAPES, fail_on_recompile_limit_hit=True):
                    logits = fn(self.model, cache, tokens, *extra)
            except Exception as e:  # noqa: BLE001 - say why compile failed instead of falling back to eager
                raise RuntimeError(f"torch.compile of the decode step failed ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0] if str(e) else ''}); run without --compile") from e
            done.add(key)
            self.graphs_compiled += 1
            self.compile_seconds += time.perf_counter() - t0
        else:
            logits = fn(self.model, cache, tokens, *extra)
        # CUDA graphs reuse their output buffer on the next replay; callers may keep logits (on_logits, logprobs).
        return logits.clone() if self.mode == "reduce-overhead" else logits
