"""The transformer: attention implementations agree, causality, KV cache, parameter/FLOP accounting, memory features."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from scratchlm.model import (PRESETS, KVCache, ModelConfig, Transformer, count_params, flops_per_token,
                             reference_attention)

LLAMA = ModelConfig(vocab_size=97, d_model=64, n_layers=3, n_heads=8, n_kv_heads=2, max_seq_len=64)
GPT2 = ModelConfig.from_preset("gpt2-124m", vocab_size=97, d_model=64, n_layers=3, n_heads=4, max_seq_len=64)
QKN = dataclasses.replace(LLAMA, qk_norm=True, norm="layernorm", bias=True, tie_embeddings=False)
CONFIGS = {"llama": LLAMA, "gpt2": GPT2, "qknorm": QKN}


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    return Transformer(cfg).eval()


def _same_weights(model, **changes):
    other = Transformer(dataclasses.replace(model.config, **changes)).eval()
    other.load_state_dict(model.state_dict())
    return other


def _idx(B=2, T=20, V=97, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- attention
@pytest.mark.parametrize("kv", [8, 2, 1])
def test_sdpa_equals_reference_attention_function(kv):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 8, 7, 16), torch.randn(2, kv, 7, 16), torch.randn(2, kv, 7, 16)
    F = torch.nn.functional
    want = reference_attention(q, k, v, is_causal=True)
    assert torch.allclose(F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), want, atol=1e-5)
    mask = torch.rand(2, 1, 7, 7) > 0.3
    mask |= torch.eye(7, dtype=torch.bool)
    got = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    assert torch.allclose(got, reference_attention(q, k, v, attn_mask=mask), atol=1e-5)
    # and the definition itself, written out for one head of one batch row
    scores = q[1, 5] @ k[1, 5 * kv // 8].t() / 4.0
    scores = scores.masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float("-inf"))
    assert torch.allclose(want[1, 5], scores.softmax(-1) @ v[1, 5 * kv // 8], atol=1e-5)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_model_sdpa_equals_reference_forward_and_grad(name):
    model = _model(CONFIGS[name]).train()
    ref = _same_weights(model, attn_impl="reference").train()
    idx = _idx()
    out, out_ref = model(idx), ref(idx)
    assert (out - out_ref).abs().max() < 1e-5
    out.square().mean().backward()
    out_ref.square().mean().backward()
    for (n, p), p_ref in zip(model.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, p_ref.grad, atol=1e-5, rtol=1e-4), n


def test_gqa_equals_mha_with_repeated_kv_heads():
    gqa = _model(LLAMA)
    mha = Transformer(dataclasses.replace(LLAMA, n_kv_heads=LLAMA.n_heads)).eval()
    sd = gqa.state_dict()
    rep, hd = LLAMA.n_heads // LLAMA.n_kv_heads, LLAMA.head_dim
    for k in list(sd):
        if k.endswith(("attn.wk.weight", "attn.wv.weight")):  # (KV*hd, d) -> (H*hd, d), KV head j serves j*rep..
            sd[k] = sd[k].view(LLAMA.n_kv_heads, 1, hd, -1).expand(-1, rep, -1, -1).reshape(LLAMA.n_heads * hd, -1)
    mha.load_state_dict(sd)
    idx = _idx()
    assert (gqa(idx) - mha(idx)).abs().max() < 1e-5


def test_n_kv_heads_none_is_mha():
    a = _model(dataclasses.replace(LLAMA, n_kv_heads=None))
    b = _model(dataclasses.replace(LLAMA, n_kv_heads=LLAMA.n_heads))
    assert a.config.n_kv_heads == LLAMA.n_heads
    assert torch.equal(a(_idx()), b(_idx()))


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("impl", ["sdpa", "reference"])
def test_future_tokens_never_change_earlier_logits(name, impl):
    model = _same_weights(_model(CONFIGS[name]), attn_impl=impl)
    idx = _idx(T=24)
    changed = idx.clone()
    changed[:, 15:] = (changed[:, 15:] + 1) % 97
    a, b = model(idx), model(changed)
    assert torch.equal(a[:, :15], b[:, :15])
    assert not torch.allclose(a[:, 15:], b[:, 15:])


def test_logits_have_vocab_width_and_last_only():
    model = _model(LLAMA)
    assert LLAMA.padded_vocab_size == 128 and model.tok_emb.weight.shape[0] == 128
    idx = _idx()
    logits = model(idx)
    assert logits.shape == (2, 20, 97)
    assert torch.allclose(model(idx, last_only=True), logits[:, -1:], atol=1e-6)


# ---------------------------------------------------------------------------------------------- KV cache
@pytest.mark.parametrize("name", list(CONFIGS))
def test_kv_cache_prefill_decode_equals_full_forward(name):
    model = _model(CONFIGS[name])
    idx = _idx(T=20)
    full = model(idx)
    cache = KVCache.for_model(model, batch_size=2, max_len=32)
    steps = [model(idx[:, :8], cache=cache)]  # prefill
    steps += [model(idx[:, t:t + 1], cache=cache) for t in range(8, 20)]  # decode
    assert cache.length == 20 and cache.positions().tolist() == [20, 20]
    assert (torch.cat(steps, 1) - full).abs().max() < 1e-5


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_kv_cache_rollback_then_redecode_equals_full_forward(name):
    model = _model(CONFIGS[name])
    idx = _idx(T=20)
    full = model(idx)
    cache = KVCache.for_model(model, batch_size=2, max_len=32)
    model(idx[:, :10], cache=cache)
    wrong = (idx[:, 10:14] + 3) % 97
    model(wrong, cache=cache)  # 4 drafted tokens scored at once (chunk on a non-empty cache) ...
    cache.rollback(10)  # ... all rejected
    out = model(idx[:, 10:16], cache=cache)  # chunked verify of the right ones
    assert (out - full[:, 10:16]).abs().max() < 1e-5
    cache.rollback(13)
    out = torch.cat([model(idx[:, t:t + 1], cache=cache) for t in range(13, 20)], 1)
    assert (out - full[:, 13:]).abs().max() < 1e-5
    with pytest.raises(ValueError, match="roll back"):
        cache.rollback(25)


def test_kv_cache_per_row_rollback_leaves_holes_that_are_ignored():
    model = _model(LLAMA)
    idx = _idx(T=16)
    full = model(idx)
    cache = KVCache.for_model(model, batch_size=2, max_len=32)
    model(idx[:, :8], cache=cache)
    drafts = torch.stack([idx[0, 8:12], (idx[1, 8:12] + 5) % 97])  # row 0 drafts right, row 1 wrong from slot 9
    drafts[1, 0] = idx[1, 8]
    model(drafts, cache=cache)
    cache.rollback(torch.tensor([12, 9]))  # row 0 keeps 4 drafts, row 1 keeps 1
    assert cache.length == 12 and cache.positions().tolist() == [12, 9]
    # next tokens: row 0 continues at position 12, row 1 at position 9 (stepping over its 3 holes)
    row_next = torch.stack([idx[0, 12:13], idx[1, 9:10]])
    out = model(row_next, cache=cache)
    assert (out[0, 0] - full[0, 12]).abs().max() < 1e-5
    assert (out[1, 0] - full[1, 9]).abs().max() < 1e-5


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_left_padded_batch_equals_each_prompt_alone(name):
    model = _model(CONFIGS[name])
    prompts = [_idx(1, 9, seed=3)[0], _idx(1, 5, seed=4)[0], _idx(1, 1, seed=5)[0]]
    T0, extra = 9, 6
    idx = torch.zeros(3, T0, dtype=torch.long)
    valid = torch.zeros(3, T0, dtype=torch.bool)
    for b, p in enumerate(prompts):
        idx[b, T0 - len(p):], valid[b, T0 - len(p):] = p, True
    cont = _idx(3, extra, seed=6)
    # without cache: padding masked, positions counted per row
    no_cache = model(idx, valid=valid)
    cache = KVCache.for_model(model, batch_size=3, max_len=T0 + extra)
    pre = model(idx, cache=cache, valid=valid)
    dec = torch.cat([model(cont[:, t:t + 1], cache=cache) for t in range(extra)], 1)
    assert torch.isfinite(pre).all() and torch.isfinite(no_cache).all()
    for b, p in enumerate(prompts):
        alone = model(torch.cat([p, cont[b]])[None])[0]  # (len + extra, V)
        n = len(p)
        assert (pre[b, T0 - n:] - alone[:n]).abs().max() < 1e-5
        assert (no_cache[b, T0 - n:] - alone[:n]).abs().max() < 1e-5
        assert (dec[b] - alone[n:]).abs().max() < 1e-5


def test_kv_cache_bounds_and_reset():
    model = _model(LLAMA)
    with pytest.raises(ValueError, match="max_seq_len"):
        KVCache.for_model(model, 1, max_len=65)
    cache = KVCache.for_model(model, 1, max_len=8)
    assert cache.k.shape == (3, 1, 2, 8, 8) and cache.k[0].shape == (1, 2, 8, 8)
    model(_idx(1, 6), cache=cache)
    with pytest.raises(ValueError, match="KV cache is full"):
        model(_idx(1, 3), cache=cache)
    cache.reset()
    assert torch.allclose(model(_idx(1, 6), cache=cache), model(_idx(1, 6)), atol=1e-5)


def test_explicit_positions_shift_rope_and_learned():
    for cfg in (LLAMA, GPT2):
        model = _model(cfg)
        idx = _idx(T=10)
        full = model(idx)
        assert torch.equal(model(idx, positions=torch.arange(10)), full)
        assert not torch.allclose(model(idx, positions=torch.arange(3, 13)), full)


# ---------------------------------------------------------------------------------------------- accounting
def test_gpt2_124m_has_exactly_124_439_808_parameters():
    cfg = PRESETS["gpt2-124m"]
    assert count_params(cfg) == 124_439_808
    with torch.device("meta"):
        model = Transformer(cfg)
    assert model.num_params() == 124_439_808


@pytest.mark.parametrize("name", list(PRESETS))
def test_count_params_equals_real_tensors_for_presets(name):
    cfg = PRESETS[name]
    with torch.device("meta"):
        model = Transformer(cfg)
    assert count_params(cfg) == model.num_params() == sum(t.numel() for t in model.state_dict().values())
    assert count_params(cfg, non_embedding=True) == model.num_params(non_embedding=True)


def test_count_params_equals_real_tensors_for_odd_configs():
    for cfg in (QKN, dataclasses.replace(GPT2, tie_embeddings=False), dataclasses.replace(LLAMA, bias=True),
                ModelConfig(vocab_size=50, d_model=48, n_layers=2, n_heads=6, n_kv_heads=3, activation="gelu",
                            pos_emb="learned", ffn_hidden=100)):
        assert count_params(cfg) == Transformer(cfg).num_params()


def test_llama_presets_are_about_their_names():
    sizes = {"1m": 1e6, "5m": 5e6, "20m": 20e6, "60m": 60e6, "125m": 125e6, "350m": 350e6, "1b": 1e9}
    for suffix, n in sizes.items():
        got = count_params(PRESETS[f"llama-{suffix}"], non_embedding=True)
        assert 0.8 * n < got < 1.2 * n, (suffix, got)
    assert 1e5 < count_params(PRESETS["llama-tiny"]) < 5e5


def test_flops_per_token_by_hand():
    cfg = ModelConfig(vocab_size=100, pad_vocab_multiple=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                      ffn_hidden=96, max_seq_len=16)
    # per layer: wq 32*32 + wk 32*16 + wv 32*16 + wo 32*32 = 3072; mlp 3 * 32*96 = 9216 -> 12288
    # head: 32 * 128 (padded vocab) = 4096.  N = 2 * 12288 + 4096 = 28672
    # attention: 12 * L * H * hd * T = 12 * 2 * 4 * 8 * 16 = 12288
    assert flops_per_token(cfg, 16) == 6 * 28672 + 12288
    assert flops_per_token(cfg, 16, training=False) == 2 * 28672 + 4096
    assert Transformer(cfg).flops_per_token(16) == 6 * 28672 + 12288
    # the 6N rule with N = real matmul parameters
    model = Transformer(cfg)
    n_matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)) + 128 * 32
    assert flops_per_token(cfg, 0) == 6 * n_matmul


# ---------------------------------------------------------------------------------------------- memory features
@pytest.mark.parametrize("every", [1, 2])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_activation_checkpointing_gives_same_gradients(every, dropout):
    cfg = dataclasses.replace(LLAMA, dropout=dropout)
    model = _model(cfg).train()
    idx = _idx()
    grads = []
    for ckpt in (0, every):
        model.zero_grad()
        model.set_activation_checkpointing(ckpt)
        torch.manual_seed(123)
        model(idx).logsumexp(-1).mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for g0, g1 in zip(*grads):
        assert torch.allclose(g0, g1, atol=1e-6)


def test_meta_device_init_equals_normal_init():
    cfg = dataclasses.replace(GPT2, tie_embeddings=False)
    for c in (LLAMA, cfg):
        normal = Transformer(c)
        normal.init_weights(seed=7)
        with torch.device("meta"):
            meta = Transformer(c)
        assert meta.tok_emb.weight.is_meta
        meta.to_empty(device="cpu")
        meta.init_weights(seed=7)
        for (k, a), b in zip(normal.state_dict().items(), meta.state_dict().values()):
            assert torch.equal(a, b), k
        for a, b in zip(normal.buffers(), meta.buffers()):  # the non-persistent RoPE tables too
            assert torch.equal(a, b)
        idx = _idx()
        assert torch.equal(normal.eval()(idx), meta.eval()(idx))


def test_init_scaled_and_zero_residual_projections():
    cfg = ModelConfig(vocab_size=256, d_model=256, n_layers=8, n_heads=4, max_seq_len=32)
    model = Transformer(cfg)
    assert abs(model.layers[0].attn.wq.weight.std().item() - 0.02) < 0.002
    assert abs(model.layers[0].attn.wo.weight.std().item() - 0.02 / math.sqrt(16)) < 0.001
    zero = Transformer(dataclasses.replace(cfg, zero_init_out_proj=True))
    assert not zero.layers[3].mlp.w_down.weight.any() and zero.layers[3].mlp.w_up.weight.any()
    assert "rope_cos" not in model.state_dict()


def test_forward_has_no_graph_breaks():
    model = _model(LLAMA).train()
    explanation = torch._dynamo.explain(model)(_idx())
    assert explanation.graph_break_count == 0, explanation.break_reasons


# ---------------------------------------------------------------------------------------------- config
def test_config_round_trip_and_presets():
    for name, cfg in PRESETS.items():
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    cfg = ModelConfig.from_preset("llama-5m", vocab_size=1000, d_model=384, n_heads=6)
    assert cfg.vocab_size == 1000 and cfg.ffn_hidden == 1024  # derived again after the override
    assert ModelConfig(d_model=64, n_heads=4, activation="gelu").ffn_hidden == 256
    assert ModelConfig(d_model=64, n_heads=4, activation="gelu_exact").ffn_hidden == 256
    assert ModelConfig(vocab_size=50257).padded_vocab_size == 50304
    assert PRESETS["gpt2-124m"].padded_vocab_size == 50257


@pytest.mark.parametrize("kwargs,match", [
    (dict(d_model=100, n_heads=3), "divisible by model.n_heads"),
    (dict(n_heads=12, n_kv_heads=5), "must divide model.n_heads"),
    (dict(activation="relu"), "activation must be one of"),
    (dict(norm="rmsnrom"), "did you mean 'rmsnorm'"),
    (dict(dropout=1.0), "dropout"),
    (dict(vocab_size=0), "vocab_size must be a positive"),
    (dict(rope_scaling={"rope_type": "llama3", "factor": 8.0}), "missing low_freq_factor"),
    (dict(d_model=36, n_heads=4), "even head_dim"),
])
def test_config_validation_messages(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)


def test_config_unknown_keys_and_presets():
    with pytest.raises(ValueError, match="did you mean 'n_layers'"):
        ModelConfig.from_dict({"n_layer": 3})
    with pytest.raises(ValueError, match="did you mean 'llama-5m'"):
        ModelConfig.from_preset("llama-5M")


def test_gelu_variants_are_their_definitions():
    # "gelu" is GPT-2's tanh approximation, "gelu_exact" the erf GELU; they differ by up to ~5e-4 at |x| ~ 2, which
    # logits of a small random model do not show, so each MLP is held to its own formula directly.
    from scratchlm.model.layers import MLP

    x = torch.linspace(-4, 4, 800).reshape(1, 1, 800)
    for act, ref in (("gelu", lambda h: 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))),
                     ("gelu_exact", lambda h: 0.5 * h * (1 + torch.erf(h / math.sqrt(2))))):
        mlp = MLP(ModelConfig(vocab_size=8, d_model=800, n_heads=1, ffn_hidden=800, activation=act))
        with torch.no_grad():
            mlp.w_up.weight.copy_(torch.eye(800))
            mlp.w_down.weight.copy_(torch.eye(800))
            assert torch.allclose(mlp(x), ref(x), atol=1e-6), act
    gap = (0.5 * x * (1 + torch.erf(x / math.sqrt(2))) - F.gelu(x, approximate="tanh")).abs().max()
    assert gap > 1e-4  # the two definitions are distinguishable at this tolerance


def test_rmsnorm_float32_fast_path_is_the_two_step_definition():
    # float32 takes one fused kernel with the weight; it must equal normalise-then-scale bit for bit,
    # forward and backward (bf16 keeps the two steps, in HF's order)
    from scratchlm.model.layers import RMSNorm

    torch.manual_seed(0)
    norm = RMSNorm(48)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(48))
    x = torch.randn(3, 5, 48, requires_grad=True)
    g = torch.randn(3, 5, 48)
    fast = norm(x)
    slow = F.rms_norm(x, (48,), eps=norm.eps) * norm.weight
    assert torch.equal(fast, slow)
    for a, b in zip(torch.autograd.grad(fast, (x, norm.weight), g), torch.autograd.grad(slow, (x, norm.weight), g)):
        assert torch.equal(a, b)
