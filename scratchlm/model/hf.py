"""Weight and config mapping to and from Hugging Face transformers (Llama, Qwen2, Mistral, GPT-2 *ForCausalLM).

Pure dict-to-dict functions (no transformers import), so a checkpoint can be converted anywhere:

    hf_config = hf_config_from(cfg)                     # config.json for transformers
    hf_sd = to_hf_state_dict(model, cfg)                # tensors with HF names
    cfg, sd = from_hf_state_dict(hf_sd, hf_config)      # and back

What needs care:

- **RoPE layout.** HF Llama rotates the half-split pairs (i, i + hd/2) ("rotate_half"); Meta's original
  checkpoints use interleaved pairs (2i, 2i+1), which is why HF's conversion script permutes the rows of
  q_proj/k_proj. Our RoPE is half-split too (layers.py), so q/k weights map as they are. `permute_interleaved`
  below is the permutation to apply to a weight from an interleaved-RoPE source (e.g. Meta's consolidated.pth).
- **GPT-2's Conv1D.** OpenAI's GPT-2 stores weights as (in, out) and computes x @ W + b; nn.Linear stores
  (out, in). Every GPT-2 matrix is transposed, and the fused c_attn (d, 3d) is split into wq, wk, wv.
- **Vocabulary padding.** Our embedding may have padded rows (ModelConfig.pad_vocab_multiple); HF gets exactly
  vocab_size rows, and importing pads again (zero rows, never produced as logits).
- **Tied embeddings.** HF omits lm_head.weight when tie_word_embeddings is true; so do we.
- **Qwen2 and Mistral are Llamas.** Qwen2 adds biases to q/k/v (ModelConfig.qkv_bias; o_proj and the MLP have
  none), Mistral has Llama's exact layout. Both may use sliding-window attention (a token sees only the last
  `sliding_window` tokens, itself included); our attention is full causal, which is the same function on
  sequences no longer than the window, so an import caps max_seq_len at the window and says so.
"""

from __future__ import annotations

import logging

import torch

from .config import ModelConfig

log = logging.getLogger(__name__)

# ours <- HF, per layer, for Llama. "{i}" is the layer index.
_LLAMA_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.wq.weight": "self_attn.q_proj.weight",
    "attn.wk.weight": "self_attn.k_proj.weight",
    "attn.wv.weight": "self_attn.v_proj.weight",
    "attn.wo.weight": "self_attn.o_proj.weight",
    "attn.wq.bias": "self_attn.q_proj.bias",
    "attn.wk.bias": "self_attn.k_proj.bias",
    "attn.wv.bias": "self_attn.v_proj.bias",
    "attn.wo.bias": "self_attn.o_proj.bias",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.w_gate.weight": "mlp.gate_proj.weight",
    "mlp.w_up.weight": "mlp.up_proj.weight",
    "mlp.w_down.weight": "mlp.down_proj.weight",
    "mlp.w_gate.bias": "mlp.gate_proj.bias",
    "mlp.w_up.bias": "mlp.up_proj.bias",
    "mlp.w_down.bias": "mlp.down_proj.bias",
}
# GPT-2 names whose tensors are used as-is (norms, biases of unfused layers).
_GPT2_LAYER_PLAIN = {
    "attn_norm.weight": "ln_1.weight", "attn_norm.bias": "ln_1.bias",
    "mlp_norm.weight": "ln_2.weight", "mlp_norm.bias": "ln_2.bias",
    "attn.wo.bias": "attn.c_proj.bias", "mlp.w_up.bias": "mlp.c_fc.bias", "mlp.w_down.bias": "mlp.c_proj.bias",
}
# GPT-2 Conv1D weights, stored transposed.
_GPT2_LAYER_T = {"attn.wo.weight": "attn.c_proj.weight", "mlp.w_up.weight": "mlp.c_fc.weight",
                 "mlp.w_down.weight": "mlp.c_proj.weight"}


