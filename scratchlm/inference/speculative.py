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

Adaptive gamma (like Hugging Face's assistant heuristic): +2 after a round with every draft accepted, -1 after a
rejection, so gamma tracks how predictable the text currently is.
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
    drafted: int = 0
    """Tokens proposed by the drafter."""
    accepted: int = 0
    """Proposed tokens the target accepted."""
    generated: int = 0
    seconds: float = 0.0

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

    def validate(self) -> "SpeculativeConfig":
        if self.gamma < 1 or self.gamma_max < self.gamma:
            raise ValueError(f"need 1 <= gamma <= gamma_max, got gamma={self.gamma}, gamma_max={self.gamma_max}")
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError(f"need 1 <= ngram_min <= ngram_max, got {self.ngram_min}, {self.ngram_max}")
        return self


def prompt_lookup(history: list[int], gamma: int, ngram_max: int = 3, ngram_min: int = 1) -> list[int]:
    """Draft: the (up to) gamma tokens that followed the latest earlier occurrence of the last n tokens."""
    for n in range(min(ngram_max, len(history) - 1), ngram_min - 1, -1):
        tail = history[-n:]
        for start in range(len(history) - n - 1, -1, -1):  # latest match first; never the tail itself
            if history[start:start + n] == tail:
                return history[start + n: start + n + gamma]
    return []


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

    # ------------------------------------------------------------------ public API
    def generate(self, prompt: str | list[int], params: SamplingParams | None = None) -> Sequence:
        seq = self.engine.make_sequences([prompt], params)[0]
        for _ in self.steps(seq):
            pass
        return seq

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
            elif self.draft is None and g > 0:
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

    @staticmethod
    def _draw(p: torch.Tensor, seq: Sequence) -> int:
        if seq.params.greedy:
            return int(p.argmax())
        return int(torch.multinomial((p / p.sum()).cpu(), 1, generator=seq.generator))
