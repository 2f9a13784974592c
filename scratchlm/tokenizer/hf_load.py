"""Hugging Face byte-level BPE tokenizers (tokenizer.json of GPT-2, Llama 3, Qwen2, SmolLM) behind our interface.

    tok = load_hf_tokenizer("models/SmolLM-135M")       # a folder with tokenizer.json (+ tokenizer_config.json)
    tok.encode("Hello <|im_end|>", allowed_special="all") == hf_tokenizer.encode(text, add_special_tokens=False)

What `tokenizers` does to a text, step by step, and what this file does the same way:
1. added tokens are cut out first (leftmost, longest first); special ones only when allowed (our rule: user text
   cannot inject control tokens), non-special ones (Qwen2's <tool_call>) always, as they are ordinary words there;
2. the normalizer runs on the rest (only Unicode normal forms are read: they change no ASCII text);
3. the pre-tokenizer cuts chunks: Split(regex, "Isolated") keeps matches *and* the gaps between them,
   Digits isolates digits, ByteLevel(use_regex) applies GPT-2's regex;
4. BPE runs on each chunk's bytes: start from single bytes and apply the *listed merge* of lowest list position,
   leftmost on ties, until no adjacent pair is a listed merge (`ignore_merges`: a chunk that is a token is emitted).

Step 4 is not what our BPETokenizer (tiktoken's rule) does: it merges the adjacent pair whose *concatenation* has
the lowest rank, listed or not. With vocab {a b c ab bc abc} and merges [b c, a b, ab c], "abc" is [a, bc] for
Hugging Face (bc merges first and (a, bc) is no merge) but [abc] for tiktoken. So `encode` runs the merge-list
algorithm itself (exact, cached per chunk); `encode_batch` hands bulk work to tiktoken only once
`rank_consistency()` has shown that the two rules agree on every input for this vocabulary:
- the pre-tokenizer is one regex, no added token is a plain vocabulary entry, every multi-byte token comes from
  exactly one merge, and a later merge always makes a larger id (so ranks = ids order pairs as positions do);
- every merged token encodes to itself under the merge rule. Then tiktoken never merges an unlisted pair: parts
  x | y spanning a token t = x + y can only arise if encoding t's bytes alone stops at [x, y] (inside a span
  nothing crosses the edges, so the merges there run in the same order as on the span alone), which the check
  excludes. GPT-2 and files trained by `tokenizers` pass; Llama 3's (several merges per token) takes the exact path.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import regex

from .base import Tokenizer, write_json, write_text
from .hf import bytes_to_unicode
from .pretokenize import GPT2_PATTERN, special_splitter

NORMAL_FORMS = {"NFC", "NFD", "NFKC", "NFKD"}
SUPPORTED = "byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM style)"


def _unsupported(what: str) -> ValueError:
    return ValueError(f"tokenizer.json uses {what}, which scratchlm cannot apply; it reads {SUPPORTED} tokenizers "
                      f"only: use transformers for this one")


def _token_name(value) -> str | None:
    """tokenizer_config.json names a token as a string or as an AddedToken dict {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


def _read_normalizer(spec) -> list[str]:
    """Unicode normal forms to apply, in order; any normalizer that rewrites text otherwise is refused."""
    if spec is None:
        return []
    if spec.get("type") == "Sequence":
        return [f for s in spec.get("normalizers", []) for f in _read_normalizer(s)]
    if spec.get("type") in NORMAL_FORMS:
        return [spec["type"]]
    raise _unsupported(f"the normalizer {spec.get('type')!r} (it changes the text before splitting)")


def _read_pretokenizer(spec) -> tuple[list[regex.Pattern], bool]:
    """(split regexes applied in turn, each keeping matches and gaps; whether a ByteLevel step was seen)."""
    if spec is None:
        raise _unsupported("no pre-tokenizer (not byte-level)")
    kind = spec.get("type")
    if kind == "Sequence":
        pats, byte_level = [], False
        for s in spec.get("pretokenizers", []):
            p, b = _read_pretokenizer(s)
            pats += p
            byte_level |= b
        return pats, byte_level
    if kind == "ByteLevel":
        if spec.get("add_prefix_space"):
            raise _unsupported("ByteLevel with add_prefix_space=true")
        return ([regex.compile(GPT2_PATTERN)] if spec.get("use_regex", True) else []), True
    if kind == "Split":
        if spec.get("behavior") != "Isolated" or spec.get("invert"):
            raise _unsupported(f"a Split pre-tokenizer with behavior {spec.get('behavior')!r}"
                               f"{' inverted' if spec.get('invert') else ''} (only 'Isolated' is read)")
        pattern = spec["pattern"]
        text = pattern["Regex"] if "Regex" in pattern else regex.escape(pattern["String"])
        return [regex.compile(text)], False
    if kind == "Digits":
        return [regex.compile(r"\p{N}" if spec.get("individual_digits") else r"\p{N}+")], False
    raise _unsupported(f"the pre-tokenizer {kind!r}")


def _isolated_split(pieces: list[str], pat: regex.Pattern) -> list[str]:
    """tokenizers' Split(behavior="Isolated"): every match is a piece and so is every gap between matches."""
    out = []
    for piece in pieces:
        last = 0
        for m in pat.finditer(piece):
            if m.start() == m.end():
                continue
            if m.start() > last:
                out.append(piece[last:m.start()])
            out.append(m.group())
            last = m.end()
        if last < len(piece):
            out.append(piece[last:])
    return out


class HFTokenizer(Tokenizer):
    """A Hugging Face byte-level BPE tokenizer.json, encoding to exactly the ids `tokenizers` gives."""

    def __init__(self, tokenizer_json: dict, config: dict | None = None, generation_config: dict | None = None,
                 special_tokens_map: dict | None = None):
        """The parsed tokenizer.json, tokenizer_config.json, generation_config.json and special_tokens_map.json
        (the last three optional; token names in tokenizer_config.json win over special_tokens_map.json's)."""
        config = config or {}
        model = tokenizer_json.get("model") or {}
        if model.get("type") != "BPE":
            kind = model.get("type") or "unknown"
            raise _unsupported(f"a {kind} model" + (" (SentencePiece)" if kind == "Unigram" else ""))
        for key in ("continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(key):
                raise _unsupported(f"BPE with {key}={model[key]!r}")
        if model.get("dropout"):
            raise _unsupported(f"BPE dropout={model['dropout']} (random merges at encode time)")
        self.normal_forms = _read_normalizer(tokenizer_json.get("normalizer"))
        self.split_patterns, byte_level = _read_pretokenizer(tokenizer_json.get("pre_tokenizer"))
        if not byte_level:
            raise _unsupported("a BPE without a ByteLevel pre-tokenizer (SentencePiece-style, e.g. Llama 2, Mistral)")
        self.ignore_merges = bool(model.get("ignore_merges", False))

        byte_of = {c: b for b, c in bytes_to_unicode().items()}
        added = {t["content"] for t in tokenizer_json.get("added_tokens", [])}
        table: dict[int, bytes] = {}
        try:
            for s, i in model["vocab"].items():  # an added token kept in the vocabulary is spelt as plain text
                table[i] = s.encode("utf-8") if s in added else bytes(byte_of[c] for c in s)
        except KeyError as e:
            raise _unsupported(f"a vocabulary entry with the character {e.args[0]!r}, outside the byte-level "
                               "alphabet (not a byte-level BPE)") from None
        self._vocab_id = {b: i for i, b in table.items()}  # bytes -> id of the model's vocabulary
        self._vocab_bytes = dict(table)
        missing = [b for b in range(256) if bytes([b]) not in self._vocab_id]
        if missing:
            raise _unsupported(f"a vocabulary without the single byte(s) {missing[:5]} (not a full byte alphabet)")
        self._byte_id = [self._vocab_id[bytes([b])] for b in range(256)]
        # (left id, right id) -> (list position, new id); a repeated pair keeps its last position, as tokenizers does
        self._merges: dict[tuple[int, int], tuple[int, int]] = {}
        self._merge_list = []
        for pos, m in enumerate(model.get("merges", [])):
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            try:
                ids = (model["vocab"][a], model["vocab"][b])
                new = model["vocab"][a + b]
            except KeyError:
                raise ValueError(f"tokenizer.json merge {pos} ({a!r}, {b!r}) names a token missing from the "
                                 "vocabulary; the file is corrupt") from None
            self._merges[ids] = (pos, new)
            self._merge_list.append((ids, new))

        self.special_tokens, self.added_tokens = {}, {}  # {content: id}: special ones, and all (incl. special)
        for t in tokenizer_json.get("added_tokens", []):
            for flag in ("lstrip", "rstrip", "single_word"):
                if t.get(flag):
                    raise _unsupported(f"the added token {t['content']!r} with {flag}=true")
            self.added_tokens[t["content"]] = t["id"]
            if t.get("special"):
                self.special_tokens[t["content"]] = t["id"]
            table[t["id"]] = t["content"].encode("utf-8")
        self._splitters: dict[frozenset, regex.Pattern | None] = {}
        self._id_bytes: list[bytes | None] = [table.get(i) for i in range(max(table) + 1)]
        self._cache: dict[bytes, list[int]] = {}
        self._fast = None  # tiktoken.Encoding, once rank_consistency() allows it (encode_batch)
        self._consistency: str | None = None

        # names from tokenizer_config.json; the chat side (inference/hf_chat.py) reads the rest of these
        self.config = config
        self.generation_config = generation_config or {}
        self.chat_template = config.get("chat_template")
        named = {**(special_tokens_map or {}), **config}
        self.token_names = {k: _token_name(v) for k, v in named.items()
                            if k.endswith("_token") and isinstance(_token_name(v), str)}
        self._adds_bos = self._bos_from_post_processor(tokenizer_json.get("post_processor"))
        if config.get("add_bos_token") is not None:  # transformers rewrites the post-processor to follow it
            self._adds_bos = self.token_names.get("bos_token") if config["add_bos_token"] else None
        self._source = tokenizer_json

    @staticmethod
    def _bos_from_post_processor(spec) -> str | None:
        """The token a TemplateProcessing post-processor puts before a text (Llama 3's <|begin_of_text|>)."""
        if not spec:
            return None
        if spec.get("type") == "Sequence":
            return next((b for s in spec.get("processors", []) if (b := HFTokenizer._bos_from_post_processor(s))),
                        None)
        if spec.get("type") == "TemplateProcessing" and spec.get("single"):
            first = spec["single"][0]
            return first["SpecialToken"]["id"] if "SpecialToken" in first else None
        return None

    # ---- ids of named tokens ----
    def _id(self, name: str | None) -> int | None:
        return None if name is None else self.added_tokens.get(name, self._vocab_id.get(name.encode("utf-8")))

    @property
    def bos_id(self) -> int | None:
        """The token Hugging Face puts before a text (None for GPT-2, which adds none): Engine.encode adds it."""
        return self._id(self._adds_bos)

    @property
    def eos_id(self) -> int | None:
        return self._id(self.token_names.get("eos_token"))

    @property
    def pad_id(self) -> int | None:
        return self._id(self.token_names.get("pad_token"))

    @property
    def vocab_size(self) -> int:
        return len(self._id_bytes)

    @property
    def token_bytes(self) -> list[bytes]:
        return [b if b is not None else b"" for b in self._id_bytes]

    def id_to_bytes(self, i: int) -> bytes:
        return self._id_bytes[i] or b""

    # ---- encoding ----
    def encode(self, text: str, allowed_special=frozenset()) -> list[int]:
        return self._encode(text, self._allowed(allowed_special), fast=False)

    def encode_ordinary(self, text: str) -> list[int]:
        return self.encode(text)

    def encode_batch(self, texts, allowed_special=frozenset(), num_workers: int | None = None) -> list[list[int]]:
        allowed = self._allowed(allowed_special)
        if self.rank_consistency() is None:  # same ids either way; tiktoken's Rust core is just faster
            return [self._encode(t, allowed, fast=True) for t in texts]
        return super().encode_batch(texts, allowed, num_workers)

    def _segments(self, text: str, allowed: frozenset):
        """(ordinary text, None) and (None, added-token id) in order: step 1 of the module docstring."""
        allowed = allowed | (self.added_tokens.keys() - self.special_tokens.keys())
        if allowed not in self._splitters:
            self._splitters[allowed] = special_splitter(allowed)
        splitter = self._splitters[allowed]
        parts = splitter.split(text) if splitter is not None else [text]
        for k, part in enumerate(parts):
            if k % 2:
                yield None, self.added_tokens[part]
            elif part:
                yield part, None

    def _encode(self, text: str, allowed: frozenset, fast: bool) -> list[int]:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")  # lone surrogates -> U+FFFD
        ids: list[int] = []
        for part, added in self._segments(text, allowed):
            if added is not None:
                ids.append(added)
                continue
            for form in self.normal_forms:
                part = unicodedata.normalize(form, part)
            if fast:
                out = self._fast.encode_ordinary(part)
                # tiktoken skips text its regex does not match; Split keeps it. Fall back if any byte went missing.
                if sum(len(self._id_bytes[i]) for i in out) == len(part.encode("utf-8")):
                    ids += out
                    continue
            for piece in self.pretokenize(part):
                ids += self._bpe_cached(piece.encode("utf-8"))
        return ids

    def pretokenize(self, text: str) -> list[str]:
        """The chunks BPE sees (step 3), with each split of the pre-tokenizer applied in turn."""
        pieces = [text]
        for pat in self.split_patterns:
            pieces = _isolated_split(pieces, pat)
        return pieces

    def _bpe_cached(self, data: bytes) -> list[int]:
        out = self._cache.get(data)
        if out is None:
            out = self._vocab_id.get(data) if self.ignore_merges else None
            out = [out] if out is not None else self.merge(data)
            if len(self._cache) >= 100_000:  # bound memory on endless streams of new words
                self._cache.clear()
            self._cache[data] = out
        return out

    def merge(self, data: bytes) -> list[int]:
        """Step 4 on one chunk: apply the listed merge of lowest position, leftmost on ties, until none applies."""
        parts = [self._byte_id[b] for b in data]
        merges = self._merges
        while len(parts) > 1:
            best, best_i = None, -1
            for i in range(len(parts) - 1):
                m = merges.get((parts[i], parts[i + 1]))
                if m is not None and (best is None or m[0] < best[0]):
                    best, best_i = m, i
            if best is None:
                break
            parts[best_i:best_i + 2] = [best[1]]
        return parts

    def rank_consistency(self) -> str | None:
        """None when tiktoken's rank rule gives this tokenizer's ids on every text (module docstring), else why not.
        Builds the tiktoken encoding on first success."""
        if self._consistency is None:
            self._consistency = self._check_consistency() or ""
            if not self._consistency:
                import tiktoken

                try:
                    self._fast = tiktoken.Encoding(name="hf_bpe", pat_str=self.split_patterns[0].pattern,
                                                   mergeable_ranks=self._fast_ranks, special_tokens={})
                except ValueError as e:  # a regex fancy-regex does not take
                    self._consistency = f"tiktoken cannot use the split regex ({e})"
        return self._consistency or None

    def _check_consistency(self) -> str:
        if len(self.split_patterns) != 1:
            return f"the pre-tokenizer applies {len(self.split_patterns)} splits, not one regex"
        # an added token that is also a vocabulary entry (GPT-2's <|endoftext|>) is left out of tiktoken's ranks: no
        # merge makes it, so BPE never reaches it, unless ignore_merges finds a chunk spelling it
        added = {self._vocab_id.get(s.encode("utf-8")) for s in self.added_tokens} - {None}
        if added and self.ignore_merges:
            return "an added token is also a vocabulary entry and ignore_merges could emit it from plain text"
        try:
            import tiktoken  # noqa: F401
        except ImportError:
            return "tiktoken is not installed"
        made, last = set(), -1
        for _, new in self._merge_list:
            if new in made:
                return f"token {new} is made by more than one merge"
            if new <= last:
                return f"merge making id {new} comes after the one making id {last}: positions and ids disagree"
            made.add(new)
            last = new
        added -= made  # one a merge makes is an ordinary token to BPE, as it is to tokenizers' BPE model
        multi = [i for b, i in self._vocab_id.items() if len(b) > 1 and i not in made and i not in added]
        if multi:
            return f"token {multi[0]} is in the vocabulary but no merge makes it"
        for _, new in self._merge_list:
            if self.merge(self._vocab_bytes[new]) != [new]:
                return f"token {new} ({self._vocab_bytes[new]!r}) does not encode to itself under the merge list"
        self._fast_ranks = {b: i for b, i in self._vocab_id.items() if i not in added}
        return ""

    # ---- decoding ----
    def decode_bytes(self, ids) -> bytes:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        table = self._id_bytes
        out = []
        for i in ids:
            b = table[i] if isinstance(i, int) and 0 <= i < len(table) else None
            if b is None:
                raise ValueError(f"token id {i!r} is outside this tokenizer's vocabulary (0..{len(table) - 1}, "
                                 "only ids the tokenizer.json defines)")
            out.append(b)
        return b"".join(out)

    def decode(self, ids, errors: str = "replace") -> str:
        try:
            data = self.decode_bytes(ids)
        except ValueError:
            if errors == "strict":
                raise
            ids = ids.tolist() if hasattr(ids, "tolist") else ids
            data = b"".join(self.id_to_bytes(i) if isinstance(i, int) and 0 <= i < self.vocab_size else b"\xff"
                            for i in ids)
        try:
            return data.decode("utf-8", errors=errors)
        except UnicodeDecodeError as e:
            raise ValueError(f"ids do not decode to valid UTF-8 ({e.reason} at byte {e.start}); "
                             f'use errors="replace"') from None

    # ---- save ----
    def save(self, directory, chat_template: str | None = None) -> Path:
        """Write the Hugging Face files back (chat_template replaces the one in tokenizer_config.json if given)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        write_text(d / "tokenizer.json", json.dumps(self._source, ensure_ascii=False) + "\n")
        config = dict(self.config)
        if chat_template is not None:
            config["chat_template"] = chat_template
        write_json(d / "tokenizer_config.json", config)
        if self.generation_config:
            write_json(d / "generation_config.json", self.generation_config)
        return d

    def __getstate__(self):  # pool workers get the tables, not tiktoken's object
        state = self.__dict__.copy()
        state["_fast"], state["_consistency"], state["_cache"], state["_fast_ranks"] = None, None, {}, None
        return state

    def __repr__(self) -> str:
        return (f"HFTokenizer(vocab_size={self.vocab_size}, merges={len(self._merge_list)}, "
                f"added={len(self.added_tokens)}, splits={len(self.split_patterns)})")


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); download or copy it again") from None


def load_hf_tokenizer(directory) -> HFTokenizer:
    """The tokenizer of a Hugging Face folder: tokenizer.json, plus tokenizer_config.json (token names, chat
    template) and generation_config.json (eos ids) when present."""
    d = Path(directory)
    data = _read_json(d / "tokenizer.json")
    if data is None:
        raise FileNotFoundError(f"no tokenizer.json in {d}; pass a folder written by save_pretrained")
    config = _read_json(d / "tokenizer_config.json") or {}
    if (d / "chat_template.jinja").is_file():  # newer save_pretrained writes the template here; it wins, as there
        config = {**config, "chat_template": (d / "chat_template.jinja").read_text(encoding="utf-8")}
    return HFTokenizer(data, config, _read_json(d / "generation_config.json"),
                       _read_json(d / "special_tokens_map.json"))
