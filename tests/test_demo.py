"""`scratchlm demo --quick`: the whole chain runs and leaves every artifact a later stage needs."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_quick_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "scratchlm", "demo", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    for step in ("corpus", "data", "tokenizer", "shards", "pretrain", "draft", "sft", "dpo", "rl", "eval",
                 "generate", "guide"):
        assert step in report["steps"], step
    assert "finished in" in proc.stdout
    assert report["steps"]["data"]["docs_out"] > 0
    # speculative decoding with greedy sampling must reproduce plain greedy decoding token for token
    assert report["steps"]["generate"]["speculative"]["identical_to_greedy"] is True
    for run in ("pretrain", "draft", "sft", "dpo", "rl"):
        assert (out / run / "DONE").exists(), run
    assert (out / "tokenizer" / "tokenizer.json").exists() and (out / "pretrain" / "report.md").exists()
    assert "<html" in (out / "guide.html").read_text()[:500].lower()
    # a finished demo is not overwritten by accident
    again = subprocess.run([sys.executable, "-m", "scratchlm", "demo", "--quick", "--out", str(out)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--overwrite" in again.stderr
