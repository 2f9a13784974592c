"""Qwen2 and Mistral checkpoints: `scratchlm import hf` gives the same function as transformers (logits and greedy
generation through our KV-cache engine), refuses what it cannot honour in one line, and a model with q/k/v biases
exports as a Qwen2ForCausalLM that transformers loads."""

import argparse
import json
import logging

import pytest
import torch
from safetensors.torch import save_file

transformers = pytest.importorskip("transformers")

from scratchlm.cli import interop  # noqa: E402
from scratchlm.inference.engine import Engine  # noqa: E402
from scratchlm.inference.loading import load_model  # noqa: E402
from scratchlm.inference.sampling import SamplingParams  # noqa: E402
from scratchlm.inference.testing import ByteTokenizer  # noqa: E402
from scratchlm.model import ModelConfig, Transformer, count_params  # noqa: E402
from scratchlm.model.hf import from_hf_state_dict, hf_config_from, model_config_from_hf, to_hf_state_dict  # noqa: E402

TOL = 1e-4
VOCAB = ByteTokenizer().vocab_size  # 261: the engine's test tokenizer decodes every id
HF_CLASSES = {"qwen2": ("Qwen2Config", "Qwen2ForCausalLM"), "mistral": ("MistralConfig", "MistralForCausalLM")}


def _import_hf(src, out):
    """What `scratchlm import hf` runs (the handler itself, whatever the flags are spelled)."""
    return interop.import_hf(argparse.Namespace(src=src, out=out, overwrite=False, pad_vocab_multiple=None))


def _hf_model(kind: str, **kw):
    """A tiny random transformers model: hidden 64, 2 layers, 8 query heads over 2 KV heads (GQA)."""
    config_cls, model_cls = (getattr(transformers, name) for name in HF_CLASSES[kind])
    kw = {"max_position_embeddings": 64, "rope_theta": 5000.0, "rms_norm_eps": 1e-5, **kw}
    cfg = config_cls(vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                     num_attention_heads=8, num_key_value_heads=2, initializer_range=0.1, **kw)
    torch.manual_seed(0)
    model = model_cls(cfg).eval()
    with torch.no_grad():  # HF initialises norms to 1 and biases to 0: randomise them so the mapping shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def _import(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path / "hf")
    assert _import_hf(tmp_path / "hf", tmp_path / "run") == 0
    return load_model(tmp_path / "run", device="cpu", dtype="float32")


def _greedy_hf(hf_model, prompt: list[int], n: int) -> list[int]:
    hf_model.generation_config.eos_token_id = None  # random weights: never stop early
    hf_model.generation_config.pad_token_id = 0
    out = hf_model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("kind,tie", [("qwen2", False), ("qwen2", True), ("mistral", False)])
def test_import_matches_transformers(tmp_path, kind, tie):
    extra = {"sliding_window": None} if kind == "mistral" else {}
    hf = _hf_model(kind, tie_word_embeddings=tie, **extra)
    ours, cfg = _import(hf, tmp_path)
    assert cfg.qkv_bias == (kind == "qwen2") and not cfg.bias and cfg.tie_embeddings == tie
    assert cfg.n_kv_heads == 2 and cfg.rope_theta == 5000.0 and cfg.max_seq_len == 64
    assert ours.num_params() - (cfg.padded_vocab_size - VOCAB) * 64 * (1 if tie else 2) == hf.num_parameters()

    idx = torch.randint(0, VOCAB, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (ours(idx) - hf(idx).logits).abs().max().item()
    assert diff <= TOL

    prompt = [5, 17, 200, 33, 98, 7]
    want = _greedy_hf(hf, prompt, 20)
    seq = Engine(ours, ByteTokenizer()).generate(
        [prompt], SamplingParams(max_new_tokens=20, temperature=0.0, ignore_eos=True))[0]
    assert seq.token_ids == want and len(want) == 20


def test_mistral_sliding_window_caps_context(tmp_path, caplog):
    # A window of 16 over 64 positions: on 16 tokens or fewer sliding-window and full causal attention agree.
    hf = _hf_model("mistral", sliding_window=16)
    with caplog.at_level(logging.WARNING):
        ours, cfg = _import(hf, tmp_path)
    assert cfg.max_seq_len == 16 and "max_seq_len capped at 16" in caplog.text
    idx = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (ours(idx) - hf(idx).logits).abs().max().item() <= TOL
    with pytest.raises(ValueError, match="max_seq_len"):  # and longer inputs are refused, never silently wrong
        ours(torch.zeros(1, 17, dtype=torch.long))


def test_qwen2_sliding_window_only_where_a_layer_slides():
    base = _hf_model("qwen2").config.to_dict()
    on = {**base, "use_sliding_window": True, "sliding_window": 16, "layer_types": None}
    assert model_config_from_hf({**on, "max_window_layers": 1}).max_seq_len == 16  # layer 1 slides
    assert model_config_from_hf({**on, "max_window_layers": 2}).max_seq_len == 64  # no layer slides
    assert model_config_from_hf({**base, "sliding_window": 16}).max_seq_len == 64  # use_sliding_window false


def _one_line_error(sd, config, match):
    with pytest.raises(ValueError, match=match) as e:
        from_hf_state_dict(sd, config)
    assert "\n" not in str(e.value)


def test_unhonourable_configs_fail_in_one_line():
    qwen = _hf_model("qwen2")
    sd, conf = qwen.state_dict(), qwen.config.to_dict()
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "rope_theta": 5000.0}
    _one_line_error(sd, {**conf, "rope_parameters": yarn, "rope_scaling": None}, "'yarn' is not supported")
    _one_line_error({**sd, "model.layers.0.self_attn.o_proj.bias": torch.zeros(64)}, conf, "no place for")
    _one_line_error(sd, {**conf, "hidden_act": "gelu"}, "hidden_act")
    _one_line_error(sd, {**conf, "head_dim": 16}, "head_dim")
    # a Llama with biases on the attention projections (o_proj included) but none in the MLP
    _one_line_error({}, {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 8,
                         "attention_bias": True, "mlp_bias": False}, "o_proj")


@pytest.mark.parametrize("tie", [True, False])
def test_qkv_bias_model_exports_as_qwen2(tmp_path, tie):
    cfg = ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=8, n_kv_heads=2, max_seq_len=64,
                      qkv_bias=True, tie_embeddings=tie, rope_theta=5000.0)
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    assert count_params(cfg) == model.num_params() == sum(t.numel() for t in model.state_dict().values())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    assert model.layers[0].attn.wq.bias is not None and model.layers[0].attn.wo.bias is None
    (tmp_path / "hf").mkdir()  # what `scratchlm export hf` writes
    (tmp_path / "hf" / "config.json").write_text(json.dumps(hf_config_from(cfg)))
    save_file(to_hf_state_dict(model, cfg), str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == "Qwen2ForCausalLM"
    idx = torch.randint(0, VOCAB, (2, 19), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (hf(idx).logits - model(idx)).abs().max().item() <= TOL

    # and back: the same config and the same tensors
    assert _import_hf(tmp_path / "hf", tmp_path / "back") == 0
    back, cfg2 = load_model(tmp_path / "back", device="cpu", dtype="float32")
    assert cfg2.to_dict() == cfg.to_dict()
    for k, v in model.state_dict().items():  # padding rows of the vocabulary come back as zeros
        got = back.state_dict()[k]
        assert torch.equal(got[:VOCAB], v[:VOCAB]) and (k in ("tok_emb.weight", "lm_head.weight") or
                                                         torch.equal(got, v)), k
