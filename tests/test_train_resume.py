"""Crash safety: SIGKILL mid-run then --resume repeats the uninterrupted run bit for bit; a save killed halfway
leaves the previous checkpoint intact and loadable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from scratchlm.runs import latest_checkpoint, list_checkpoints, load_model_state, read_jsonl
from scratchlm.train import Trainer
from scratchlm.train.checkpoint import clean_partial

from test_train import tiny_cfg

ROOT = Path(__file__).resolve().parents[1]

# The child process trains; with KILL_AT set it SIGKILLs itself in the middle of that step (after the forward and
# backward, before the optimizer update): the harshest moment, with no chance to clean up or flush anything.
CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from scratchlm.train import Trainer, load_pretrain_config
    import scratchlm.train.loop as loop

    kill_at = int(os.environ.get("KILL_AT", "0"))
    original = loop.Trainer.accumulate_gradients
    def accumulate(self, x, y):
        loss = original(self, x, y)
        if kill_at and self.step + 1 == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return loss
    loop.Trainer.accumulate_gradients = accumulate
    cfg = load_pretrain_config(sys.argv[1])
    Trainer(cfg, sys.argv[2], resume=sys.argv[3] == "resume").fit()
""")


def _run(script, config, run_dir, mode, kill_at=0):
    env = {**os.environ, "KILL_AT": str(kill_at), "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.run([sys.executable, str(script), str(config), str(run_dir), mode], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    from scratchlm.config import save_config

    cfg = tiny_cfg(tmp_path, max_steps=9, ckpt_every=3, eval_every=4, keep_last=2)
    cfg.model.dropout = 0.1  # dropout draws from the torch RNG: exercises RNG-state restore too
    config = tmp_path / "cfg.toml"
    save_config(cfg, config)
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(ROOT / "tests")))

    ref = _run(script, config, tmp_path / "ref", "new")
    assert ref.returncode == 0, ref.stderr[-2000:]

    killed = _run(script, config, tmp_path / "run", "new", kill_at=8)
    assert killed.returncode == -signal.SIGKILL
    assert latest_checkpoint(tmp_path / "run").name == "step_0000006"
    assert not (tmp_path / "run" / "DONE").exists()
    resumed = _run(script, config, tmp_path / "run", "resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    ref_rows = read_jsonl(tmp_path / "ref" / "metrics.jsonl")
    run_rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in run_rows] == [r["step"] for r in ref_rows]  # lost rows re-logged, none twice
    for a, b in zip(ref_rows, run_rows):
        for key in ("loss", "grad_norm", "lr", "val_loss", "val_bpb"):
            assert a.get(key) == b.get(key), (a["step"], key)  # bitwise: floats round-trip through JSON
    _, w_ref = load_model_state(tmp_path / "ref" / "checkpoints" / "step_0000009")
    _, w_run = load_model_state(tmp_path / "run" / "checkpoints" / "step_0000009")
    assert all(torch.equal(w_ref[k], w_run[k]) for k in w_ref)


def test_kill_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(tiny_cfg(tmp_path), tmp_path / "run")
    x, y = trainer.loader.next_batch()
    trainer.train_step(x, y)
    good = trainer.save()
    _, good_weights = load_model_state(good)
    trainer.train_step(x, y)

    import scratchlm.train.checkpoint as ckpt_mod

    def dies_midway(obj, path, *a, **k):
        Path(path).write_bytes(b"half a state file")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(ckpt_mod.torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        trainer.save()
    monkeypatch.undo()
    # no step_0000002 (complete or not), the previous checkpoint is the latest and loads completely
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_0000001"]
    _, weights = load_model_state(latest_checkpoint(tmp_path / "run"))
    assert all(torch.equal(weights[k], good_weights[k]) for k in good_weights)
    assert torch.load(good / "state.pt", weights_only=False)["step"] == 1
    # a SIGKILL cannot run the cleanup: its leftover temp folder is removed on the next start
    (tmp_path / "run" / "checkpoints" / ".tmp_step_0000002").mkdir()
    clean_partial(tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints" / ".tmp_step_0000002").exists()
    resumed = Trainer(tiny_cfg(tmp_path), tmp_path / "run", resume=True)
    assert resumed.step == 1 and resumed.resumed_from == "step_0000001"


def test_keep_last_and_best_are_kept(tmp_path):
    trainer = Trainer(tiny_cfg(tmp_path, keep_last=2), tmp_path / "run")
    from scratchlm.train.checkpoint import mark_best

    x, y = trainer.loader.next_batch()
    for i in range(5):
        trainer.train_step(x, y)
        path = trainer.save()
        if i == 1:
            mark_best(tmp_path / "run", path, 1.0)
    names = [p.name for p in list_checkpoints(tmp_path / "run")]
    assert names == ["step_0000002", "step_0000004", "step_0000005"]
