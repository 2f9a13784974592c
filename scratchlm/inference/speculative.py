"""Speculative decoding: a cheap drafter guesses several tokens, the big model checks them all in one forward.

Decoding is memory-bound: one forward for one token reads every weight once, and a forward over k+1 tokens
costs almost the same. So let a small *draft* model (same tokenizer) propose gamma tokens, run the *target* on
all of them at once, and keep the longest prefix the target agrees with (Leviathan et al. 2023, "Fast Inference
from Transformers via Speculative Decoding"; Chen et al. 2023, "Accelerating LLM Decoding with Speculative
Sampling"). With draft distributions q_i and target distributions p_i (both after temperature and filters):

    accept drafted token d_i with probability min(1, p_i(d_i) / q_i(d_i)), left to right;
    at the first rejection sample a replacement from  norm(max(0, p_i - q_i))  and stop;
    if all gamma are accepted, sample a bonus token from p_{gamma+1} (the target computed it anyway).

Each round costs one target forward and yields between 1 and gamma+1 tokens, and the output has *exactly* the
target's distribution (for greedy decoding: exactly the target's greedy text). Rejected tokens leave entries in
both KV caches; `KVCache.rollback` forgets them.

Drafters:
- a draft model (e.g. a 5x smaller model trained on the same data with the same tokenizer);
- prompt lookup (Saxena 2023): copy the tokens that followed the last occurrence of the current n-gram earlier
  in the context. Free, and strong when the output repeats the input (summaries, code edits, extraction).
  Its q is a point mass on the guess, so acceptance is p_i(d_i) and the residual is p_i without d_i.
  A 1-token match nearly always exists, so on text the model does not copy every round would pay for a wide
  verify forward and keep nothing (0.64x plain compiled on the demo's 2M model). Hence the back-off: after a
  round whose guesses were all rejected (the second such round in a row), stop guessing for 1, 2, 4, ... rounds
  (up to `lookup_backoff`); any accepted guess resets it. A round without guesses is a plain decode step (compiled: the decode graph).

Adaptive gamma (like Hugging Face's assistant heuristic): +2 after a round with every draft accepted, -1 after a
rejection, so gamma tracks how predictable the text currently is.

Batches and compiled models (`steps_batch`). With `Engine(..., compile=True)` the draft's steps run through its
own compiled decode graph and the target's verify forward through a compiled graph of fixed width gamma + 1
(compiled.py: static shapes, one graph per gamma; prompt-lookup rows with fewer guesses are padded and their
acceptance capped), and rejected slots are forgotten by moving the static cache's write slot back. A greedy
round with a draft model is one compiled graph (compiled.py `_spec_round`: draft, verify, accept and rewind,
decided on tensors) and one sync: at the demo's sizes a round's cost is per-call overhead, not arithmetic, and
fusing took speculation from 1.30x to 1.56-1.66x plain compiled (BENCHMARKS.md). A batch runs
in lockstep: every round keeps the *fewest* tokens any live row accepted (m), and each row takes its own m
drafts plus its own token at position m (the target's choice where that row rejected there, its accepted draft
where it went further). Every row's text is still exactly what the target alone would give (for sampling: a
sample of its distribution), at the price of acceptance: rows agreeing beyond m throw that work away
(`SpecStats.agreed` vs `accepted`). Per-row positions would keep it, at the price of holes in the cache and a
cache that outgrows prompt + new tokens; not done.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Iterator

import torch

from .engine import Engine, Sequence, StreamChunk
from .sampling import SamplingParams, probs_from_logits


@dataclass
class SpecStats:
    """What speculative decoding achieved on one generation."""

    target_calls: int = 0
    """Target verify forwards (one per round; the prompt prefill is not counted). Plain decoding needs one
    forward per generated token, so tokens_per_target_call is the ideal speedup."""
    draft_calls: int = 0
    """Draft model forwards; a compiled greedy round runs its gamma steps as one graph and counts once."""
    drafted: int = 0
    """Tokens proposed by the drafter."""
    accepted: int = 0
    """Proposed tokens the target accepted."""
    generated: int = 0
    seconds: float = 0.0
    agreed: int = 0
    """Batches: drafted tokens each row would have accepted alone (>= accepted, which keeps the fewest per round)."""
    compile_seconds: float = 0.0
    """Compiled runs: seconds of this run spent compiling graphs (first use of a shape), inside `seconds`."""

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_target_call(self) -> float:
        return self.generated / max(1, self.target_calls)

    @property
    def tokens_per_second(self) -> float:
        return self.generated / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "acceptance_rate": self.acceptance_rate,
                "tokens_per_target_call": self.tokens_per_target_call, "tokens_per_second": self.tokens_per_second}


@dataclass
class SpeculativeConfig:
    gamma: int = 4
    """Tokens drafted per round. 4-8 for a draft model ~10x smaller than the target; more when acceptance is high."""
    adaptive: bool = False
    """Grow gamma by 2 after a fully accepted round, shrink it by 1 after a rejection (within [1, gamma_max])."""
    gamma_max: int = 16
    """Upper bound for adaptive gamma."""
    ngram_max: int = 3
    """Prompt lookup: longest n-gram to match (the longest match found wins)."""
    ngram_min: int = 1
    """Prompt lookup: shortest n-gram to match."""
    lookup_backoff: int = 16
    """Prompt lookup: after a second round in a row with every guess rejected, make no guesses for 1, 2, 4, ...
    rounds, at most this many (an accepted guess resets it), so text the model does not copy costs about a
    plain step. 0: guess every round."""

    def validate(self) -> "SpeculativeConfig":
        if self.gamma < 1 or self.gamma_max < self.gamma:
            raise ValueError(f"need 1 <= gamma <= gamma_max, got gamma={self.gamma}, gamma_max={self.gamma_max}")
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError(f"need 1 <= ngram_min <= ngram_max, got {self.ngram_min}, {self.ngram_max}")
        if not 0 <= self.lookup_backoff <= 1024:
            raise ValueError(f"need 0 <= lookup_backoff <= 1024 (rounds), got {self.lookup_backoff}")
        return self


class _Backoff:
    """Prompt lookup's pause after failed guesses: `ready` says whether to guess this round, `update` learns
    from how many guesses the round made and kept. A single miss costs nothing (an edit that renames a child
    misses once at the name, then copies again); from the second miss in a row the pause doubles, 1, 2, 4, ...
    rounds, so a stretch the model does not copy costs one wide verify per `cap` rounds."""

    def __init__(self, cap: int):
        self.cap, self.wait, self.skip, self.misses = cap, 0, 0, 0

    @property
    def ready(self) -> bool:
        return self.skip == 0

    def update(self, guessed: int, kept: int) -> None:
        if guessed == 0:  # a round without guesses: one step nearer the next try
            self.skip = max(0, self.skip - 1)
        elif kept > 0:
            self.wait = self.misses = 0
        else:
            self.misses += 1
            if self.cap > 0 and self.misses >= 2:
                self.wait = min(self.cap, max(1, 2 * self.wait))
                self.skip = self.wait


def prompt_lookup(history: list[int], gamma: int, ngram_max: int = 3, ngram_min: int = 1) -> list[int]:
    """Draft: the (up to) gamma tokens that followed the latest earlier occurrence of the last n tokens."""
    for n in range(min(ngram_max, len(history) - 1), ngram_min - 1, -1):
        tail = history[-n:]
        for start in range(len(history) - n - 1, -1, -1):  # latest match first; never the tail itself
            if history[start:start + n] == tail:
                return history[start + n: start + n + gamma]
    return []


def _commit(eng, seqs, live: list[int], new: list[list[int]]) -> list[int]:
    """Append each live row's accepted tokens (stopping at its end) and return every row's last token."""
    for b in live:
        for t in new[b]:
            eng.append_token(seqs[b], t)
            if seqs[b].done:
                break
    return [r[-1] for r in new]


class SpeculativeDecoder:
    """Speculative generation for one sequence at a time, with a draft model or prompt lookup."""

    def __init__(self, engine: Engine, draft_model: torch.nn.Module | None = None,
                 config: SpeculativeConfig | None = None):
        self.engine, self.target = engine, engine.model
        self.draft = draft_model.eval() if draft_model is not None else None
        self.config = (config or SpeculativeConfig()).validate()
        if self.draft is not None:
            tv, dv = engine.model.config.vocab_size, draft_model.config.vocab_size
            if tv != dv:
                raise ValueError(f"draft vocabulary ({dv}) differs from the target's ({tv}); "
                                 "the draft model must use the target's tokenizer")
        self.stats = SpecStats()
        self._draft_compiled = None  # the draft's CompiledDecoder, made on first use with a compiled engine

    # ------------------------------------------------------------------ public API
    def generate(self, prompt: str | list[int], params: SamplingParams | None = None) -> Sequence:
        seq = self.engine.make_sequences([prompt], params)[0]
        for _ in self.steps(seq):
            pass
        return seq

    def generate_batch(self, prompts: list, params: SamplingParams | list[SamplingParams] | None = None) -> list[Sequence]:
        """Several prompts in one lockstep batch (see the module docstring); one Sequence per prompt, in order."""
        seqs = self.engine.make_sequences(prompts, params)
        for _ in self.steps_batch(seqs):
            pass
        return seqs

    def stream(self, prompt_ids: list[int], params: SamplingParams | None = None) -> Iterator[StreamChunk]:
        seq = self.engine.make_sequences([prompt_ids], params)[0]
        ids: list[int] = []
        for _ in self.steps(seq):
            events = seq.drain()
            ids += [e.token_id for e in events if e.token_id >= 0]
            text = "".join(e.text for e in events)
            if text or seq.done:
                yield StreamChunk(text, ids, seq.finish_reason)
                ids = []
            if seq.done:
                return

    # ------------------------------------------------------------------ the loop
    @torch.inference_mode()
    def steps(self, seq: Sequence) -> Iterator[None]:
        """Generate into `seq`, yielding after every round; self.stats describes the run afterwards."""
        if self.engine.compiled is not None:
            yield from self.steps_batch([seq])
            return
        from scratchlm.model.kv_cache import KVCache

        eng, cfg, P = self.engine, self.config, seq.params
        eng.prepare([seq])
        st = self.stats = SpecStats()
        t0 = time.perf_counter()
        prompt = seq.prompt_ids
        budget = min(P.max_new_tokens, eng.max_seq_len - len(prompt))
        seq._room = budget
        if seq.done or budget <= 0:
            return
        dev = eng.device
        tcache = KVCache.for_model(self.target, batch_size=1, max_len=len(prompt) + budget)
        dcache = KVCache.for_model(self.draft, batch_size=1, max_len=len(prompt) + budget) if self.draft else None
        # Invariant: each cache holds every committed token except the last one(s) still to feed ("pending").
        if len(prompt) > 1:
            ctx = torch.tensor([prompt[:-1]], device=dev)
            self.target(ctx, cache=tcache, last_only=True)
            if self.draft is not None:
                self.draft(ctx, cache=dcache, last_only=True)
        pending = [prompt[-1]]  # tokens the draft model has not seen yet
        gamma = cfg.gamma
        backoff = _Backoff(cfg.lookup_backoff)

        def history() -> list[int]:
            return prompt + seq.token_ids

        def context(extra: list[int]) -> torch.Tensor | None:  # for the repetition penalty only
            if P.repetition_penalty == 1.0:
                return None
            return torch.tensor(history() + extra, device=dev)

        while not seq.done:
            remaining = budget - len(seq.token_ids)
            g = max(0, min(gamma, remaining - 1))  # a round yields up to g + 1 tokens
            last = history()[-1]
            # ---- 1. draft g tokens and their distributions q_i
            drafts: list[int] = []
            qs: list[torch.Tensor] = []
            if self.draft is not None and g > 0:
                feed = pending
                for i in range(g):
                    logits = self.draft(torch.tensor([feed], device=dev), cache=dcache, last_only=True)[0, -1]
                    st.draft_calls += 1
                    q = probs_from_logits(logits, P, context(drafts))
                    d = int(q.argmax()) if P.greedy else int(torch.multinomial(q.cpu(), 1, generator=seq.generator))
                    drafts.append(d)
                    qs.append(q)
                    feed = [d]
            elif self.draft is None and g > 0 and backoff.ready:
                drafts = prompt_lookup(history(), g, cfg.ngram_max, cfg.ngram_min)
            g = len(drafts)
            # ---- 2. the target scores last + all drafts in one forward: p_1 .. p_{g+1}
            before = tcache.length
            logits = self.target(torch.tensor([[last] + drafts], device=dev), cache=tcache)[0]  # (g+1, V)
            st.target_calls += 1
            # ---- 3. accept / reject left to right
            new: list[int] = []
            for i in range(g + 1):
                p = probs_from_logits(logits[i], P, context(drafts[:i]))
                if i == g:  # every draft accepted: the bonus token comes from p_{g+1}
                    new.append(self._draw(p, seq))
                    break
                d = drafts[i]
                if P.greedy:
                    ok = int(p.argmax()) == d
                else:
                    q_d = float(qs[i][d]) if qs else 1.0  # prompt lookup: q is a point mass on d
                    ok = float(torch.rand((), generator=seq.generator)) < min(1.0, float(p[d]) / q_d)
                if ok:
                    new.append(d)
                    continue
                q = qs[i] if qs else torch.nn.functional.one_hot(torch.tensor(d), p.numel()).to(p)
                residual = (p - q).clamp_min(0)  # where the target wants more mass than the draft gave
                new.append(self._draw(residual if float(residual.sum()) > 0 else p, seq))
                break
            n_acc = len(new) - 1
            st.drafted += g
            st.accepted += n_acc
            backoff.update(g, n_acc)
            # ---- 4. roll both caches back to "every committed token but the newest"
            tcache.rollback(before + 1 + n_acc)
            if self.draft is not None:
                if g == 0:
                    pending = pending + new  # the draft saw nothing this round
                elif n_acc < g:
                    dcache.rollback(dcache.length - (g - 1 - n_acc))
                    pending = [new[-1]]
                else:  # all accepted: the draft never fed its own last guess
                    pending = [drafts[-1], new[-1]]
            for tok in new:
                eng.append_token(seq, tok)
                if seq.done:
                    break
            if cfg.adaptive:
                gamma = min(gamma + 2, cfg.gamma_max) if (g > 0 and n_acc == g) else max(1, gamma - 1)
            yield
        st.generated = len(seq.token_ids)
        st.seconds = time.perf_counter() - t0
        yield

    # ------------------------------------------------------------------ batches, eager or compiled
    @torch.inference_mode()
    def steps_batch(self, seqs: list[Sequence]) -> Iterator[None]:
        """Generate into every row of `seqs` in lockstep rounds, yielding after the first token and every round."""
        eng, cfg = self.engine, self.config
        compiled = eng.compiled
        if compiled is not None and cfg.adaptive:
            raise ValueError("adaptive gamma with compile would compile one verify graph per gamma value; "
                             "pick a fixed gamma (drop --adaptive-gamma)")
        eng.prepare(seqs)
        st = self.stats = SpecStats()
        t0 = time.perf_counter()
        c0 = self._compile_seconds()
        B, dev, W = len(seqs), eng.device, cfg.gamma + 1  # W: the verify forward's fixed width
        T0 = max(len(s.prompt_ids) for s in seqs)
        total = min(T0 + max(s.params.max_new_tokens for s in seqs), eng.max_seq_len)
        for s in seqs:
            s._room = total - T0  # as Engine.steps: every row of the batch gets the same room
        if all(s.done for s in seqs):
            return
        idx = torch.full((B, T0), eng.pad_id, dtype=torch.long)
        valid = torch.zeros((B, T0), dtype=torch.bool)
        for b, s in enumerate(seqs):  # left padding, as Engine.steps
            idx[b, T0 - len(s.prompt_ids):] = torch.tensor(s.prompt_ids)
            valid[b, T0 - len(s.prompt_ids):] = True
        idx, valid = idx.to(dev), (valid.to(dev) if not bool(valid.all()) else None)
        slots = min(total + W, eng.max_seq_len)  # a verify forward writes W slots past the last committed token
        tgt = _Runner(self.target, compiled, idx, valid, slots)
        drf = None
        if self.draft is not None:
            if compiled is not None and self._draft_compiled is None:
                from .compiled import CompiledDecoder

                self._draft_compiled = CompiledDecoder(self.draft, mode=compiled.mode, cpp_wrapper=compiled.cpp_wrapper)
            drf = _Runner(self.draft, self._draft_compiled if compiled is not None else None, idx, valid, slots)
        # The first token comes from the prefill, picked exactly as Engine.steps picks it.
        last = eng._pick_tokens(seqs, tgt.first_logits)  # (B,) ints; both caches have seen all but these
        pending = torch.tensor(last, device=dev)[:, None]  # (B, P): tokens the draft model has not seen yet
        yield
        fast = all(s.params.greedy and s.params.repetition_penalty == 1.0 for s in seqs)
        backoff = _Backoff(cfg.lookup_backoff)  # one for the batch: its rows keep the same count anyway

        while not all(s.done for s in seqs):
            live = [b for b, s in enumerate(seqs) if not s.done]
            budget = max(min(seqs[b].params.max_new_tokens, seqs[b]._room) - len(seqs[b].token_ids) for b in live)
            width = W if tgt.room >= W else 1  # near a full cache: plain decode steps
            g = max(0, min(cfg.gamma, budget - 1, width - 1))
            if (fast and drf is not None and drf.compiled is not None and g == cfg.gamma
                    and drf.room >= pending.shape[1] + g):
                # the usual compiled greedy round: draft, verify, accept and rewind in one graph, one sync
                live_t = torch.tensor([not s.done for s in seqs], device=dev)
                out = tgt.spec_round(torch.tensor(last, device=dev)[:, None], drf, pending, live_t, g).tolist()
                m = out[0][g + 1]
                tgt.used -= g - m  # the graph forgot the rejected guesses in both caches
                drf.used -= g - m
                st.target_calls += 1
                st.draft_calls += 1
                st.drafted += g * len(live)
                st.accepted += m * len(live)
                st.agreed += sum(out[b][g + 2] for b in live)
                new = [row[:m] + [row[g]] for row in out]
                pending = torch.tensor([[row[g]] for row in out], device=dev)  # (B, 1)
                last = _commit(eng, seqs, live, new)
                yield
                continue
            # ---- 1. draft g tokens per row: drafts (B, g), cap[b] real guesses, qs[i][b] draft distributions
            qs: list[list[torch.Tensor | None]] = []
            if drf is not None:
                g = max(0, min(g, drf.room - pending.shape[1] + 1))
                cols, feed = [], pending
                if fast and drf.compiled is not None and g == cfg.gamma:  # the usual round: one fused draft graph
                    cols = list(drf.draft_greedy(pending, g).unbind(1))
                    st.draft_calls += 1
                for i in range(g if not cols else 0):
                    logits = drf.forward(feed)[:, -1]  # (B, V)
                    st.draft_calls += 1
                    if fast:
                        d = logits.argmax(-1)  # (B,)
                    else:
                        q_row = [self._row_probs(logits[b], seqs[b], cols, b) for b in range(B)]
                        qs.append(q_row)
                        d = torch.tensor([self._draw(q, seqs[b]) for b, q in enumerate(q_row)], device=dev)
                    cols.append(d)
                    feed = d[:, None]
                drafts = torch.stack(cols, 1) if cols else torch.zeros(B, 0, dtype=torch.long, device=dev)
                cap = [g] * B
            else:
                guesses = [prompt_lookup(s.prompt_ids + s.token_ids, g, cfg.ngram_max, cfg.ngram_min)
                           if g > 0 and backoff.ready and not s.done else [] for s in seqs]
                cap = [len(x) for x in guesses]
                if not any(cap[b] for b in live):  # nothing to check: a plain decode step, not a padded verify
                    if fast:  # greedy: the step's argmax is the token, so skip the accept bookkeeping below
                        tok = tgt.forward(torch.tensor(last, device=dev)[:, None])[:, 0].argmax(-1).tolist()
                        st.target_calls += 1
                        backoff.update(0, 0)
                        last = _commit(eng, seqs, live, [[t] for t in tok])
                        yield
                        continue
                    width, g, guesses = 1, 0, [[] for _ in seqs]
                drafts = torch.tensor([x + [last[b]] * (g - len(x)) for b, x in enumerate(guesses)],
                                      dtype=torch.long, device=dev).view(B, g)
            # ---- 2. the target scores last + drafts (padded to the graph's width) in one forward
            x = torch.cat([torch.tensor(last, device=dev)[:, None], drafts], 1)  # (B, 1 + g)
            if x.shape[1] < width:
                x = torch.cat([x, x[:, -1:].expand(B, width - x.shape[1])], 1)  # (B, width)
            logits = tgt.forward(x)  # (B, width, V)
            st.target_calls += 1
            # ---- 3. each row's accepted count n[b] and its token at n[b]; keep the fewest across live rows
            if fast:
                choice = logits.argmax(-1)  # (B, width)
                ok = (choice[:, :g] == drafts) & (torch.arange(g, device=dev)[None, :] < torch.tensor(cap, device=dev)[:, None])
                n = ok.long().cumprod(1).sum(1).tolist()
                tok = choice.gather(1, torch.tensor(n, device=dev)[:, None])[:, 0].tolist()
            else:
                n, tok = [], []
                for b, s in enumerate(seqs):
                    nb, tb = self._accept_row(logits[b], drafts[b].tolist()[:cap[b]], [q[b] for q in qs][:cap[b]],
                                              s) if not s.done else (g, eng.pad_id)
                    n.append(nb)
                    tok.append(tb)
            m = min(n[b] for b in live)
            if drf is None:
                backoff.update(max(cap[b] for b in live), m)
            st.drafted += sum(cap[b] for b in live)
            st.agreed += sum(n[b] for b in live)
            st.accepted += m * len(live)
            head = drafts[:, :m].tolist()
            new = [head[b] + [tok[b] if n[b] == m else int(drafts[b, m])] for b in range(B)]
            # ---- 4. forget what was not kept: the target keeps last + m drafts, the draft its fed prefix of them
            tgt.rewind(width - 1 - m)
            if drf is not None:
                if g == 0:
                    pending = torch.cat([pending, torch.tensor([r[-1] for r in new], device=dev)[:, None]], 1)
                elif m < g:
                    drf.rewind(g - 1 - m)
                    pending = torch.tensor([r[-1] for r in new], device=dev)[:, None]
                else:  # all kept: the draft never fed its own last guess
                    pending = torch.stack([drafts[:, -1], torch.tensor([r[-1] for r in new], device=dev)], 1)
            last = _commit(eng, seqs, live, new)
            yield
        st.generated = sum(len(s.token_ids) for s in seqs)
        st.seconds = time.perf_counter() - t0
        st.compile_seconds = self._compile_seconds() - c0
        yield

    def _compile_seconds(self) -> float:
        return sum(c.compile_seconds for c in (self.engine.compiled, self._draft_compiled) if c is not None)

    def _row_probs(self, logits: torch.Tensor, seq: Sequence, cols: list[torch.Tensor], b: int) -> torch.Tensor:
        """One row's draft distribution (V,) after its settings; `cols` are this round's earlier drafts (B,) each."""
        ctx = None
        if seq.params.repetition_penalty != 1.0:
            ctx = torch.tensor(seq.prompt_ids + seq.token_ids + [int(c[b]) for c in cols], device=logits.device)
        return probs_from_logits(logits, seq.params, ctx)

    def _accept_row(self, logits: torch.Tensor, drafts: list[int], qs: list[torch.Tensor],
                    seq: Sequence) -> tuple[int, int]:
        """The accept/reject rule on one row: logits (width, V) of the target at last + drafts. Returns how many
        drafts it accepts and the token at that position (the replacement, or the bonus after all of them)."""
        P = seq.params
        for i in range(len(drafts) + 1):
            ctx = None
            if P.repetition_penalty != 1.0:
                ctx = torch.tensor(seq.prompt_ids + seq.token_ids + drafts[:i], device=logits.device)
            p = probs_from_logits(logits[i], P, ctx)
            if i == len(drafts):
                return i, self._draw(p, seq)
            d = drafts[i]
            if P.greedy:
                ok = int(p.argmax()) == d
            else:
                q_d = float(qs[i][d]) if qs else 1.0  # prompt lookup: q is a point mass on d
                ok = float(torch.rand((), generator=seq.generator)) < min(1.0, float(p[d]) / q_d)
            if not ok:
                q = qs[i] if qs else torch.nn.functional.one_hot(torch.tensor(d), p.numel()).to(p)
                residual = (p - q).clamp_min(0)
                return i, self._draw(residual if float(residual.sum()) > 0 else p, seq)
        raise AssertionError("unreachable")

    @staticmethod
    def _draw(p: torch.Tensor, seq: Sequence) -> int:
        if seq.params.greedy:
            return int(p.argmax())
        return int(torch.multinomial((p / p.sum()).cpu(), 1, generator=seq.generator))


class _Runner:
    """One model and its cache behind two calls, eager (KVCache) or compiled (StaticKVCache): forward (B, T) ->
    (B, T, V), writing T slots, and rewind(n), forgetting the last n. `room` is the slots still free."""

    def __init__(self, model: torch.nn.Module, compiled, idx: torch.Tensor, valid: torch.Tensor | None, slots: int):
        from scratchlm.model.kv_cache import KVCache

        self.model, self.compiled = model, compiled
        if compiled is not None:
            self.first_logits, self.cache = compiled.open(idx, valid, slots)  # (B, V)
        else:
            self.cache = KVCache.for_model(model, batch_size=idx.shape[0], max_len=slots)
            self.first_logits = model(idx, cache=self.cache, valid=valid, last_only=True)[:, -1]  # (B, V)
        self.used = idx.shape[1]

    @property
    def room(self) -> int:
        return self.cache.max_len - self.used

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.used += tokens.shape[1]
        if self.compiled is None:
            return self.model(tokens, cache=self.cache)
        if tokens.shape[1] == 1:
            return self.compiled.step(self.cache, tokens)[:, None]  # the decode graph: (B, 1, V)
        return self.compiled.verify(self.cache, tokens)

    def draft_greedy(self, pending: torch.Tensor, n: int) -> torch.Tensor:
        """(B, P) unseen tokens -> (B, n) greedy guesses in one compiled call, feeding P + n - 1 tokens."""
        self.used += pending.shape[1] + n - 1
        return self.compiled.draft_greedy(self.cache, pending, n)

    def spec_round(self, last: torch.Tensor, drf: "_Runner", pending: torch.Tensor, live: torch.Tensor,
                   n: int) -> torch.Tensor:
        """compiled.py's fused greedy round, self the target and drf the draft: (B, n + 3), see _spec_round.
        `used` counts every slot written; the caller subtracts the n - m the graph forgot once it knows m."""
        self.used += 1 + n
        drf.used += pending.shape[1] + n
        return self.compiled.spec_round(self.cache, last, drf.compiled, drf.cache, pending, live, n)

    def rewind(self, n: int) -> None:
        if n > 0:
            self.used -= n
            if self.compiled is None:
                self.cache.rollback(self.cache.length - n)
            else:
                self.cache.rewind(n)
