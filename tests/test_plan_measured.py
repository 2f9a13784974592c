"""The planner against our own code: real parameter/gradient/AdamW tensors and real saved activations.

Activation memory is measured with torch.autograd.graph.saved_tensors_hooks (see scratchlm/plan/measure.py):
every tensor autograd keeps for backward passes through the pack hook, so the sum of their storages (each once,
parameters excluded) plus the logits the caller holds is exactly the activation memory alive at the
forward/backward boundary, where it peaks. Unlike RSS deltas it is deterministic on a shared CPU (no allocator
caching, no other threads' pages), so the tolerance can be tight; the issue asks for 20%, we hold it to 10%.
"""

import pytest

torch = pytest.importorskip("torch")

from scratchlm.model import ModelConfig, Transformer, count_params  # noqa: E402
from scratchlm.plan.layout import Layout, memory_per_gpu  # noqa: E402
from scratchlm.plan.measure import model_state_tensor_bytes, saved_activation_bytes  # noqa: E402
from scratchlm.plan.memory import model_state_bytes  # noqa: E402
from scratchlm.plan.shape import ModelShape  # noqa: E402

SMALL_GPT2 = {"n_layers": 2, "max_seq_len": 256}


STATE_CASES = [
    ("llama-tiny", {}), ("llama-5m", {}), ("gpt2-124m", {"n_layers": 1, "max_seq_len": 64}),
    ("llama-tiny", {"tie_embeddings": False, "n_kv_heads": 1}),
]


@pytest.mark.parametrize("preset, overrides", STATE_CASES)
@pytest.mark.parametrize("dtype, precision", [(torch.float32, "fp32"), (torch.bfloat16, "bf16")])
def test_state_bytes_equal_real_tensors(preset, overrides, dtype, precision):
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset(preset, **overrides)
    model = Transformer(cfg).to(dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, cfg.vocab_size, (1, 8))
    logits = model(idx)
    torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), idx.flatten()).backward()
    opt.step()
    real = model_state_tensor_bytes(model, opt)

    shape = ModelShape.from_config(cfg)
    assert shape.n_params == count_params(cfg) == sum(p.numel() for p in model.parameters())
    planned = model_state_bytes(shape.n_params, precision, "adamw")
    assert planned["params"] == real["params"]
    assert planned["grads"] == real["grads"]
    assert planned["optimizer"] == real["optimizer"]  # exp_avg + exp_avg_sq, in the parameters' dtype
    # AdamW's per-tensor step counters are scalars: not per parameter, and too small to plan for
    assert real["optimizer_step_counters"] < 1e-3 * real["optimizer"] + 1024
    # the layout path (one GPU, no sharding) gives the same numbers
    mem = memory_per_gpu(shape, Layout(seq_len=8), precision)["bytes"]
    assert (mem["params"], mem["grads"], mem["optimizer"]) == (real["params"], real["grads"], real["optimizer"])


CASES = [
    # preset, overrides, precision (planner), batch, seq
    ("llama-tiny", {}, "fp32", 2, 128),
    ("llama-tiny", {}, "amp", 2, 128),
    ("llama-tiny", {}, "bf16", 2, 128),
    ("llama-1m", {}, "fp32", 2, 256),
    ("llama-1m", {}, "amp", 1, 256),
    ("gpt2-124m", SMALL_GPT2, "fp32", 1, 128),
    ("gpt2-124m", SMALL_GPT2, "amp", 1, 64),
    ("llama-tiny", {"attn_impl": "reference"}, "fp32", 2, 128),
    ("llama-tiny", {"n_kv_heads": 4, "attn_impl": "reference"}, "bf16", 2, 128),
]


_MODELS: dict = {}


def _model(preset: str, overrides: dict, dtype):
    # built once per config: the measurement does not change the weights (forward only, no optimizer step)
    key = (preset, tuple(sorted(overrides.items())), dtype)
    if key not in _MODELS:
        torch.manual_seed(0)
        _MODELS[key] = Transformer(ModelConfig.from_preset(preset, **overrides)).to(dtype)
    return _MODELS[key]


@pytest.mark.parametrize("checkpointing", ["none", "full"])
@pytest.mark.parametrize("preset, overrides, precision, B, T", CASES)
def test_activation_estimate_matches_saved_tensors(preset, overrides, precision, B, T, checkpointing):
    torch.manual_seed(0)
    model = _model(preset, overrides, torch.bfloat16 if precision == "bf16" else torch.float32)
    cfg = model.config
    idx = torch.randint(0, cfg.vocab_size, (B, T))
    measured = saved_activation_bytes(model, idx, torch.bfloat16 if precision == "amp" else None,
                                      checkpointing=1 if checkpointing == "full" else 0)["total"]
    attention = "eager" if cfg.attn_impl == "reference" else "flash"
    mem = memory_per_gpu(ModelShape.from_config(cfg), Layout(micro_batch=B, seq_len=T, checkpointing=checkpointing),
                         precision, attention=attention)["bytes"]
    # held at the end of the forward: activations, plus autocast's bf16 weight copies under amp
    estimate = mem["activations"] + mem.get("weight_copies", mem.get("weight copies", 0))
    assert estimate == pytest.approx(measured, rel=0.10), (estimate / 2**20, measured / 2**20)


def test_checkpointing_recompute_buffer_is_one_layer():
    # With every block checkpointed, the backward recomputes one block at a time: the extra memory is what one
    # block saves without checkpointing, i.e. (no-ckpt total - ckpt total) / (n_layers) + the layer input it drops.
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("llama-1m")
    model = Transformer(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, 256))
    full = saved_activation_bytes(model, idx)["total"]
    ckpt = saved_activation_bytes(model, idx, checkpointing=1)["total"]
    per_layer_measured = (full - ckpt) / cfg.n_layers + 4 * 2 * 256 * cfg.d_model
    mem = memory_per_gpu(ModelShape.from_config(cfg), Layout(micro_batch=2, seq_len=256, checkpointing="full"), "fp32")
    assert mem["bytes"]["recompute buffer"] == pytest.approx(per_layer_measured, rel=0.10)
