"""The generation engine: prefill once, then decode token by token against a preallocated KV cache.

    engine = Engine(model, tokenizer)
    out = engine.generate(["Once upon a time"], SamplingParams(max_new_tokens=50, temperature=0))
    for chunk in engine.stream(engine.encode("Hello"), SamplingParams()):
        print(chunk.text, end="", flush=True)

How a batch runs (`Engine.steps`):

1. **Prefill.** Prompts of different lengths are left-padded to a common length T0 and run in one forward
   with a validity mask, so every row's first real token gets position 0, exactly as if it ran alone (the
   model's KVCache handles the bookkeeping; see scratchlm/model/kv_cache.py). This fills the cache with the
   keys and values of all prompt tokens and gives the logits for each row's first new token.
2. **Decode.** Each step samples one token per row, feeds the (B, 1) batch of new tokens, and reads (B, 1, V)
   logits. A step costs one token's worth of compute per row instead of the whole sequence's.
3. **Stopping.** A row finishes on a stop token (end-of-text, BOS = the next document in our pretraining
   format, or the caller's), on a stop string (found in the decoded text, which is cut just before it), at
   max_new_tokens, or when the context is full. Finished rows keep riding along in the batch (the cache is
   static) but their tokens are ignored; the batch ends when every row is done.

Text is produced incrementally and UTF-8-safely (detokenizer.py), so streaming consumers never see half a
character or the beginning of a stop string.

The model only needs `model(idx, cache=..., valid=...) -> logits (B, T, V)` and `model.config.max_seq_len`,
so the same engine runs our Transformer and the mock models of testing.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from .detokenizer import IncrementalDetokenizer, StopStringMatcher
from .sampling import SamplingParams, make_generator, process_logits


@dataclass
class TokenEvent:
    """One generated token, as streaming consumers see it."""

    token_id: int
    text: str
    """Newly complete text (may be "" while a UTF-8 character or a possible stop string is incomplete)."""
    logprob: float | None = None
    """log p(token) under the model's raw distribution (before temperature/filters), if logprobs were asked for."""
    top_logprobs: dict[int, float] | None = None
    """The `logprobs` most likely token ids and their raw log-probabilities."""


@dataclass
class Sequence:
    """One request inside a batch: its prompt, settings, and everything generated so far."""

    prompt_ids: list[int]
    params: SamplingParams
    logprobs: int | None = None
    """Return raw log-probabilities of each generated token and of this many alternatives (0 = chosen only)."""
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None  # "stop" | "length" | "abort" | "error"
    token_logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[int, float]] = field(default_factory=list)
    events: list[TokenEvent] = field(default_factory=list)
    """Tokens generated since a consumer last drained this list (streaming)."""
    cancelled: bool = False
    """Set from another thread (e.g. a client disconnected) to finish the row at the next step."""
    error: Exception | None = None
    """Why this row failed (finish_reason "error"), when `Engine.steps(..., isolate=True)` kept the others going."""

    def __post_init__(self):
        self.generator: torch.Generator | None = None
        self._detok: IncrementalDetokenizer | None = None
        self._stops: StopStringMatcher | None = None
        self._stop_ids: set[int] = set()
        self._room = 1 << 30  # tokens this row may still get in its batch (set by Engine.steps)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def drain(self) -> list[TokenEvent]:
        events, self.events = self.events, []
        return events


@dataclass
class StreamChunk:
    text: str
    token_ids: list[int]
    finish_reason: str | None = None


