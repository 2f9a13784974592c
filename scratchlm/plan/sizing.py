"""How big a model a budget buys: Chinchilla arithmetic for `scratchlm pretrain --time 10m` / `--tokens 50M`.

Training costs C = 6 N D FLOPs for N parameters and D tokens (plus attention, small at these lengths), and for a
fixed C the loss is lowest near D = 20 N (Hoffmann et al. 2022, "Chinchilla"). So:

    a token budget D   -> N = D / 20
    a time budget T    -> C = T x R (R: the FLOP/s this machine reaches, measured), N = sqrt(C / 120), D = 20 N

Data can be the limit: repeating it up to ~4 times is nearly as good as fresh tokens (Muennighoff et al. 2023,
"Scaling Data-Constrained Language Models"), beyond that returns fall fast. When D would exceed 4 epochs of the
data, D is capped there and a time budget goes into a larger model instead (N = C / (6 D)).

N is then rounded to the nearest shape of a ladder of Llama-style models (RoPE, SwiGLU, RMSNorm), counting the
embedding parameters as Chinchilla did: with a small corpus and a 8k vocabulary the embeddings are a large share.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from scratchlm.model.config import ModelConfig

TOKENS_PER_PARAM = 20.0  # Chinchilla's compute-optimal ratio
MAX_EPOCHS = 4.0  # repeated data is worth nearly as much as new data up to ~4 epochs

# (d_model, n_layers, n_heads, n_kv_heads): width grows ~1.5x a rung, depth with it (d_model / n_layers ~ 32-64,
# the aspect ratio of small trained models: Kaplan et al. find loss flat over 20-200). Heads 32 wide below
# d_model 256, 64 above; grouped-query attention from d_model 1024 on, as Llama 3 does.
LADDER: tuple[tuple[int, int, int, int], ...] = (
    (64, 2, 2, 2), (96, 3, 3, 3), (128, 4, 4, 4), (192, 4, 6, 6), (256, 6, 4, 4), (384, 8, 6, 6),
    (512, 10, 8, 8), (640, 12, 10, 10), (768, 14, 12, 12), (1024, 18, 16, 4), (1280, 22, 20, 4),
    (1536, 26, 24, 8), (2048, 28, 32, 8),
)


def ladder_config(rung: tuple[int, int, int, int], vocab_size: int, max_seq_len: int) -> ModelConfig:
    d, layers, heads, kv = rung
    return ModelConfig(vocab_size=vocab_size, d_model=d, n_layers=layers, n_heads=heads, n_kv_heads=kv,
                       max_seq_len=max_seq_len)


def count_params(cfg: ModelConfig) -> int:
    """Parameters of a ModelConfig without building it (meta device: no memory, no init)."""
    import torch

    from scratchlm.model import Transformer

    with torch.device("meta"):
        return Transformer(cfg).num_params()


@dataclass
class Sizing:
    """The outcome, with the numbers behind it (printed before training)."""

    model: ModelConfig
    params: int  # of the chosen shape
    target_params: float  # what the budget asked for, before rounding to the ladder
    tokens: float  # training tokens the run will see (a token budget, or what the time buys)
    flops: float  # 6 N D
    epochs: float  # tokens / unique training tokens
    limited_by: str  # "tokens" (the budget), "compute" (time), "data" (the 4-epoch cap)


def size_for_budget(vocab_size: int, max_seq_len: int, data_tokens: int, tokens: float | None = None,
                    flops: float | None = None, tokens_per_param: float = TOKENS_PER_PARAM,
                    max_epochs: float = MAX_EPOCHS) -> Sizing:
    """Choose the model for a token budget or a compute budget (exactly one), given the unique training tokens."""
    if (tokens is None) == (flops is None):
        raise ValueError("give exactly one budget: tokens or flops")
    for name, v in (("tokens", tokens), ("flops", flops)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(f"the {name} budget must be a positive number, got {v}")
    if data_tokens < 1:
        raise ValueError("the training data has no tokens")
    cap = max_epochs * data_tokens
    if tokens is not None:
        limited_by = "tokens"
        if tokens > cap:  # more passes than help: the same budget is better spent... on the same data, capped
            limited_by = "data"
        n_target = min(tokens, cap) / tokens_per_param
        d_tokens = tokens  # a token budget is what the user asked for: honour it, say if it repeats the data
    else:
        n_target = math.sqrt(flops / (6 * tokens_per_param))
        d_tokens = tokens_per_param * n_target
        limited_by = "compute"
        if d_tokens > cap:  # not enough data for the compute-optimal run: a larger model over max_epochs
            d_tokens = cap
            n_target = flops / (6 * d_tokens)
            limited_by = "data"
    cfg = nearest_shape(n_target, vocab_size, max_seq_len)
    n = count_params(cfg)
    if flops is not None:  # the time buys this many tokens for the shape actually chosen
        d_tokens = flops / (6 * n)
    return Sizing(model=cfg, params=n, target_params=n_target, tokens=d_tokens, flops=6 * n * d_tokens,
                  epochs=d_tokens / data_tokens, limited_by=limited_by)


def nearest_shape(n_params: float, vocab_size: int, max_seq_len: int) -> ModelConfig:
    """The ladder shape whose parameter count is nearest to n_params on a log scale."""
    best, best_gap = None, math.inf
    for rung in LADDER:
        cfg = ladder_config(rung, vocab_size, max_seq_len)
        gap = abs(math.log(count_params(cfg) / n_params))
        if gap < best_gap:
            best, best_gap = cfg, gap
    return best


# ---------------------------------------------------------------------------------------------- user input

_UNITS = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400, "": 1}


def parse_count(text: str, what: str = "--tokens") -> float:
    """"50M", "1.5B", "2e9", "200000" -> a positive finite number."""
    m = re.fullmatch(r"\s*([0-9.]+(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)\s*", str(text).lower())
    if not m:
        raise ValueError(f"{what} {text!r} is not a count; write e.g. 50M, 1.5B or 2e9")
    value = float(m.group(1)) * _UNITS[m.group(2)]
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what} {text!r} must be a positive finite count")
    return value


def parse_duration(text: str, what: str = "--time") -> float:
    """"10m", "90s", "1.5h", "2d", "600" (seconds) -> seconds."""
    m = re.fullmatch(r"\s*([0-9.]+(?:e[+-]?[0-9]+)?)\s*(s|sec|m|min|h|hr|d|)\s*", str(text).lower())
    if not m:
        raise ValueError(f"{what} {text!r} is not a duration; write e.g. 90s, 10m, 1.5h or 2d")
    value = float(m.group(1)) * _SECONDS[m.group(2)]
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what} {text!r} must be a positive finite duration")
    return value
