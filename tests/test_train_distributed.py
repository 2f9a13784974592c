"""`torchrun ... -m scratchlm pretrain` is the same training as one process: DDP and FSDP2 through the real CLI.

Each run trains llama-tiny on 100 KB of Tiny Shakespeare (characters), fp32, one thread per process, on the
same global batch of 8 rows x 32 tokens: one process as 4 micro-batches of 2 rows; two processes (gloo) as 2
micro-batches of 2 rows each, so DDP's and FSDP's no-sync accumulation path is exercised too.

Tolerance. Every layout computes the same float32 function with the additions in a different order (per-rank
means then an all-reduce, FSDP's reduce-scatter, micro-batch sums): ~6e-8 relative per operation. Before the
first update that is all, so step 1's loss and gradient norm must agree to 1e-6 (observed: bitwise or 1e-7).
AdamW then amplifies the noise: a parameter whose gradient is ~0 gets an update of about +-lr from noise alone
(m / sqrt(v) is a sign there). train.eps = 1e-5 (instead of 1e-8) damps exactly those updates: with it we
observe over 8 steps <= 1e-7 relative in the loss, <= 5e-5 in the gradient norm (through a spike to 7 at step
6) and 1.4e-4 in the final logits (with eps = 1e-8: 4e-4 and 1e-2). We allow 1e-5, 5e-4 and 1e-3. A real bug
is far larger: ranks reading the same rows instead of disjoint ones, or a dropped micro-batch, changes step
1's loss by ~1e-2 and its norm by ~10%; a gradient sum instead of a mean doubles the norm (AdamW would hide
that in the loss); a checkpoint missing a shard changes the logits by O(1).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scratchlm.runs import read_jsonl

from conftest import SHARED_DATA, shared_path

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[1]
DATA = SHARED_DATA / "tinyshakespeare" / "input.txt"
RTOL_STEP1 = 1e-6
RTOL = {"loss": 1e-5, "norm": 5e-4}
STEPS = 8


def _config(tmp: Path) -> Path:
    shared_path("tinyshakespeare/input.txt")
    text = tmp / "input.txt"
    text.write_text(DATA.read_text(encoding="utf-8")[:100_000], encoding="utf-8")
    cfg = tmp / "tiny.toml"
    cfg.write_text(f"""preset = "llama-tiny"
[model]
dropout = 0.0
max_seq_len = 64
[data]
train_text = "{text}"
tokenizer = "char"
[train]
seq_len = 32
micro_batch_size = 2
global_batch_tokens = 256
max_steps = {STEPS}
lr = 3e-3
eps = 1e-5              # damps AdamW's amplification of float32 rounding noise (see the docstring)
warmup_steps = 2
schedule = "constant"   # the lr does not depend on max_steps: 4 steps + a resume to 8 = 8 steps
eval_every = 4
ckpt_every = 4
keep_last = 3
log_every = 1
sample_tokens = 8
tensorboard = false
progress = false
device = "cpu"
dtype = "float32"
num_threads = 1
seed = 7
""")
    return cfg


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def pretrain(cfg: Path, out: Path, *sets: str, nproc: int = 1, resume: bool = False, check: bool = True):
    """Run `scratchlm pretrain` in one process, or under torchrun with nproc processes."""
    launcher = [sys.executable, "-m", "scratchlm"] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
         "scratchlm"]
    cmd = [*launcher, "pretrain", "--config", str(cfg), "--out", str(out), "-q"]
    cmd += [a for s in sets for a in ("--set", s)] + (["--resume"] if resume else [])
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def trajectory(run: Path) -> dict:
    rows = read_jsonl(run / "metrics.jsonl")
    train = [r for r in rows if "loss" in r]
    steps = [r["step"] for r in train]
    assert steps == sorted(set(steps)), f"metrics rows duplicated or out of order (not rank 0 alone?): {steps}"
    return {"loss": [r["loss"] for r in train], "norm": [r["grad_norm"] for r in train],
            "val": [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]}


def assert_same(ref: dict, got: dict) -> None:
    assert len(got["loss"]) == len(ref["loss"]) == STEPS
    for key in ("loss", "norm"):
        for step, (a, b) in enumerate(zip(ref[key], got[key]), 1):
            tol = RTOL_STEP1 if step == 1 else RTOL[key]
            assert math.isclose(a, b, rel_tol=tol), f"step {step}: {key} {b} vs single-process {a}"
    assert [s for s, _ in got["val"]] == [s for s, _ in ref["val"]]
    for (step, a), (_, b) in zip(ref["val"], got["val"]):
        assert math.isclose(a, b, rel_tol=RTOL["loss"]), f"step {step}: val loss {b} vs single-process {a}"


def files(run: Path) -> set[str]:
    """The run folder's files, DCP shards (one file per rank, by design) left out."""
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and "dcp" not in p.parts}


