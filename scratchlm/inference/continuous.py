"""Continuous batching: requests join the running batch at any decode step and leave it as soon as they finish.

The static batcher (batcher.py) runs a batch to its end: a request that arrives meanwhile waits for the longest
reply in it, so its time to first token grows with other people's max_tokens. Here (as in vLLM and TGI, after
Orca, Yu et al. 2022) the batch is never "finished": every step

1. drops the rows whose client went away (their slot is free at once),
2. admits waiting requests into free slots: each newcomer's prompt is prefilled alone (B = 1) into its slot and
   its first token picked, so it streams within one prefill of arriving,
3. runs one decode step over every other running row (one token each), and frees the slots of rows that finished.

The core is `SlotKVCache`: one KV row per *slot*, each with its own length. Rows at different lengths share one
decode forward: each gets its own RoPE position (its length) and an attention mask that hides the slots past its
end (stale K/V of a slot's previous occupant included). The model needs nothing new: it only ever calls
`cache.begin / update / commit` (model/kv_cache.py documents the contract), and this class answers them.
While every running row happens to have the same length, `begin` returns exactly what KVCache returns for a
single sequence (no mask; causal prefill), so a lone request runs the same kernels as `Engine.steps`.

A request gets the same tokens as when it runs alone (greedy, or sampled with its seed: each Sequence owns its
generator and is sampled with its own settings by `Engine._pick_tokens`), whatever runs beside it and whenever it
arrives: tests/test_continuous_batching.py checks this against `Engine.generate`.

Not done here (vLLM does them): chunked prefill (a long prompt stalls the decode steps of the others for one
prefill), paged KV memory (a slot reserves max_seq_len positions), and preemption.
"""

from __future__ import annotations

import logging
import queue
from collections import deque

import torch

from .batcher import BatchWorker, _Job
from .engine import Engine, Sequence

log = logging.getLogger("scratchlm")

PREFILL_TOKENS = 2048  # prompt tokens (padding included) per prefill forward at most: bounds its activations


