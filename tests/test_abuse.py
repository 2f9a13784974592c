"""Issue 17, tried as an attacker and a clumsy operator would: what --overwrite may delete, what is unpickled,
damaged and crafted checkpoints, non-finite numbers, Ctrl-C / SIGTERM, a kill during pruning.

Each test is named for the point it guards; each failed on the code before the fix. The server's and the data
readers' cases live in tests/test_abuse_server.py and tests/test_abuse_data.py.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from scratchlm import runs
from scratchlm.cli.main import main
from scratchlm.train import Trainer, TrainingStopped
from scratchlm.train.checkpoint import clean_partial, load_checkpoint, load_train_state, save_checkpoint

from test_train import tiny_cfg

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args) -> int:
    return main([str(a) for a in args])


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ================================================================= 1. --overwrite deletes only what is ours

def test_overwrite_never_deletes_a_folder_scratchlm_did_not_create(tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "diary.txt").write_text("my notes")
    (tmp_path / "corpus.txt").write_text("the cat sat on the mat. " * 50)
    before = _tree(notes)
    assert _cli("tokenizer", "train", "--input", tmp_path / "corpus.txt", "--vocab-size", "300", "--out", notes,
                "--overwrite", "-q") == 2
    assert "was not created by scratchlm" in capsys.readouterr().err
    from scratchlm.config import save_config

    save_config(tiny_cfg(tmp_path / "cfg"), tmp_path / "cfg.toml")  # pretrain goes through the same check
    assert _cli("pretrain", "--config", tmp_path / "cfg.toml", "--out", notes, "--overwrite", "-q") == 2
    with pytest.raises(FileExistsError, match="not created by scratchlm"):
        runs.prepare_run_dir(notes, overwrite=True)
    with pytest.raises(FileExistsError, match="not created by scratchlm"):
        runs.prepare_run_dir(notes)  # nor written into: our files would mix with the user's
    assert _tree(notes) == before


def test_overwrite_refuses_the_current_folder_its_parents_and_home(tmp_path, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "home" / "project"
    work.mkdir(parents=True)
    for folder in (home, work):  # even a folder that looks like ours
        runs.atomic_write_json(folder / runs.OWNER_MARK, {"created_by": "scratchlm"})
        (folder / "keep.txt").write_text("x")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    for out in (".", "..", "~", str(work), "/"):
        with pytest.raises(ValueError, match="current folder|home folder"):
            runs.prepare_run_dir(out, overwrite=True)
        with pytest.raises(ValueError, match="current folder|home folder"):
            runs.remove_owned_dir(out)
    assert (work / "keep.txt").exists() and (home / "keep.txt").exists()


def test_empty_out_is_an_error(tmp_path, capsys):
    (tmp_path / "corpus.txt").write_text("the cat sat on the mat. " * 50)
    with pytest.raises(SystemExit) as e:
        _cli("tokenizer", "train", "--input", tmp_path / "corpus.txt", "--out", "")
    assert e.value.code == 2 and "--out: is empty" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--out is empty"):
        runs.prepare_run_dir("")


def test_overwrite_replaces_a_run_scratchlm_created_and_a_kill_mid_delete_leaves_no_half_run(tmp_path, monkeypatch):
    run = runs.prepare_run_dir(tmp_path / "run")
    (run / "logs" / "old.txt").write_text("old")
    runs.mark_done(run)
    with pytest.raises(FileExistsError, match="--overwrite"):
        runs.prepare_run_dir(run)
    # a kill in the middle of the delete: the run is already out of the way under a hidden name
    real_rmtree = runs.shutil.rmtree

    def killed(path, *a, **k):
        raise KeyboardInterrupt("killed while deleting")

    monkeypatch.setattr(runs.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        runs.prepare_run_dir(run, overwrite=True)
    monkeypatch.setattr(runs.shutil, "rmtree", real_rmtree)
    assert not run.exists() and [p.name for p in tmp_path.iterdir()][0].startswith(".deleting_run_")
    runs.prepare_run_dir(run, overwrite=True)  # and the next start finishes the delete
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert not (run / "logs" / "old.txt").exists() and runs.owned(run)


# ================================================================= 2. nothing a user receives is unpickled

class _Evil:
    """Unpickling this runs code: it writes the file named in PWNED."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))


