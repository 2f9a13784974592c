"""A bare machine: the default suite passes on a fresh clone with nothing beside it (no ../shared/data).

Tests that need the real-world data skip with a reason naming the file; fixtures that need a corpus of some size
build it from TinyWorld, the built-in generated corpus, instead of silently shrinking. .ci/run runs the whole
default suite once more with SCRATCHLM_SHARED_DATA pointing nowhere; these tests keep that promise checked by
`make test` alone.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# The tests that shrank their corpus without ../shared and then failed (issue 17, point 11).
SHRANK = ["test_eval.py::test_random_model_initial_loss_is_ln_vocab",
          "test_tokenizer.py::test_vocab_layout_and_special_ids",
          "test_tokenizer.py::test_decoding_any_ids_never_raises",
          "test_tokenizer_hf.py::test_same_vocabulary_as_hf_bpe_trainer"]


def _hidden_env(tmp_path: Path) -> dict:
    return {**os.environ, "SCRATCHLM_SHARED_DATA": str(tmp_path / "no-shared-data")}


def test_shared_data_can_be_hidden(tmp_path):
    out = subprocess.run([sys.executable, "-c", "import conftest; print(conftest.SHARED_DATA)"], cwd=TESTS,
                         env=_hidden_env(tmp_path), capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(tmp_path / "no-shared-data")


def test_shared_data_has_one_home():
    # a test file that computes its own ../shared path cannot be hidden by SCRATCHLM_SHARED_DATA
    own = [p.name for p in TESTS.glob("*.py") if p.name not in ("conftest.py", Path(__file__).name)
           and re.search(r"""["']shared["']""", p.read_text(encoding="utf-8"))]
    assert own == [], f"import SHARED_DATA or shared_path from conftest instead: {own}"


def test_fixtures_do_not_shrink_without_shared(tmp_path):
    # run in a child pytest with ../shared out of sight: every one must pass, none skip
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs",
                        "--rootdir", str(TESTS.parent), *[str(TESTS / t) for t in SHRANK]],
                       cwd=TESTS.parent, env=_hidden_env(tmp_path), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert re.search(rf"\b{len(SHRANK)} passed\b", r.stdout) and " skipped" not in r.stdout, r.stdout[-2000:]
