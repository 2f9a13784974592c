"""Memory per GPU: weights, gradients, optimizer states, activations, and the inference KV cache.

Model states (Rajbhandari et al. 2020, "ZeRO", sec. 3.1). Mixed-precision AdamW keeps per parameter 2 bytes of
bf16 weights, 2 of bf16 gradients, and 12 of fp32 optimizer state (master weights, first and second moment):
16 bytes. PyTorch autocast and FSDP2's MixedPrecisionPolicy instead keep fp32 weights and gradients (4 + 4) and
fp32 moments (8): also 16, split differently. ZeRO shards over the data-parallel group of size N_d: stage 1 the
optimizer states, stage 2 also the gradients, stage 3 (= FSDP full sharding) also the weights. Tensor and
pipeline parallelism divide every one of them by the number of model pieces.

Activations (Korthikanti et al. 2022, "Reducing activation recomputation in large transformer models", sec. 4).
Count the tensors autograd saves for the backward pass, per layer, with s = sequence length, b = micro-batch,
h = d_model, a = heads, in 16-bit: their GPT layer saves 34 s b h + 5 a s^2 b bytes. With tensor parallelism of
degree t the attention and MLP internals split (24 s b h + 5 a s^2 b over t) but the 10 s b h at layer norms and
dropouts do not, unless sequence parallelism splits those along the sequence too (everything over t). Selective
recomputation drops the 5 a s^2 b term (recompute the attention core); full recomputation (activation
checkpointing) keeps only each layer's 2 s b h input, plus one layer's activations while it is recomputed.
`layer_activation_terms` redoes that count tensor by tensor for our model (SwiGLU, RMSNorm in fp32, RoPE, GQA,
SDPA/flash attention that never stores the s x s matrix); `korthikanti_layer_bytes` is the paper's formula.

KV cache (inference): each layer stores K and V, (n_kv_heads x head_dim) numbers each per token, so
2 * L * n_kv_heads * head_dim * bytes per token. GQA and MQA (fewer KV heads) shrink it by n_heads / n_kv_heads.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30


@dataclass(frozen=True)
class Precision:
    """How many bytes each kind of state takes, and which tensor-core rate the matmuls run at."""

    name: str
    compute: str  # matmul precision, a key of Hardware.peak_flops
    param_bytes: int  # the weights the model holds
    grad_bytes: int  # the gradients
    master_bytes: int  # a separate fp32 copy of the weights kept by the optimizer (0: none)
    state_bytes: int  # each optimizer state (AdamW has two: exp_avg and exp_avg_sq)
    act_bytes: int  # activations that matmuls produce and save for backward
    residual_bytes: int = 0  # the residual stream and norm outputs; 0 = act_bytes (fp32 under autocast)
    weight_copy_bytes: int = 0  # autocast keeps a low-precision copy of each matmul weight until backward
    note: str = ""


PRECISIONS: dict[str, Precision] = {p.name: p for p in [
    Precision("bf16-mixed", "bf16", 2, 2, 4, 4, 2,
              note="Megatron/DeepSpeed mixed precision: bf16 weights+grads, fp32 master+moments (16 B/param)"),
    Precision("amp", "bf16", 4, 4, 0, 4, 2, residual_bytes=4, weight_copy_bytes=2,
              note="torch.autocast / FSDP2 MixedPrecisionPolicy: fp32 weights+grads+moments, bf16 compute "
                   "(16 B/param)"),
    Precision("bf16", "bf16", 2, 2, 0, 2, 2,
              note="pure bf16 weights and optimizer states (8 B/param); needs care (e.g. stochastic rounding)"),
    Precision("fp8", "fp8", 2, 2, 4, 4, 2,
              note="FP8 matmuls (Transformer Engine style) over bf16-mixed states; activations counted in bf16"),
    Precision("tf32", "tf32", 4, 4, 0, 4, 4, note="fp32 storage, TF32 tensor-core matmuls"),
    Precision("fp32", "fp32", 4, 4, 0, 4, 4, note="everything fp32 (16 B/param with AdamW)"),
]}

# Number of per-parameter states each optimizer keeps.
OPTIMIZER_STATES = {"adamw": 2, "adam": 2, "lion": 1, "sgd": 1, "none": 0}


def get_precision(name: str) -> Precision:
    if name not in PRECISIONS:
        raise ValueError(f"unknown --precision {name!r}; use one of {', '.join(PRECISIONS)}")
    return PRECISIONS[name]


def n_optimizer_states(optimizer: str) -> int:
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"unknown --optimizer {optimizer!r}; use one of {', '.join(OPTIMIZER_STATES)}")
    return OPTIMIZER_STATES[optimizer]


# ----------------------------------------------------------------------------- model states

def model_state_bytes(n_params: float, precision: str | Precision = "bf16-mixed", optimizer: str = "adamw",
                      zero: int = 0, shard: int = 1) -> dict[str, float]:
    """Bytes of weights, gradients and optimizer states for `n_params` parameters held by one rank.

    `n_params` is what this rank owns before data-parallel sharding (divide by tp and pp first).
    ZeRO stage `zero` over `shard` ranks: >=1 shards optimizer states (and master weights), >=2 gradients,
    3 (FSDP) the weights too.
    """
    p = precision if isinstance(precision, Precision) else get_precision(precision)
    if zero not in (0, 1, 2, 3):
        raise ValueError(f"--zero must be 0, 1, 2 or 3, got {zero}")
    if shard < 1:
        raise ValueError(f"sharding degree must be >= 1, got {shard}")
    k = n_optimizer_states(optimizer)
    opt = n_params * (p.master_bytes + k * p.state_bytes)
    return {
        "params": n_params * p.param_bytes / (shard if zero >= 3 else 1),
        "grads": n_params * p.grad_bytes / (shard if zero >= 2 else 1),
        "optimizer": opt / (shard if zero >= 1 else 1),
    }


def bytes_per_param(precision: str = "bf16-mixed", optimizer: str = "adamw") -> float:
    """Unsharded bytes per parameter: 16 for mixed-precision AdamW (ZeRO paper's 2 + 2 + 12)."""
    return sum(model_state_bytes(1, precision, optimizer).values())


# ----------------------------------------------------------------------------- activations

def korthikanti_layer_bytes(s: int, b: int, h: int, a: int, t: int = 1, sequence_parallel: bool = False,
                            recompute: str = "none") -> float:
    """Korthikanti et al. 2022, table 2: bytes of one GPT layer's saved activations (16-bit, with dropout).

    none:      s b h (10 + 24/t + 5 a s / (h t))        (sequence parallel: s b h (34/t + 5 a s/(h t)))
    selective: s b h (10 + 24/t)                        (sequence parallel: 34 s b h / t)
    full:      2 s b h                                   (sequence parallel: 2 s b h / t)
    """
    sbh = s * b * h
    rep = 10 / t if sequence_parallel else 10
    if recompute == "full":
        return 2 * sbh / (t if sequence_parallel else 1)
    attn = 5 * a * s / (h * t) if recompute == "none" else 0.0
    return sbh * (rep + 24 / t + attn)


def layer_activation_terms(s: int, b: int, h: int, n_heads: int, n_kv_heads: int, head_dim: int, ffn: int,
                           act_bytes: int = 2, residual_bytes: int | None = None, activation: str = "swiglu",
                           norm: str = "rmsnorm", pos_emb: str = "rope", attention: str = "flash",
                           dropout: float = 0.0, t: int = 1, sequence_parallel: bool = False) -> dict[str, float]:
    """Bytes one transformer block saves for backward, tensor by tensor (Korthikanti's method, our model).

    Counted for scratchlm.model as written (pre-norm: x -> norm -> q,k,v -> RoPE -> SDPA -> wo -> +x -> norm ->
    MLP -> +x) and checked against autograd's saved tensors in tests/test_plan_measured.py. `act_bytes` is the
    matmul dtype; `residual_bytes` the residual stream's (4 under autocast, whose fp32 weights keep the residual
    stream fp32; else = act_bytes). 'replicated' terms sit on every tensor-parallel rank unless sequence
    parallelism splits them along the sequence; the others are divided by t.
    """
    p = act_bytes
    r = residual_bytes or act_bytes
    autocast = r != p
    sb, A, KV = s * b, n_heads * head_dim, n_kv_heads * head_dim
    n_mlp_in = 2 if activation == "swiglu" else 1
    rep: dict[str, float] = {}
    if norm == "rmsnorm":
        # F.rms_norm(x.float()) saves its fp32 input and a per-token rstd; `y * weight` saves y in x's dtype
        rep["norms"] = 2 * (sb * h * (4 + r) + 4 * sb)
    else:
        # layer_norm saves its input and per-token fp32 mean and rstd
        rep["norms"] = 2 * (sb * h * r + 8 * sb)
    # The first linears of attention and MLP save their input, the norm's output. Under autocast each linear casts
    # it to bf16 separately (the autocast cache holds weights only), so q, k and v keep three copies.
    rep["first linear inputs"] = (3 + n_mlp_in if autocast else 2) * p * sb * h
    if dropout > 0:
        rep["residual dropout masks"] = 2 * sb * h  # one byte per element, after wo and after w_down
    split: dict[str, float] = {}
    if attention == "flash":
        # the kernel saves q, k, v (after RoPE), its output and one fp32 logsumexp per row; never the s x s matrix
        split["q, k, v, attention output"] = p * sb * (2 * A + 2 * KV)
        split["softmax logsumexp (fp32)"] = 4 * sb * n_heads
    else:
        # explicit softmax(QK^T)V: q, K and V repeated to every query head, fp32 probabilities (and a copy in
        # the matmul dtype), the output; the s x s terms are Korthikanti's 5as^2b
        split["q, k, v, attention output"] = p * sb * 4 * A
        split["attention probabilities"] = (4 + (p if p < 4 else 0)) * b * n_heads * s * s
        if dropout > 0:
            split["attention dropout (mask + output)"] = (1 + p) * b * n_heads * s * s
    if pos_emb == "rope":
        # RoPE makes q contiguous as (B, H, T, hd), so the output comes back in that layout and the transpose
        # to (B, T, H*hd) for wo is a copy (with learned positions q is a view and wo's input is a view too)
        split["wo input"] = p * sb * A
    if activation == "swiglu":
        # w_gate and w_up outputs, silu(gate), and their product (w_down's input)
        split["mlp (gate, up, silu, product)"] = 4 * p * sb * ffn
    else:
        # GELU's input and output (w_down's input)
        split["mlp (gelu input and output)"] = 2 * p * sb * ffn
    div_rep = t if sequence_parallel else 1
    out = {k: v / div_rep for k, v in rep.items()}
    out.update({k: v / t for k, v in split.items()})
    return out


def activation_bytes_per_layer(shape, micro_batch: int, seq_len: int, act_bytes: int = 2,
                               attention: str = "flash", recompute: str = "none", t: int = 1,
                               sequence_parallel: bool = False, residual_bytes: int | None = None) -> dict[str, float]:
    """Bytes stored per layer ('stored') and what one layer holds while it is recomputed ('peak_extra').

    recompute: 'none' keeps every term; 'selective' recomputes the attention core, dropping its s x s terms
    (nothing to drop with flash attention); 'full' checkpoints each layer, keeping only its input.
    """
    if recompute not in ("none", "selective", "full"):
        raise ValueError(f"--checkpointing must be none, selective or full, got {recompute!r}")
    terms = layer_activation_terms(
        seq_len, micro_batch, shape.d_model, shape.n_heads, shape.n_kv_heads, shape.head_dim, shape.ffn_hidden,
        act_bytes=act_bytes, residual_bytes=residual_bytes, activation=shape.activation, norm=shape.norm,
        pos_emb=shape.pos_emb, attention=attention, dropout=shape.dropout, t=t, sequence_parallel=sequence_parallel)
    full = sum(terms.values())
    if recompute == "none":
        return {"stored": full, "peak_extra": 0.0, "full_layer": full, "terms": terms}
    if recompute == "selective":
        s2 = sum(v for k, v in terms.items() if k.startswith(("attention probabilities", "attention dropout")))
        return {"stored": full - s2, "peak_extra": s2, "full_layer": full, "terms": terms}
    r = residual_bytes or act_bytes
    layer_input = r * seq_len * micro_batch * shape.d_model / (t if sequence_parallel else 1)
    return {"stored": layer_input, "peak_extra": full, "full_layer": full, "terms": terms}


def head_activation_bytes(shape, micro_batch: int, seq_len: int, act_bytes: int = 2, t: int = 1,
                          sequence_parallel: bool = False, residual_bytes: int | None = None) -> dict[str, float]:
    """Activations outside the blocks (last pipeline stage): final norm, output head, loss, token ids.

    For a small model these dominate: a logit row is vocab/d_model (~65 for GPT-2) times wider than a hidden
    state. The caller keeps the logits; the loss upcasts them to fp32 and log-softmax saves its fp32 output.
    The output head is vocabulary-parallel under TP, so logits split over t.
    """
    p, r = act_bytes, residual_bytes or act_bytes
    sb, h, V = seq_len * micro_batch, shape.d_model, shape.vocab_size
    div = t if sequence_parallel else 1
    norm = sb * h * (4 + r) + 4 * sb if shape.norm == "rmsnorm" else sb * h * r + 8 * sb
    return {
        "final norm and head input": (norm + p * sb * h) / div,
        "logits": p * sb * V / t,
        "log-softmax (fp32)": 4 * sb * V / t,
        "token ids and targets": 16 * sb,
    }


# ----------------------------------------------------------------------------- inference

def kv_cache_bytes(n_layers: int, n_kv_heads: int, head_dim: int, batch: int, context: int,
                   bytes_per_elem: int = 2) -> float:
    """K and V for every layer, sequence and position: 2 * L * b * T * n_kv_heads * head_dim * bytes."""
    return 2.0 * n_layers * batch * context * n_kv_heads * head_dim * bytes_per_elem