def _tiny_run(tmp_path: Path, steps: int = 2, **train) -> Path:
    t = Trainer(tiny_cfg(tmp_path, max_steps=steps, ckpt_every=1, keep_last=5, **train), tmp_path / "run")
    t.fit()
    return tmp_path / "run"


def _plant(ckpt: Path, obj, manifest: bool = True) -> None:
    """Replace state.pt with `obj` pickled; re-sign the manifest (the checksum is not a signature: the unpickler
    itself must refuse)."""
    torch.save(obj, ckpt / "state.pt")
    if manifest:
        runs.write_manifest(ckpt)


def test_malicious_pickles_are_refused_on_every_loading_path(tmp_path, capsys):
    pwned = tmp_path / "pwned"
    run = _tiny_run(tmp_path)
    ckpt = runs.latest_checkpoint(run)
    _plant(ckpt, {"step": 2, "optimizer": _Evil(pwned)})
    # the functions every stage loads state.pt with
    with pytest.raises(ValueError, match="never unpickles"):
        load_train_state(ckpt)
    with pytest.raises(ValueError, match="never unpickles"):
        load_checkpoint(ckpt, Trainer(tiny_cfg(tmp_path), tmp_path / "other").model)
    # `scratchlm pretrain --resume`: one line, exit 2
    from scratchlm.config import save_config

    save_config(tiny_cfg(tmp_path, max_steps=4), tmp_path / "cfg.toml")
    assert _cli("pretrain", "--config", tmp_path / "cfg.toml", "--out", run, "--resume", "-q") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "never unpickles" in err, err
    # a reward model handed to RL: its score head comes from state.pt
    from scratchlm.posttrain.reward import load_reward_model

    with pytest.raises(ValueError, match="never unpickles"):
        load_reward_model(run)
    # a sharded (torchrun) checkpoint: DCP's index is a pickle, and so are its non-tensor values
    from scratchlm.distributed.checkpoint import _safe_planner, load_dcp, save_dcp

    model = Trainer(tiny_cfg(tmp_path), tmp_path / "third").model
    save_dcp(tmp_path / "dcp", model)
    load_dcp(tmp_path / "dcp", model, no_dist=True)  # our own index loads
    with open(tmp_path / "dcp" / ".metadata", "wb") as f:
        pickle.dump(_Evil(pwned), f)
    with pytest.raises(ValueError, match="never unpickled freely"):
        load_dcp(tmp_path / "dcp", model, no_dist=True)
    import io

    buf = io.BytesIO()
    torch.save(_Evil(pwned), buf)
    buf.seek(0)
    with pytest.raises(pickle.UnpicklingError):
        _safe_planner().load_bytes(None, buf)
    assert not pwned.exists()  # nothing ran, anywhere


def test_no_unpickling_load_is_left_in_the_package():
    # every torch.load passes weights_only=True; pickle.load only through the allowlisting unpickler
    offenders = []
    for path in (ROOT / "scratchlm").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"torch\.load\(([^()]|\([^()]*\))*\)", text):
            if "weights_only=True" not in m.group(0):
                offenders.append(f"{path.name}: {m.group(0)[:80]}")
        if re.search(r"pickle\.loads?\(", text):
            offenders.append(f"{path.name}: pickle.load")
    assert not offenders, offenders


# ================================================================= 3. non-finite numbers (training side)

@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1e999"])
def test_nonfinite_config_values_are_refused(tmp_path, capsys, value):
    from scratchlm.config import save_config

    save_config(tiny_cfg(tmp_path), tmp_path / "cfg.toml")
    assert _cli("pretrain", "--config", tmp_path / "cfg.toml", "--out", tmp_path / "run", "--set",
                f"train.lr={value}", "-q") == 2
    assert "not a finite number" in capsys.readouterr().err
    toml = (tmp_path / "cfg.toml").read_text().replace("lr = 0.003", f"lr = {value if value != '1e999' else 'inf'}")
    (tmp_path / "bad.toml").write_text(toml)
    assert _cli("pretrain", "--config", tmp_path / "bad.toml", "--out", tmp_path / "run", "-q") == 2
    assert not (tmp_path / "run").exists()


def test_nonfinite_command_line_floats_are_refused(capsys):
    assert _cli("plan", "--params", "nan", "--tokens", "1e9") == 2
    assert "--params nan is not a finite number" in capsys.readouterr().err


