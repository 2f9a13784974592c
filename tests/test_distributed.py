"""Distributed training is the same training: every layout vs one process on the same global batch (gloo, CPU).

Each worker group (2 or 4 processes spawned like torchrun would) runs all its scenarios in one go, so the
process start-up is paid once per group; the tests then check one scenario each.

Tolerance. Every layout computes the same float32 function with the additions in a different order
(all-reduce / reduce-scatter sums, split matmuls, micro-batch accumulation). Float32 rounding is ~6e-8
relative per operation; over 10 AdamW steps we observe differences of at most ~1e-6 in the loss (~6) and the
gradient norm (~1). We allow 2e-5 relative: 20x the observed noise, while any real bug is orders of magnitude
larger (a missing gradient average doubles the gradient norm; a wrongly split head changes the first loss
by ~1e-2; a missed tied-embedding gradient changes the norm by ~10%). The gradient norm is compared as well
as the loss because AdamW is invariant to a constant gradient scale, so losses alone would miss a sum
instead of a mean.
"""

from __future__ import annotations

import math

import pytest
import torch

from scratchlm.distributed import ParallelConfig
from scratchlm.distributed.testing import Job, build_model, make_optimizer, model_config, probe_batch, spawn, \
    train_reference

pytestmark = pytest.mark.distributed

RTOL = 2e-5
STEPS = 10


def assert_same_training(ref: dict, got: dict, rtol: float = RTOL) -> None:
    assert len(got["loss"]) == len(ref["loss"])
    for step, (a, b) in enumerate(zip(ref["loss"], got["loss"])):
        assert math.isclose(a, b, rel_tol=rtol), f"step {step}: loss {b} vs single-process {a}"
    for step, (a, b) in enumerate(zip(ref["norm"], got["norm"])):
        assert math.isclose(a, b, rel_tol=rtol), f"step {step}: grad norm {b} vs single-process {a}"


@pytest.fixture(scope="module")
def reference() -> dict:
    return train_reference(STEPS)


@pytest.fixture(scope="module")
def world1_ckpt(tmp_path_factory):
    """A DCP checkpoint written by one process (no torchrun) after 2 steps, and its probe logits."""
    from scratchlm.distributed.checkpoint import save_dcp

    d = tmp_path_factory.mktemp("w1")
    model = build_model()
    opt = make_optimizer(model.parameters())
    train_reference(2, model=model, opt=opt)
    save_dcp(d / "ckpt", model, opt)
    model.eval()
    with torch.no_grad():
        logits = model(probe_batch(model.config.vocab_size))
    return d / "ckpt", logits


@pytest.fixture(scope="module")
def two(tmp_path_factory, world1_ckpt) -> tuple[dict, object]:
    out = tmp_path_factory.mktemp("two")
    jobs = [
        Job("ddp", {"dp": 2}, STEPS, accum=2),  # accumulation: the no_sync path
        Job("fsdp", {"fsdp": 2}, STEPS, memory=True),
        Job("tp", {"tp": 2}, STEPS),
        Job("pp", {"pp": 2, "pp_schedule": "1f1b"}, STEPS),
        Job("save2", {"fsdp": 2}, 2, save_dcp=str(out / "ckpt2"), probe=True),
        Job("load1", {"tp": 2}, 0, load_dcp=str(world1_ckpt[0]), probe=True),
    ]
    return spawn(2, jobs, out), out


@pytest.fixture(scope="module")
def four(tmp_path_factory) -> dict:
    jobs = [Job("fsdp_tp", {"fsdp": 2, "tp": 2}, STEPS), Job("pp_dp", {"pp": 2, "dp": 2, "pp_schedule": "gpipe"}, STEPS)]
    return spawn(4, jobs, tmp_path_factory.mktemp("four"))


@pytest.mark.parametrize("name", ["ddp", "fsdp", "tp", "pp"])
def test_one_axis_matches_single_process(two, reference, name):
    assert_same_training(reference, two[0][name])


@pytest.mark.parametrize("name", ["fsdp_tp", "pp_dp"])
def test_2d_matches_single_process(four, reference, name):
    assert_same_training(reference, four[name])


