"""The few numbers about a model that the planner needs, from a preset, a run, or a bare parameter count.

Parameter and FLOP accounting for a real architecture belongs to `scratchlm.model` (count_params,
flops_per_token); `ModelShape.from_config` asks it. For `--params 7e9` alone there is no architecture, so
`shape_from_params` invents a plausible Llama-style one (the aspect ratio of Llama and GPT-3, d_model ~ 128 x
n_layers). Totals that depend on N alone (6ND, bytes of weights and optimizer states) use the user's N exactly;
only per-layer quantities (activations, the attention FLOP term, KV cache) use the invented shape.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class ModelShape:
    """Architecture numbers for the arithmetic. Counts are of unique parameters (a tied head counts once)."""

    name: str  # preset name, run folder, or "7B (derived)"
    n_params: int  # total parameters, what 6ND and the optimizer see
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int  # == n_heads: MHA; fewer: GQA; 1: MQA
    head_dim: int
    ffn_hidden: int  # hidden width of the MLP
    vocab_size: int  # padded vocabulary (rows of the embedding)
    max_seq_len: int
    activation: str = "swiglu"  # "swiglu" (3 matrices) or "gelu" / "gelu_exact" (2)
    norm: str = "rmsnorm"  # "rmsnorm" or "layernorm" (LayerNorm has a bias vector too)
    pos_emb: str = "rope"  # "rope" or "learned" (a max_seq_len x d_model table)
    tie_embeddings: bool = False
    bias: bool = False
    dropout: float = 0.0
    source: str = "params"  # "preset", "run", "config" or "params" (shape invented from N)
    config: Any = None  # the scratchlm.model.ModelConfig when we have one; None for a derived shape

    @property
    def derived(self) -> bool:
        return self.config is None

    @property
    def attention_kind(self) -> str:
        if self.n_kv_heads == self.n_heads:
            return "MHA"
        return "MQA" if self.n_kv_heads == 1 else "GQA"

    # --- where the parameters sit (for pipeline stages and FSDP's per-layer gathers) -----------------------
    @property
    def embedding_params(self) -> int:
        """Token embedding (+ learned positions): lives on the first pipeline stage."""
        pos = self.max_seq_len * self.d_model if self.pos_emb == "learned" else 0
        return self.vocab_size * self.d_model + pos

    @property
    def head_params(self) -> int:
        """The output projection's own weights (0 when tied to the embedding): the last pipeline stage."""
        return 0 if self.tie_embeddings else self.vocab_size * self.d_model

    @property
    def layer_params(self) -> float:
        """Parameters of one transformer block (everything not embedding/head, final norm spread over layers)."""
        rest = self.n_params - self.embedding_params - self.head_params
        return max(rest, 0) / max(self.n_layers, 1)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6N plus attention's 12 * L * T * d_attn (see compute.py)."""
        if self.config is not None:
            from scratchlm.model import flops_per_token

            return float(flops_per_token(self.config, seq_len))
        from scratchlm.plan.compute import training_flops_per_token

        return training_flops_per_token(self.n_params, self.n_layers, seq_len, self.n_heads * self.head_dim)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("config")
        d.update(derived=self.derived, attention=self.attention_kind, layer_params=self.layer_params,
                 embedding_params=self.embedding_params, head_params=self.head_params)
        return d

    @classmethod
    def from_config(cls, cfg: Any, name: str = "config", source: str = "config") -> "ModelShape":
        """Read a scratchlm.model.ModelConfig; parameter count from the model package's own accounting."""
        from scratchlm.model import count_params

        n_kv = cfg.n_kv_heads or cfg.n_heads
        return cls(
            name=name, n_params=int(count_params(cfg)), n_layers=cfg.n_layers, d_model=cfg.d_model,
            n_heads=cfg.n_heads, n_kv_heads=n_kv, head_dim=cfg.head_dim, ffn_hidden=cfg.ffn_hidden,
            vocab_size=cfg.padded_vocab_size, max_seq_len=cfg.max_seq_len, activation=cfg.activation,
            norm=getattr(cfg, "norm", "rmsnorm"), pos_emb=getattr(cfg, "pos_emb", "rope"),
            tie_embeddings=bool(cfg.tie_embeddings), bias=bool(getattr(cfg, "bias", False)),
            dropout=float(getattr(cfg, "dropout", 0.0) or 0.0), source=source, config=cfg,
        )