class SlotKVCache:
    """K/V of shape (n_layers, n_slots, n_kv_heads, max_len, head_dim); slot s holds lens[s] tokens.

    `select(slots)` names the slots (in batch order) that the next forward runs on. Decode steps (T = 1) run on
    any slots; a forward of T > 1 tokens on several slots must start them all empty (a batched prefill, whose
    right padding `trim` then forgets)."""

    def __init__(self, n_layers: int, n_slots: int, max_len: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        shape = (n_layers, n_slots, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.device = self.k.device
        self.max_len = max_len
        self.lens = [0] * n_slots  # tokens stored per slot; a free slot has 0 (its stale K/V is never read)
        self.rows: list[int] = []
        self._starts: list[int] = []
        self._T = self._L = 0

    @classmethod
    def for_model(cls, model, n_slots: int, max_len: int | None = None) -> "SlotKVCache":
        cfg = model.config
        p = next(model.parameters(), None)
        return cls(cfg.n_layers, n_slots, max_len or cfg.max_seq_len, cfg.n_kv_heads, cfg.head_dim,
                   dtype=p.dtype if p is not None else torch.float32, device=p.device if p is not None else None)

    @property
    def n_slots(self) -> int:
        return len(self.lens)

    @property
    def length(self) -> int:
        """The longest selected row (0 at a prefill), for models that read KVCache.length (testing.ScriptedLM)."""
        return max((self.lens[r] for r in self.rows), default=0)

    def select(self, slots: list[int]) -> None:
        self.rows = list(slots)

    def free(self, slot: int) -> None:
        self.lens[slot] = 0

    def trim(self, slot: int, length: int) -> None:
        """Keep the first `length` tokens of a slot: the rest (right padding) is never read and is overwritten."""
        if not 0 <= length <= self.lens[slot]:
            raise ValueError(f"cannot trim slot {slot} to {length} tokens: it holds {self.lens[slot]}")
        self.lens[slot] = length

    # ------------------------------------------------------------------ KVCache's contract with the model
    def begin(self, T: int, positions: torch.Tensor | None, valid: torch.Tensor | None):
        """Reserve T slots in every selected row; return (positions, attn_mask, is_causal) for the forward."""
        if valid is not None:
            raise ValueError("SlotKVCache takes no padding mask: right-pad prompts and trim() each slot")
        if not self.rows:
            raise ValueError("SlotKVCache.begin with no slots selected: call select(slots) first")
        self._starts = [self.lens[r] for r in self.rows]
        if T > 1 and len(self.rows) > 1 and any(self._starts):
            raise ValueError(f"a {T}-token forward on {len(self.rows)} slots needs them empty (a batched prefill); "
                             "extend filled slots one at a time")
        self._T, self._L = T, max(self._starts) + T
        if self._L > self.max_len:
            raise ValueError(f"KV cache is full: {max(self._starts)} + {T} tokens > max_len {self.max_len}")
        dev = self.device
        if len(set(self._starts)) == 1:  # every row at one length: exactly KVCache's path (causal prefill, or
            # decode with no mask); a right-padded batched prefill needs no mask either: causal attention keeps
            # every real token from seeing the padding after it
            start = self._starts[0]
            if positions is None:
                positions = torch.arange(start, start + T, device=dev)  # (T,)
            return positions, None, start == 0 and T > 1
        # rows at different lengths, T == 1: row b's new token sits at slot starts[b] and sees slots <= it
        starts = torch.tensor(self._starts, device=dev)  # (B,)
        if positions is None:
            positions = starts[:, None]  # (B, 1): each row's own RoPE position
        mask = torch.arange(self._L, device=dev)[None, :] <= starts[:, None]  # (B, L)
        return positions, mask[:, None, None, :], False  # (B, 1, 1, L)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this forward's K/V (B, n_kv, T, hd); return each row's filled K/V (B, n_kv, L, hd)."""
        rows, L = self.rows, self._L
        if len(rows) == 1:
            r, s = rows[0], self._starts[0]
            self.k[layer, r, :, s:s + self._T] = k[0]
            self.v[layer, r, :, s:s + self._T] = v[0]
            return self.k[layer, r:r + 1, :, :L], self.v[layer, r:r + 1, :, :L]
        idx = torch.tensor(rows, device=self.device)
        if len(set(self._starts)) == 1:  # (B, n_kv, T, hd) into the same columns of every row
            s = self._starts[0]
            self.k[layer][idx, :, s:s + self._T] = k
            self.v[layer][idx, :, s:s + self._T] = v
        else:  # T == 1: (B, n_kv, hd), each row at its own length
            at = torch.tensor(self._starts, device=self.device)
            self.k[layer][idx, :, at] = k[:, :, 0]
            self.v[layer][idx, :, at] = v[:, :, 0]
        if rows == list(range(rows[0], rows[0] + len(rows))):  # contiguous slots: a view, no copy
            return self.k[layer, rows[0]:rows[-1] + 1, :, :L], self.v[layer, rows[0]:rows[-1] + 1, :, :L]
        return self.k[layer, :, :, :L].index_select(0, idx), self.v[layer, :, :, :L].index_select(0, idx)

    def commit(self) -> None:
        for r in self.rows:
            self.lens[r] += self._T


class RunningBatch:
    """The scheduler, without threads: `add(seq)` queues a request, `step()` advances every running request by
    one token (admitting and prefilling newcomers first). Tests drive it step by step; ContinuousWorker runs it
    on the server's model thread."""

    def __init__(self, engine: Engine, n_slots: int = 8):
        if n_slots < 1:
            raise ValueError(f"n_slots must be >= 1, got {n_slots}")
        if getattr(engine, "compiled", None) is not None:  # Engine(compile=True): its graphs are for Engine.steps
            raise ValueError("continuous batching runs the model eagerly and cannot use a compiled engine; "
                             "serve it with batching='static' (--batching static) or without compile")
        self.engine = engine
        self.cache = SlotKVCache.for_model(engine.model, n_slots, max_len=engine.max_seq_len)
        self.waiting: deque[Sequence] = deque()
        self.running: dict[int, Sequence] = {}  # slot -> the sequence in it
        self._fed: dict[int, int] = {}  # slot -> the token its next decode step feeds
        self.steps = 0

    def add(self, seq: Sequence) -> None:
        """Queue a sequence; it joins at the next step with a free slot. ValueError if it cannot run."""
        self.engine.prepare([seq])  # checks it; sets up its generator, detokenizer and stop rules
        seq._room = self.engine.max_seq_len - len(seq.prompt_ids)  # what Engine.steps allows it alone
        self.waiting.append(seq)

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    @torch.inference_mode()
    def step(self) -> None:
        """One step: release cancelled rows, admit newcomers (prefill: their first token), decode the others.
        A failing decode forward raises (every running row shares it); call abort() then."""
        self.steps += 1
        for slot, s in list(self.running.items()):  # clients that went away free their slot before any compute
            if s.cancelled:
                self.engine._finish(s, "abort")
                self._release(slot)
        new: list[int] = []
        free = sorted(set(range(self.cache.n_slots)) - set(self.running))
        while self.waiting and free:
            s = self.waiting.popleft()
            if s.cancelled:
                self.engine._finish(s, "abort")
            if s.done:  # max_tokens 0, or cancelled before it ran
                continue
            self.running[free[0]] = s
            new.append(free.pop(0))
        # newcomers are prefilled together (sorted by length: less padding), PREFILL_TOKENS at most per forward:
        # a burst of 16 arrivals costs one forward, not 16 in a row before the last one sees a token
        new.sort(key=lambda slot: len(self.running[slot].prompt_ids))
        group: list[int] = []
        for slot in new:
            if group and (len(group) + 1) * len(self.running[slot].prompt_ids) > PREFILL_TOKENS:
                self._prefill(group)
                group = []
            group.append(slot)
        if group:
            self._prefill(group)
        slots = sorted(slot for slot in self.running if slot not in new)  # sorted: contiguous slots need no copy
        if slots:
            idx = torch.tensor([[self._fed[slot]] for slot in slots], dtype=torch.long)  # (B, 1)
            logits = self._forward(slots, idx)  # (B, V)
            picked = self.engine._pick_tokens([self.running[slot] for slot in slots], logits, isolate=True)
            for slot, tok in zip(slots, picked):
                self._fed[slot] = tok
                if self.running[slot].done:
                    self._release(slot)

    def abort(self, e: Exception) -> list[Sequence]:
        """A forward failed: fail every running sequence and free every slot; returns them."""
        failed = list(self.running.values())
        for s in failed:
            self.engine._fail(s, e)
        for slot in list(self.running):
            self._release(slot)
        return failed

    def _prefill(self, slots: list[int]) -> None:
        """Run the prompts of these (empty) slots in one forward, right-padded, and pick each one's first token."""
        seqs = [self.running[slot] for slot in slots]
        lens = [len(s.prompt_ids) for s in seqs]
        idx = torch.full((len(seqs), max(lens)), self.engine.pad_id, dtype=torch.long)  # (B, T0), right-padded
        for b, s in enumerate(seqs):
            idx[b, : lens[b]] = torch.tensor(s.prompt_ids, dtype=torch.long)
        model, last = self.engine.model, torch.tensor(lens) - 1  # (B,) each row's last real token
        try:  # a failing prefill fails the requests in it, not the running ones
            self.cache.select(slots)
            idx = idx.to(self.engine.device)
            if len(seqs) == 1:
                logits = model(idx, cache=self.cache, last_only=True)[:, -1]  # (1, V): Engine.steps' own call
            elif hasattr(model, "hidden_states"):  # our Transformer: the head runs on one position per row only
                h = model.hidden_states(idx, cache=self.cache)  # (B, T0, d)
                logits = model.logits(h[torch.arange(len(seqs)), last.to(h.device)])  # (B, V)
            else:
                logits = model(idx, cache=self.cache)[torch.arange(len(seqs)), last.to(idx.device)]  # (B, V)
            for slot, n in zip(slots, lens):
                self.cache.trim(slot, n)
            picked = self.engine._pick_tokens(seqs, logits, isolate=True)
        except Exception as e:  # noqa: BLE001 - reported through seq.error
            for s in seqs:
                self.engine._fail(s, e)
            picked = [self.engine.pad_id] * len(seqs)
        for slot, s, tok in zip(slots, seqs, picked):
            self._fed[slot] = tok
            if s.done:
                self._release(slot)

    def _forward(self, slots: list[int], idx: torch.Tensor) -> torch.Tensor:
        self.cache.select(slots)
        return self.engine.model(idx.to(self.engine.device), cache=self.cache, last_only=True)[:, -1]  # (B, V)

    def _release(self, slot: int) -> None:
        del self.running[slot]
        self._fed.pop(slot, None)
        self.cache.free(slot)


class ContinuousWorker(BatchWorker):
    """BatchWorker's interface (submit, run_call, close; the same items on each job's queue), scheduled
    continuously: jobs are taken from the queue at every step boundary, not only when a batch ends."""

    def __init__(self, engine: Engine, max_batch: int = 8):
        self.batch = RunningBatch(engine, n_slots=max(1, max_batch))
        self._jobs: dict[int, tuple[_Job, set[int]]] = {}  # id(job) -> (job, ids of its sequences still to end)
        super().__init__(engine, max_batch)

    def _take(self, job: _Job) -> None:
        if job.call is not None:  # scoring and the like: run now, between two steps
            try:
                self._send(job, ("result", job.call()))
            except Exception as e:  # noqa: BLE001 - reported to the request, the worker survives
                self._send(job, ("error", e))
            return
        try:  # a job that cannot run is answered alone, before any of its rows takes a slot
            for s in job.seqs:
                self.engine.check(s)
            for s in job.seqs:
                self.batch.add(s)
        except Exception as e:  # noqa: BLE001
            for s in job.seqs:
                s.cancelled = True  # rows already queued leave at admission
            self._send(job, ("error", e))
            return
        self._jobs[id(job)] = (job, {id(s) for s in job.seqs})

    def _run(self) -> None:
        closing = False
        while True:
            while not closing:  # everything waiting now joins at this step boundary; block only when idle
                try:
                    job = self._q.get_nowait() if self.batch.busy else self._q.get()
                except queue.Empty:
                    break
                if job is None:
                    closing = True
                else:
                    self._take(job)
            if not self.batch.busy:
                if closing:
                    return
                continue
            try:
                self.batch.step()
            except Exception as e:  # noqa: BLE001 - a decode forward failed: every running row shares it
                log.exception("generation failed")
                self.batch.abort(e)
            self._report()

    def _report(self) -> None:
        for key, (job, pending) in list(self._jobs.items()):
            for i, s in enumerate(job.seqs):
                if id(s) not in pending:
                    continue
                if s.error is not None:  # one row of this request failed: so did the request
                    log.error("generation failed for one request", exc_info=s.error)
                    self._send(job, ("error", s.error))
                    for other in job.seqs:  # its other rows leave at the next step
                        other.cancelled = True
                    del self._jobs[key]
                    break
                events = s.drain()
                if events or s.done:
                    self._send(job, ("events", i, events, s.finish_reason))
                if s.done:
                    pending.discard(id(s))
            else:
                if not pending:
                    del self._jobs[key]
                    self._send(job, ("end",))
