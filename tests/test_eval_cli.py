"""`scratchlm eval` on a tiny random-init run folder: every task writes RUN/eval/<task>.json, --report writes the
report card, bad input exits with code 2."""

from __future__ import annotations

import json
import math

import pytest
import torch

from scratchlm.cli.main import main
from scratchlm.inference.chat_template import CHAT_TEMPLATE
from scratchlm.model import ModelConfig, Transformer
from scratchlm.runs import checkpoint_dir, save_model
from scratchlm.stats import format_proportion, wilson_interval

TEXT = "Once upon a time there was a little cat. The cat liked milk. Tom has 3 apples. He gives 1 to Mia. "


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from scratchlm.tokenizer import train_bpe_from_texts

    root = tmp_path_factory.mktemp("evalrun")
    tok = train_bpe_from_texts([TEXT * 30], vocab_size=300)
    tok.save(root / "tokenizer", chat_template=CHAT_TEMPLATE)
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_preset("llama-tiny", vocab_size=tok.vocab_size))
    save_model(checkpoint_dir(root, 1), model, model.config.to_dict())
    (root / "metrics.jsonl").write_text(json.dumps({"step": 1, "tokens": 512, "loss": 5.7, "elapsed": 0.5}) + "\n")
    return root


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_eval_tasks_save_results_and_report(run, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text(TEXT * 10)
    assert main(["eval", "--run", str(run), "--task", "bpb", "--text", str(text), "--device", "cpu", "--json"]) == 0
    r = _json(capsys)
    assert r["perplexity"] == pytest.approx(math.exp(r["loss"])) and r["bytes"] == len(TEXT) * 10
    assert json.loads((run / "eval" / "bpb.json").read_text())["bpb"] == r["bpb"]

    hs = tmp_path / "h.txt"
    hs.write_text("Cats: The cat\n0\nliked milk.\nflew away.\nis a car.\nsang loudly.\n" * 3)
    assert main(["eval", "--run", str(run), "--task", "hellaswag", "--data", str(hs), "--limit", "2", "-q"]) == 0
    out = capsys.readouterr().out
    assert "acc_norm" in out and "hellaswag" in out and "(n=2, 95% " in out  # every accuracy with n and interval
    saved = json.loads((run / "eval" / "hellaswag.json").read_text())
    assert saved["n"] == 2 and len(saved["acc_ci"]) == 2 and len(saved["acc_norm_ci"]) == 2

    gsm = tmp_path / "test.jsonl"
    gsm.write_text(json.dumps({"question": "Tom has 3 apples. He gives 1 to Mia. How many?", "answer": "3-1=2\n#### 2"}) + "\n")
    assert main(["eval", "--run", str(run), "--task", "gsm8k", "--data", str(gsm), "--shots", "0",
                 "--max-new-tokens", "4", "--json"]) == 0
    g = _json(capsys)
    assert g["n"] == 1 and g["mode"] == "base" and g["exact_match"] in (0.0, 1.0)
    assert g["exact_match_ci"] == list(wilson_interval(g["correct"], 1))

    assert main(["eval", "--run", str(run), "--task", "tinyworld", "--limit", "3", "--max-new-tokens", "4",
                 "--chat", "yes", "--json"]) == 0
    t = _json(capsys)
    assert t["mode"] == "chat" and t["n"] == 3 and t["accuracy_ci"] == list(wilson_interval(t["correct"], 3))
    assert json.loads((run / "eval" / "tinyworld.json").read_text())["accuracy_ci"] == t["accuracy_ci"]
    assert main(["eval", "--run", str(run), "--task", "tinyworld", "--limit", "3", "--max-new-tokens", "4",
                 "--no-save", "-q"]) == 0
    out = capsys.readouterr().out  # the table, then one line per kind of task, each with its own n
    assert f"accuracy {format_proportion(t['correct'], 3)}" in out
    kinds = [line for line in out.splitlines() if line.startswith("  ")]
    assert kinds and all("% (n=" in line and ", 95% " in line for line in kinds)

    assert main(["eval", "--run", str(run), "--report"]) == 0
    report = (run / "report.md").read_text()
    for task in ("bpb", "gsm8k", "hellaswag", "tinyworld"):
        assert f"| {task} |" in report
    assert f"| tinyworld | accuracy {format_proportion(t['correct'], 3)} |" in report
    assert f"| gsm8k | exact_match {format_proportion(g['correct'], 1)} |" in report


def test_eval_bad_input_exits_2(run, tmp_path, capsys):
    assert main(["eval", "--run", str(run), "--task", "hellaswag", "--data", str(tmp_path / "nope.txt")]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["eval", "--run", str(run), "--task", "bpb"]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["eval", "--run", str(run), "--task", "gsm8k", "--data", str(tmp_path / "x.jsonl"), "--limit", "0"]) == 2
