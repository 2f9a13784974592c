"""`torchrun ... -m scratchlm sft` is the same fine-tuning as one process: DDP and FSDP2 through the real CLI.

A random llama-tiny base with a small BPE tokenizer is fine-tuned on 48 synthetic chats, fp32, one thread per
process, sft.grad_accum = 4 micro-batches of 2 packed rows per step: one process runs all 4, each of two
ranks runs 2 (no-sync accumulation), with the loss divided by the target tokens of all 4 (all-reduced).

Tolerance: the same float32 sums in another order (~1e-7 relative per operation); AdamW amplifies rounding in
near-zero gradients over steps (train.eps = 1e-5 damps it; see tests/test_train_distributed.py). Step 1 to
1e-6, later steps to 1e-4. A real bug is far larger: a per-rank normaliser or a dropped micro-batch moves
step 1's loss by ~1e-2, a gradient mean instead of a sum halves the update.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scratchlm.runs import read_jsonl

pytestmark = pytest.mark.distributed
ROOT = Path(__file__).resolve().parents[1]
STEPS = 4


def _base(tmp: Path) -> tuple[Path, Path]:
    from scratchlm.model import ModelConfig, Transformer
    from scratchlm.runs import checkpoint_dir, save_model
    from scratchlm.tokenizer import train_bpe_from_texts

    chats = [{"instruction": f"What is {a} plus {b}?", "input": "", "output": f"{a} plus {b} is {a + b}."}
             for a in range(8) for b in range(6)]
    tok = train_bpe_from_texts([c["instruction"] + " " + c["output"] for c in chats] * 4, vocab_size=300)
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_preset("llama-tiny", vocab_size=tok.vocab_size, max_seq_len=128))
    base = tmp / "base"
    tok.save(base / "tokenizer")
    save_model(checkpoint_dir(base, 1), model, model.config.to_dict())
    data = tmp / "chats.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in chats))
    return base, data


COMMON = ("train.micro_batch_size=2", "train.seq_len=64", f"train.max_steps={STEPS}", "train.eps=1e-5",
          "train.log_every=1", "train.eval_every=2", "train.device=\"cpu\"", "train.dtype=\"float32\"",
          "train.num_threads=1", "train.seed=3", "train.tensorboard=false", "train.progress=false", "max_val=8")


def run_stage(stage: str, base: Path, data: Path, out: Path, *sets: str, nproc: int = 1, resume: bool = False):
    """`scratchlm STAGE` in one process, or under torchrun with nproc processes (later --set values win)."""
    launcher = [sys.executable, "-m", "scratchlm"] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "scratchlm"]
    cmd = [*launcher, stage, "--base", str(base), "--data", str(data), "--out", str(out), "-q"]
    cmd += [a for s in (*COMMON, *sets) for a in ("--set", s)] + (["--resume"] if resume else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def sft(base: Path, data: Path, out: Path, *sets: str, nproc: int = 1, resume: bool = False):
    return run_stage("sft", base, data, out, "sft.grad_accum=4", "train.lr=3e-3", *sets, nproc=nproc, resume=resume)


def trajectory(run: Path) -> list[float]:
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1)), "metrics rows duplicated (not rank 0 alone?)"
    return [r["loss"] for r in rows]


def files(run: Path) -> set[str]:
    """The run folder's files, FSDP's per-rank optimizer shards (one file per rank, by design) left out."""
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and "optim_dcp" not in p.parts}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sftdist")
    base, data = _base(tmp)
    sft(base, data, tmp / "single")
    return tmp, base, data


@pytest.mark.parametrize("layout", ["parallel.dp=2", "parallel.fsdp=2"])
def test_sft_matches_single_process(runs, layout):
    from scratchlm.inference.loading import load_model

    tmp, base, data = runs
    run = tmp / layout.split(".")[1].replace("=", "")
    sft(base, data, run, layout, nproc=2)
    ref, got = trajectory(tmp / "single"), trajectory(run)
    for step, (a, b) in enumerate(zip(ref, got), 1):
        assert math.isclose(a, b, rel_tol=1e-6 if step == 1 else 1e-4), f"step {step}: loss {b} vs {a}"
    assert files(run) == files(tmp / "single")  # rank 0 alone writes: same files, no per-rank copies
    logits = []
    for r in (tmp / "single", run):
        model, cfg = load_model(r, device="cpu", dtype="float32")
        x = torch.randint(0, cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            logits.append(model(x))
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-3, atol=1e-3)


def test_sft_fsdp_resumes_from_its_sharded_optimizer_state(runs):
    """FSDP2 over 2 ranks stopped after 2 steps and resumed to 4 (weights and AdamW shards from the checkpoint's
    DCP folder): the trajectory of one uninterrupted process."""
    tmp, base, data = runs
    run = tmp / "fsdp_resume"
    sft(base, data, run, "parallel.fsdp=2", "train.max_steps=2", nproc=2)
    assert (run / "checkpoints" / "step_0000002" / "optim_dcp" / ".metadata").exists()
    sft(base, data, run, "parallel.fsdp=2", nproc=2, resume=True)
    ref, got = trajectory(tmp / "single"), trajectory(run)
    for step, (a, b) in enumerate(zip(ref, got), 1):
        assert math.isclose(a, b, rel_tol=1e-6 if step == 1 else 1e-4), f"step {step}: loss {b} vs {a}"
    assert json.loads((run / "DONE").read_text())["resumed_from"] == "step_0000002"


# ---------------------------------------------------------------------------------------------- DPO
def dpo(base: Path, data: Path, out: Path, *sets: str, nproc: int = 1):
    return run_stage("dpo", base, data, out, "dpo.grad_accum=4", "train.lr=1e-3", *sets, nproc=nproc)


@pytest.fixture(scope="module")
def prefs(runs):
    tmp, base, _ = runs
    pairs = [{"instruction": f"What is {a} plus {b}?", "input": "", "chosen": f"{a} plus {b} is {a + b}.",
              "rejected": f"{a} plus {b} is {a + b + 1 + (a * b) % 3}."} for a in range(8) for b in range(6)]
    data = tmp / "prefs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return tmp, base, data


def _rows(run: Path) -> list[dict]:
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1)), "metrics rows duplicated (not rank 0 alone?)"
    return rows


@pytest.mark.parametrize("variant", [("parallel.dp=2",), ("parallel.fsdp=2",),
                                     ("parallel.fsdp=2", "lora.rank=4", "dpo.reference=model")])
def test_dpo_matches_single_process(prefs, variant):
    """DPO over 2 ranks (DDP; FSDP2; FSDP2 with LoRA, whose live reference is the wrapped model with its
    adapters off): each rank runs 2 of the step's 4 micro-batches of pairs; the loss, the implicit rewards and
    the held-out preference accuracy are one process's."""
    tmp, base, data = prefs
    extra = tuple(v for v in variant if not v.startswith("parallel."))
    single = tmp / ("dpo_single_" + "_".join(extra).replace("=", "").replace(".", ""))
    if not single.exists():
        dpo(base, data, single, *extra)
    run = tmp / ("dpo_" + "_".join(variant).replace("=", "").replace(".", ""))
    dpo(base, data, run, *variant, nproc=2)
    ref, got = _rows(single), _rows(run)
    for step, (a, b) in enumerate(zip(ref, got), 1):
        for key in ("loss", "rewards/chosen", "rewards/margins", "rewards/accuracies"):
            tol = 1e-6 if step == 1 else 1e-4
            assert math.isclose(a[key], b[key], rel_tol=tol, abs_tol=1e-6), f"step {step}: {key} {b[key]} vs {a[key]}"
    assert ref[-1]["loss"] != ref[0]["loss"]  # it trained
    d_ref, d_got = (json.loads((r / "DONE").read_text()) for r in (single, run))
    assert d_got["pref_acc_after"] == d_ref["pref_acc_after"]
    assert math.isclose(d_got["val_loss_after"], d_ref["val_loss_after"], rel_tol=1e-4)


