"""Weights & Biases logging (train/tracking.py through train/metrics.py's MetricsLogger): a tiny pretraining run and a
tiny SFT run with --wandb write an offline W&B run whose history holds metrics.jsonl's numbers; only rank 0 logs;
asking for W&B without wandb installed is a one-line error. No network: every run here is offline (no login)."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from scratchlm.cli.main import main
from scratchlm.runs import read_jsonl
from scratchlm.train import tracking
from scratchlm.train.metrics import MetricsLogger

try:
    import wandb  # noqa: F401

    HAS_WANDB = True
except ImportError:
    HAS_WANDB = False
needs_wandb = pytest.mark.skipif(not HAS_WANDB, reason="wandb not installed (pip install wandb)")

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n") * 40
PRETRAIN_TOML = """
[model]
d_model = 32
n_layers = 2
n_heads = 2
max_seq_len = 32
pad_vocab_multiple = 8
[data]
train_text = "{text}"
tokenizer = "char"
[train]
seq_len = 16
micro_batch_size = 4
max_steps = 5
warmup_steps = 1
eval_every = 2
sample_tokens = 0
log_every = 1
tensorboard = false
progress = false
device = "cpu"
dtype = "float32"
num_threads = 1
"""


@pytest.fixture
def no_login(tmp_path, monkeypatch):
    """No W&B login, no W&B mode from outside, wandb's own folders in tmp: "auto" must go offline, never prompt."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "RANK", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    for var, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return home


