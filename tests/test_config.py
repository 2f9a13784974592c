"""The config system: TOML + --set overrides, typed validation, did-you-mean errors, round trip."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from scratchlm.config import ConfigError, dumps_toml, load_config, parse_value


@dataclass
class Train:
    lr: float = field(default=3e-4, metadata={"help": "peak learning rate", "range": (0.0, 10.0)})
    max_steps: int = field(default=100, metadata={"range": (1, None)})
    schedule: Literal["cosine", "wsd"] = "cosine"
    compile: bool = False
    max_time: Optional[float] = None
    betas: tuple[float, float] = (0.9, 0.95)


@dataclass
class Model:
    d_model: int = 64
    preset: Optional[str] = None


@dataclass
class Root:
    model: Model = field(default_factory=Model)
    train: Train = field(default_factory=Train)


def test_defaults_file_and_overrides_compose(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[train]\nlr = 1e-3\nmax_steps = 50\n[model]\nd_model = 128\n")
    cfg = load_config(Root, f, ["train.max_steps=7", "train.schedule=wsd", "train.compile=true"])
    assert cfg.train.lr == 1e-3 and cfg.train.max_steps == 7 and cfg.model.d_model == 128
    assert cfg.train.schedule == "wsd" and cfg.train.compile is True


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError, match=r"train\.lrr.*did you mean 'train\.lr'"):
        load_config(Root, None, ["train.lrr=1"])


def test_unknown_key_in_file_suggests_closest(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[train]\nmax_step = 5\n")
    with pytest.raises(ConfigError, match="did you mean 'train.max_steps'"):
        load_config(Root, f)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_steps=abc", "expected an integer"),
        ("train.max_steps=0", r"out of range; expected a value in \[1, inf\]"),
        ("train.lr=-1", r"out of range"),
        ("train.schedule=linear", "expected one of 'cosine', 'wsd'"),
        ("train.compile=maybe", "expected a boolean"),
        ("model.d_model=1.5", "expected an integer"),
    ],
)
def test_bad_values_name_the_expected_type_or_range(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Root, None, [override])


def test_optional_and_tuple_fields():
    cfg = load_config(Root, None, ["train.max_time=71", "train.betas=[0.8, 0.99]"])
    assert cfg.train.max_time == 71.0 and cfg.train.betas == (0.8, 0.99)
    cfg = load_config(Root, None, ["train.max_time=none"])
    assert cfg.train.max_time is None


def test_integer_from_scientific_notation():
    assert load_config(Root, None, ["train.max_steps=1e3"]).train.max_steps == 1000


def test_toml_round_trip(tmp_path):
    cfg = load_config(Root, None, ["train.lr=0.01", "model.preset=llama-tiny"])
    f = tmp_path / "r.toml"
    f.write_text(dumps_toml(cfg))
    assert load_config(Root, f) == cfg


def test_invalid_toml_is_one_line_error(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[train\nlr = 1\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(Root, f)


def test_parse_value():
    assert parse_value("3e-4") == 3e-4 and parse_value("true") is True and parse_value("abc") == "abc"
    assert parse_value('"x y"') == "x y" and parse_value("[1, 2]") == [1, 2]


def test_cli_help_lists_stages():
    from scratchlm.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    stages = {"data", "tokenizer", "pretrain", "sft", "dpo", "rl", "generate", "chat", "serve", "eval", "plan",
              "export", "import", "guide", "demo"}
    assert stages <= set(sub.choices)
    out = subprocess.run([sys.executable, "-m", "scratchlm", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for stage in stages:
        assert f"    {stage}" in out.stdout, stage


def test_typo_in_config_key_is_exit_2_with_suggestion_and_no_traceback(tmp_path):
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "configs" / "shakespeare_cpu.toml"
    out = subprocess.run([sys.executable, "-m", "scratchlm", "pretrain", "--config", str(config),
                          "--out", str(tmp_path / "r"), "--set", "train.lrr=1"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "did you mean 'train.lr'" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
