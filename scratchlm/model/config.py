"""ModelConfig: every architectural knob of the transformer, and the named presets.

One dataclass describes both families this package builds:

- **Llama-style** (the default): RoPE positions, RMSNorm, SwiGLU feed-forward, no biases, optional GQA/MQA.
- **GPT-2-style**: learned absolute positions, LayerNorm with biases, GELU MLP (tanh form; or exact),
  tied embeddings.

Any mix of the two is a valid model too (e.g. RoPE + LayerNorm); only the two pure families export to
Hugging Face (see hf.py).

Preset sizes. `gpt2-*` presets are exactly OpenAI's GPT-2 (gpt2-124m has 124,439,808 parameters at vocab 50257
with tied embeddings, hence `pad_vocab_multiple=1` for them). `llama-N` presets are named by their
*non-embedding* parameter count (the N of Kaplan et al. 2020: everything but the token/position embeddings
and the output head), so the name stays true whatever vocabulary your tokenizer has; pass
`vocab_size=tokenizer.vocab_size` to `ModelConfig.from_preset`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any

ACTIVATIONS = ("swiglu", "gelu", "gelu_exact")
NORMS = ("rmsnorm", "layernorm")
POS_EMBS = ("rope", "learned")
ATTN_IMPLS = ("sdpa", "reference")
ROPE_SCALING_TYPES = ("llama3", "linear")


def _round_up(x: int, multiple: int) -> int:
    return multiple * math.ceil(x / multiple)


@dataclass
class ModelConfig:
    """The architecture of a decoder-only transformer. Defaults are the recommended Llama-style choices."""

    vocab_size: int = 32000
    """Number of token ids the tokenizer produces (`tokenizer.vocab_size`). Logits have exactly this width."""
    pad_vocab_multiple: int = 64
    """Embedding/output rows are vocab_size rounded up to this: matmuls with a dimension that is a multiple of
    64 run faster (nanoGPT's 50257 -> 50304 trick). The extra rows are never produced as logits. Use 1 to keep
    exact sizes (the gpt2 presets do, so gpt2-124m has exactly GPT-2's 124,439,808 parameters)."""
    d_model: int = 768
    """Width of the residual stream (hidden size)."""
    n_layers: int = 12
    """Number of transformer blocks."""
    n_heads: int = 12
    """Number of query heads; head_dim = d_model // n_heads (64 or 128 is what GPU kernels like best)."""
    n_kv_heads: int | None = None
    """Key/value heads. None or n_heads: multi-head attention; fewer: grouped-query attention (GQA, must divide
    n_heads); 1: multi-query attention. Fewer KV heads shrink the KV cache at little quality cost."""
    ffn_hidden: int | None = None
    """Feed-forward hidden size. None: 4*d_model for GELU; for SwiGLU 8/3*d_model rounded up to a multiple of
    64 (same parameter count as a 4*d GELU MLP, since SwiGLU has three matrices instead of two)."""
    activation: str = "swiglu"
    """Feed-forward type: "swiglu" (Llama; w_down(silu(w_gate x) * w_up x)), "gelu" (GPT-2; the tanh
    approximation its weights were trained with) or "gelu_exact" (the erf GELU of nanoGPT's nn.GELU() and BERT;
    on this AVX-512 CPU it runs ~3x faster than the tanh form, whose tanh is the slowest elementwise op)."""
    norm: str = "rmsnorm"
    """Normalization: "rmsnorm" (Llama; no mean subtraction, no bias) or "layernorm" (GPT-2)."""
    norm_eps: float = 1e-5
    """Epsilon inside the norms (Llama 2/3 and GPT-2 all use 1e-5)."""
    pos_emb: str = "rope"
    """Positional information: "rope" (rotary, applied to q and k in every layer) or "learned" (GPT-2's
    absolute position embedding table added to the token embeddings; limits context to max_seq_len)."""
    rope_theta: float = 10000.0
    """RoPE base. Larger values (Llama 3: 500000) slow the rotation of low frequencies, for longer contexts."""
    rope_scaling: dict | None = None
    """None, or a frequency-scaling rule for context extension, in Hugging Face's format: Llama-3 style
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192}, or {"rope_type": "linear", "factor": 2.0}."""
    tie_embeddings: bool = True
    """Share the token embedding matrix with the output head (saves vocab*d parameters; GPT-2, Llama 3.2 1B)."""
    bias: bool = False
    """Biases in the linear layers and LayerNorms (GPT-2: True; Llama: False)."""
    qkv_bias: bool = False
    """Biases on the query/key/value projections only, none elsewhere (Qwen2/Qwen2.5, which exports as
    Qwen2ForCausalLM). Implied by `bias`; with `bias` false it adds (n_heads + 2*n_kv_heads)*head_dim parameters
    per layer."""
    dropout: float = 0.0
    """Dropout on embeddings, attention probabilities and residual branches. 0 for pretraining at scale."""
    max_seq_len: int = 1024
    """Longest sequence (and KV cache) the model accepts; sizes the RoPE tables or the position embedding."""
    qk_norm: bool = False
    """RMSNorm on each query and key head before RoPE (Qwen3, OLMo 2): keeps attention logits bounded, which
    stabilises training at high learning rates. Not representable in LlamaForCausalLM/GPT2LMHeadModel."""
    init_std: float = 0.02
    """Std of the normal init of embeddings and linear weights. Residual output projections (attn.wo,
    mlp.w_down) use init_std / sqrt(2 * n_layers) so the residual stream's variance does not grow with depth
    (GPT-2 paper, section 2.3)."""
    zero_init_out_proj: bool = False
    """Initialise the residual output projections to zero instead, so every block starts as the identity."""
    attn_impl: str = "sdpa"
    """"sdpa": torch's scaled_dot_product_attention (flash / memory-efficient kernels); "reference": the
    explicit softmax(QK^T / sqrt(d)) with a mask, for tests and teaching. Same function, different speed."""

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.ffn_hidden is None and isinstance(self.d_model, int) and self.d_model > 0:
            if self.activation == "swiglu":
                self.ffn_hidden = _round_up(int(8 * self.d_model / 3), 64)
            else:
                self.ffn_hidden = 4 * self.d_model
        if self.rope_scaling is not None:
            self.rope_scaling = dict(self.rope_scaling)
        self.validate()

    # ------------------------------------------------------------------ derived sizes
    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.n_heads

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding / output matrices: vocab_size rounded up to pad_vocab_multiple."""
        return _round_up(self.vocab_size, self.pad_vocab_multiple)

    @property
    def family(self) -> str:
        """"llama" or "gpt2" when the config is one of the two pure families (exportable), else "custom".
        A "llama" with qkv_bias (and no other bias) is Qwen2's layout."""
        if self.pos_emb == "rope" and self.norm == "rmsnorm" and self.activation == "swiglu" and not self.qk_norm:
            return "llama"
        if (self.pos_emb == "learned" and self.norm == "layernorm" and self.activation in ("gelu", "gelu_exact") and self.bias
                and self.n_kv_heads == self.n_heads and not self.qk_norm):
            return "gpt2"
        return "custom"

    # ------------------------------------------------------------------ checks
    def validate(self) -> "ModelConfig":
        """Raise ValueError (one line, naming the fix) if the combination of fields cannot build a model."""
        for name in ("vocab_size", "pad_vocab_multiple", "d_model", "n_layers", "n_heads", "n_kv_heads",
                     "ffn_hidden", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("norm", self.norm, NORMS)
        _check_choice("pos_emb", self.pos_emb, POS_EMBS)
        _check_choice("attn_impl", self.attn_impl, ATTN_IMPLS)
        if self.d_model % self.n_heads:
            raise ValueError(f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads}); "
                             f"pick n_heads among {_divisors(self.d_model)}")
        if self.n_kv_heads > self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(f"model.n_kv_heads ({self.n_kv_heads}) must divide model.n_heads ({self.n_heads}); "
                             f"pick one of {_divisors(self.n_heads)}")
        if self.pos_emb == "rope" and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got d_model/n_heads = {self.head_dim}; "
                             "change d_model or n_heads")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if not self.norm_eps > 0:
            raise ValueError(f"model.norm_eps must be > 0, got {self.norm_eps}")
        if not self.init_std > 0:
            raise ValueError(f"model.init_std must be > 0, got {self.init_std}")
        if not self.rope_theta > 0:
            raise ValueError(f"model.rope_theta must be > 0, got {self.rope_theta}")
        if self.rope_scaling is not None:
            _check_rope_scaling(self.rope_scaling)
            if self.pos_emb != "rope":
                raise ValueError("model.rope_scaling is set but model.pos_emb is not 'rope'; remove rope_scaling")
        return self

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-friendly dict of every field (rope_scaling omitted when None: TOML has no null)."""
        d = dataclasses.asdict(self)
        if d["rope_scaling"] is None:
            del d["rope_scaling"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Inverse of to_dict. Unknown keys are an error (with a did-you-mean), not silently dropped."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in names:
                hint = difflib.get_close_matches(key, names, n=1)
                fix = f"did you mean '{hint[0]}'?" if hint else f"valid keys: {', '.join(names)}"
                raise ValueError(f"unknown model config key '{key}'; {fix}")
        return cls(**d)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        """A preset with some fields replaced, e.g. from_preset("llama-5m", vocab_size=tok.vocab_size).

        Derived defaults (ffn_hidden, n_kv_heads) are recomputed after the overrides unless the preset or the
        overrides set them, so overriding d_model gives a consistent model."""
        if name not in _PRESET_SPECS:
            hint = difflib.get_close_matches(name, list(_PRESET_SPECS), n=1)
            fix = f"did you mean '{hint[0]}'?" if hint else f"choose from {', '.join(_PRESET_SPECS)}"
            raise ValueError(f"unknown model preset '{name}'; {fix}")
        return cls.from_dict({**_PRESET_SPECS[name], **overrides})


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        hint = difflib.get_close_matches(str(value), choices, n=1)
        extra = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ValueError(f"model.{name} must be one of {', '.join(choices)}; got {value!r}{extra}")


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def _check_rope_scaling(rs: dict) -> None:
    kind = rs.get("rope_type", rs.get("type"))
    if kind not in ROPE_SCALING_TYPES:
        raise ValueError(f"model.rope_scaling.rope_type must be one of {', '.join(ROPE_SCALING_TYPES)}, got {kind!r}")
    need = ["factor"]
    if kind == "llama3":
        need += ["low_freq_factor", "high_freq_factor", "original_max_position_embeddings"]
    missing = [k for k in need if k not in rs]
    if missing:
        raise ValueError(f"model.rope_scaling ({kind}) is missing {', '.join(missing)}; "
                         "e.g. {'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0, "
                         "'high_freq_factor': 4.0, 'original_max_position_embeddings': 8192}")
    if not rs["factor"] > 0:
        raise ValueError(f"model.rope_scaling.factor must be > 0, got {rs['factor']}")
    if kind == "llama3" and not rs["high_freq_factor"] > rs["low_freq_factor"]:
        raise ValueError("model.rope_scaling.high_freq_factor must be larger than low_freq_factor")


# ---------------------------------------------------------------------------------------------- presets
_GPT2 = dict(vocab_size=50257, pad_vocab_multiple=1, activation="gelu", norm="layernorm", pos_emb="learned",
             tie_embeddings=True, bias=True, max_seq_len=1024, norm_eps=1e-5)


def _llama(d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, max_seq_len: int, vocab_size: int,
           **extra: Any) -> dict:
    return dict(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
                max_seq_len=max_seq_len, tie_embeddings=True, **extra)


# Raw keyword arguments, so that from_preset can recompute derived fields after overrides.
# llama-N: N = non-embedding parameters (count_params(cfg, non_embedding=True)), independent of vocab_size.
# Shapes follow the usual small-model aspect ratios (d_model / n_layers ~ 16-64, head_dim 32-64, GQA 2:1-4:1),
# e.g. SmolLM-135M (576 x 30) and TinyLlama-1.1B (2048 x 22). The small ones default to an 8192 vocabulary
# (the size of tokenizer a CPU run trains), the larger ones to Llama 2's 32000.
_PRESET_SPECS: dict[str, dict[str, Any]] = {
    "gpt2-124m": dict(_GPT2, d_model=768, n_layers=12, n_heads=12),
    "gpt2-medium": dict(_GPT2, d_model=1024, n_layers=24, n_heads=16),
    "gpt2-large": dict(_GPT2, d_model=1280, n_layers=36, n_heads=20),
    "gpt2-xl": dict(_GPT2, d_model=1600, n_layers=48, n_heads=25),
    "llama-tiny": _llama(64, 4, 4, 2, 256, vocab_size=512),
    "llama-1m": _llama(128, 5, 4, 2, 512, vocab_size=8192),
    "llama-5m": _llama(256, 7, 4, 2, 512, vocab_size=8192),
    "llama-20m": _llama(384, 13, 6, 2, 1024, vocab_size=8192),
    "llama-60m": _llama(512, 20, 8, 4, 1024, vocab_size=8192),
    "llama-125m": _llama(768, 20, 12, 4, 2048, vocab_size=32000),
    "llama-350m": _llama(1024, 32, 16, 4, 2048, vocab_size=32000),
    "llama-1b": _llama(2048, 22, 32, 8, 2048, vocab_size=32000, rope_theta=500000.0),
}

PRESETS: dict[str, ModelConfig] = {name: ModelConfig(**spec) for name, spec in _PRESET_SPECS.items()}
"""Named configurations: name -> ModelConfig. Use ModelConfig.from_preset(name, **overrides) to customise."""