def llama_ffn_hidden(d_model: int, multiple_of: int = 256) -> int:
    """Llama's SwiGLU width: 2/3 of 4d (same FLOPs as a 4d GELU MLP), rounded up to a multiple of 256."""
    h = int(2 * 4 * d_model / 3)
    return multiple_of * math.ceil(h / multiple_of)


def llama_block_params(d: int, n_heads: int, n_kv_heads: int, head_dim: int, ffn: int) -> int:
    """One Llama block: q and o (d x d), k and v (d x kv_dim), three SwiGLU matrices, two RMSNorm gains."""
    kv = n_kv_heads * head_dim
    return 2 * d * n_heads * head_dim + 2 * d * kv + 3 * d * ffn + 2 * d


def shape_from_params(n_params: float, vocab_size: int = 32000, seq_len: int = 4096, n_kv_heads: int | None = None,
                      aspect: float = 128.0) -> ModelShape:
    """A plausible Llama-style shape with about `n_params` parameters.

    Depth and width follow d_model ~= `aspect` x n_layers (Llama 7B: 4096/32, 13B: 5120/40, GPT-3: 12288/96);
    Kaplan et al. 2020 found loss nearly flat over aspect ratios 20-200, so the choice barely matters for the
    arithmetic. Heads are 128 wide (64 below d_model 1024). Untied 32k vocabulary, as in Llama 2.
    """
    n = float(n_params)
    if not n > 0:
        raise ValueError(f"--params must be positive, got {n_params}")

    def total(L: float, d: float) -> float:  # continuous approximation: 12 d^2 per block + in/out embeddings
        return 12 * L * d * d + 2 * vocab_size * d

    # Solve total(L, aspect * L) = n for L by bisection (monotone), then fit d to the integer L.
    lo, hi = 0.01, 1000.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if total(mid, aspect * mid) < n else (lo, mid)
    n_layers = max(1, round(lo))
    # 12 L d^2 + 2 V d - n = 0
    a, b = 12 * n_layers, 2 * vocab_size
    d = (-b + math.sqrt(b * b + 4 * a * n)) / (2 * a)
    head_dim = 128 if d >= 1024 else 64
    # round the width to a multiple that keeps heads divisible by 8 for tensor parallelism on big models
    step = 1024 if d >= 4096 else 256 if d >= 2048 else head_dim
    d_model = max(head_dim, step * round(d / step))
    n_heads = d_model // head_dim
    kv = n_heads if n_kv_heads is None else n_kv_heads
    if n_heads % kv:
        raise ValueError(f"--kv-heads {kv} must divide the derived {n_heads} heads; pick a divisor of {n_heads}")
    ffn = llama_ffn_hidden(d_model)
    shape = ModelShape(
        name=f"{_human(n)} (derived)", n_params=int(round(n)), n_layers=n_layers, d_model=d_model, n_heads=n_heads,
        n_kv_heads=kv, head_dim=head_dim, ffn_hidden=ffn, vocab_size=vocab_size, max_seq_len=seq_len,
        source="params",
    )
    return shape


def _human(n: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"


def shape_for_preset(name: str, **overrides: Any) -> ModelShape:
    """The shape of a scratchlm.model preset (e.g. 'gpt2-124m', 'llama-1b'), with optional field overrides."""
    from scratchlm.model import ModelConfig

    return ModelShape.from_config(ModelConfig.from_preset(name, **overrides), name=name, source="preset")


def shape_from_run(run_dir: str | Path) -> ModelShape:
    """The model of a run folder: its latest checkpoint's config.json (the ModelConfig dict)."""
    import json

    from scratchlm.model import ModelConfig
    from scratchlm.runs import latest_checkpoint, require_run

    run_dir = require_run(run_dir)
    ckpt = latest_checkpoint(run_dir)
    cfg_path = ckpt / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} is missing; the checkpoint holds no model config")
    try:
        data = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path} is not valid JSON ({e}); use another checkpoint or run") from None
    return ModelShape.from_config(ModelConfig.from_dict(data), name=str(run_dir), source="run")