def permute_interleaved(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder the rows of a q/k projection from interleaved-RoPE order to half-split order.

    Within each head, output row 2i (rotated with row 2i+1) moves to i and row 2i+1 to i + hd/2."""
    out, d_in = w.shape
    hd = out // n_heads
    return w.view(n_heads, hd // 2, 2, d_in).transpose(1, 2).reshape(out, d_in)


# ---------------------------------------------------------------------------------------------- config
def hf_config_from(cfg: ModelConfig, bos_token_id: int | None = None, eos_token_id: int | None = None,
                   pad_token_id: int | None = None) -> dict:
    """config.json for transformers: LlamaForCausalLM for the Llama family, GPT2LMHeadModel for GPT-2.

    Special token ids come from the tokenizer; None (not transformers' defaults 1/2 or 50256, which would
    point at arbitrary tokens of our vocabulary)."""
    family = _exportable_family(cfg)
    tokens = {"bos_token_id": bos_token_id, "eos_token_id": eos_token_id, "pad_token_id": pad_token_id}
    if family == "llama":
        hf = {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "intermediate_size": cfg.ffn_hidden,
            "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
            "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim, "hidden_act": "silu",
            "max_position_embeddings": cfg.max_seq_len, "initializer_range": cfg.init_std,
            "rms_norm_eps": cfg.norm_eps, "tie_word_embeddings": cfg.tie_embeddings,
            # transformers < 5 reads rope_theta/rope_scaling; 5.x still accepts them and converts.
            "rope_theta": cfg.rope_theta, "rope_scaling": dict(cfg.rope_scaling) if cfg.rope_scaling else None,
            "attention_bias": cfg.bias, "mlp_bias": cfg.bias, "attention_dropout": cfg.dropout,
            "torch_dtype": "float32", "use_cache": True, **tokens,
        }
        if cfg.qkv_bias and not cfg.bias:  # Qwen2: Llama + q/k/v biases, which transformers hard-codes for it
            for key in ("attention_bias", "mlp_bias", "head_dim"):
                del hf[key]
            hf.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2", use_sliding_window=False,
                      sliding_window=None, max_window_layers=cfg.n_layers)
        return hf
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": cfg.vocab_size, "n_embd": cfg.d_model, "n_layer": cfg.n_layers, "n_head": cfg.n_heads,
        "n_positions": cfg.max_seq_len, "n_ctx": cfg.max_seq_len,
        "n_inner": None if cfg.ffn_hidden == 4 * cfg.d_model else cfg.ffn_hidden,
        "activation_function": "gelu" if cfg.activation == "gelu_exact" else "gelu_new", "layer_norm_epsilon": cfg.norm_eps, "initializer_range": cfg.init_std,
        "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
        "scale_attn_weights": True, "tie_word_embeddings": cfg.tie_embeddings,
        "torch_dtype": "float32", "use_cache": True, **tokens,
    }


def hf_generation_config(cfg: ModelConfig, stop_token_ids: list[int], bos_token_id: int | None = None,
                         pad_token_id: int | None = None) -> dict:
    """generation_config.json: where transformers' generate() stops, and how long it may go.

    stop_token_ids becomes the eos_token_id *list*, end of text first: the tokens scratchlm's own decoding stops
    at. With end of text alone, a chat model runs past its <|im_end|> into a made-up next turn. max_length is the
    context window (transformers' default is 20 tokens, prompt included)."""
    stops = list(dict.fromkeys(i for i in stop_token_ids if i is not None))  # unique, in order
    gen = {"bos_token_id": bos_token_id, "eos_token_id": stops or None,
           "pad_token_id": pad_token_id if pad_token_id is not None else (stops[0] if stops else None),
           "max_length": cfg.max_seq_len}
    return {k: v for k, v in gen.items() if v is not None}


def _exportable_family(cfg: ModelConfig) -> str:
    if cfg.family != "custom":
        return cfg.family
    if cfg.qk_norm:
        raise ValueError("qk_norm models have no LlamaForCausalLM/GPT2LMHeadModel equivalent; "
                         "train with model.qk_norm=false to export to Hugging Face")
    raise ValueError(
        f"only the two pure families export to Hugging Face: Llama (rope + rmsnorm + swiglu) or GPT-2 (learned "
        f"positions + layernorm + gelu + bias, no GQA); this model has pos_emb={cfg.pos_emb}, norm={cfg.norm}, "
        f"activation={cfg.activation}, bias={cfg.bias}, n_kv_heads={cfg.n_kv_heads}/{cfg.n_heads}")


# Defaults of the transformers config classes, for keys a config.json may leave out.
_MAX_POSITIONS = {"llama": 2048, "qwen2": 32768, "mistral": 131072}


def model_config_from_hf(hf: dict, pad_vocab_multiple: int | None = None) -> ModelConfig:
    """Our ModelConfig for a transformers config.json (llama, qwen2, mistral or gpt2 model_type).

    pad_vocab_multiple: default 64 for the Llama family (fast matmuls) and 1 for GPT-2 (exact GPT-2 parameter
    counts)."""
    kind = hf.get("model_type")
    if kind in _MAX_POSITIONS:
        name = {"llama": "Llama", "qwen2": "Qwen2", "mistral": "Mistral"}[kind]
        if hf.get("hidden_act", "silu") != "silu":
            raise ValueError(f"{name} hidden_act {hf.get('hidden_act')!r} is not supported; only 'silu' (SwiGLU)")
        d, H = hf["hidden_size"], hf["num_attention_heads"]
        if hf.get("head_dim") not in (None, d // H):
            raise ValueError(f"head_dim {hf['head_dim']} != hidden_size/num_attention_heads = {d // H}: "
                             "decoupled head sizes are not supported")
        if bool(hf.get("attention_bias", False)) != bool(hf.get("mlp_bias", False)):
            raise ValueError("attention_bias != mlp_bias: our model has one `bias` switch for all linear layers "
                             "(and `qkv_bias` for Qwen2's q/k/v-only biases), none for o_proj alone")
        theta, scaling = _rope_from_hf(hf)
        max_len = hf.get("max_position_embeddings") or _MAX_POSITIONS[kind]
        window = _sliding_window(hf, kind)
        if window is not None and window < max_len:
            log.warning("%s uses sliding-window attention (%d tokens), which is full causal attention on sequences "
                        "up to that length: max_seq_len capped at %d (was %d)", name, window, window, max_len)
            max_len = window
        return ModelConfig(
            vocab_size=hf["vocab_size"], pad_vocab_multiple=pad_vocab_multiple or 64, d_model=d,
            n_layers=hf["num_hidden_layers"], n_heads=H, n_kv_heads=hf.get("num_key_value_heads") or H,
            ffn_hidden=hf["intermediate_size"], activation="swiglu", norm="rmsnorm",
            norm_eps=hf.get("rms_norm_eps", 1e-6), pos_emb="rope", rope_theta=theta, rope_scaling=scaling,
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)), bias=bool(hf.get("attention_bias", False)),
            qkv_bias=kind == "qwen2", dropout=float(hf.get("attention_dropout", 0.0) or 0.0), max_seq_len=max_len,
            init_std=hf.get("initializer_range", 0.02),
        )
    if kind == "gpt2":
        act = hf.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh", "gelu"):
            raise ValueError(f"GPT-2 activation_function {act!r} is not supported; only the tanh GELU (gelu_new, "
                             "gelu_pytorch_tanh) or the exact one (gelu)")
        for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
            if hf.get(flag):
                raise ValueError(f"GPT-2 option {flag}=true is not supported")
        if hf.get("scale_attn_weights") is False:
            raise ValueError("GPT-2 option scale_attn_weights=false is not supported")
        d = hf["n_embd"]
        return ModelConfig(
            vocab_size=hf["vocab_size"], pad_vocab_multiple=pad_vocab_multiple or 1, d_model=d,
            n_layers=hf["n_layer"], n_heads=hf["n_head"], ffn_hidden=hf.get("n_inner") or 4 * d,
            activation="gelu_exact" if act == "gelu" else "gelu", norm="layernorm",
            norm_eps=hf.get("layer_norm_epsilon", 1e-5), pos_emb="learned",
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)), bias=True,
            dropout=float(hf.get("resid_pdrop", 0.0) or 0.0), max_seq_len=hf.get("n_positions", 1024),
            init_std=hf.get("initializer_range", 0.02),
        )
    raise ValueError(f"Hugging Face model_type {kind!r} is not supported; import a 'llama' (Llama, SmolLM, "
                     "TinyLlama), 'qwen2' (Qwen2, Qwen2.5), 'mistral' or 'gpt2' checkpoint")


