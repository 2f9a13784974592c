"""Bits per byte of a text file (`scratchlm eval --task bpb`): windows score each token once, and the numbers
agree with the trainer's own validation bits per byte."""

from __future__ import annotations

import json

import pytest

from scratchlm.eval.bpb import sliding_windows
from scratchlm.train import pretrain

from test_train import tiny_cfg


@pytest.mark.parametrize("n_ids", [2, 5, 16, 17, 40, 101])
@pytest.mark.parametrize("seq_len,stride", [(8, 8), (8, 4), (8, 3), (8, 1), (16, 5)])
def test_sliding_windows_score_every_target_once(n_ids, seq_len, stride):
    scored = []
    windows = sliding_windows(n_ids, seq_len, stride)
    length = min(seq_len, n_ids - 1)
    for i, w in enumerate(windows):
        assert w.end - w.start == length and 0 <= w.start and w.end <= n_ids - 1
        assert w.start < w.first_new <= w.end
        scored += list(range(w.first_new, w.end + 1))
        if i:  # after the first window, every scored token sees at least seq_len - stride tokens of context
            assert w.first_new - 1 - w.start >= min(length, seq_len - stride)
    assert scored == list(range(1, n_ids))


def test_eval_cli_bpb_matches_training_validation(tmp_path, capsys):
    from scratchlm.cli.main import main

    run = tmp_path / "run"
    summary = pretrain(tiny_cfg(tmp_path, max_steps=5), run)
    text = (tmp_path / "input.txt").read_text()
    val = tmp_path / "val.txt"
    val.write_text(text[int(len(text) * 0.9):])  # the run's validation text (the last 10% of characters)
    code = main(["eval", "--run", str(run), "--task", "bpb", "--text", str(val), "--seq-len", "16", "--stride", "16",
                 "--json", "--device", "cpu", "--no-save"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # same tokens, same non-overlapping 16-token windows; only the last (shorter) window's context differs
    assert result["bpb"] == pytest.approx(summary["val_bpb"], rel=2e-2)
    assert result["bytes"] == len(val.read_text().encode())

