"""The settings of `scratchlm tokenizer train`, as a config like every other stage's (scratchlm/config.py).

A TOML file passed with --config, `--set tokenizer.KEY=VALUE` and the run's own config.toml all name these keys, so
`scratchlm tokenizer train --config runs/tok/config.toml --out runs/tok2` trains the same tokenizer again.
Plain dataclasses: tokenizer/ imports nothing of ours, and scratchlm.config reads them from outside.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenizerTrainConfig:
    kind: str = field(default="bpe", metadata={"choices": ("bpe", "char")})
    """"bpe": byte-level BPE (GPT-2/GPT-4 style); "char": one id per character seen (Tiny Shakespeare's 65)."""
    vocab_size: int = field(default=8192, metadata={"range": (264, None)})
    """Total ids, counting the 256 bytes and the 8 special tokens (BPE). A char vocabulary is as big as the text's
    alphabet, so kind="char" refuses any other value than this default rather than ignore it."""
    pattern: str = "gpt4"
    """Pre-tokenization split: "gpt4" (cl100k's regex), "gpt2", or a regex of your own."""
    digits: int | None = field(default=None, metadata={"range": (1, None)})
    """Most digits in one chunk (1 = every digit alone, as Llama 3 and DeepSeek split numbers); None: the pattern's."""
    min_frequency: int = field(default=1, metadata={"range": (1, None)})
    """Stop merging when the most frequent pair occurs fewer times than this."""
    fields: list[str] = field(default_factory=lambda: ["text"])
    """JSON/JSONL/Parquet fields holding text; each field of a record is read as a document of its own."""
    char_specials: bool = False
    """kind="char": add the 8 special tokens after the characters."""
    chat_template: str | None = None
    """A Jinja chat template file, copied into tokenizer_config.json for Hugging Face."""
    inputs: list[str] = field(default_factory=list)
    """Files, folders or globs to train on; --input replaces them. A run's config.toml lists the files it read."""


@dataclass
class TokenizerRunConfig:
    """The root of the TOML file: one [tokenizer] section, as the run's config.toml is written."""

    tokenizer: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig)