def test_weights_that_become_nonfinite_exit_nonzero_and_keep_the_last_finite_checkpoint(tmp_path, capsys):
    t = Trainer(tiny_cfg(tmp_path, max_steps=6, ckpt_every=2, keep_last=1), tmp_path / "run")
    x, y = t.loader.next_batch()
    for _ in range(2):
        t.train_step(x, y)
    good = t.save()
    with torch.no_grad():
        next(t.model.parameters()).view(-1)[0] = float("inf")  # what a huge learning rate does in one step
    with pytest.raises(TrainingStopped, match="non-finite .* the last finite checkpoint is .*step_0000002"):
        t.fit()
    assert [p.name for p in runs.list_checkpoints(tmp_path / "run")] == ["step_0000002"]
    _, state = runs.load_model_state(good)
    assert all(torch.isfinite(v).all() for v in state.values())
    assert not runs.is_done(tmp_path / "run")
    # through the CLI: an absurd (finite) learning rate ends with exit 1, not DONE and exit 0
    from scratchlm.config import save_config

    save_config(tiny_cfg(tmp_path, max_steps=8, ckpt_every=4), tmp_path / "cfg.toml")
    code = _cli("pretrain", "--config", tmp_path / "cfg.toml", "--out", tmp_path / "run2", "--set", "train.lr=1e36",
                "--set", "train.grad_clip=0", "--set", "train.warmup_steps=0", "-q")
    assert code == 1 and "non-finite" in capsys.readouterr().err
    assert not runs.is_done(tmp_path / "run2")
    for ckpt in runs.list_checkpoints(tmp_path / "run2"):
        assert all(torch.isfinite(v).all() for v in runs.load_model_state(ckpt)[1].values())


# ================================================================= 4-5. damaged checkpoints

def _flip(path: Path, at: float = 0.6) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i : i + 8] = bytes(b ^ 0xFF for b in data[i : i + 8])
    path.write_bytes(bytes(data))


def test_flipped_bytes_are_detected_and_resume_falls_back_to_a_checkpoint_that_verifies(tmp_path, caplog):
    run = _tiny_run(tmp_path, steps=3)
    newest = runs.latest_checkpoint(run)
    assert json.loads((newest / "manifest.json").read_text())["files"]["model.safetensors"]["sha256"]
    _flip(newest / "model.safetensors")  # inside the tensor data: still a valid safetensors file
    from scratchlm.inference.loading import load_model

    with pytest.raises(ValueError, match=r"step_0000003/model.safetensors is corrupt: its checksum"):
        load_model(newest)
    with caplog.at_level("WARNING", logger="scratchlm"):
        t = Trainer(tiny_cfg(tmp_path, max_steps=5, ckpt_every=1, keep_last=5), run, resume=True)
    assert t.resumed_from == "step_0000002" and t.step == 2
    assert "skipping step_0000003" in caplog.text and "newest checkpoint that verifies" in caplog.text
    # every checkpoint damaged: a one-line error, no training on garbage
    for ckpt in runs.list_checkpoints(run):
        _flip(ckpt / "state.pt", 0.5)
    with pytest.raises(ValueError, match="no checkpoint in .* verifies"):
        Trainer(tiny_cfg(tmp_path, max_steps=5), run, resume=True)


def test_corrupt_state_pt_is_a_one_line_error(tmp_path, capsys):
    run = _tiny_run(tmp_path)
    ckpt = runs.latest_checkpoint(run)
    (ckpt / "state.pt").write_bytes(b"\x80\x02garbage that is not a zip archive")
    runs.write_manifest(ckpt)  # consistent with its manifest: the loader itself must say it is corrupt
    with pytest.raises(ValueError, match=r"state.pt is corrupt"):
        load_train_state(ckpt)
    from scratchlm.config import save_config

    save_config(tiny_cfg(tmp_path, max_steps=4), tmp_path / "cfg.toml")
    for ckpt in runs.list_checkpoints(run):
        (ckpt / "state.pt").write_bytes(b"PK\x03\x04 truncated")
        runs.write_manifest(ckpt)
    assert _cli("pretrain", "--config", tmp_path / "cfg.toml", "--out", run, "--resume", "-q") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "state.pt is corrupt" in err, err


# ================================================================= 7. a kill during pruning

