"""The planner's arithmetic against published numbers (no torch needed)."""

import math

import pytest

from scratchlm.plan import compute as C
from scratchlm.plan.hardware import CATALOG, load_catalog, lookup
from scratchlm.plan.layout import Layout, check_layout, memory_per_gpu, search
from scratchlm.plan.memory import (activation_bytes_per_layer, bytes_per_param, korthikanti_layer_bytes,
                                   kv_cache_bytes, layer_activation_terms, model_state_bytes)
from scratchlm.plan.planner import PlanRequest, make_plan
from scratchlm.plan.shape import ModelShape, llama_block_params, shape_from_params


# ----------------------------------------------------------------------------- FLOPs: published figures

def test_gpt3_175b_300b_tokens():
    # Brown et al. 2020, table D.1: 3.14e23 FLOPs for GPT-3 175B on 300B tokens
    assert C.training_flops(175e9, 300e9) == pytest.approx(3.14e23, rel=0.01)


def test_chinchilla_70b_1p4t_tokens_and_its_optimal_size():
    # Hoffmann et al. 2022: Chinchilla, 70B parameters on 1.4T tokens, ~5.9e23 FLOPs (6ND = 5.88e23)
    flops = C.training_flops(70e9, 1.4e12)
    assert flops == pytest.approx(5.88e23, rel=0.005)
    n, d = C.chinchilla_optimal(flops)
    assert n == pytest.approx(70e9, rel=1e-9) and d == pytest.approx(1.4e12, rel=1e-9)
    assert C.optimal_tokens_for_params(70e9) == pytest.approx(1.4e12)


def test_7b_on_1t_tokens():
    assert C.training_flops(7e9, 1e12) == pytest.approx(4.2e22, rel=1e-9)


def test_attention_term_is_palms():
    # PaLM appendix B: 6N + 12 L H Q T per token. For GPT-3 175B (96 layers, d_attn 12288, T = 2048) the attention
    # term is 12*96*2048*12288 = 2.9e10 per token, about 2.8% of 6N: small, but not nothing.
    per_token = C.training_flops_per_token(175e9, 96, 2048, 12288)
    assert per_token - 6 * 175e9 == pytest.approx(12 * 96 * 2048 * 12288)
    assert (per_token / (6 * 175e9) - 1) == pytest.approx(0.0276, abs=0.001)


def test_training_time_matches_megatron_estimate():
    # Narayanan et al. 2021 (Megatron-LM, SC21), sec. 5.1: GPT-3 175B on 300B tokens with 1024 A100s at
    # 140 TFLOP/s per GPU takes ~34 days, using 8TP/(nX): activation recomputation makes it 8 not 6 FLOPs/param/token.
    flops = C.training_flops(175e9, 300e9) * 8 / 6
    days = C.training_seconds(flops, 1024, CATALOG["A100-80GB"].peak_flops("bf16"), 140 / 312) / 86400
    assert days == pytest.approx(34, abs=0.5)


def test_budget_and_time_are_inverse():
    peak = CATALOG["H100"].peak_flops("bf16")
    budget = C.budget_flops(8, peak, 0.4, 7)
    assert budget == pytest.approx(8 * 989.4e12 * 0.4 * 7 * 86400)
    assert C.training_seconds(budget, 8, peak, 0.4) == pytest.approx(7 * 86400)
    with pytest.raises(ValueError, match="mfu"):
        C.flops_per_second(8, peak, 1.5)


# ----------------------------------------------------------------------------- scaling-law fits

