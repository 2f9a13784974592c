"""Decode MFU and MBU (scratchlm/plan/roofline.py) against figures worked out by hand and against real tensors."""

from __future__ import annotations

import pytest
import torch

from scratchlm.model import ModelConfig, Transformer
from scratchlm.model.kv_cache import KVCache
from scratchlm.plan.hardware import CATALOG, Hardware
from scratchlm.plan.roofline import decode_roofline, decode_step_bytes, hardware_for_device

# d=64, 2 layers, 4 query heads and 2 KV heads of 16, SwiGLU 128 wide, vocab 128 (already a multiple of 64), tied
CFG = ModelConfig(vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=128, max_seq_len=256)
# per block: wq 64*64 + wk, wv 2*64*32 + wo 64*64 = 12288; w_gate, w_up 2*64*128 + w_down 128*64 = 24576
# N_matmul = 2 * (12288 + 24576) + head 64*128 = 81920
N_MATMUL = 81920
# a round-number device: 1 TFLOP/s in every precision, 1 GB/s
TOY = Hardware("toy", bf16_tflops=1.0, fp32_tflops=1.0, memory_gib=1.0, bandwidth_gbs=1.0)


def test_hand_computed_mfu_and_mbu():
    r = decode_roofline(CFG, batch=4, context=100, dtype="bf16", tokens_per_s=1000.0, hardware=TOY)
    # FLOPs/token: 2 * 81920 + 4 * 2 layers * 4 heads * 16 * 100 keys = 163840 + 51200
    assert r["flops_per_token"] == 215040
    assert r["flops_per_s"] == pytest.approx(2.1504e8)
    assert r["mfu"] == pytest.approx(2.1504e-4)
    # bytes/step: weights 81920 * 2 = 163840; K and V: 2 * 2 layers * 4 rows * 100 * 2 KV heads * 16 * 2 = 102400
    assert r["bytes_per_step"] == 266240
    # 1000 tokens/s over 4 rows = 250 steps/s
    assert r["bytes_per_s"] == pytest.approx(66.56e6)
    assert r["mbu"] == pytest.approx(0.06656)
    # the memory roof: 266240 B at 1 GB/s = 266.24 us/step (FLOPs take 4 * 215040 / 1e12 = 0.86 us) -> 4 tokens a step
    assert r["bound_tokens_per_s"] == pytest.approx(4 / 266.24e-6)


def test_fp32_doubles_the_bytes_and_uses_the_fp32_peak():
    half = decode_step_bytes(CFG, batch=4, context=100, dtype="bf16")
    full = decode_step_bytes(CFG, batch=4, context=100, dtype="fp32")
    assert full["total"] == 2 * half["total"]
    slow_fp32 = Hardware("toy32", bf16_tflops=1.0, fp32_tflops=0.5, memory_gib=1.0, bandwidth_gbs=1.0)
    r = decode_roofline(CFG, batch=4, context=100, dtype="fp32", tokens_per_s=1000.0, hardware=slow_fp32)
    assert r["mfu"] == pytest.approx(2.1504e8 / 0.5e12)


def test_fewer_kv_heads_read_less_cache():
    mha = ModelConfig(**{**CFG.to_dict(), "n_kv_heads": 4})
    assert decode_step_bytes(mha, 4, 100)["kv_cache"] == 2 * decode_step_bytes(CFG, 4, 100)["kv_cache"]


def test_bytes_equal_the_real_tensors():
    """Weights: every matmul weight of a built model, the tied head once; KV: our engine's cache at that size."""
    model = Transformer(CFG).to(torch.bfloat16)
    linear = sum(m.weight.nbytes for m in model.modules() if isinstance(m, torch.nn.Linear))
    head = model.tok_emb.weight.nbytes  # tied: the embedding matrix is the head's weight
    b = decode_step_bytes(CFG, batch=3, context=77, dtype="bf16")
    assert b["weights"] == linear + head
    cache = KVCache.for_model(model, batch_size=3, max_len=77)
    assert b["kv_cache"] == cache.k.nbytes + cache.v.nbytes


def test_unknown_peaks_give_achieved_rates_only():
    r = decode_roofline(CFG, batch=1, context=10, dtype="bf16", tokens_per_s=50.0, hardware=None)
    assert r["mfu"] is None and r["mbu"] is None and r["bound_tokens_per_s"] is None
    assert r["flops_per_s"] == pytest.approx(50.0 * (2 * N_MATMUL + 4 * 2 * 4 * 16 * 10))


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch=0), "batch must be >= 1"),
    (dict(context=257), "context must be in \\[1, 256\\]"),
    (dict(tokens_per_s=0.0), "tokens_per_s must be > 0"),
    (dict(dtype="int3"), "unknown decode dtype 'int3'"),
])
def test_bad_input_is_named(kwargs, message):
    args = dict(batch=1, context=10, dtype="bf16", tokens_per_s=1.0, hardware=TOY) | kwargs
    with pytest.raises(ValueError, match=message):
        decode_roofline(CFG, **args)


@pytest.mark.parametrize("name, expected", [
    ("NVIDIA H100 80GB HBM3", "H100"),
    ("NVIDIA H200", "H200"),
    ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
    ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
    ("NVIDIA GeForce RTX 4090", "RTX4090"),
    ("NVIDIA L4", "L4"),
    ("NVIDIA H100 PCIe", None),  # 756 TFLOP/s and 2.0 TB/s: not the SXM figures, so unknown rather than wrong
    ("NVIDIA H100 NVL", None),
    ("NVIDIA L40S", None),
    ("Tesla T4", None),
])
def test_device_names_map_to_the_catalog_or_to_unknown(name, expected):
    hw = hardware_for_device(name)
    assert (hw.name if hw else None) == expected
    if expected:
        assert hw is CATALOG[expected]