class Engine:
    """Batched generation with a KV cache. `model` is any module following our Transformer's call signature."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, device: str | torch.device | None = None,
                 compile: bool | str = False):
        """compile: True (or a torch.compile mode) decodes with a compiled step over a static cache (compiled.py);
        graphs are compiled on first use of each (batch, length bucket) and kept for the engine's life."""
        self.model = model.eval()
        self.tokenizer = tokenizer
        p = next(model.parameters(), None)
        self.device = torch.device(device) if device is not None else (p.device if p is not None else torch.device("cpu"))
        self.max_seq_len = int(model.config.max_seq_len)
        self.vocab_size = int(getattr(model.config, "vocab_size", 0)) or None
        self.pad_id = getattr(tokenizer, "pad_id", None) or 0
        self.default_stop_ids = [i for i in (getattr(tokenizer, "eos_id", None), getattr(tokenizer, "bos_id", None))
                                 if i is not None]
        self.compiled = None
        if compile:
            self.enable_compile(compile if isinstance(compile, str) else None)

    def enable_compile(self, mode: str | None = None) -> None:
        """Decode with a torch.compile'd step from now on (compiled.py); raises, saying why, if it cannot."""
        from .compiled import CompiledDecoder

        self.compiled = CompiledDecoder(self.model, mode=mode)

    # ------------------------------------------------------------------ text in / out
    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Prompt ids: BOS + text, as every pretraining document starts with BOS (data/shards.py)."""
        ids = self.tokenizer.encode(text)
        bos = getattr(self.tokenizer, "bos_id", None)
        return ([bos] if add_bos and bos is not None else []) + ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, errors="replace")

    # ------------------------------------------------------------------ public API
    def generate(self, prompts: list[str] | list[list[int]], params: SamplingParams | list[SamplingParams] | None = None,
                 logprobs: int | None = None) -> list[Sequence]:
        """Generate for a batch of prompts (text or ids); returns one finished Sequence per prompt, in order."""
        seqs = self.make_sequences(prompts, params, logprobs)
        for _ in self.steps(seqs):
            pass
        return seqs

    def stream(self, prompt_ids: list[int], params: SamplingParams | None = None) -> Iterator[StreamChunk]:
        """Yield text chunks for one prompt as they are generated; the last chunk carries finish_reason."""
        seq = self.make_sequences([prompt_ids], params)[0]
        ids: list[int] = []  # tokens whose text is still held back ride along with the next chunk
        for _ in self.steps([seq]):
            events = seq.drain()
            ids += [e.token_id for e in events if e.token_id >= 0]
            text = "".join(e.text for e in events)
            if text or seq.done:
                yield StreamChunk(text, ids, seq.finish_reason)
                ids = []
            if seq.done:
                return

    def make_sequences(self, prompts, params=None, logprobs: int | None = None) -> list[Sequence]:
        if not prompts:
            raise ValueError("no prompts given")
        params_list = params if isinstance(params, list) else [params or SamplingParams()] * len(prompts)
        if len(params_list) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params_list)} SamplingParams")
        return [Sequence(self.encode(p) if isinstance(p, str) else list(p), sp.validate(), logprobs)
                for p, sp in zip(prompts, params_list)]

    # ------------------------------------------------------------------ the loop
    @torch.inference_mode()
    def steps(self, seqs: list[Sequence], use_cache: bool = True,
              on_logits: Callable[[torch.Tensor], None] | None = None, isolate: bool = False) -> Iterator[None]:
        """Run a batch to completion, yielding after the prefill and after every decode step.

        Consumers read `seq.events` / `seq.done` between yields (streaming, the server's queue). With
        use_cache=False every step recomputes the whole sequence (the slow reference path). on_logits sees the
        (B, V) next-token logits before every pick (tests compare the cached and uncached paths with it).

        isolate=True (the server, where rows are unrelated requests): an exception while picking one row's token
        finishes only that row, with finish_reason "error" and the exception in `seq.error`; the other rows go on.
        A failing forward pass still raises, since every row shares it."""
        self.prepare(seqs)
        B = len(seqs)
        lengths = [len(s.prompt_ids) for s in seqs]
        T0 = max(lengths)
        max_new = max(s.params.max_new_tokens for s in seqs)
        total = min(T0 + max_new, self.max_seq_len)
        n_picks = total - T0  # tokens each row can get in this batch (the cache holds T0 + n_picks - 1 fed tokens)
        for s in seqs:
            s._room = n_picks

        # (B, T0) left-padded prompts and their validity mask
        idx = torch.full((B, T0), self.pad_id, dtype=torch.long)
        valid = torch.zeros((B, T0), dtype=torch.bool)
        for b, p in enumerate(seqs):
            idx[b, T0 - len(p.prompt_ids):] = torch.tensor(p.prompt_ids, dtype=torch.long)
            valid[b, T0 - len(p.prompt_ids):] = True
        idx, valid = idx.to(self.device), valid.to(self.device)
        ragged = not bool(valid.all())

        if use_cache and self.compiled is not None:  # eager prefill, then the compiled step (compiled.py)
            logits, decode = self.compiled.prefill(idx, valid if ragged else None, total)
        elif use_cache:
            from scratchlm.model.kv_cache import KVCache

            cache = KVCache.for_model(self.model, batch_size=B, max_len=total)
            logits = self.model(idx, cache=cache, valid=valid if ragged else None, last_only=True)[:, -1]  # (B, V)
            decode = lambda nxt: self.model(nxt, cache=cache, last_only=True)[:, -1]  # noqa: E731
        else:
            if ragged:
                raise ValueError("use_cache=False needs prompts of equal length; run them one at a time")
            seq_ids = idx
            logits = self.model(seq_ids, last_only=True)[:, -1]
        yield

        for step in range(n_picks):
            if on_logits is not None:
                on_logits(logits)
            new = self._pick_tokens(seqs, logits, isolate)  # appends to each live row, applies stops
            yield
            if all(s.done for s in seqs) or step == n_picks - 1:
                break
            nxt = torch.tensor(new, dtype=torch.long, device=self.device)[:, None]  # (B, 1)
            if use_cache:
                logits = decode(nxt)
            else:
                seq_ids = torch.cat([seq_ids, nxt], dim=1)
                logits = self.model(seq_ids, last_only=True)[:, -1]
        for s in seqs:
            if not s.done:
                self._finish(s, "length")
        yield

    def check(self, s: Sequence) -> None:
        """Raise ValueError if this sequence cannot run (its prompt or its settings); the server checks each
        request this way before it joins a batch, so one bad request cannot fail the others."""
        if not s.prompt_ids:
            raise ValueError("empty prompt: give at least one token (the engine adds BOS to text prompts)")
        if len(s.prompt_ids) >= self.max_seq_len:
            raise ValueError(f"prompt has {len(s.prompt_ids)} tokens but the model's context is "
                             f"{self.max_seq_len}; shorten the prompt")
        if self.vocab_size is not None and not all(0 <= t < self.vocab_size for t in s.prompt_ids):
            raise ValueError(f"prompt token ids must be in [0, {self.vocab_size})")
        s.params.validate()

    def prepare(self, seqs: list[Sequence]) -> None:
        """Validate prompts and set up each sequence's generator, detokenizer and stop rules."""
        for s in seqs:
            self.check(s)
            s.generator = make_generator(s.params.seed, "cpu")
            s._detok = IncrementalDetokenizer(self.tokenizer)
            s._stops = StopStringMatcher(s.params.stop)
            s._stop_ids = set(s.params.stop_token_ids) | (set() if s.params.ignore_eos else set(self.default_stop_ids))
            if s.params.max_new_tokens == 0:
                self._finish(s, "length")

    def _pick_tokens(self, seqs: list[Sequence], logits: torch.Tensor, isolate: bool = False) -> list[int]:
        """Choose the next token of every row from logits (B, V); returns the (B,) tokens to feed next."""
        simple = all(s.params.greedy and s.params.repetition_penalty == 1.0 and s.logprobs is None for s in seqs)
        if simple:  # one argmax and one device sync for the whole batch: the common fast path
            chosen = logits.argmax(dim=-1).tolist()
        else:
            chosen = []
            for b, s in enumerate(seqs):
                if s.done:
                    chosen.append(self.pad_id)
                    continue
                try:
                    chosen.append(self._pick_one(s, logits[b]))
                except Exception as e:  # noqa: BLE001 - with isolate, only this row fails
                    if not isolate:
                        raise
                    self._fail(s, e)
                    chosen.append(self.pad_id)
        raw_logprobs = None
        if any(s.logprobs is not None for s in seqs):
            raw_logprobs = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
        for b, s in enumerate(seqs):
            if s.done:
                chosen[b] = self.pad_id
                continue
            try:
                lp = top = None
                if s.logprobs is not None:
                    lp = float(raw_logprobs[b, chosen[b]])
                    if s.logprobs > 0:
                        vals, ids = raw_logprobs[b].topk(s.logprobs)
                        top = dict(zip(ids.tolist(), vals.tolist()))
                self.append_token(s, chosen[b], lp, top)
            except Exception as e:  # noqa: BLE001
                if not isolate:
                    raise
                self._fail(s, e)
                chosen[b] = self.pad_id
        return chosen

    def _pick_one(self, s: Sequence, logits: torch.Tensor) -> int:
        """One row's next token from its logits (V,), with its own settings and generator."""
        context = None
        if s.params.repetition_penalty != 1.0:
            context = torch.tensor(s.prompt_ids + s.token_ids, dtype=torch.long, device=logits.device)
        processed = process_logits(logits, s.params, context)
        if s.params.greedy:
            return int(processed.argmax())
        probs = torch.softmax(processed, dim=-1).cpu()
        return int(torch.multinomial(probs, 1, generator=s.generator))

    def _fail(self, s: Sequence, e: Exception) -> None:
        s.error = e
        s.finish_reason = "error"  # no flush: text after a failure is not to be trusted

    def append_token(self, s: Sequence, tok: int, logprob: float | None = None,
                     top: dict[int, float] | None = None) -> None:
        """Record one sampled token in a sequence and apply every stop rule (also used by speculative.py)."""
        if s.cancelled:
            self._finish(s, "abort")
            return
        if tok in s._stop_ids:
            self._finish(s, "stop")
            return
        s.token_ids.append(tok)
        if s.logprobs is not None:
            s.token_logprobs.append(logprob)
            s.top_logprobs.append(top or {})
        text, hit = s._stops.push(s._detok.push(tok))
        s.text += text
        s.events.append(TokenEvent(tok, text, logprob, top))
        if hit:
            self._finish(s, "stop", flush=False)
        elif len(s.token_ids) >= s.params.max_new_tokens or len(s.token_ids) >= s._room:
            self._finish(s, "length")

    def _finish(self, s: Sequence, reason: str, flush: bool = True) -> None:
        if s.done:
            return
        s.finish_reason = reason
        if flush and s._detok is not None:
            tail, hit = s._stops.push(s._detok.flush())
            if not hit:
                tail += s._stops.flush()
            if tail:
                s.text += tail
                if s.events:
                    s.events[-1].text += tail
                else:
                    s.events.append(TokenEvent(-1, tail))

    # ------------------------------------------------------------------ scoring (echo + logprobs)
    @torch.inference_mode()
    def score(self, ids: list[int], top: int = 0) -> tuple[list[float | None], list[dict[int, float] | None]]:
        """Raw log p(ids[i] | ids[:i]) for every position (None for the first), and the top-`top` alternatives.

        Evaluation harnesses score a prompt this way (OpenAI's echo=True, max_tokens=0, logprobs=N)."""
        if len(ids) > self.max_seq_len:
            raise ValueError(f"text has {len(ids)} tokens but the model's context is {self.max_seq_len}")
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        logp = torch.log_softmax(self.model(x)[0].float(), dim=-1)  # (T, V)
        token_lp: list[float | None] = [None] + logp[:-1].gather(1, x[0, 1:, None])[:, 0].tolist()
        tops: list[dict[int, float] | None] = [None]
        if top > 0:
            vals, idx = logp[:-1].topk(top, dim=-1)
            tops += [dict(zip(i, v)) for i, v in zip(idx.tolist(), vals.tolist())]
        else:
            tops += [{} for _ in ids[1:]]
        return token_lp, tops


def timed_generate(engine: Engine, prompt_ids: list[int], params: SamplingParams,
                   use_cache: bool = True) -> tuple[Sequence, float]:
    """Generate for one prompt and return (sequence, seconds), for benchmarks and --stats."""
    seq = engine.make_sequences([prompt_ids], params)[0]
    t0 = time.perf_counter()
    for _ in engine.steps([seq], use_cache=use_cache):
        pass
    return seq, time.perf_counter() - t0

