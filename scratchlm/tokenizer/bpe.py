"""The byte-level BPE tokenizer: encode, decode, save, load.

Encoding a chunk (tiktoken's rule, which both backends follow): if the chunk's bytes are a token, emit it; else start
from single bytes and repeatedly merge the adjacent pair whose concatenation has the lowest rank (id), the leftmost
one on ties, until no adjacent concatenation is a token. With tiktoken installed the work runs in its Rust core,
built from our ranks; otherwise a pure-Python loop with a per-chunk cache gives the same ids.

Special tokens are recognised only when allowed (`allowed_special="all"` or a set of strings); by default a text
containing "<|endoftext|>" is encoded as ordinary text, so user input cannot inject control tokens.
Lone surrogates (not valid Unicode scalars) are replaced by U+FFFD before encoding, as tiktoken does.
"""

from __future__ import annotations

import base64
import heapq
import json
from pathlib import Path

import regex

from .base import CONFIG_FILE, Tokenizer, write_json, write_text
from .pretokenize import SPECIAL_TOKENS, build_pattern, special_splitter

RANKS_FILE = "ranks.tiktoken"
FORMAT_VERSION = 1


def read_ranks(path) -> dict[bytes, int]:
    """Read a tiktoken ranks file: one "base64(token bytes) rank" per line."""
    ranks = {}
    for line in Path(path).read_text(encoding="ascii").splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _printable(b: bytes) -> str:
    """A token's bytes for humans: UTF-8 text where possible, \\xNN escapes otherwise."""
    return b.decode("utf-8", errors="backslashreplace")


