"""Turning next-token logits into a token: greedy, temperature, top-k, top-p, min-p, repetition penalty.

The order of operations matters and follows common practice (Hugging Face, vLLM):

    logits -> repetition penalty -> / temperature -> top-k -> top-p -> min-p -> softmax -> sample

so top-p and min-p are measured on the *tempered* distribution. temperature == 0 means greedy (argmax of the
penalised logits); every filter then is irrelevant. So does any temperature below 1e-5 (as in vLLM).

- Repetition penalty (Keskar et al. 2019, CTRL): a token already in the context has its logit divided by the
  penalty if positive, multiplied if negative, so it always becomes less likely. 1.0 = off.
- Top-k: keep the k most likely tokens. Top-p / nucleus (Holtzman et al. 2020): keep the smallest set of most
  likely tokens whose probability adds up to at least p. Min-p (Nguyen et al. 2024): keep tokens whose
  probability is at least min_p times the top token's, which adapts the cut to how confident the model is.

Every request carries its own seeded `torch.Generator`, so a seeded request gives the same text whether it runs
alone or inside a batch with others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

GREEDY_BELOW = 1e-5  # temperatures under this decode greedily
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1  # the range torch.Generator.manual_seed accepts


@dataclass
class SamplingParams:
    """How to pick tokens and when to stop. The defaults are a sensible chat setting."""

    max_new_tokens: int = 256
    """Generate at most this many tokens (stop tokens and strings can end earlier)."""
    temperature: float = 1.0
    """Divide logits by this; 0 (or anything below 1e-5) means greedy decoding. 0.7-1.0 is typical for chat, 0 for
    evaluation."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 = off. 50 is a common setting."""
    top_p: float = 1.0
    """Nucleus sampling: keep the most likely tokens covering this much probability; 1.0 = off. Try 0.9-0.95."""
    min_p: float = 0.0
    """Drop tokens less likely than min_p x the most likely token's probability; 0 = off. Try 0.05-0.1."""
    repetition_penalty: float = 1.0
    """> 1 discourages tokens already in the context (prompt + output); 1.0 = off. Try 1.1-1.3."""
    stop: list[str] = field(default_factory=list)
    """Stop when any of these strings appears in the output; the string itself is not returned."""
    stop_token_ids: list[int] = field(default_factory=list)
    """Stop when one of these tokens is sampled (the tokenizer's end-of-text is added by the engine)."""
    seed: int | None = None
    """Seed for this request's random generator; None = non-deterministic."""
    ignore_eos: bool = False
    """Keep generating past end-of-text (benchmarks use this to generate a fixed number of tokens)."""

    def validate(self) -> "SamplingParams":
        """Check every setting; a ValueError names the first bad one. NaN slips past every `<` comparison (all are
        False), so each number is checked finite first: this one method guards the CLI, the server and the API."""
        for name in ("max_new_tokens", "top_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        for name in ("temperature", "top_p", "min_p", "repetition_penalty"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1] (0 = off), got {self.min_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")
        if not isinstance(self.stop, (list, tuple)) or not all(isinstance(x, str) for x in self.stop):
            raise ValueError(f"stop must be a list of strings, got {self.stop!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)
                                      or not SEED_MIN <= self.seed <= SEED_MAX):
            raise ValueError(f"seed must be an integer in [{SEED_MIN}, {SEED_MAX}] (what torch.Generator takes), "
                             f"got {self.seed!r}")
        return self

    @property
    def greedy(self) -> bool:
        # vLLM's rule: below 1e-5 the tempered distribution is practically one-hot, and dividing float32 logits
        # by e.g. 1e-40 overflows to inf and then NaN probabilities, which torch.multinomial refuses
        return self.temperature < GREEDY_BELOW


def make_generator(seed: int | None, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()  # fresh entropy
    else:
        g.manual_seed(seed)
    return g


def apply_repetition_penalty(logits: torch.Tensor, context: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (V,) or (B, V); context: token ids (T,) or (B, T) already seen. Returns new logits."""
    if penalty == 1.0 or context.numel() == 0:
        return logits
    squeeze = logits.dim() == 1
    if squeeze:
        logits, context = logits[None], context[None]
    seen = torch.gather(logits, 1, context)  # (B, T): the logits of tokens present in the context
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    logits = logits.scatter(1, context, seen)  # duplicates in context write the same value: fine
    return logits[0] if squeeze else logits


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0) -> torch.Tensor:
    """Set filtered-out logits to -inf. logits (..., V), already divided by the temperature."""
    V = logits.size(-1)
    if 0 < top_k < V:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens strictly more likely than it already cover top_p
        mass_before = torch.cumsum(probs, dim=-1) - probs
        drop_sorted = mass_before >= top_p
        drop_sorted[..., 0] = False  # always keep the most likely token
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    if min_p > 0.0:
        probs = torch.softmax(logits, dim=-1)
        threshold = min_p * probs.max(dim=-1, keepdim=True).values
        logits = logits.masked_fill(probs < threshold, float("-inf"))
    return logits


def process_logits(logits: torch.Tensor, params: SamplingParams, context: torch.Tensor | None = None) -> torch.Tensor:
    """The full pipeline up to (not including) softmax for one row: logits (V,) -> processed logits (V,) float32.

    With temperature 0 the result is the penalised logits (argmax of them is the greedy choice)."""
    logits = logits.float()
    if context is not None and params.repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, context, params.repetition_penalty)
    if params.greedy:
        return logits
    logits = logits / params.temperature
    return filter_logits(logits, params.top_k, params.top_p, params.min_p)


def probs_from_logits(logits: torch.Tensor, params: SamplingParams, context: torch.Tensor | None = None) -> torch.Tensor:
    """The distribution tokens are actually drawn from, (V,). Greedy is a one-hot on the argmax.

    Speculative sampling needs this explicitly: it compares the target's and the draft's sampling
    distributions, so both must include every filter and the temperature."""
    processed = process_logits(logits, params, context)
    if params.greedy:
        out = torch.zeros_like(processed)
        out[processed.argmax()] = 1.0
        return out
    return torch.softmax(processed, dim=-1)


def sample_from_probs(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """Draw one token from probs (V,)."""
    return int(torch.multinomial(probs, 1, generator=generator).item())


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None,
           context: torch.Tensor | None = None) -> int:
    """One token from one row of logits (V,)."""
    processed = process_logits(logits, params, context)
    if params.greedy:
        return int(processed.argmax().item())
    return sample_from_probs(torch.softmax(processed, dim=-1), generator)