def leveldb_log_records(path: Path) -> list[bytes]:
    """The records of a .wandb file: LevelDB's log format (32 KiB blocks; each chunk a 7-byte header of checksum,
    length and type: 1 whole, 2 first, 3 middle, 4 last) after W&B's 7-byte file header. wandb ships no reader."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    pos, records, pending = 7, [], b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            pending = chunk
        elif kind in (3, 4):
            pending += chunk
        else:
            break  # zeros: the end of what was written
        if kind in (1, 4):
            records.append(pending)
    return records


def wandb_records(run_dir: Path) -> tuple[list[dict], dict]:
    """(history rows, config) of the one offline W&B run under run_dir/logs/wandb, read from its .wandb file."""
    from wandb.proto import wandb_internal_pb2

    files = list((run_dir / "logs" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    history, config = [], {}
    for data in leveldb_log_records(files[0]):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            history.append({it.key or "/".join(it.nested_key): json.loads(it.value_json) for it in rec.history.item})
        elif kind in ("run", "config"):
            items = rec.run.config.update if kind == "run" else rec.config.update
            config.update({it.key: json.loads(it.value_json) for it in items})
    return history, config


def assert_history_matches_metrics(run_dir: Path, key: str = "loss", name: str = "train/loss") -> None:
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if key in r]
    history, config = wandb_records(run_dir)
    logged = [(h["step"], h[name]) for h in history if name in h]
    assert len(rows) >= 3
    assert logged == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in rows]
    assert config["train"]["wandb_project"] == "scratchlm-test"  # the resolved config is wandb.config


# ------------------------------------------------------------------------------------------------- runs
@needs_wandb
def test_pretrain_offline_run_holds_the_metrics(tmp_path, no_login, caplog):
    (tmp_path / "input.txt").write_text(TEXT)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(PRETRAIN_TOML.format(text=tmp_path / "input.txt"))
    out = tmp_path / "run"
    caplog.set_level("INFO", logger="scratchlm")
    assert main(["pretrain", "--config", str(cfg), "--out", str(out), "--wandb", "scratchlm-test"]) == 0
    assert_history_matches_metrics(out)
    assert_history_matches_metrics(out, "val_loss", "val/loss")
    assert "wandb sync" in caplog.text and "no W&B login" in caplog.text  # where the offline run is, and why


@needs_wandb
def test_resume_continues_the_same_wandb_run(tmp_path, no_login):
    """--resume used to start a second W&B run; now the id kept in logs/ continues the first."""
    from wandb.proto import wandb_internal_pb2

    (tmp_path / "input.txt").write_text(TEXT)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(PRETRAIN_TOML.format(text=tmp_path / "input.txt"))
    out = tmp_path / "run"
    assert main(["pretrain", "--config", str(cfg), "--out", str(out), "--wandb", "scratchlm-test"]) == 0
    assert main(["pretrain", "--config", str(cfg), "--out", str(out), "--wandb", "scratchlm-test", "--resume",
                 "--set", "train.max_steps=8"]) == 0
    ids, steps = [], []
    for f in sorted((out / "logs" / "wandb").glob("offline-run-*/run-*.wandb")):
        for data in leveldb_log_records(f):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(data)
            if rec.WhichOneof("record_type") == "run":
                ids.append(rec.run.run_id)
            elif rec.WhichOneof("record_type") == "history":
                steps += [json.loads(it.value_json) for it in rec.history.item
                          if (it.key or "/".join(it.nested_key)) == "step"]
    assert len(ids) == 2 and ids[0] == ids[1] == (out / "logs" / "wandb_run_id").read_text().strip()
    assert max(steps) == 8
    # --overwrite starts over: a new scratchlm run, a new W&B run
    assert main(["pretrain", "--config", str(cfg), "--out", str(out), "--wandb", "scratchlm-test", "--overwrite"]) == 0
    assert (out / "logs" / "wandb_run_id").read_text().strip() != ids[0]


@needs_wandb
def test_sft_offline_run_holds_the_metrics(tmp_path, no_login):
    from test_posttrain_distributed import COMMON, _base

    base, data = _base(tmp_path)
    out = tmp_path / "sft"
    sets = [a for s in (*COMMON, "train.max_steps=4") for a in ("--set", s)]
    assert main(["sft", "--base", str(base), "--data", str(data), "--out", str(out), "-q", *sets,
                 "--wandb", "scratchlm-test"]) == 0
    assert_history_matches_metrics(out)


# ------------------------------------------------------------------------------------------------- errors
def test_missing_wandb_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError, as when not installed
    monkeypatch.delenv("RANK", raising=False)
    # the flag: refused while parsing, before any data or model is built
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--config", "configs/shakespeare_cpu.toml", "--out", str(tmp_path / "r"), "--wandb", "p"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "argument --wandb: wandb is not installed: pip install wandb" in err
    assert not (tmp_path / "r").exists()
    # the config key (TOML or --set): the metrics writer of every stage refuses it, never skips it silently
    (tmp_path / "config.toml").write_text('[train]\nwandb_project = "p"\n')
    with pytest.raises(ValueError, match=r"wandb is not installed: pip install wandb"):
        MetricsLogger(tmp_path, tensorboard=False)


def test_online_mode_without_a_login_is_an_error(no_login, monkeypatch):
    """wandb.init online without a key would prompt for one on a terminal and wait: it is an error instead."""
    with pytest.raises(ValueError, match="needs a W&B login"):
        tracking.choose_mode("online")
    assert tracking.choose_mode("auto")[0] == "offline"
    assert tracking.choose_mode("offline")[0] == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(ValueError, match="WANDB_MODE=online needs a W&B login"):
        tracking.choose_mode("auto")


def test_mode_from_the_environment_and_login(no_login, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.choose_mode("auto") == ("offline", "WANDB_MODE=offline")
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # logged in, but nothing answers: offline at once
    assert tracking.choose_mode("auto") == ("offline", "http://127.0.0.1:9 is not reachable")
    assert tracking.has_login()
    monkeypatch.delenv("WANDB_API_KEY")
    (no_login / ".netrc").write_text("machine 127.0.0.1 login user password " + "y" * 40 + "\n")
    (no_login / ".netrc").chmod(0o600)
    assert tracking.has_login()  # where `wandb login` keeps the key


# ------------------------------------------------------------------------------------------------- ranks
def test_only_rank_zero_logs(tmp_path, monkeypatch):
    assert tracking.is_rank_zero({}) and tracking.is_rank_zero({"RANK": "0"})
    assert not tracking.is_rank_zero({"RANK": "1"}) and not tracking.is_rank_zero({"RANK": "3"})
    config = {"train": {"wandb_project": "p", "wandb_mode": "offline"}}
    monkeypatch.setitem(sys.modules, "wandb", None)  # rank 1 must not even import wandb
    monkeypatch.setenv("RANK", "1")
    assert tracking.start_wandb(tmp_path, config) is None
    (tmp_path / "config.toml").write_text('[train]\nwandb_project = "p"\n')
    assert MetricsLogger(tmp_path, tensorboard=False).wandb is None
    monkeypatch.setenv("RANK", "0")  # the same call on rank 0 does try to start a run (here: wandb is missing)
    with pytest.raises(ValueError, match="pip install wandb"):
        tracking.start_wandb(tmp_path, config)
    assert tracking.start_wandb(tmp_path, {"train": {"wandb_project": ""}}) is None  # off by default
