"""Our model is the same function as Hugging Face's LlamaForCausalLM / GPT2LMHeadModel on the same weights."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from scratchlm.model import ModelConfig, Transformer  # noqa: E402
from scratchlm.model.hf import from_hf_state_dict, hf_config_from, permute_interleaved, to_hf_state_dict  # noqa: E402

TOL = 1e-4


def _hf_llama(**kw):
    cfg = transformers.LlamaConfig(vocab_size=101, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                   num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=64,
                                   rms_norm_eps=1e-5, **kw)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # HF initialises norms to 1 and biases to 0: randomise them so the mapping shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def _hf_gpt2(**kw):
    cfg = transformers.GPT2Config(vocab_size=101, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **kw)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def _compare_from_hf(hf_model):
    cfg, sd = from_hf_state_dict(hf_model.state_dict(), hf_model.config.to_dict())
    ours = Transformer(cfg).eval()
    ours.load_state_dict(sd)
    idx = torch.randint(0, cfg.vocab_size, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf_model(idx).logits
        got = ours(idx)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= TOL
    return cfg, ours


@pytest.mark.parametrize("tie", [False, True])
def test_llama_gqa_from_hf(tie):
    _compare_from_hf(_hf_llama(tie_word_embeddings=tie))


def test_llama_bias_and_rope_scaling_from_hf():
    rs = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}
    cfg, _ = _compare_from_hf(_hf_llama(attention_bias=True, mlp_bias=True, rope_scaling=rs, rope_theta=500.0))
    assert cfg.rope_scaling["rope_type"] == "llama3" and cfg.rope_theta == 500.0 and cfg.bias


@pytest.mark.parametrize("tie", [True, False])
def test_gpt2_from_hf(tie):
    _compare_from_hf(_hf_gpt2(tie_word_embeddings=tie))


def test_gpt2_exact_gelu_from_hf():
    # activation_function "gelu" is the erf GELU (nanoGPT's nn.GELU()): it must map to gelu_exact, not the tanh one
    cfg, _ = _compare_from_hf(_hf_gpt2(activation_function="gelu"))
    assert cfg.activation == "gelu_exact"


def _compare_to_hf(cfg, hf_cls):
    torch.manual_seed(0)
    ours = Transformer(cfg).eval()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    hf_cfg = hf_cls.config_class.from_dict(hf_config_from(cfg))
    hf_model = hf_cls(hf_cfg).eval()
    missing, unexpected = hf_model.load_state_dict(to_hf_state_dict(ours, cfg), strict=False)
    assert not unexpected and all("lm_head" in k for k in missing) and (not missing or cfg.tie_embeddings)
    if cfg.tie_embeddings:
        hf_model.tie_weights()
    idx = torch.randint(0, cfg.vocab_size, (2, 19), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        diff = (hf_model(idx).logits - ours(idx)).abs().max().item()
    assert diff <= TOL


@pytest.mark.parametrize("tie", [True, False])
def test_llama_gqa_to_hf(tie):
    cfg = ModelConfig(vocab_size=101, d_model=64, n_layers=2, n_heads=8, n_kv_heads=2, max_seq_len=64,
                      tie_embeddings=tie, rope_theta=1000.0)
    assert cfg.padded_vocab_size == 128  # padding rows must be dropped on export
    _compare_to_hf(cfg, transformers.LlamaForCausalLM)


def test_llama_mqa_bias_scaling_to_hf():
    cfg = ModelConfig(vocab_size=64, d_model=64, n_layers=2, n_heads=4, n_kv_heads=1, max_seq_len=64, bias=True,
                      tie_embeddings=False, rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                                                          "high_freq_factor": 4.0,
                                                          "original_max_position_embeddings": 16})
    _compare_to_hf(cfg, transformers.LlamaForCausalLM)


@pytest.mark.parametrize("tie", [True, False])
def test_gpt2_to_hf(tie):
    cfg = ModelConfig.from_preset("gpt2-124m", vocab_size=101, d_model=64, n_layers=2, n_heads=4, max_seq_len=64,
                                  tie_embeddings=tie, ffn_hidden=96)
    _compare_to_hf(cfg, transformers.GPT2LMHeadModel)


def test_gpt2_exact_gelu_to_hf():
    cfg = ModelConfig.from_preset("gpt2-124m", vocab_size=101, d_model=64, n_layers=2, n_heads=4, max_seq_len=64,
                                  activation="gelu_exact")
    assert cfg.family == "gpt2" and hf_config_from(cfg)["activation_function"] == "gelu"
    _compare_to_hf(cfg, transformers.GPT2LMHeadModel)


def test_old_gpt2_buffers_are_ignored():
    hf = _hf_gpt2()
    sd = dict(hf.state_dict())
    sd["transformer.h.0.attn.bias"] = torch.ones(1, 1, 64, 64).tril()  # saved by transformers < 4.3x
    sd["transformer.h.0.attn.masked_bias"] = torch.tensor(-1e4)
    cfg, ours = from_hf_state_dict(sd, hf.config.to_dict())
    assert "layers.0.attn.wq.bias" in ours and not any("masked" in k for k in ours)
    sd["transformer.h.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="no place for"):
        from_hf_state_dict(sd, hf.config.to_dict())


def test_round_trip_is_identity():
    cfg = ModelConfig(vocab_size=100, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32)
    model = Transformer(cfg)
    cfg2, sd = from_hf_state_dict(to_hf_state_dict(model, cfg), hf_config_from(cfg))
    assert cfg2.to_dict() == {**cfg.to_dict(), "norm_eps": cfg2.norm_eps}
    for k, v in model.state_dict().items():
        if k == "tok_emb.weight":
            assert torch.equal(sd[k][:100], v[:100]) and not sd[k][100:].any()
        else:
            assert torch.equal(sd[k], v), k


def test_permute_interleaved_matches_rope_layouts():
    # An interleaved-RoPE projection W gives the same attention scores as half-split RoPE with permuted W.
    from scratchlm.model.layers import apply_rope

    H, hd, d, T = 2, 8, 16, 5
    w = torch.randn(H * hd, d)
    x = torch.randn(T, d)
    angles = torch.arange(T)[:, None] * (1.0 / 10000 ** (torch.arange(0, hd, 2) / hd))[None]  # (T, hd/2)
    q = (x @ w.t()).view(T, H, hd // 2, 2)
    c, s = angles.cos()[:, None], angles.sin()[:, None]
    inter = torch.stack([q[..., 0] * c - q[..., 1] * s, q[..., 1] * c + q[..., 0] * s], -1).view(T, H, hd)
    half = apply_rope((x @ permute_interleaved(w, H).t()).view(T, H, hd).transpose(0, 1), angles.cos(), angles.sin())
    scores_inter = torch.einsum("thd,shd->hts", inter, inter)
    scores_half = half @ half.transpose(-1, -2)
    assert torch.allclose(scores_inter, scores_half, atol=1e-5)


def test_unsupported_exports_and_imports_fail_clearly():
    with pytest.raises(ValueError, match="qk_norm"):
        hf_config_from(ModelConfig(vocab_size=10, d_model=32, n_layers=1, n_heads=2, qk_norm=True))
    with pytest.raises(ValueError, match="pure families"):
        hf_config_from(ModelConfig(vocab_size=10, d_model=32, n_layers=1, n_heads=2, norm="layernorm"))
    with pytest.raises(ValueError, match="model_type"):
        from_hf_state_dict({}, {"model_type": "bert"})