def _sliding_window(hf: dict, kind: str) -> int | None:
    """The attention window of the layers that slide, or None when every layer sees the whole sequence."""
    window = hf.get("sliding_window", 4096) or None  # 4096: the default of both config classes
    if kind == "mistral":
        return window  # every layer slides
    if kind != "qwen2" or not hf.get("use_sliding_window", False):
        return None
    # Qwen2 slides only in the layers listed as such (transformers 5), else in layers >= max_window_layers.
    types = hf.get("layer_types") or ["sliding_attention" if i >= hf.get("max_window_layers", 28) else "full"
                                      for i in range(hf["num_hidden_layers"])]
    return window if "sliding_attention" in types else None


def _rope_from_hf(hf: dict) -> tuple[float, dict | None]:
    """(rope_theta, rope_scaling) from either transformers 4.x keys or 5.x `rope_parameters`."""
    params = dict(hf.get("rope_parameters") or {})
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    scaling = hf.get("rope_scaling") or (params if params.get("rope_type", "default") != "default" else None)
    if scaling:
        scaling = {k: v for k, v in scaling.items() if k != "rope_theta"}
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind == "default":
            return theta, None
        if kind not in ("llama3", "linear"):
            raise ValueError(f"RoPE scaling type {kind!r} is not supported; only 'llama3' and 'linear'")
        scaling["rope_type"] = scaling.pop("type", kind)
    return theta, scaling or None