# ---------------------------------------------------------------------------------------------- GRPO
RL_SETS = ("task=tinyworld", "grpo.prompts_per_step=4", "grpo.group_size=8", "grpo.max_new_tokens=4",
           "grpo.eval_tasks=40", "grpo.minibatches=2", "grpo.clip_eps=0.02", "grpo.kl_coef=0.04", "train.max_steps=4", "train.lr=1e-3",
           "train.eps=1e-5", "train.log_every=1", "train.eval_every=2", "train.device=\"cpu\"",
           "train.dtype=\"float32\"", "train.num_threads=1", "train.seed=3", "train.tensorboard=false",
           "train.progress=false")


def rl(base: Path, data: Path, out: Path, *sets: str, nproc: int = 1):
    launcher = [sys.executable, "-m", "scratchlm"] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "scratchlm"]
    cmd = [*launcher, "rl", "--base", str(base), "--data", str(data), "--out", str(out), "-q"]
    cmd += [a for s in (*RL_SETS, *sets) for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def rl_toy(tmp_path_factory):
    """test_grpo_learns's base (reads the number, greedily says 7) and its tasks: rewards that differ inside
    groups from the first step, so the advantages, the clip and the KL all carry weight."""
    from test_grpo_learns import build_base, split_prompts, write_tasks

    root = tmp_path_factory.mktemp("rldist")
    (root / "base").mkdir()
    build_base(root / "base")
    train, val = split_prompts()
    write_tasks(root / "tasks.jsonl", train)
    write_tasks(root / "tasks_val.jsonl", val)
    rl(root / "base", root / "tasks.jsonl", root / "rl_single")
    return root


@pytest.mark.parametrize("layout", ["parallel.dp=2", "parallel.fsdp=2"])
def test_grpo_matches_single_process(rl_toy, layout):
    """GRPO over 2 ranks: each rolls out 2 of the step's 4 prompts (1 of each minibatch's 2), with the seeds one
    process uses for them, so the replies, rewards and advantages are the same; the loss is divided by the
    reply tokens of both ranks. Two optimizer steps per rollout (grpo.minibatches=2) make the second one
    off-policy, so the pi_old forward and (clip_eps 0.02) the clip are in play; kl_coef > 0 brings the reference
    in."""
    from scratchlm.inference.loading import load_model

    run = rl_toy / ("rl_" + layout.split(".")[1].replace("=", ""))
    rl(rl_toy / "base", rl_toy / "tasks.jsonl", run, layout, nproc=2)
    single = rl_toy / "rl_single"
    rows = {r: [x for x in read_jsonl(r / "metrics.jsonl") if "reward" in x] for r in (single, run)}
    ref, got = rows[single], rows[run]
    assert [r["step"] for r in got] == [1, 2, 3, 4], "metrics rows duplicated (not rank 0 alone?)"
    assert 0 < ref[0]["reward"] < 1 and ref[0]["reward_zero_std"] < 1  # groups with something to teach
    for step, (a, b) in enumerate(zip(ref, got), 1):
        for key in ("reward", "reward_std", "accuracy", "closed", "reply_len"):  # the same replies
            assert a[key] == b[key], f"step {step}: {key} {b[key]} vs {a[key]}"
        for key in ("loss", "clip_frac", "kl"):
            tol = 1e-6 if step == 1 else 1e-4
            assert math.isclose(a[key], b[key], rel_tol=tol, abs_tol=1e-6), f"step {step}: {key} {b[key]} vs {a[key]}"
    assert any(r["clip_frac"] > 0 for r in ref) and any(r["kl"] > 0 for r in ref)
    val = {r: [(x["step"], x["val_correct"]) for x in read_jsonl(r / "metrics.jsonl") if "val_correct" in x]
           for r in (single, run)}
    assert val[run] == val[single] and [s for s, _ in val[run]] == [0, 2, 4]
    d_ref, d_got = (json.loads((r / "DONE").read_text()) for r in (single, run))
    assert (d_got["best_step"], d_got["val_accuracy_after"]) == (d_ref["best_step"], d_ref["val_accuracy_after"])
    logits = []
    for r in (single, run):
        model, cfg = load_model(r / "checkpoints" / "step_0000004", device="cpu", dtype="float32")
        x = torch.randint(0, cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            logits.append(model(x))
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-3, atol=1e-3)


def test_grpo_prompts_must_split_over_the_ranks(rl_toy):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "scratchlm"]
    cmd = [*launcher, "rl", "--base", str(rl_toy / "base"), "--data", str(rl_toy / "tasks.jsonl"),
           "--out", str(rl_toy / "rl_bad"), "-q"] + [a for s in (*RL_SETS, "parallel.dp=2") for a in ("--set", s)]
    cmd[cmd.index("grpo.prompts_per_step=4")] = "grpo.prompts_per_step=6"
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    assert "grpo.prompts_per_step = 6 is not a multiple of grpo.minibatches = 2 x 2 data-parallel ranks" in proc.stderr
    assert not (rl_toy / "rl_bad").exists()
