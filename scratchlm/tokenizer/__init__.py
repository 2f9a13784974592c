"""Tokenizers: byte-level BPE (trained here, encoded via tiktoken or pure Python, exported to Hugging Face) and
a char-level tokenizer. Pure Python + regex (+ tiktoken when installed); imports nothing else of scratchlm.

    tok = train_bpe(["data/"], vocab_size=8192)
    ids = tok.encode("Hello world")            # special-token strings in text stay text
    tok.decode(ids) == "Hello world"
    tok.save("runs/x/tokenizer"); tok = load_tokenizer("runs/x/tokenizer")
"""

from .base import Tokenizer
from .bpe import BPETokenizer
from .char import CharTokenizer
from .gpt2 import load_gpt2_tokenizer
from .load import load_tokenizer
from .pretokenize import (BOS_TOKEN, EOS_TOKEN, GPT2_PATTERN, GPT4_PATTERN, PAD_TOKEN, SPECIAL_TOKENS,
                          build_pattern)
from .train import learn_merges, train_bpe, train_bpe_from_texts

__all__ = [
    "Tokenizer", "BPETokenizer", "CharTokenizer", "load_tokenizer", "load_gpt2_tokenizer", "train_bpe", "train_bpe_from_texts",
    "learn_merges", "build_pattern", "SPECIAL_TOKENS", "GPT4_PATTERN", "GPT2_PATTERN", "BOS_TOKEN", "EOS_TOKEN",
    "PAD_TOKEN",
]