def test_hoffmann_exponents_match_the_paper():
    # Hoffmann et al. 2022, table 2, approach 3: N_opt ~ C^0.46, D_opt ~ C^0.54
    f = C.HOFFMANN
    n1, d1 = f.optimal(1e21)
    n2, d2 = f.optimal(1e24)
    assert math.log10(n2 / n1) / 3 == pytest.approx(0.46, abs=0.01)
    assert math.log10(d2 / d1) / 3 == pytest.approx(0.54, abs=0.01)
    for c in (1e20, 1e23, 1e26):  # the optimum spends the whole budget and is a minimum of L on 6ND = C
        n, d = f.optimal(c)
        assert 6 * n * d == pytest.approx(c, rel=1e-9)
        assert f.loss(n, d) < min(f.loss(n * 1.3, d / 1.3), f.loss(n / 1.3, d * 1.3))
        assert f.tokens_for_params(n) == pytest.approx(d, rel=1e-9)


def test_besiroglu_refit_gives_about_20_tokens_per_param():
    # Besiroglu et al. 2024: their refit is consistent with Chinchilla's ~20 tokens per parameter
    n, d = C.BESIROGLU.optimal(5.76e23)  # the Gopher/Chinchilla budget
    assert 15 < d / n < 25
    assert n == pytest.approx(70e9, rel=0.15)


def test_inverse_mode_spends_the_budget_including_attention():
    hw = lookup("H100")
    plan = make_plan(PlanRequest(n_gpus=8, days=7, mfu=0.4), None, hw)
    budget = C.budget_flops(8, hw.peak_flops("bf16"), 0.4, 7)
    assert plan["mode"] == "inverse"
    assert plan["compute"]["flops"] == pytest.approx(budget, rel=0.01)
    assert plan["time"]["days"] == pytest.approx(7, rel=0.01)
    assert plan["compute"]["tokens_per_param"] == pytest.approx(20, rel=1e-6)
    hoff = make_plan(PlanRequest(n_gpus=8, days=7, mfu=0.4, fit="hoffmann"), None, hw)
    assert hoff["compute"]["tokens_per_param"] > 40  # approach 3 favours smaller models, more tokens


# ----------------------------------------------------------------------------- memory: model states

def test_sixteen_bytes_per_param_for_mixed_precision_adamw():
    # Rajbhandari et al. 2020 (ZeRO), sec. 3.1: 2 + 2 + 12 bytes per parameter
    assert bytes_per_param("bf16-mixed", "adamw") == 16
    assert bytes_per_param("amp", "adamw") == 16
    assert bytes_per_param("fp32", "adamw") == 16
    assert bytes_per_param("bf16", "adamw") == 8
    assert bytes_per_param("bf16-mixed", "sgd") == 12


def test_zero_stages_divide_what_the_paper_says():
    # ZeRO paper, figure 1: 7.5B parameters, N_d = 64: baseline 120 GB, P_os 31.4 GB, P_os+g 16.6 GB, P_os+g+p 1.9 GB
    psi, nd = 7.5e9, 64
    expect = {0: 120, 1: 31.4, 2: 16.6, 3: 1.9}
    for stage, gb in expect.items():
        total = sum(model_state_bytes(psi, "bf16-mixed", "adamw", zero=stage, shard=nd).values())
        assert total / 1e9 == pytest.approx(gb, rel=0.02), stage


def test_tensor_and_pipeline_parallel_divide_the_states():
    shape = shape_from_params(7e9)
    one = memory_per_gpu(shape, Layout(seq_len=2048))["bytes"]
    tp4 = memory_per_gpu(shape, Layout(tp=4, seq_len=2048))["bytes"]
    assert tp4["optimizer"] == pytest.approx(one["optimizer"] / 4)
    pp4 = memory_per_gpu(shape, Layout(pp=4, seq_len=2048))
    # the first stage: 8 of 32 layers plus the embedding
    expect = (8 * shape.layer_params + shape.embedding_params) * 12
    assert pp4["bytes"]["optimizer"] == pytest.approx(expect)


# ----------------------------------------------------------------------------- memory: activations

