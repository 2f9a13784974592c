"""Run folders and atomic writes: a crash mid-write never leaves a torn file."""

from __future__ import annotations

import json

import pytest
import torch

from scratchlm import runs


def test_atomic_write_failure_keeps_old_file(tmp_path):
    p = tmp_path / "x.json"
    runs.atomic_write_json(p, {"v": 1})

    def boom(tmp):
        with open(tmp, "w") as f:
            f.write('{"v": 2, "trunc')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        runs.atomic_write(p, boom)
    assert json.loads(p.read_text()) == {"v": 1}
    assert [q.name for q in tmp_path.iterdir()] == ["x.json"]  # no temp file left behind


def test_prepare_run_dir_refuses_finished_run(tmp_path):
    run = runs.prepare_run_dir(tmp_path / "r")
    for sub in runs.RUN_SUBDIRS:
        assert (run / sub).is_dir()
    runs.mark_done(run)
    with pytest.raises(FileExistsError, match="--overwrite"):
        runs.prepare_run_dir(run)
    runs.prepare_run_dir(run, overwrite=True)
    assert not runs.is_done(run)


def test_jsonl_tolerates_torn_last_line(tmp_path):
    p = tmp_path / "m.jsonl"
    runs.append_jsonl(p, {"step": 1})
    runs.append_jsonl(p, {"step": 2})
    with open(p, "a") as f:
        f.write('{"step": 3, "lo')
    assert [r["step"] for r in runs.read_jsonl(p)] == [1, 2]


class Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)
        self.head = torch.nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight


def test_save_load_model_with_tied_weights(tmp_path):
    m = Tied()
    ck = runs.save_model(runs.checkpoint_dir(tmp_path, 5), m, {"d": 4})
    assert runs.latest_checkpoint(tmp_path) == ck
    cfg, state = runs.load_model_state(ck)
    assert cfg == {"d": 4} and len(state) == 1
    m2 = Tied()
    runs.load_state_into(m2, state)
    assert torch.equal(m2.head.weight, m.emb.weight) and m2.head.weight is m2.emb.weight


def test_corrupt_checkpoint_is_clear_error(tmp_path):
    ck = runs.save_model(runs.checkpoint_dir(tmp_path, 1), Tied(), {})
    (ck / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="corrupt"):
        runs.load_model_state(ck)


def test_latest_and_best(tmp_path):
    for s in (1, 20, 3):
        runs.save_model(runs.checkpoint_dir(tmp_path, s), Tied(), {})
    (tmp_path / "checkpoints" / "step_0000040").mkdir()  # unfinished: no weights
    assert runs.latest_checkpoint(tmp_path).name == "step_0000020"
    runs.atomic_write_json(tmp_path / "checkpoints" / "best.json", {"checkpoint": "step_0000003"})
    assert runs.best_checkpoint(tmp_path).name == "step_0000003"
    assert runs.resolve_checkpoint(tmp_path).name == "step_0000003"
    with pytest.raises(FileNotFoundError, match="train this run first"):
        runs.latest_checkpoint(tmp_path / "nothing")