def test_kill_during_prune_leaves_no_half_deleted_checkpoint(tmp_path, monkeypatch):
    t = Trainer(tiny_cfg(tmp_path, keep_last=1), tmp_path / "run")
    x, y = t.loader.next_batch()
    t.train_step(x, y)
    t.save()
    t.train_step(x, y)
    import scratchlm.train.checkpoint as ckpt_mod

    real_rmtree = ckpt_mod.shutil.rmtree

    def dies_midway(path, *a, **k):  # deletes one file of the folder, then the process is killed
        files = sorted(p for p in Path(path).iterdir() if p.is_file())
        files[-1].unlink()
        raise KeyboardInterrupt("killed while pruning")

    monkeypatch.setattr(ckpt_mod.shutil, "rmtree", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        t.save()  # writes step 2, then prunes step 1
    monkeypatch.setattr(ckpt_mod.shutil, "rmtree", real_rmtree)
    for ckpt in runs.list_checkpoints(tmp_path / "run"):  # whatever is listed is whole
        assert runs.verify_checkpoint(ckpt, require=True)
    assert [p.name for p in runs.list_checkpoints(tmp_path / "run")] == ["step_0000002"]
    clean_partial(tmp_path / "run")  # what every start runs: the half-deleted folder goes
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_0000002"]


# ================================================================= 6. Ctrl-C and SIGTERM

def _signal_config(tmp_path: Path, **train) -> Path:
    from scratchlm.config import save_config

    cfg = tiny_cfg(tmp_path, max_steps=100_000, ckpt_every=0, keep_last=2, **train)
    save_config(cfg, tmp_path / "cfg.toml")
    return tmp_path / "cfg.toml"


def _logged_steps(run: Path) -> int:
    return max((r["step"] for r in runs.read_jsonl(run / "metrics.jsonl") if "loss" in r), default=0)


def _start(cmd: list[str], run: Path, min_steps: int = 5) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _logged_steps(run) < min_steps:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.2)
    return proc


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_first_signal_saves_a_checkpoint_and_exits_with_the_resume_command(tmp_path, sig, code):
    cfg, run = _signal_config(tmp_path), tmp_path / "run"
    cmd = [sys.executable, "-m", "scratchlm", "pretrain", "--config", str(cfg), "--out", str(run), "-q"]
    proc = _start(cmd, run)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    steps = _logged_steps(run)
    ckpt = runs.latest_checkpoint(run)
    assert int(ckpt.name.split("_")[1]) == steps  # nothing lost: the checkpoint is the last step done
    assert runs.verify_checkpoint(ckpt, require=True) and not runs.is_done(run)
    assert "resume with: scratchlm pretrain" in err and "--resume" in err
    # the printed command continues the run
    resumed = subprocess.run([sys.executable, "-m", "scratchlm", "pretrain", "--config", str(cfg), "--out", str(run),
                              "-q", "--resume", "--set", f"train.max_steps={steps + 2}"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run / "DONE").read_text())["resumed_from"] == ckpt.name


SLOW_SAVE = textwrap.dedent("""
    import sys, time
    import scratchlm.train.loop as loop
    from scratchlm.cli.main import main
    original = loop.Trainer.save
    def slow_save(self, meta=None):
        if meta and meta.get("interrupted"):
            sys.stderr.write("SAVING\\n"); sys.stderr.flush()
            time.sleep(30)  # long enough for the second signal to land mid-save
        return original(self, meta)
    loop.Trainer.save = slow_save
    sys.exit(main(sys.argv[1:]))
""")


def test_second_signal_aborts_at_once(tmp_path):
    cfg, run = _signal_config(tmp_path), tmp_path / "run"
    (tmp_path / "child.py").write_text(SLOW_SAVE)
    proc = _start([sys.executable, str(tmp_path / "child.py"), "pretrain", "--config", str(cfg), "--out", str(run),
                   "-q"], run)
    proc.send_signal(signal.SIGINT)
    line = ""
    while "SAVING" not in line:
        line = proc.stderr.readline()
        assert line, "the child ended without starting to save"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=20)
    assert proc.returncode == -signal.SIGINT and time.monotonic() - t0 < 10
    assert runs.list_checkpoints(run) == []  # the save it cut short left no checkpoint under a real name