def test_korthikanti_formula():
    s, b, h, a = 2048, 1, 12288, 96  # GPT-3 175B, sequence 2048
    sbh = s * b * h
    assert korthikanti_layer_bytes(s, b, h, a) == pytest.approx(sbh * (34 + 5 * a * s / h))
    for t in (2, 8):
        assert korthikanti_layer_bytes(s, b, h, a, t) == pytest.approx(sbh * (10 + 24 / t + 5 * a * s / (h * t)))
        assert korthikanti_layer_bytes(s, b, h, a, t, True, "selective") == pytest.approx(34 * sbh / t)
        assert korthikanti_layer_bytes(s, b, h, a, t, True, "full") == pytest.approx(2 * sbh / t)
    # the paper's headline: sequence parallel + selective recompute cuts activation memory ~5x vs tensor parallel alone
    t = 8
    ratio = korthikanti_layer_bytes(s, b, h, a, t) / korthikanti_layer_bytes(s, b, h, a, t, True, "selective")
    assert 4 < ratio < 6


def test_our_activation_terms_split_like_korthikantis():
    kw = dict(s=1024, b=2, h=1024, n_heads=16, n_kv_heads=16, head_dim=64, ffn=4096)
    base = sum(layer_activation_terms(**kw).values())
    tp = layer_activation_terms(**kw, t=4)
    tp_sp = sum(layer_activation_terms(**kw, t=4, sequence_parallel=True).values())
    assert tp_sp == pytest.approx(base / 4)  # sequence parallelism splits everything
    assert base / 4 < sum(tp.values()) < base  # without it the norms stay whole
    assert tp["norms"] == layer_activation_terms(**kw)["norms"]
    # eager attention stores an s x s matrix per head: quadratic in s, flash is linear
    eager = lambda s: sum(layer_activation_terms(**{**kw, "s": s}, attention="eager").values())  # noqa: E731
    flash = lambda s: sum(layer_activation_terms(**{**kw, "s": s}).values())  # noqa: E731
    assert flash(2048) == pytest.approx(2 * flash(1024))
    assert eager(2048) > 2.5 * eager(1024)


def test_checkpointing_keeps_only_layer_inputs():
    shape = shape_from_params(1e9)
    none = activation_bytes_per_layer(shape, 4, 2048, recompute="none")
    full = activation_bytes_per_layer(shape, 4, 2048, recompute="full")
    assert full["stored"] == 2 * 4 * 2048 * shape.d_model
    assert full["peak_extra"] == none["stored"]
    lay = lambda ck: memory_per_gpu(shape, Layout(micro_batch=4, seq_len=2048, checkpointing=ck))  # noqa: E731
    assert lay("full")["bytes"]["activations"] < 0.3 * lay("none")["bytes"]["activations"]


# ----------------------------------------------------------------------------- KV cache

def test_kv_cache_llama2():
    # Llama 2 7B (MHA: 32 layers, 32 heads x 128): 0.5 MiB per token in fp16, 2 GiB for 4096 tokens
    assert kv_cache_bytes(32, 32, 128, 1, 1) == 2**19
    assert kv_cache_bytes(32, 32, 128, 1, 4096) == 2 * 2**30
    # Llama 2 70B uses GQA with 8 KV heads over 80 layers: 320 KiB per token instead of 2.5 MiB with MHA
    assert kv_cache_bytes(80, 8, 128, 1, 1) == 320 * 2**10
    assert kv_cache_bytes(80, 64, 128, 1, 1) / kv_cache_bytes(80, 8, 128, 1, 1) == 8
    assert kv_cache_bytes(80, 1, 128, 1, 1) == 40 * 2**10  # MQA: one KV head


# ----------------------------------------------------------------------------- derived shapes

@pytest.mark.parametrize("n, layers, d", [(7e9, 32, 4096), (13e9, 40, 5120), (175e9, 96, 12288)])
def test_derived_shape_is_the_famous_one(n, layers, d):
    s = shape_from_params(n)
    assert (s.n_layers, s.d_model) == (layers, d)
    own = s.n_layers * llama_block_params(s.d_model, s.n_heads, s.n_kv_heads, s.head_dim, s.ffn_hidden)
    own += 2 * s.vocab_size * s.d_model
    assert own == pytest.approx(n, rel=0.06)
    assert s.n_params == int(n) and s.derived


