"""GPT-2's tokenizer from its original files (encoder.json, as released by OpenAI), behind our interface.

GPT-2's ids are tiktoken ranks already: the 256 bytes first (in its byte -> character map order, not byte order),
then the 50,000 merges in order, then <|endoftext|> = 50256. So the vocabulary alone defines the encoder; no
network and no tiktoken download cache needed. Useful to compare compression with GPT-2 and to pair GPT-2 weights
with their tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

from .bpe import BPETokenizer
from .hf import bytes_to_unicode


def load_gpt2_tokenizer(directory, backend: str = "auto") -> BPETokenizer:
    """GPT-2's tokenizer from a folder holding encoder.json (e.g. ../shared/data/gpt2-tokenizer)."""
    path = Path(directory) / "encoder.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass the folder with GPT-2's encoder.json and vocab.bpe")
    encoder = json.loads(path.read_text(encoding="utf-8"))
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    specials = {s: i for s, i in encoder.items() if s.startswith("<|") and s.endswith("|>")}
    ranks = {bytes(byte_of[c] for c in s): i for s, i in encoder.items() if s not in specials}
    return BPETokenizer.from_ranks(ranks, pattern="gpt2", special_tokens=specials, backend=backend)
