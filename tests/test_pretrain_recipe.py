"""Issue 18.2: `scratchlm pretrain --data SHARDS --time/--tokens`: the model sized by the planner for the data and
the budget, printed before training, with --dry-run showing what will really be read."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

from scratchlm.cli.main import main
from scratchlm.plan.sizing import (LADDER, count_params, ladder_config, nearest_shape, parse_count, parse_duration,
                                   size_for_budget)
from scratchlm.train.recipe import learning_rate


def _cli(*args) -> int:
    return main([str(a) for a in args])


# ---------------------------------------------------------------------------------------------- arithmetic

def test_budget_strings_parse_and_bad_ones_are_refused():
    assert parse_count("50M") == 50e6 and parse_count("1.5B") == 1.5e9 and parse_count("2e5") == 2e5
    assert parse_duration("10m") == 600 and parse_duration("90s") == 90 and parse_duration("1.5h") == 5400
    assert parse_duration("600") == 600
    for bad in ("", "ten", "-5M", "nan", "inf", "0", "5 parsecs"):
        with pytest.raises(ValueError):
            parse_count(bad)
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_the_ladder_grows_and_every_rung_builds():
    sizes = [count_params(ladder_config(r, 8192, 256)) for r in LADDER]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert sizes[0] < 1e6 and sizes[-1] > 5e8


def test_a_token_budget_buys_a_model_of_one_twentieth_its_tokens():
    s = size_for_budget(8192, 256, data_tokens=10**9, tokens=200e6)  # plenty of data: 20 tokens per parameter
    assert s.limited_by == "tokens" and s.tokens == 200e6 and math.isclose(s.target_params, 10e6)
    assert s.model == nearest_shape(10e6, 8192, 256)
    assert abs(math.log(s.params / 10e6)) < math.log(1.8)  # the nearest rung is within a rung's step
    bigger = size_for_budget(8192, 256, data_tokens=10**9, tokens=2e9)
    assert bigger.params > s.params


def test_a_compute_budget_is_spent_compute_optimally_unless_the_data_runs_out():
    flops = 6 * 20 * (30e6) ** 2  # the compute-optimal run of a 30M model: 600M tokens
    s = size_for_budget(8192, 256, data_tokens=10**10, flops=flops)
    assert s.limited_by == "compute" and math.isclose(s.target_params, 30e6, rel_tol=1e-9)
    assert math.isclose(s.flops, flops, rel_tol=1e-9)  # the whole budget, at the chosen shape
    small_data = size_for_budget(8192, 256, data_tokens=50_000_000, flops=flops)
    assert small_data.limited_by == "data" and small_data.target_params > 30e6  # a bigger model, fewer tokens
    assert small_data.epochs <= 4.0 * 1.8  # about 4 passes (the rung rounds the model, the tokens follow)


# ---------------------------------------------------------------------------------------------- the CLI

@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("recipe")
    assert _cli("data", "synth", "--out", root / "tw", "--size", "400KB", "-q") == 0
    assert _cli("tokenizer", "train", "--input", root / "tw" / "train.txt", "--vocab-size", "400", "--out",
                root / "tok", "-q") == 0
    assert _cli("data", "tokenize", "--tokenizer", root / "tok" / "tokenizer", "--input", root / "tw" / "train.txt",
                "--text-split", "paragraph", "--out", root / "shards", "-q") == 0
    return root / "shards", root / "tok" / "tokenizer"


def _dry_run(capsys, *args) -> tuple[str, dict]:
    assert _cli("pretrain", *args, "--dry-run") == 0
    out = capsys.readouterr().out
    return out, tomllib.loads(out)  # the plan is TOML comments: the whole output is a config file


def test_dry_run_shows_what_is_read_and_the_sized_model(shards, capsys):
    data, tok = shards
    out, cfg = _dry_run(capsys, "--data", data, "--tokens", "300k")
    assert f"# data: shards {data.resolve()}" in out and f"# tokenizer: {tok.resolve()}" in out
    assert "# model:" in out and "# tokens: 0.3M" in out and "# steps: about" in out
    assert cfg["data"]["shards"] == str(data.resolve()) and "train_text" not in cfg["data"]
    assert cfg["train"]["max_tokens"] == 300_000 and cfg["model"]["vocab_size"] == 400
    expected = size_for_budget(400, 256, data_tokens=_train_tokens(data), tokens=300e3).model
    assert (cfg["model"]["d_model"], cfg["model"]["n_layers"]) == (expected.d_model, expected.n_layers)
    # --set still wins over the sizing
    _, cfg = _dry_run(capsys, "--data", data, "--tokens", "300k", "--set", "model.d_model=128",
                      "--set", "train.lr=1e-3")
    assert cfg["model"]["d_model"] == 128 and cfg["train"]["lr"] == 1e-3
    # ... and the plan printed says so: the model trained, with the planner's choice beside it, its learning rate
    out, cfg = _dry_run(capsys, "--data", data, "--tokens", "300k", "--set", "model.d_model=128",
                        "--set", "model.n_heads=4")
    line = next(x for x in out.splitlines() if x.startswith("# model:"))
    assert "d_model 128" in line and "as --set" in line and f"d_model {expected.d_model}," in line, line
    assert cfg["train"]["lr"] == learning_rate(128)


def _train_tokens(data: Path) -> int:
    from scratchlm.data.shards import read_manifest

    return read_manifest(data)["n_tokens"]["train"]


def test_a_time_budget_measures_this_machine(shards, capsys):
    data, _ = shards
    out, cfg = _dry_run(capsys, "--data", data, "--time", "20s", "--set", "train.num_threads=1")
    assert "tokens/s measured at this size on this machine" in out and cfg["train"]["max_time"] == 20.0


def test_a_config_keeps_its_model_and_the_flags_replace_its_data(shards, capsys, tmp_path):
    data, _ = shards
    (tmp_path / "c.toml").write_text('[model]\nd_model = 64\nn_layers = 2\nn_heads = 2\nmax_seq_len = 64\n'
                                     '[data]\ntrain_text = "nowhere.txt"\n[train]\nseq_len = 32\nmax_steps = 5\n')
    out, cfg = _dry_run(capsys, "--config", tmp_path / "c.toml", "--data", data, "--tokens", "1M")
    assert "train_text" not in cfg["data"] and "nowhere.txt" not in out  # it would not be read: not shown
    assert cfg["model"]["d_model"] == 64 and cfg["train"]["max_tokens"] == 1_000_000


def test_one_command_trains_and_resumes_without_flags(shards, tmp_path, capsys):
    data, _ = shards
    run = tmp_path / "run"
    assert _cli("pretrain", "--data", data, "--tokens", "40k", "--out", run, "-q", "--set", "train.num_threads=1",
                "--set", "train.micro_batch_size=4", "--set", "train.seq_len=64") == 0
    done = tomllib.loads((run / "config.toml").read_text())
    assert done["data"]["shards"] == str(data.resolve())
    import json

    summary = json.loads((run / "DONE").read_text())
    assert summary["tokens"] >= 40_000 and summary["stopped_by"] == "max_tokens"
    assert _cli("pretrain", "--out", run, "--resume", "--tokens", "60k", "-q") == 0  # extend: config from the run
    assert json.loads((run / "DONE").read_text())["tokens"] >= 60_000


@pytest.mark.parametrize("args, message", [
    (["--time", "1m", "--tokens", "5M"], "one budget"),
    (["--tokens", "5M"], "no data"),
    (["--tokens", "lots"], "is not a count"),
    (["--time=-3m"], "is not a duration"),
    (["--tokenizer", "x", "--tokens", "5M"], "--tokenizer goes with --data"),
])
def test_bad_flags_are_one_line_errors(args, message, capsys):
    assert _cli("pretrain", *args, "--dry-run") == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_no_budget_and_not_shards_are_errors(shards, tmp_path, capsys):
    data, _ = shards
    assert _cli("pretrain", "--data", data, "--dry-run") == 2
    assert "no budget" in capsys.readouterr().err
    assert _cli("pretrain", "--data", tmp_path, "--tokens", "1M", "--dry-run") == 2
    assert "not a complete token-shard folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- --input

@pytest.fixture(scope="module")
def own_text(tmp_path_factory) -> Path:
    """A folder of the user's own text: a book-like file and a Markdown note (built-in text, no download)."""
    from conftest import builtin_corpus

    root = tmp_path_factory.mktemp("own") / "texts"
    root.mkdir()
    (root / "stories.txt").write_text("\n\n".join(builtin_corpus(300_000)), encoding="utf-8")
    (root / "note.md").write_text("# Notes\n\nThe garden needs water every morning. " * 40, encoding="utf-8")
    return root