def test_fsdp_shards_params_and_optimizer_state(two):
    model = build_model()
    opt = make_optimizer(model.parameters())
    train_reference(1, model=model, opt=opt)
    from scratchlm.distributed.testing import local_bytes

    full = local_bytes(model, opt)  # params + AdamW exp_avg + exp_avg_sq, all fp32
    per_rank = two[0]["fsdp"]["bytes"]
    # Every dim 0 of llama-tiny is even, so each rank holds exactly half (padding would add a few rows).
    assert abs(per_rank / full - 0.5) < 0.02, (per_rank, full)


def test_dcp_saved_by_two_loads_in_one(two):
    from scratchlm.distributed.checkpoint import dcp_to_safetensors, load_dcp
    from scratchlm.runs import load_model_state, load_state_into

    out = two[1]
    expected = torch.load(out / "save2.pt")
    model = build_model()
    opt = make_optimizer(model.parameters())
    load_dcp(out / "ckpt2", model, opt)
    model.eval()
    probe = probe_batch(model.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(model(probe), expected, rtol=1e-5, atol=1e-5)
    # Resume the optimizer too: 3 more steps equal steps 2..4 of the uninterrupted single-process run.
    model.train()
    cont = train_reference(3, model=model, opt=opt, start=2)
    ref = train_reference(5)
    assert_same_training({k: v[2:] for k, v in ref.items()}, cont)
    # Export: one safetensors file, loadable by the plain model (inference / HF export path).
    dcp_to_safetensors(out / "ckpt2", out / "export", model_config())
    cfg, state = load_model_state(out / "export")
    fresh = build_model()
    load_state_into(fresh, state)
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(probe), expected, rtol=1e-5, atol=1e-5)


def test_dcp_saved_by_one_loads_in_two_with_tp(two, world1_ckpt):
    expected = world1_ckpt[1]
    got = torch.load(two[1] / "load1.pt")
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- bad configs
@pytest.mark.parametrize("par, world, msg", [
    (dict(dp=2, tp=2), 2, "dp\\*fsdp\\*tp\\*pp = 2\\*1\\*2\\*1 = 4 but the world size is 2"),
    (dict(tp=3), 4, "do not divide the world size 4"),
    (dict(fsdp=0), 2, "parallel.fsdp must be an integer >= 1"),
    (dict(pp_schedule="zb"), 2, "pp_schedule must be one of"),
    (dict(sequence_parallel=True), 2, "sequence_parallel needs parallel.tp > 1"),
])
def test_bad_degrees_are_rejected(par, world, msg):
    with pytest.raises(ValueError, match=msg):
        ParallelConfig(**par).degrees(world)


@pytest.mark.parametrize("par, msg", [
    (dict(tp=4), "n_kv_heads = 2 is not divisible by parallel.tp = 4"),  # llama-tiny: 4 heads, 2 KV heads
    (dict(tp=8), "n_heads = 4 is not divisible by parallel.tp = 8"),
    (dict(pp=8), "pp = 8 stages but the model has only 4 layers"),
])
def test_model_that_cannot_be_split_is_rejected(par, msg):
    with pytest.raises(ValueError, match=msg):
        ParallelConfig(**par).check_model(model_config())


def test_setup_fails_before_any_process_group(monkeypatch):
    # Under torchrun with 2 processes, a tp=4 layout must fail in every rank before joining (no hang).
    import torch.distributed as dist

    from scratchlm.distributed import setup

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="world size is 2"):
        setup(ParallelConfig(dp=1, tp=4), model_config())
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ValueError, match="n_kv_heads = 2 is not divisible by parallel.tp = 4"):
        setup(ParallelConfig(tp=4), model_config())
    monkeypatch.setenv("WORLD_SIZE", "2")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cpu_offload .* needs CUDA GPUs"):
            setup(ParallelConfig(fsdp=2, cpu_offload=True), model_config())
    assert not dist.is_initialized()


def test_pipeline_micro_batches_must_divide_the_batch():
    with pytest.raises(ValueError, match="does not divide the per-rank batch of 6 rows"):
        ParallelConfig(pp=2, pp_microbatches=4).microbatches(6)


def test_single_process_context_is_a_no_op(monkeypatch):
    from scratchlm.distributed import setup

    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    ctx = setup(ParallelConfig())
    model = build_model()
    assert ctx.wrap(model) is model and ctx.is_main and ctx.dp_size == 1
    t = torch.tensor(3.0)
    assert ctx.all_reduce_mean(t).item() == 3.0
