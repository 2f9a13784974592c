"""Training compute: how many FLOPs, how many tokens, how long, and the compute-optimal model for a budget.

FLOPs. A forward pass does one multiply-add (2 FLOPs) per parameter per token; the backward pass does twice
that (gradients with respect to activations and to weights), so training costs 6 FLOPs per parameter per token
(Kaplan et al. 2020, sec. 2.1): C = 6 N D. Attention's score and weighted-sum matmuls have no parameters, so
6N misses them; PaLM (Chowdhery et al. 2022, appendix B) adds 12 * L * T * d_attn per token (forward 2 matmuls
of 2 * T * d_attn FLOPs per layer, times 3 for training), counting the full T x T square as MFU conventions do.

Compute-optimal scaling. Hoffmann et al. 2022 ("Chinchilla") found that for a budget C the loss-minimising model
grows as N ~ C^0.5 with about 20 training tokens per parameter. Their approach 3 fits a parametric loss

    L(N, D) = E + A / N^alpha + B / D^beta

whose minimum under C = 6 N D is in closed form (below). The published constants were later refit from the
paper's own data by Besiroglu et al. 2024 ("Chinchilla scaling: a replication attempt"), whose fit agrees with
the ~20 tokens/parameter rule; both are offered. Losses are for the paper's MassiveText data and tokenizer:
use them to compare choices, not to predict your own loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SECONDS_PER_DAY = 86400.0
CHINCHILLA_TOKENS_PER_PARAM = 20.0


def training_flops_per_token(n_params: float, n_layers: int = 0, seq_len: int = 0, d_attn: int = 0) -> float:
    """6N + 12 * L * T * d_attn: FLOPs to train on one token (forward + backward) at context length T."""
    return 6.0 * n_params + 12.0 * n_layers * seq_len * d_attn


def training_flops(n_params: float, tokens: float, n_layers: int = 0, seq_len: int = 0, d_attn: int = 0) -> float:
    """Total training FLOPs. With no architecture this is the classic C = 6ND."""
    return training_flops_per_token(n_params, n_layers, seq_len, d_attn) * tokens


# ----------------------------------------------------------------------------- time and money

def flops_per_second(n_gpus: int, peak_flops: float, mfu: float) -> float:
    """Useful model FLOP/s of the cluster: MFU is achieved model FLOP/s over peak (PaLM, appendix B)."""
    if not 0 < mfu <= 1:
        raise ValueError(f"--mfu must be in (0, 1], got {mfu}; 0.3-0.5 is typical for dense transformers")
    return n_gpus * peak_flops * mfu


def training_seconds(flops: float, n_gpus: int, peak_flops: float, mfu: float) -> float:
    return flops / flops_per_second(n_gpus, peak_flops, mfu)


def budget_flops(n_gpus: int, peak_flops: float, mfu: float, days: float) -> float:
    """The compute a cluster delivers in `days`: the budget of the inverse question."""
    return flops_per_second(n_gpus, peak_flops, mfu) * days * SECONDS_PER_DAY


# ----------------------------------------------------------------------------- compute-optimal scaling

def chinchilla_optimal(flops: float, tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM) -> tuple[float, float]:
    """(N, D) with D = r N and 6 N D = C, i.e. N = sqrt(C / 6r): the 20-tokens-per-parameter rule."""
    n = math.sqrt(flops / (6.0 * tokens_per_param))
    return n, tokens_per_param * n


@dataclass(frozen=True)
class LossFit:
    """Parametric loss L(N, D) = E + A / N^alpha + B / D^beta (N parameters, D tokens)."""

    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str

    def loss(self, n_params: float, tokens: float) -> float:
        return self.E + self.A / n_params**self.alpha + self.B / tokens**self.beta

    def _G(self) -> float:
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def optimal(self, flops: float) -> tuple[float, float]:
        """Minimise L subject to 6ND = C (Hoffmann et al. eq. 4): N = G (C/6)^a, D = (C/6)^b / G,
        with a = beta / (alpha + beta), b = alpha / (alpha + beta), G = (alpha A / (beta B))^(1/(alpha+beta))."""
        a = self.beta / (self.alpha + self.beta)
        b = self.alpha / (self.alpha + self.beta)
        G = self._G()
        return G * (flops / 6.0) ** a, (flops / 6.0) ** b / G

    def tokens_for_params(self, n_params: float) -> float:
        """The D at which an N-parameter model is compute-optimal (inverting N = G (C/6)^a)."""
        a = self.beta / (self.alpha + self.beta)
        c_over_6 = (n_params / self._G()) ** (1.0 / a)
        return c_over_6 / n_params


# Hoffmann et al. 2022, eq. 10 / appendix D.2 (approach 3).
HOFFMANN = LossFit("hoffmann", E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28,
                   source="Hoffmann et al. 2022 (Chinchilla), approach 3, eq. 10")
# Besiroglu, Erdil, Barnett, You 2024, table 1: refit of the same data; implies ~20 tokens/param like approaches 1-2.
BESIROGLU = LossFit("besiroglu", E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658,
                    source="Besiroglu et al. 2024, Chinchilla scaling: a replication attempt, table 1")
FITS = {f.name: f for f in (HOFFMANN, BESIROGLU)}


def compute_optimal(flops: float, fit: str = "chinchilla",
                    tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM) -> tuple[float, float]:
    """Compute-optimal (N, D) for a budget: fit 'chinchilla' (r tokens/param), 'hoffmann' or 'besiroglu'."""
    if fit == "chinchilla":
        return chinchilla_optimal(flops, tokens_per_param)
    if fit not in FITS:
        raise ValueError(f"unknown --fit {fit!r}; use chinchilla, {', '.join(FITS)}")
    return FITS[fit].optimal(flops)


def optimal_tokens_for_params(n_params: float, fit: str = "chinchilla",
                              tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM) -> float:
    """How many tokens make an N-parameter model compute-optimal under `fit`."""
    if fit == "chinchilla":
        return tokens_per_param * n_params
    if fit not in FITS:
        raise ValueError(f"unknown --fit {fit!r}; use chinchilla, {', '.join(FITS)}")
    return FITS[fit].tokens_for_params(n_params)
