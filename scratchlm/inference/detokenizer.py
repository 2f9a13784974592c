"""Streaming text out of a stream of token ids, without ever showing half a character.

A byte-level BPE token is a run of *bytes*, not characters: "é" may be split over two tokens, an emoji over
four. Decoding each token on its own would print replacement characters (U+FFFD) mid-stream and then the
right character later, which a terminal or a browser cannot take back. `IncrementalDetokenizer` feeds each
token's bytes to Python's incremental UTF-8 decoder, which returns only complete characters and keeps the
partial ones until the next bytes arrive; bytes that can never become valid UTF-8 come out as U+FFFD, exactly
like `bytes.decode(errors="replace")`. So the concatenation of every chunk equals decoding all ids at once.

`StopStringMatcher` holds back the tail of the text that could still grow into a stop string, so a streamed
answer never shows the first half of "<|im_end|>" or "\\nUser:" before we know it is a stop.
"""

from __future__ import annotations

import codecs
from typing import Any, Callable


def token_bytes_fn(tokenizer: Any) -> Callable[[int], bytes] | None:
    """A function id -> bytes for this tokenizer, or None if it only decodes to str."""
    for name in ("decode_bytes", "decode_tokens_bytes"):
        fn = getattr(tokenizer, name, None)
        if callable(fn):
            if name == "decode_bytes":
                return lambda i, fn=fn: fn([i])
            return lambda i, fn=fn: b"".join(fn([i]))
    return None


class IncrementalDetokenizer:
    """push(id) -> the text that became complete; flush() -> whatever is left at the end."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._bytes_of = token_bytes_fn(tokenizer)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # fallback state for str-only tokenizers: ids not yet turned into text
        self._pending: list[int] = []

    def push(self, token_id: int) -> str:
        if self._bytes_of is not None:
            return self._utf8.decode(self._bytes_of(int(token_id)))
        # str-only fallback: decode the pending ids; a trailing U+FFFD may be a character cut in half, so wait
        # for more tokens (at most 4: no UTF-8 character is longer than 4 bytes and every token is >= 1 byte).
        self._pending.append(int(token_id))
        text = self.tokenizer.decode(self._pending, errors="replace")
        if text.endswith("\ufffd") and len(self._pending) < 4:
            return ""
        self._pending = []
        return text

    def flush(self) -> str:
        if self._bytes_of is not None:
            return self._utf8.decode(b"", final=True)
        text = self.tokenizer.decode(self._pending, errors="replace") if self._pending else ""
        self._pending = []
        return text


class StopStringMatcher:
    """push(text) -> (text safe to show, stopped?). After a stop, the output ends before the stop string."""

    def __init__(self, stops: list[str] | tuple[str, ...] = ()):
        self.stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        if not self.stops:
            return text, False
        buf = self._held + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            self._held = ""
            return buf[: min(hits)], True
        keep = self._longest_stop_prefix_suffix(buf)
        self._held = buf[len(buf) - keep:] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """At the end of generation the held tail was not a stop after all: release it."""
        out, self._held = ("" if self.stopped else self._held), ""
        return out

    def _longest_stop_prefix_suffix(self, buf: str) -> int:
        # the longest suffix of buf that is a proper prefix of some stop string; such a suffix may start a stop
        best = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), best, -1):
                if buf.endswith(s[:k]):
                    best = k
                    break
        return best
