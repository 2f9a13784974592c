"""`scratchlm tokenizer train|encode|decode|stats` end to end, in-process."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from scratchlm.cli.main import main
from scratchlm.tokenizer import load_tokenizer

import random

_rng = random.Random(0)
TEXT = ("It was the best of times, it was the worst of times. Ünïcödé and 🎉 too.\r\n" * 40
        + "The cat sat on the mat. 12345 + 678 = 13023\n" * 40
        + " ".join("".join(_rng.choice("etaoinshrdlu") for _ in range(_rng.randint(1, 8))) for _ in range(3000)))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "a.txt").write_text(TEXT, encoding="utf-8")
    (d / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXT.splitlines()), encoding="utf-8")
    assert main(["tokenizer", "train", "--input", str(d / "a.txt"), str(d / "b.jsonl"), "--vocab-size", "400",
                 "--out", str(d / "run"), "-q"]) == 0
    return d


def _stdin(monkeypatch, data: bytes):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def test_train_writes_run_folder(run_dir):
    run = run_dir / "run"
    assert (run / "DONE").exists() and (run / "config.toml").exists()
    tok = load_tokenizer(run)  # a run folder works as well as its tokenizer/ subfolder
    assert tok.vocab_size == 400 and load_tokenizer(run / "tokenizer").merges == tok.merges


def test_train_refuses_finished_run_and_bad_input(run_dir, capsys):
    args = ["tokenizer", "train", "--input", str(run_dir / "a.txt"), "--vocab-size", "300", "--out",
            str(run_dir / "run"), "-q"]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["tokenizer", "train", "--input", str(run_dir / "nope.txt"), "--out", str(run_dir / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["tokenizer", "train", "--input", str(run_dir / "a.txt"), "--vocab-size", "10", "--out",
                 str(run_dir / "y")]) == 2
    assert "vocab_size" in capsys.readouterr().err


def test_encode_decode_round_trip(run_dir, monkeypatch, capsysbinary):
    tok = load_tokenizer(run_dir / "run")
    text = "Hello wörld 🎉\r\n<|endoftext|>\n"
    _stdin(monkeypatch, text.encode("utf-8"))
    assert main(["tokenizer", "encode", "-t", str(run_dir / "run")]) == 0
    out = capsysbinary.readouterr().out.decode()
    ids = [int(x) for x in out.split()]
    assert ids == tok.encode(text) and tok.eos_id not in ids
    _stdin(monkeypatch, out.encode())
    assert main(["tokenizer", "decode", "-t", str(run_dir / "run")]) == 0
    assert capsysbinary.readouterr().out == text.encode("utf-8")

    assert main(["tokenizer", "encode", "-t", str(run_dir / "run"), "--text", text, "--json", "--allow-special"]) == 0
    ids = json.loads(capsysbinary.readouterr().out)
    assert tok.eos_id in ids
    assert main(["tokenizer", "decode", "-t", str(run_dir / "run"), "--json", "--ids", json.dumps(ids)]) == 0
    assert capsysbinary.readouterr().out == text.encode("utf-8")


def test_decode_bad_ids(run_dir, capsys):
    assert main(["tokenizer", "decode", "-t", str(run_dir / "run"), "--ids", "1 two"]) == 2
    assert "could not parse" in capsys.readouterr().err
    assert main(["tokenizer", "decode", "-t", str(run_dir / "run"), "--ids", "72 99999", "--strict"]) == 2
    assert "outside" in capsys.readouterr().err


def test_stats(run_dir, capsys):
    assert main(["tokenizer", "stats", "-t", str(run_dir / "run"), "-i", str(run_dir / "a.txt"), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    tok = load_tokenizer(run_dir / "run")
    assert st["tokens"] == len(tok.encode(TEXT))
    assert st["bytes_per_token"] == pytest.approx(len(TEXT.encode()) / st["tokens"])
    assert 0 < st["vocab_used"] <= 400 and len(st["longest"]) == 15
    assert main(["tokenizer", "stats", "-t", str(run_dir / "run"), "-i", str(run_dir / "a.txt")]) == 0
    assert "bytes/token" in capsys.readouterr().out


def test_char_tokenizer_cli(run_dir):
    assert main(["tokenizer", "train", "--char", "--input", str(run_dir / "a.txt"), "--out",
                 str(run_dir / "char"), "-q"]) == 0
    tok = load_tokenizer(run_dir / "char")
    assert tok.vocab_size == len(set(TEXT)) and tok.decode(tok.encode(TEXT)) == TEXT


def test_help_has_examples_and_cli_stays_light():
    for sub in ("train", "encode", "decode", "stats"):
        r = subprocess.run([sys.executable, "-m", "scratchlm.cli.main", "tokenizer", sub, "--help"],
                           capture_output=True, text=True)
        assert r.returncode == 0 and "examples:" in r.stdout and "scratchlm tokenizer" in r.stdout
    code = ("import sys; from scratchlm.cli import main; p = main.build_parser(); "
            "import scratchlm.tokenizer; print(sorted(m for m in ('torch', 'transformers', 'tokenizers', 'numpy') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
