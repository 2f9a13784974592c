"""Shared fixtures: where ../shared/data is, skipping cleanly when it is absent, and the built-in corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The one place that says where the optional real-world data lives (books, eval sets, word lists beside the clone).
# SCRATCHLM_SHARED_DATA moves it; a path that does not exist hides it, which is how .ci/run proves that the suite
# passes on a bare clone. Every test file imports this name rather than computing its own path.
SHARED_DATA = Path(os.environ.get("SCRATCHLM_SHARED_DATA") or REPO.parent / "shared" / "data")


def shared_path(rel: str) -> Path:
    """SHARED_DATA / rel, or skip the test with a reason that names what is missing and where it was looked for."""
    path = SHARED_DATA / rel
    if not path.exists():
        pytest.skip(f"needs shared data {rel}: {path} is absent (set SCRATCHLM_SHARED_DATA to its folder)")
    return path


def builtin_corpus(max_bytes: int) -> list[str]:
    """TinyWorld training documents: generated, deterministic, no download. Fixtures that need a corpus of some
    size build it from this, so they mean the same on a bare clone as beside ../shared."""
    from scratchlm.data.tinyworld import iter_documents

    return list(iter_documents("train", seed=0, max_bytes=max_bytes))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs shared data: {SHARED_DATA} is absent (set SCRATCHLM_SHARED_DATA to its folder)")
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def tiny_chat_run(tmp_path_factory) -> Path:
    """A run folder with a random llama-tiny model and a 300-token BPE tokenizer with the chat template: enough
    for the inference commands (generate, chat, serve) to load and run."""
    import torch

    from scratchlm.inference.chat_template import CHAT_TEMPLATE
    from scratchlm.model import ModelConfig, Transformer
    from scratchlm.runs import checkpoint_dir, save_model
    from scratchlm.tokenizer import train_bpe_from_texts

    root = tmp_path_factory.mktemp("run")
    tok = train_bpe_from_texts(["Once upon a time there was a little cat. The cat liked milk. " * 30], vocab_size=300)
    tok.save(root / "tokenizer", chat_template=CHAT_TEMPLATE)
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_preset("llama-tiny", vocab_size=tok.vocab_size))
    save_model(checkpoint_dir(root, 1), model, model.config.to_dict())
    return root