# ----------------------------------------------------------------------------- layout search

def test_7b_does_not_fit_one_h100_and_says_why():
    plan = make_plan(PlanRequest(tokens=1e12), shape_from_params(7e9), lookup("H100"))
    assert plan["memory"]["recommended"] is None
    assert not plan["memory"]["requested"]["fits"]
    msg = " ".join(plan["warnings"])
    assert "nothing fits on 1 x H100" in msg and "at least 2 GPUs" in msg


def test_7b_fits_8_h100_and_the_recommendation_fits():
    plan = make_plan(PlanRequest(tokens=1e12, n_gpus=8, fsdp=8), shape_from_params(7e9), lookup("H100"))
    req, rec = plan["memory"]["requested"], plan["memory"]["recommended"]
    assert req["fits"] and req["layout"]["zero"] == 3
    assert rec["fits"] and rec["memory_per_gpu"]["total"] <= rec["usable_bytes"]
    # FSDP over 8 shards states 8 ways: 16 B/param / 8 = 2 B/param of states per GPU
    states = sum(req["memory_per_gpu"][k] for k in ("params", "grads", "optimizer"))
    assert states == pytest.approx(7e9 * 2)


def test_activations_alone_too_big_gives_the_activation_reason():
    shape = shape_from_params(1e9)
    plan = make_plan(PlanRequest(tokens=1e9, micro_batch=64, seq_len=32768), shape, lookup("L4"))
    assert plan["memory"]["recommended"] is None
    assert any("lower --micro-batch or --seq-len" in w for w in plan["warnings"])


def test_search_respects_head_divisibility_and_layers():
    shape = ModelShape(name="x", n_params=10**9, n_layers=4, d_model=1536, n_heads=12, n_kv_heads=4, head_dim=128,
                       ffn_hidden=4096, vocab_size=32000, max_seq_len=2048)
    for e in search(shape, lookup("A100-40GB"), 16, seq_len=2048):
        assert shape.n_kv_heads % e.layout.tp == 0 and e.layout.pp <= 4 and e.layout.world == 16
    with pytest.raises(ValueError, match="must divide n_heads"):
        check_layout(Layout(tp=8, dp=2), shape, 16)
    with pytest.raises(ValueError, match="multiply to the GPU count"):
        check_layout(Layout(dp=3), shape, 16)
    with pytest.raises(ValueError, match="exceeds the 4 layers"):
        check_layout(Layout(pp=8, dp=2), shape, 16)


# ----------------------------------------------------------------------------- hardware catalog

def test_catalog_and_toml_overrides(tmp_path):
    assert {"A100-40GB", "A100-80GB", "H100", "H200", "B200", "L4", "RTX4090", "CPU"} <= set(CATALOG)
    assert lookup("a100").name == "A100-80GB" and lookup("h100").memory_gib == pytest.approx(79.6)
    with pytest.raises(ValueError, match="did you mean H100"):
        lookup("H10O")
    with pytest.raises(ValueError, match="no fp8"):
        lookup("A100-40GB").peak_flops("fp8")
    f = tmp_path / "gpus.toml"
    f.write_text('[H100]\nmemory_gib = 93.6\n[MI300X]\nbf16_tflops = 1307.4\nfp32_tflops = 163.4\n'
                 'memory_gib = 191.5\nbandwidth_gbs = 5300\n')
    cat = load_catalog(f)
    assert cat["H100"].memory_gib == 93.6 and cat["H100"].bf16_tflops == 989.4
    assert lookup("mi300x", cat).peak_flops("bf16") == pytest.approx(1307.4e12)
    f.write_text("[X]\nbf16_tflops = 1\n")
    with pytest.raises(ValueError, match="needs"):
        load_catalog(f)
    f.write_text("[H100]\nmemroy_gib = 1\n")
    with pytest.raises(ValueError, match="unknown key"):
        load_catalog(f)