def test_input_dry_run_shows_the_inputs_and_prepares_nothing(own_text, tmp_path, capsys):
    run = tmp_path / "run"
    out, cfg = _dry_run(capsys, "--input", own_text, "--tokens", "100k", "--out", run)
    assert "# data: 2 input file(s)" in out and "# preset books" in out and "# estimated: ~" in out
    assert cfg["data"]["shards"] == str((run / "data").resolve()) and cfg["data"]["tokenizer"].endswith("tokenizer")
    assert not run.exists()  # a dry run writes nothing


def test_input_prepares_tokenizes_and_trains_in_the_run_folder(own_text, tmp_path):
    import json

    run = tmp_path / "run"
    small = ["-q", "--set", "train.num_threads=1", "--set", "train.micro_batch_size=4", "--set", "train.seq_len=64"]
    assert _cli("pretrain", "--input", own_text, "--tokens", "20k", "--out", run, *small) == 0
    report = json.loads((run / "data" / "prepared" / "report.json").read_text())
    assert report["docs_out"] > 0 and (run / "data" / "manifest.json").is_file()
    assert (run / "tokenizer" / "scratchlm_tokenizer.json").is_file()
    assert tomllib.loads((run / "config.toml").read_text())["data"]["shards"] == str((run / "data").resolve())
    assert json.loads((run / "DONE").read_text())["tokens"] >= 20_000
    # a finished run is not silently replaced; --resume extends it on the same corpus (not prepared again)
    assert _cli("pretrain", "--input", own_text, "--tokens", "20k", "--out", run, "-q") == 2
    stamp = (run / "data" / "manifest.json").stat().st_mtime_ns
    assert _cli("pretrain", "--input", own_text, "--tokens", "30k", "--out", run, "--resume", *small) == 0
    assert (run / "data" / "manifest.json").stat().st_mtime_ns == stamp
    assert json.loads((run / "DONE").read_text())["tokens"] >= 30_000


def test_data_and_input_together_are_refused(own_text, shards, capsys):
    data, _ = shards
    assert _cli("pretrain", "--data", data, "--input", own_text, "--tokens", "1M", "--dry-run") == 2
    assert "not both" in capsys.readouterr().err


def test_the_default_vocabulary_grows_with_the_text():
    from scratchlm.data.build import default_vocab_size

    assert [default_vocab_size(b) for b in (0, 10_000, 1_000_000, 10**7, 10**8, 10**9, 10**11)] == \
        [512, 512, 1024, 4096, 8192, 32768, 32768]