class BPETokenizer(Tokenizer):
    """Byte-level BPE. Ids: 0..255 bytes, 256.. merged tokens in merge order, then the special tokens."""

    def __init__(self, merges, pattern: str = "gpt4", digits: int | None = None,
                 special_tokens=SPECIAL_TOKENS, backend: str = "auto"):
        """merges: [(left id, right id), ...], merge i making id 256 + i. backend: "auto", "tiktoken" or "python"."""
        self.merges = [(int(a), int(b)) for a, b in merges]
        self.pattern_name = pattern
        self.digits = digits
        self.pattern = build_pattern(pattern, digits)
        token_bytes = [bytes([i]) for i in range(256)]
        for i, (a, b) in enumerate(self.merges):
            if not (0 <= a < len(token_bytes) and 0 <= b < len(token_bytes)):
                raise ValueError(f"merge {i} ({a}, {b}) refers to an id not yet defined; the merges file is corrupt")
            token_bytes.append(token_bytes[a] + token_bytes[b])
        n = len(token_bytes)
        self._setup(token_bytes, {s: n + i for i, s in enumerate(special_tokens)}, backend)

    @classmethod
    def from_ranks(cls, ranks: dict, pattern: str = "gpt2", special_tokens: dict | None = None,
                   backend: str = "auto") -> "BPETokenizer":
        """A tokenizer from a tiktoken-style vocabulary {token bytes: rank} (ranks 0..n-1, the 256 single bytes
        included, in any order), with specials {string: id} taking ids n, n+1, ... E.g. GPT-2's vocabulary."""
        tok = cls.__new__(cls)
        tok.merges = None  # not known for a foreign vocabulary; the ranks are the whole model
        tok.pattern_name, tok.digits = pattern, None
        tok.pattern = build_pattern(pattern)
        token_bytes = [b""] * len(ranks)
        for t, r in ranks.items():
            if not 0 <= r < len(ranks) or token_bytes[r]:
                raise ValueError(f"ranks must be 0..{len(ranks) - 1}, each once; rank {r} is not")
            token_bytes[r] = bytes(t)
        if not all(bytes([b]) in ranks for b in range(256)):
            raise ValueError("ranks must include all 256 single bytes (a byte-level vocabulary)")
        tok._setup(token_bytes, dict(special_tokens or {}), backend)
        return tok

    def _setup(self, token_bytes: list[bytes], special_tokens: dict[str, int], backend: str) -> None:
        self.ranks = {t: i for i, t in enumerate(token_bytes)}  # bytes -> id (= rank)
        if len(self.ranks) != len(token_bytes):
            raise ValueError("the vocabulary holds the same token twice; the merges file is corrupt")
        n = len(token_bytes)
        if sorted(special_tokens.values()) != list(range(n, n + len(special_tokens))):
            raise ValueError(f"special token ids must follow the {n} ordinary tokens: {n}, {n + 1}, ...")
        self.special_tokens = dict(sorted(special_tokens.items(), key=lambda kv: kv[1]))
        # id -> bytes for decoding, specials included
        self._id_bytes = token_bytes + [s.encode("utf-8") for s in self.special_tokens]
        if backend not in ("auto", "tiktoken", "python"):
            raise ValueError(f"backend={backend!r}; use 'auto', 'tiktoken' or 'python'")
        self.backend = backend
        self._enc = None  # tiktoken.Encoding, built lazily
        self._compiled = None  # (split regex, special splitters), built lazily
        self._cache: dict[bytes, list[int]] = {}
        if backend != "python":
            try:
                import tiktoken  # noqa: F401

                self.backend = "tiktoken"
            except ImportError:
                if backend == "tiktoken":
                    raise ImportError("backend='tiktoken' needs the tiktoken package: pip install tiktoken") from None
                self.backend = "python"

    # ---- sizes and lookups ----
    @property
    def vocab_size(self) -> int:
        return len(self._id_bytes)

    @property
    def token_bytes(self) -> list[bytes]:
        """Bytes of every id (special tokens as their UTF-8 strings)."""
        return self._id_bytes

    def id_to_bytes(self, i: int) -> bytes:
        return self._id_bytes[i]

    # ---- encoding ----
    def encode(self, text: str, allowed_special=frozenset()) -> list[int]:
        allowed = self._allowed(allowed_special)
        if self.backend == "tiktoken":
            return self.tiktoken_encoding().encode(text, allowed_special=allowed, disallowed_special=())
        try:
            return self._encode_python(text, allowed)
        except UnicodeEncodeError:  # lone surrogates: replace them, as tiktoken does
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self._encode_python(text, allowed)

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode with every special-token string treated as plain text."""
        return self.encode(text)

    def encode_batch(self, texts, allowed_special=frozenset(), num_workers: int | None = None) -> list[list[int]]:
        """Encode many texts: tiktoken threads (its Rust core releases the GIL) or, in pure Python, processes."""
        if self.backend == "tiktoken":
            import os

            texts = list(texts)
            threads = num_workers or os.cpu_count() or 1
            return self.tiktoken_encoding().encode_batch(
                texts, num_threads=threads, allowed_special=self._allowed(allowed_special), disallowed_special=())
        return super().encode_batch(texts, allowed_special, num_workers)

    def tiktoken_encoding(self):
        """This tokenizer as a tiktoken.Encoding (e.g. to hand to other tools)."""
        if self._enc is None:
            import tiktoken

            self._enc = tiktoken.Encoding(
                name=f"scratchlm_{self.vocab_size}",
                pat_str=self.pattern,
                mergeable_ranks=self.ranks,
                special_tokens=self.special_tokens,
            )
        return self._enc

    def _encode_python(self, text: str, allowed: frozenset) -> list[int]:
        if self._compiled is None:
            self._compiled = (regex.compile(self.pattern), {})
        pat, splitters = self._compiled
        if allowed:  # cut only at allowed specials; any other special string stays ordinary text
            if allowed not in splitters:
                splitters[allowed] = special_splitter(allowed)
            parts = splitters[allowed].split(text)
        else:
            parts = [text]
        ids: list[int] = []
        ranks, cache = self.ranks, self._cache
        for k, part in enumerate(parts):
            if k % 2 == 1:  # odd parts are the allowed special tokens themselves
                ids.append(self.special_tokens[part])
                continue
            for piece in pat.findall(part):
                data = piece.encode("utf-8")
                t = ranks.get(data)
                if t is not None:
                    ids.append(t)
                    continue
                out = cache.get(data)
                if out is None:
                    out = self._bpe(data)
                    if len(cache) >= 100_000:  # bound memory on endless streams of new words
                        cache.clear()
                    cache[data] = out
                ids.extend(out)
        return ids

    def _bpe(self, piece: bytes) -> list[int]:
        """Merge the bytes of one chunk: lowest-rank adjacent concatenation first, leftmost on ties."""
        if len(piece) > 64:
            return self._bpe_heap(piece)
        ranks = self.ranks
        parts = [piece[i:i + 1] for i in range(len(piece))]
        while len(parts) > 1:
            best, best_i = None, -1
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and (best is None or r < best):
                    best, best_i = r, i
            if best is None:
                break
            parts[best_i:best_i + 2] = [parts[best_i] + parts[best_i + 1]]
        return [ranks[p] for p in parts]

    def _bpe_heap(self, piece: bytes) -> list[int]:
        """Same result as _bpe in O(n log n), for long chunks such as runs of spaces (a linked list + heap)."""
        ranks = self.ranks
        n = len(piece)
        start = list(range(n))  # part i covers piece[start[i]:end[i]]; parts are linked through nxt/prv
        end = list(range(1, n + 1))
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        alive = [True] * n
        heap = []
        for i in range(n - 1):
            r = ranks.get(piece[i:i + 2])
            if r is not None:
                heap.append((r, i, i + 2))
        heapq.heapify(heap)
        while heap:
            r, i, stop = heapq.heappop(heap)
            j = nxt[i] if alive[i] else n
            if j >= n or end[j] != stop:  # stale: part i or its right neighbour changed since this was pushed
                continue
            end[i] = end[j]  # merge part j into part i
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[j] < n:
                prv[nxt[j]] = i
            p = prv[i]
            if p >= 0:
                r2 = ranks.get(piece[start[p]:end[i]])
                if r2 is not None:
                    heapq.heappush(heap, (r2, start[p], end[i]))
            q = nxt[i]
            if q < n:
                r2 = ranks.get(piece[start[i]:end[q]])
                if r2 is not None:
                    heapq.heappush(heap, (r2, start[i], end[q]))
        out, i = [], 0
        while i < n:
            out.append(ranks[piece[start[i]:end[i]]])
            i = nxt[i]
        return out

    # ---- decoding ----
    def decode_bytes(self, ids) -> bytes:
        """Concatenate the bytes of ids. Raises ValueError on an id outside 0..vocab_size-1."""
        if hasattr(ids, "tolist"):  # numpy arrays, torch tensors
            ids = ids.tolist()
        table = self._id_bytes
        try:
            if ids and min(ids) < 0:
                raise IndexError
            return b"".join([table[i] for i in ids])
        except (IndexError, TypeError):
            bad = next(i for i in ids if not isinstance(i, int) or not 0 <= i < len(table))
            raise ValueError(f"token id {bad!r} is outside this tokenizer's vocabulary (0..{len(table) - 1})") from None

    def decode(self, ids, errors: str = "replace") -> str:
        """Text of ids. Invalid UTF-8 (e.g. half a character) becomes U+FFFD with errors="replace"; with that
        default, unknown ids also become U+FFFD instead of raising. errors="strict" raises ValueError instead."""
        try:
            data = self.decode_bytes(ids)
        except ValueError:
            if errors == "strict":
                raise
            if hasattr(ids, "tolist"):
                ids = ids.tolist()
            table = self._id_bytes
            data = b"".join(table[i] if isinstance(i, int) and 0 <= i < len(table) else b"\xff" for i in ids)
        try:
            return data.decode("utf-8", errors=errors)
        except UnicodeDecodeError as e:
            raise ValueError(f"ids do not decode to valid UTF-8 ({e.reason} at byte {e.start}); "
                             f'use errors="replace"') from None

    # ---- save / load ----
    def save(self, directory, chat_template: str | None = None) -> Path:
        """Write our format, tiktoken ranks and the Hugging Face files into `directory` (created if needed)."""
        from .hf import bpe_tokenizer_json, special_tokens_map, tokenizer_config

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        n_tokens = len(self.ranks)
        config = {
            "type": "bpe",
            "format_version": FORMAT_VERSION,
            "vocab_size": self.vocab_size,
            "pattern": self.pattern_name,
            "digits": self.digits,
            "pattern_regex": self.pattern,
            "special_tokens": self.special_tokens,
            # merges[i] = [left id, right id] made id 256 + i; null for a foreign vocabulary (see ranks.tiktoken)
            "merges": None if self.merges is None else [list(m) for m in self.merges],
            # for humans only (ignored on load): what each multi-byte id spells
            "tokens": {str(i): _printable(t) for i, t in enumerate(self._id_bytes[:n_tokens]) if len(t) > 1},
        }
        write_json(d / CONFIG_FILE, config, indent=None if n_tokens > 2000 else 1)
        ranks_lines = [f"{base64.b64encode(t).decode('ascii')} {r}" for t, r in self.ranks.items()]
        write_text(d / RANKS_FILE, "\n".join(ranks_lines) + "\n")
        write_json(d / "tokenizer.json", bpe_tokenizer_json(self._id_bytes[:n_tokens], self.pattern,
                                                            self.special_tokens), indent=None)
        write_json(d / "tokenizer_config.json", tokenizer_config(self.special_tokens, chat_template))
        write_json(d / "special_tokens_map.json", special_tokens_map(self.special_tokens))
        return d

    @classmethod
    def from_config(cls, config: dict, directory=None, backend: str = "auto") -> "BPETokenizer":
        """Rebuild from scratchlm_tokenizer.json (`directory` holds ranks.tiktoken, needed when merges is null)."""
        if config.get("format_version", 1) > FORMAT_VERSION:
            raise ValueError(f"tokenizer format_version {config['format_version']} is newer than this scratchlm "
                             f"understands ({FORMAT_VERSION}); upgrade scratchlm")
        specials = config["special_tokens"]
        pattern = config.get("pattern_regex") or config["pattern"]
        if config.get("merges") is None:
            if directory is None or not (Path(directory) / RANKS_FILE).is_file():
                raise FileNotFoundError(f"{RANKS_FILE} missing next to {CONFIG_FILE}; the tokenizer folder is "
                                        f"incomplete, save it again")
            tok = cls.from_ranks(read_ranks(Path(directory) / RANKS_FILE), pattern, specials, backend=backend)
        else:
            tok = cls(config["merges"], pattern=pattern, backend=backend,
                      special_tokens=[s for s, _ in sorted(specials.items(), key=lambda kv: kv[1])])
        tok.pattern_name, tok.digits = config["pattern"], config.get("digits")
        if tok.special_tokens != specials:
            raise ValueError("special token ids in the file do not follow the merges; the file is corrupt")
        return tok

    @classmethod
    def load(cls, directory, backend: str = "auto") -> "BPETokenizer":
        path = Path(directory) / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; pass a folder written by `scratchlm tokenizer train`")
        return cls.from_config(json.loads(path.read_text(encoding="utf-8")), directory, backend=backend)

    # pickling (multiprocessing) sends the merges, not the tiktoken object or the caches
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_enc"] = None
        state["_compiled"] = None
        state["_cache"] = {}
        return state

    def __repr__(self) -> str:
        return (f"BPETokenizer(vocab_size={self.vocab_size}, merged={len(self.ranks) - 256}, "
                f"pattern={self.pattern_name!r}, backend={self.backend!r})")