def probe_logits(run: Path) -> torch.Tensor:
    from scratchlm.inference.loading import load_model

    model, cfg = load_model(run, device="cpu", dtype="float32")
    x = torch.randint(0, cfg.vocab_size, (2, 32), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model(x)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    cfg = _config(tmp)
    pretrain(cfg, tmp / "single")
    return tmp, cfg


def _check_against_single(tmp: Path, run: Path) -> None:
    single = tmp / "single"
    assert_same(trajectory(single), trajectory(run))
    # rank 0 alone writes: the same files as one process (no duplicates, no per-rank logs), plus the shards
    assert files(run) == files(single)
    assert (run / "checkpoints" / f"step_{STEPS:07d}" / "dcp" / ".metadata").exists()
    headings = re.findall(r"^=== step \d+$", (run / "logs" / "samples.txt").read_text(), flags=re.M)
    assert len(headings) == len(set(headings)) and headings[-1] == f"=== step {STEPS}", headings
    done = json.loads((run / "DONE").read_text())
    assert done["steps"] == STEPS
    # the final checkpoint is a plain model.safetensors that inference loads: same logits as one process's
    torch.testing.assert_close(probe_logits(run), probe_logits(single), rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_ddp_matches_single_process(runs):
    tmp, cfg = runs
    pretrain(cfg, tmp / "ddp", "parallel.dp=2", nproc=2)
    _check_against_single(tmp, tmp / "ddp")


def test_fsdp_matches_single_process_and_resumes(runs):
    """FSDP2 over 2 ranks, stopped after 4 steps and resumed from its sharded checkpoint to 8: the same
    trajectory as one uninterrupted process."""
    tmp, cfg = runs
    run = tmp / "fsdp"
    pretrain(cfg, run, "parallel.fsdp=2", "train.max_steps=4", nproc=2)
    assert json.loads((run / "DONE").read_text())["steps"] == 4
    pretrain(cfg, run, "parallel.fsdp=2", f"train.max_steps={STEPS}", nproc=2, resume=True)
    _check_against_single(tmp, run)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["parallel.tp=2", "parallel.pp=2"])
def test_tp_and_pp_match_single_process(runs, layout):
    """Tensor parallel (vocab-sharded head, heads split) and a 2-stage 1F1B pipeline (evaluation and samples
    through the stages) through the same CLI."""
    tmp, cfg = runs
    run = tmp / layout.replace("parallel.", "").replace("=", "")
    pretrain(cfg, run, layout, nproc=2)
    _check_against_single(tmp, run)


@pytest.mark.slow
def test_fsdp_checkpoint_resumes_in_one_process(runs):
    """A checkpoint written by 2 FSDP ranks continues in a single process (DCP reshards on load)."""
    tmp, cfg = runs
    run = tmp / "fsdp_then_single"
    pretrain(cfg, run, "parallel.fsdp=2", "train.max_steps=4", nproc=2)
    pretrain(cfg, run, "parallel.fsdp=1", f"train.max_steps={STEPS}", resume=True)
    assert_same(trajectory(tmp / "single"), trajectory(run))


def test_wrong_layout_fails_before_training(runs):
    tmp, cfg = runs
    proc = pretrain(cfg, tmp / "bad", "parallel.fsdp=3", nproc=2, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert errors == ["error: parallel degrees fsdp*tp*pp = 3*1*1 = 3 do not divide the world size 2; pick "
                      "degrees whose product divides it"], out[-2000:]
    # the workers exit with the CLI's code 2 (torchrun reports the first failure; it then exits with 1 itself)
    codes = set(re.findall(r"exitcode\s*:\s*(-?\d+)", out))
    assert "2" in codes and codes <= {"2", "-15"}, out[-2000:]  # -15: a rank torchrun stopped first
    assert not (tmp / "bad" / "metrics.jsonl").exists()
    # the same check without torchrun: one process, fsdp=2
    proc = pretrain(cfg, tmp / "bad1", "parallel.fsdp=2", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: parallel degrees"), proc.stderr


def test_random_windows_of_the_ranks_are_the_single_process_batch():
    """N loader ranks read exactly the rows one process reads (so DDP/FSDP train on the same global batch), and
    a loader position saved at one world size resumes at another."""
    import numpy as np

    from scratchlm.train.loader import TokenLoader

    tokens = np.arange(5000, dtype=np.uint16)
    one = TokenLoader(tokens, None, seq_len=8, rows=6, seed=1)
    ranks = [TokenLoader(tokens, None, seq_len=8, rows=3, seed=1, rank=k, world_size=2) for k in (0, 1)]
    for _ in range(3):
        assert torch.equal(one.next_batch()[0], torch.cat([r.next_batch()[0] for r in ranks]))
    again = TokenLoader(tokens, None, seq_len=8, rows=6, seed=1)
    again.load_state_dict(ranks[1].state_dict())
    assert torch.equal(again.next_batch()[0], one.next_batch()[0])


@pytest.mark.slow
def test_pp_x_tp_with_sequence_parallel_matches_single_process_and_resumes(runs):
    """Four processes as a 2-stage pipeline of 2-way tensor-parallel stages with sequence parallelism (the
    residual stream travels between stages as sequence shards), stopped at step 4 and resumed to 8."""
    tmp, cfg = runs
    run = tmp / "pp2_tp2_sp"
    layout = ("parallel.pp=2", "parallel.tp=2", "parallel.sequence_parallel=true")
    pretrain(cfg, run, *layout, "train.max_steps=4", nproc=4)
    pretrain(cfg, run, *layout, f"train.max_steps={STEPS}", nproc=4, resume=True)
    _check_against_single(tmp, run)
