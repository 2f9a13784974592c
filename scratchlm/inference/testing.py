"""Tiny stand-ins for tests, docs and benchmarks: a byte-level tokenizer and mock language models.

The engine only needs `model(idx, positions, cache) -> logits` and a tokenizer with encode/decode, so it can be
tested without training anything (the nanochat habit). The mock models here have a *known* next-token
distribution, which is what the statistical test of speculative sampling needs.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import torch
import torch.nn as nn

BYTE_SPECIALS = ("<|endoftext|>", "<|bos|>", "<|pad|>", "<|im_start|>", "<|im_end|>")


class ByteTokenizer:
    """Token id = byte value (0..255), then the special tokens. Same interface as scratchlm.tokenizer's."""

    def __init__(self):
        self.special_tokens = {name: 256 + i for i, name in enumerate(BYTE_SPECIALS)}
        self._special_text = {i: name for name, i in self.special_tokens.items()}
        self.vocab_size = 256 + len(BYTE_SPECIALS)
        self.eos_id = self.special_tokens["<|endoftext|>"]
        self.bos_id = self.special_tokens["<|bos|>"]
        self.pad_id = self.special_tokens["<|pad|>"]

    def encode(self, text: str, allowed_special: str | set | tuple = ()) -> list[int]:
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        if not allowed:
            return list(text.encode("utf-8"))
        ids: list[int] = []
        pattern = "(" + "|".join(re.escape(s) for s in sorted(allowed, key=len, reverse=True)) + ")"
        for piece in re.split(pattern, text):
            if piece in allowed:
                ids.append(self.special_tokens[piece])
            elif piece:
                ids += list(piece.encode("utf-8"))
        return ids

    def decode_bytes(self, ids: list[int]) -> bytes:
        return b"".join(bytes([i]) if i < 256 else self._special_text[i].encode() for i in map(int, ids))

    def decode(self, ids: list[int], errors: str = "replace") -> str:
        return self.decode_bytes(ids).decode("utf-8", errors=errors)


class MarkovLM(nn.Module):
    """A bigram language model: logits of the next token depend only on the current token (a table).

    It follows the model's calling convention, `forward(idx, positions=None, cache=None) -> (B, T, V)`, and needs
    no cache at all (the last token is all it looks at), which makes it a clean oracle for the sampling maths.
    Two of these with different tables are a draft/target pair with a known distribution.
    """

    def __init__(self, vocab_size: int, seed: int = 0, sharpness: float = 2.0, max_seq_len: int = 512):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(vocab_size, vocab_size, generator=g) * sharpness, requires_grad=False)
        # what the engine reads from a model config; a 1-slot-wide KV cache is enough to track lengths
        self.config = SimpleNamespace(vocab_size=vocab_size, max_seq_len=max_seq_len, n_layers=1, n_kv_heads=1,
                                      head_dim=1)

    def forward(self, idx: torch.Tensor, positions: torch.Tensor | None = None, cache=None,
                valid: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        if cache is not None:  # keep the cache's bookkeeping (length, rollback) exactly as the real model does
            cache.begin(idx.size(1), positions, valid)
            cache.commit()
        if last_only:
            idx = idx[:, -1:]
        return self.table[idx]  # (B, T, V)


class ScriptedLM(nn.Module):
    """A model that writes a scripted reply: `reply(prompt_text) -> str`, then <|im_end|> (with ByteTokenizer).

    It sees each row's whole prompt at prefill (kept per row, since decode steps feed one token) and puts all
    probability on the next character of the reply, so greedy and sampled decoding both give exactly the reply.
    The engine, the KV cache bookkeeping, the batcher and the server around it are the real ones: this stands in
    only for a trained model's judgement, where a test needs a model that reliably does one thing (e.g. call a
    tool) that a tiny trained model does only sometimes."""

    def __init__(self, tokenizer: ByteTokenizer, reply, max_seq_len: int = 1024):
        super().__init__()
        self.tok, self.reply = tokenizer, reply
        self.end_id = tokenizer.special_tokens["<|im_end|>"]
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # the engine reads the device from it
        self.config = SimpleNamespace(vocab_size=tokenizer.vocab_size, max_seq_len=max_seq_len, n_layers=1,
                                      n_kv_heads=1, head_dim=1)
        self._rows: list[tuple[list[int], list[int]]] = []  # per row: (prompt ids, reply ids)
        self._fed: list[int] = []  # tokens fed to each row since its prompt

    def _script(self, prompt: list[int]) -> list[int]:
        text = self.tok.decode(prompt)
        return list(self.reply(text).encode("utf-8")) + [self.end_id]

    def forward(self, idx: torch.Tensor, positions: torch.Tensor | None = None, cache=None,
                valid: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        B, T = idx.shape
        if cache is None or cache.length == 0:  # a prefill: remember each row's prompt and its reply
            rows = [[int(t) for t, ok in zip(idx[b], valid[b] if valid is not None else [True] * T) if ok]
                    for b in range(B)]
            self._rows = [(r, self._script(r)) for r in rows]
            self._fed = [0] * B
        else:
            self._fed = [k + T for k in self._fed]
        if cache is not None:
            cache.begin(T, positions, valid)
            cache.commit()
        logits = torch.full((B, 1 if last_only else T, self.config.vocab_size), -30.0)
        for b, (_, reply) in enumerate(self._rows):
            k = self._fed[b]
            logits[b, -1, reply[min(k, len(reply) - 1)]] = 30.0
        return logits
