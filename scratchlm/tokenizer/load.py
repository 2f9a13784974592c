"""load_tokenizer: open any tokenizer folder we wrote (BPE or char), GPT-2's original files, or a Hugging Face
tokenizer.json (byte-level BPE, read by hf_load.py)."""

from __future__ import annotations

import json
from pathlib import Path

from .base import CONFIG_FILE, Tokenizer


def load_tokenizer(path, backend: str = "auto") -> Tokenizer:
    """Load the tokenizer saved in folder `path` (a tokenizer folder, a run folder holding tokenizer/, or the
    scratchlm_tokenizer.json file itself, or a folder with GPT-2's encoder.json + vocab.bpe, or a Hugging Face folder
    with tokenizer.json and no scratchlm_tokenizer.json). backend ("auto", "tiktoken", "python") applies to our BPE."""
    p = Path(path)
    file = p if p.is_file() else p / CONFIG_FILE
    if not file.is_file() and (p / "tokenizer" / CONFIG_FILE).is_file():  # a run folder
        file = p / "tokenizer" / CONFIG_FILE
    if not file.is_file() and (p / "encoder.json").is_file() and (p / "vocab.bpe").is_file():
        from .gpt2 import load_gpt2_tokenizer  # OpenAI's original GPT-2 files

        return load_gpt2_tokenizer(p, backend=backend)
    if not file.is_file():  # a Hugging Face folder (or a run imported from one): tokenizer.json only
        hf = next((d for d in (p, p / "tokenizer") if (d / "tokenizer.json").is_file()), None)
        if hf is not None:
            from .hf_load import load_hf_tokenizer

            if backend != "auto":
                raise ValueError(f"backend={backend!r} applies to scratchlm's own BPE; {hf} holds a Hugging Face "
                                 "tokenizer.json, which encodes by its merge list: leave backend='auto'")

            return load_hf_tokenizer(hf)
    if not file.is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} or tokenizer.json in {p}; train one with "
                                "`scratchlm tokenizer train`")
    config = json.loads(file.read_text(encoding="utf-8"))
    kind = config.get("type")
    if kind == "bpe":
        from .bpe import BPETokenizer

        return BPETokenizer.from_config(config, file.parent, backend=backend)
    if kind == "char":
        from .char import CharTokenizer

        return CharTokenizer.from_config(config)
    raise ValueError(f"{file} has unknown tokenizer type {kind!r}; expected 'bpe' or 'char'")
