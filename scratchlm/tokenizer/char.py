"""Character-level tokenizer: one id per distinct character, as in the classic Tiny Shakespeare experiments.

Ids are the sorted distinct characters of the training text (Tiny Shakespeare: 65 of them, "\\n" = 0, " " = 1,
exactly nanoGPT's shakespeare_char), optionally followed by the standard special tokens. A character not seen
in training cannot be encoded: this tokenizer is for small closed corpora, not open text.
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import CONFIG_FILE, Tokenizer, write_json
from .pretokenize import SPECIAL_TOKENS, special_splitter


class CharTokenizer(Tokenizer):
    """Char-level tokenizer behind the same interface as BPETokenizer."""

    def __init__(self, chars, special_tokens=()):
        """chars: the vocabulary, in id order. special_tokens: strings that take the ids after the chars."""
        self.chars = list(chars)
        if len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise ValueError("chars must be distinct single characters")
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.special_tokens = {s: len(self.chars) + i for i, s in enumerate(special_tokens)}
        self._itos = self.chars + list(special_tokens)
        self._splitters: dict = {}

    @classmethod
    def train(cls, text: str, special_tokens: bool = False) -> "CharTokenizer":
        """Vocabulary = sorted distinct characters of `text` (plus the standard specials if special_tokens)."""
        if not text:
            raise ValueError("cannot build a char vocabulary from empty text")
        return cls(sorted(set(text)), SPECIAL_TOKENS if special_tokens else ())

    @classmethod
    def from_files(cls, paths, special_tokens: bool = False) -> "CharTokenizer":
        chars: set[str] = set()
        for p in [paths] if isinstance(paths, (str, Path)) else paths:
            chars.update(Path(p).read_text(encoding="utf-8"))
        return cls.train("".join(sorted(chars)), special_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    def encode(self, text: str, allowed_special=frozenset()) -> list[int]:
        allowed = self._allowed(allowed_special)
        if allowed:
            if allowed not in self._splitters:
                self._splitters[allowed] = special_splitter(allowed)
            parts = self._splitters[allowed].split(text)
        else:
            parts = [text]
        ids: list[int] = []
        stoi = self.stoi
        for k, part in enumerate(parts):
            if k % 2 == 1:
                ids.append(self.special_tokens[part])
                continue
            try:
                ids.extend([stoi[c] for c in part])
            except KeyError:
                bad = next(c for c in part if c not in stoi)
                raise ValueError(f"character {bad!r} (U+{ord(bad):04X}) is not in this char vocabulary of "
                                 f"{len(self.chars)}; train the char tokenizer on text that contains it") from None
        return ids

    def decode(self, ids, errors: str = "replace") -> str:
        """Text of ids; unknown ids become U+FFFD (errors="replace") or raise ValueError (errors="strict")."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        itos = self._itos
        try:
            if ids and min(ids) < 0:
                raise IndexError
            return "".join([itos[i] for i in ids])
        except (IndexError, TypeError):
            if errors == "strict":
                bad = next(i for i in ids if not isinstance(i, int) or not 0 <= i < len(itos))
                raise ValueError(f"token id {bad!r} is outside this tokenizer's vocabulary (0..{len(itos) - 1})") from None
            return "".join(itos[i] if isinstance(i, int) and 0 <= i < len(itos) else "\ufffd" for i in ids)

    def save(self, directory, chat_template: str | None = None) -> Path:
        from .hf import char_tokenizer_json, special_tokens_map, tokenizer_config

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / CONFIG_FILE, {"type": "char", "format_version": 1, "vocab_size": self.vocab_size,
                                     "chars": "".join(self.chars), "special_tokens": self.special_tokens})
        write_json(d / "tokenizer.json", char_tokenizer_json(self.chars, self.special_tokens))
        write_json(d / "tokenizer_config.json", tokenizer_config(self.special_tokens, chat_template))
        write_json(d / "special_tokens_map.json", special_tokens_map(self.special_tokens))
        return d

    @classmethod
    def load(cls, directory) -> "CharTokenizer":
        path = Path(directory) / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; pass a folder written by CharTokenizer.save")
        return cls.from_config(json.loads(path.read_text(encoding="utf-8")))

    @classmethod
    def from_config(cls, config: dict) -> "CharTokenizer":
        specials = [s for s, _ in sorted(config["special_tokens"].items(), key=lambda kv: kv[1])]
        return cls(list(config["chars"]), specials)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