# ---------------------------------------------------------------------------------------------- weights
def to_hf_state_dict(model_or_sd, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict (or a Transformer) -> tensors named and shaped for transformers. Contiguous copies."""
    sd = model_or_sd.state_dict() if hasattr(model_or_sd, "state_dict") else model_or_sd
    family = _exportable_family(cfg)
    V = cfg.vocab_size
    out: dict[str, torch.Tensor] = {}

    def put(name: str, t: torch.Tensor) -> None:
        out[name] = t.detach().contiguous().clone()

    if family == "llama":
        put("model.embed_tokens.weight", sd["tok_emb.weight"][:V])
        for i in range(cfg.n_layers):
            for ours, theirs in _LLAMA_LAYER.items():
                if f"layers.{i}.{ours}" in sd:
                    put(f"model.layers.{i}.{theirs}", sd[f"layers.{i}.{ours}"])
        put("model.norm.weight", sd["norm.weight"])
        if not cfg.tie_embeddings:
            put("lm_head.weight", sd["lm_head.weight"][:V])
        return out

    put("transformer.wte.weight", sd["tok_emb.weight"][:V])
    put("transformer.wpe.weight", sd["pos_emb.weight"])
    for i in range(cfg.n_layers):
        p, h = f"layers.{i}.", f"transformer.h.{i}."
        qkv_w = torch.cat([sd[p + f"attn.{w}.weight"] for w in ("wq", "wk", "wv")], dim=0)  # (3d, d)
        put(h + "attn.c_attn.weight", qkv_w.t())  # Conv1D: (d, 3d)
        put(h + "attn.c_attn.bias", torch.cat([sd[p + f"attn.{w}.bias"] for w in ("wq", "wk", "wv")]))
        for ours, theirs in _GPT2_LAYER_PLAIN.items():
            put(h + theirs, sd[p + ours])
        for ours, theirs in _GPT2_LAYER_T.items():
            put(h + theirs, sd[p + ours].t())
    put("transformer.ln_f.weight", sd["norm.weight"])
    put("transformer.ln_f.bias", sd["norm.bias"])
    if not cfg.tie_embeddings:
        put("lm_head.weight", sd["lm_head.weight"][:V])
    return out


def from_hf_state_dict(sd: dict[str, torch.Tensor], hf_config: dict,
                       pad_vocab_multiple: int | None = None) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """A transformers state dict + its config.json dict -> (our ModelConfig, our state dict).

    Accepts the keys of the *ForCausalLM model ("model.layers.0..." / "transformer.h.0...") or of the bare
    base model ("layers.0..." / "h.0..."). Raises ValueError on missing or unexpected weights."""
    cfg = model_config_from_hf(hf_config, pad_vocab_multiple)
    prefix = "model." if cfg.family == "llama" else "transformer."
    src = {}
    for k, t in sd.items():
        if k.endswith((".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")) and "c_attn" not in k:
            continue  # buffers older transformers versions saved (causal mask, RoPE table)
        src[k[len(prefix):] if k.startswith(prefix) else k] = t
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in src:
            raise ValueError(f"Hugging Face checkpoint lacks '{prefix}{name}'; is it a complete "
                             f"{hf_config.get('model_type')} model?")
        used.add(name)
        return src[name]

    out: dict[str, torch.Tensor] = {}
    if cfg.family == "llama":
        out["tok_emb.weight"] = _pad_rows(take("embed_tokens.weight"), cfg)
        for i in range(cfg.n_layers):
            for ours, theirs in _LLAMA_LAYER.items():
                qkv = ours.startswith(("attn.wq", "attn.wk", "attn.wv"))
                if ".bias" in ours and not (cfg.bias or cfg.qkv_bias and qkv):
                    continue
                if "w_gate" in ours and cfg.activation != "swiglu":
                    continue
                out[f"layers.{i}.{ours}"] = take(f"layers.{i}.{theirs}")
        out["norm.weight"] = take("norm.weight")
    else:
        out["tok_emb.weight"] = _pad_rows(take("wte.weight"), cfg)
        out["pos_emb.weight"] = take("wpe.weight")
        d = cfg.d_model
        for i in range(cfg.n_layers):
            p, h = f"layers.{i}.", f"h.{i}."
            qkv_w, qkv_b = take(h + "attn.c_attn.weight").t(), take(h + "attn.c_attn.bias")  # (3d, d), (3d,)
            for j, w in enumerate(("wq", "wk", "wv")):
                out[p + f"attn.{w}.weight"] = qkv_w[j * d:(j + 1) * d].contiguous()
                out[p + f"attn.{w}.bias"] = qkv_b[j * d:(j + 1) * d].contiguous()
            for ours, theirs in _GPT2_LAYER_PLAIN.items():
                out[p + ours] = take(h + theirs)
            for ours, theirs in _GPT2_LAYER_T.items():
                out[p + ours] = take(h + theirs).t().contiguous()
        out["norm.weight"], out["norm.bias"] = take("ln_f.weight"), take("ln_f.bias")
    if "lm_head.weight" in src:
        used.add("lm_head.weight")
        if not cfg.tie_embeddings:
            out["lm_head.weight"] = _pad_rows(src["lm_head.weight"], cfg)
    elif not cfg.tie_embeddings:
        take("lm_head.weight")  # raises: an untied model needs its head
    unexpected = sorted(set(src) - used)
    if unexpected:
        raise ValueError(f"Hugging Face checkpoint has weights this model has no place for: {unexpected[:4]}")
    return cfg, out


def _pad_rows(w: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """(vocab_size, d) -> (padded_vocab_size, d) with zero rows appended."""
    extra = cfg.padded_vocab_size - w.shape[0]
    if w.shape[0] != cfg.vocab_size:
        raise ValueError(f"embedding has {w.shape[0]} rows but config.json says vocab_size={cfg.vocab_size}")
    return torch.cat([w, w.new_zeros(extra, w.shape[1])]) if extra else w