def test_sigterm_in_post_training_saves_and_resumes(tmp_path):
    from test_posttrain_distributed import COMMON, _base

    base, data = _base(tmp_path)
    out = tmp_path / "sft"
    cmd = [sys.executable, "-m", "scratchlm", "sft", "--base", str(base), "--data", str(data), "--out", str(out), "-q"]
    sets = [s for s in COMMON if not s.startswith("train.max_steps")] + ["train.max_steps=100000",
                                                                       "train.eval_every=0", "train.ckpt_every=0"]
    cmd += [a for s in sets for a in ("--set", s)]
    proc = _start(cmd, out, min_steps=3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    steps = _logged_steps(out)
    ckpt = runs.latest_checkpoint(out)
    assert int(ckpt.name.split("_")[1]) >= steps - 1 and "resume with: scratchlm sft" in err
    resumed = subprocess.run(cmd + ["--resume", "--set", f"train.max_steps={int(ckpt.name.split('_')[1]) + 2}"],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((out / "DONE").read_text())["resumed_from"] == ckpt.name


@pytest.mark.distributed
def test_sigterm_under_torchrun_checkpoints_every_rank_at_the_same_step(tmp_path):
    cfg, run = _signal_config(tmp_path), tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "scratchlm",
           "pretrain", "--config", str(cfg), "--out", str(run), "-q", "--set", "parallel.fsdp=2"]
    proc = _start(cmd, run, min_steps=3)
    proc.send_signal(signal.SIGTERM)  # torchrun forwards it to each worker
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    ckpt = runs.latest_checkpoint(run)
    assert int(ckpt.name.split("_")[1]) >= _logged_steps(run)  # the step every rank stopped at, saved whole
    assert runs.verify_checkpoint(ckpt, require=True) and (ckpt / "dcp" / ".metadata").exists()
    assert f"SIGTERM: stopped after step {int(ckpt.name.split('_')[1])}; checkpoint saved" in err, err[-2000:]
    assert "run the same torchrun command again with --resume" in err


def test_one_commands_folder_is_never_another_commands_output(tmp_path, capsys):
    """`data synth --out d` then `pretrain --input d/train.txt --out d --overwrite` deleted d, the text it was about
    to read, and failed; without --overwrite it mixed a run into the corpus folder. Both are refused now."""
    data = tmp_path / "d"
    assert _cli("data", "synth", "--out", data, "--size", "60KB", "-q") == 0
    before = _tree(data)
    for extra in ((), ("--overwrite",)):
        assert _cli("pretrain", "--input", data / "train.txt", "--out", data, "--time", "5s", "-q", *extra) == 2
        assert "holds the output of `scratchlm data synth`, not of `scratchlm pretrain`" in capsys.readouterr().err
    assert _tree(data) == before
    # the same check for any two kinds, and a folder without a recorded kind (older scratchlm) is still accepted
    run = runs.prepare_run_dir(tmp_path / "run", kind="pretrain")
    with pytest.raises(FileExistsError, match="output of `scratchlm pretrain`, not of `scratchlm sft`"):
        runs.prepare_run_dir(run, overwrite=True, kind="sft")
    assert runs.folder_kind(run) == "pretrain" and (run / "checkpoints").is_dir()
    assert _cli("data", "prepare", "--input", data / "train.txt", "--out", run) == 2  # the data commands too
    assert "holds the output of `scratchlm pretrain`" in capsys.readouterr().err
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    runs.atomic_write_json(legacy / runs.OWNER_MARK, {"created_by": "scratchlm"})
    (legacy / "x.txt").write_text("x")
    runs.prepare_run_dir(legacy, kind="sft")


def test_overwrite_refuses_to_delete_a_folder_holding_the_commands_own_input(tmp_path):
    run = runs.prepare_run_dir(tmp_path / "sft", kind="sft")
    (run / "data.jsonl").write_text("{}\n")
    runs.mark_done(run)
    for inputs in ([run], [run / "data.jsonl"], [str(run / "*.jsonl")]):
        with pytest.raises(ValueError, match="inside --out .* which --overwrite would delete before reading it"):
            runs.prepare_run_dir(run, overwrite=True, kind="sft", inputs=inputs)
    assert (run / "data.jsonl").exists() and runs.is_done(run)
    runs.prepare_run_dir(run, overwrite=True, kind="sft", inputs=[tmp_path / "elsewhere.jsonl"])  # unrelated: fine
    assert not (run / "data.jsonl").exists()
