"""Byte-level BPE: trainer vs an exact naive reference, golden merges, round trips, special tokens, save/load."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchlm.tokenizer import (SPECIAL_TOKENS, BPETokenizer, CharTokenizer, build_pattern, learn_merges,
                                 load_tokenizer, train_bpe, train_bpe_from_texts)
from scratchlm.tokenizer.corpus import count_words, plan_tasks

from conftest import SHARED_DATA as SHARED, builtin_corpus, shared_path

# A small corpus with accents, CJK, emoji, digits, CRLF and contractions, so merges cover multi-byte tokens.
MIXED = (
    "The quick brown fox jumps over the lazy dog. It's 2024; they'll pay $1,234.56 (or 7890) tomorrow.\r\n"
    "Café, naïve, résumé, façade — Straße über alles. Ünïcödé cömbïnïng: e\u0301 a\u0308 o\u0302.\n"
    "日本語のテキストです。中文文本也在这里。한국어 텍스트도 있습니다. Привет, мир! Γειά σου κόσμε.\n"
    "Emoji: 👍🏽 👨‍👩‍👧‍👦 🇫🇷 🎉🎉🎉 and tabs\tand   spaces   \n\n\n"
    "def f(x):\n    return x ** 2  # code, too\n"
)


def naive_merges(word_counts: dict[str, int], num_merges: int) -> list[tuple[int, int]]:
    """The textbook O(merges x corpus) trainer with our tie-break: highest count, then smallest (left, right)."""
    words = Counter()
    for w, c in word_counts.items():
        words[tuple(w.encode("utf-8"))] += c
    vocab = [bytes([i]) for i in range(256)]
    ids = {b: i for i, b in enumerate(vocab)}
    merges = []
    while len(merges) < num_merges:
        stats = Counter()
        for w, c in words.items():
            for p in zip(w, w[1:]):
                stats[p] += c
        if not stats:
            break
        a, b = min(stats, key=lambda p: (-stats[p], p))
        new = vocab[a] + vocab[b]
        t = ids.get(new)
        if t is None:
            t = ids[new] = len(vocab)
            vocab.append(new)
            merges.append((a, b))
        rewritten = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(t)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            rewritten[tuple(out)] += c
        words = rewritten
    return merges


def chunk_counts(text: str, pattern: str = "gpt4") -> Counter:
    import regex

    return Counter(regex.findall(build_pattern(pattern), text))


# ---------------------------------------------------------------- trainer


def test_golden_merges():
    # Sennrich et al.'s toy corpus, chunks "low" x1, " low" x4, " lower" x2, " newest" x6, " widest" x3.
    # Worked by hand: "es" and "st" both occur 9 times; the tie goes to the smaller pair (101, 115) < (115, 116).
    # Then "est" 9, "lo" 7, "low" 7; then " n" (32, 110) and " low" (32, 259) tie at 6: " n" first; then "ew"
    # (101, 119) beats " ne" (260, 101); then " new", " newest"; at 3, " w" (32, 119) beats "wi", "id", "dest".
    text = "low low low low low lower lower newest newest newest newest newest newest widest widest widest"
    merges, tb = learn_merges(chunk_counts(text), 10)
    got = [(tb[a] + tb[b]).decode() for a, b in merges]
    assert got == ["es", "est", "lo", "low", " n", " low", "ew", " new", " newest", " w"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_incremental_trainer_equals_naive_reference(seed):
    rng = random.Random(seed)
    alphabet = "aab ccd\né"  # few symbols -> many repeats, ties and "aaa" runs
    text = "".join(rng.choice(alphabet) for _ in range(3000)) + MIXED
    counts = chunk_counts(text)
    merges, _ = learn_merges(counts, 300)
    assert merges == naive_merges(counts, 300)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.text(alphabet="ab c", min_size=1, max_size=12), st.integers(1, 9), max_size=30))
def test_incremental_trainer_equals_naive_on_random_counts(counts):
    merges, _ = learn_merges(counts, 40)
    assert merges == naive_merges(counts, 40)


def test_repeated_runs_do_not_duplicate_tokens():
    # runs of one byte are the classic source of two merges spelling the same token ("aa"+"a" vs "a"+"aa")
    counts = {"a" * n: 10 + n for n in range(2, 40)}
    merges, tb = learn_merges(counts, 60)
    assert len(set(tb)) == len(tb)
    assert merges == naive_merges(counts, 60)


def test_training_is_deterministic_and_independent_of_workers(tmp_path):
    texts = [MIXED * 3, "hello world\n" * 50, "x <|endoftext|> y\n" * 20, "a\n\n\n  b \r\n\r\nc\n \n\u3000d\n"]
    for i, t in enumerate(texts * 10):
        (tmp_path / f"f{i}.txt").write_text(t, encoding="utf-8")
    (tmp_path / "big.txt").write_text("\n".join(texts) * 40, encoding="utf-8")
    # count in tiny 2 kB tasks: the cuts must never change a chunk, whatever the number of workers
    whole = Counter()
    for p in sorted(tmp_path.glob("*.txt")):
        for part in p.read_bytes().decode("utf-8").split("<|endoftext|>"):
            whole.update(chunk_counts(part))
    assert len(plan_tasks([tmp_path / "big.txt"], 2048)) > 10
    for workers in (1, 2):
        assert count_words([tmp_path], build_pattern("gpt4"), num_workers=workers, progress=False,
                           block_bytes=2048) == whole
    one = train_bpe([tmp_path], 600, num_workers=1, progress=False)
    two = train_bpe([tmp_path], 600, num_workers=2, progress=False)
    assert one.merges == two.merges == learn_merges(whole, 600 - 264)[0]


def test_special_strings_in_corpus_are_separators_not_text():
    tok = train_bpe_from_texts(["ab<|endoftext|>ab<|endoftext|>ab"] * 5, 300)
    learned = [tok.id_to_bytes(256 + i) for i in range(len(tok.merges))]
    assert all(b"<|" not in t and b"|>" not in t for t in learned)


def test_jsonl_fields_and_missing_field_error(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps({"q": "zzzz yyyy " * 5, "other": 1}) for _ in range(20)) + "\n")
    # JSONL is read by the data reader every command shares; train_bpe alone reads plain text
    from scratchlm.data.sources import SourceConfig, SourceCorpus

    tok = train_bpe(SourceCorpus([p], SourceConfig(text_field="q")), 270, progress=False, num_workers=1)
    assert b"zz" in {tok.id_to_bytes(i) for i in range(256, 256 + len(tok.merges))}
    with pytest.raises(ValueError, match="field"):
        train_bpe(SourceCorpus([p]), 270, progress=False, num_workers=1)
    with pytest.raises(ValueError, match="SourceCorpus"):
        train_bpe([p], 270, progress=False, num_workers=1)


def test_bad_arguments_have_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe_from_texts(["abc"], 100)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_bpe([tmp_path / "nope.txt"], 300)
    with pytest.raises(ValueError, match="unknown split pattern"):
        build_pattern("gpt5")


def test_digit_grouping():
    import regex

    assert regex.findall(build_pattern("gpt4"), "1234567") == ["123", "456", "7"]
    assert regex.findall(build_pattern("gpt4", digits=1), "123") == ["1", "2", "3"]
    assert regex.findall(build_pattern("gpt2"), "in 1234567") == ["in", " 1234567"]
    assert regex.findall(build_pattern("gpt2", digits=2), "in 12345") == ["in", " 12", "34", "5"]


# ---------------------------------------------------------------- encoding


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    # TinyWorld fills the 1500-token vocabulary on any machine; Shakespeare, where ../shared has it, adds old English
    texts = [MIXED] * 20 + builtin_corpus(300_000)
    shakespeare = SHARED / "tinyshakespeare" / "input.txt"
    if shakespeare.is_file():
        texts.append(shakespeare.read_text(encoding="utf-8")[:300_000])
    return train_bpe_from_texts(texts, 1500)


@pytest.fixture(scope="module")
def tok_py(tok) -> BPETokenizer:
    return BPETokenizer(tok.merges, backend="python")


def test_vocab_layout_and_special_ids(tok):
    n = 256 + len(tok.merges)
    assert tok.vocab_size == n + len(SPECIAL_TOKENS) == 1500
    assert tok.special_tokens == {s: n + i for i, s in enumerate(SPECIAL_TOKENS)}
    assert (tok.eos_id, tok.bos_id, tok.pad_id) == (1492, 1493, 1494)
    assert tok.special_tokens["<|im_start|>"] == 1495 and tok.special_tokens["<|im_end|>"] == 1496


TEXTS = [
    "", " ", "\n", "\r\n\r\n", "\x00", "a\x00b", MIXED, "hello world" * 3, " " * 1000, "\n" * 500 + "x",
    "e\u0301" * 50, "👍" * 200, "1234567890" * 20, "'S 'LL 'ſ 'K", "\t \t \u3000\u00a0\u2028 x", "a" * 5000,
    "<|endoftext|>", "<|endoftext|><|bos|>x<|im_start|>user\nhi<|im_end|>\n",
]


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_and_backends_agree(tok, tok_py, text):
    ids = tok.encode(text)
    assert tok.backend == "tiktoken"
    assert ids == tok_py.encode(text)
    assert tok.decode(ids) == text
    assert tok.encode(text, allowed_special="all") == tok_py.encode(text, allowed_special="all")


unicode_text = st.text(max_size=300)
tricky = st.lists(st.sampled_from(list("aé\u0301 \t\r\n\x00😀👍🏽\u200d\u3000'sSl1234.,<|>") +
                                  ["<|endoftext|>", "<|im_start|>", "  ", "\r\n"]), max_size=100).map("".join)
long_runs = st.builds(lambda c, n, s: s + c * n + s, st.sampled_from([" ", "\n", "a", "é", "😀", "\r\n", "0"]),
                      st.integers(0, 3000), st.text(max_size=10))


@settings(max_examples=300, deadline=None)
@given(st.one_of(unicode_text, tricky, long_runs))
def test_property_round_trip_and_backends_agree(tok, tok_py, text):
    ids = tok.encode(text)
    assert tok.decode(ids, errors="strict") == text
    assert ids == tok_py.encode(text)
    assert tok.encode(text, allowed_special="all") == tok_py.encode(text, allowed_special="all")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 1499), max_size=100))
def test_decoding_any_ids_never_raises(tok, ids):
    text = tok.decode(ids)
    assert isinstance(text, str)
    assert tok.decode_bytes(ids).decode("utf-8", "replace") == text


def test_decode_out_of_range(tok):
    assert tok.decode([104, 10_000, -1]) == "h\ufffd\ufffd"
    with pytest.raises(ValueError, match="outside"):
        tok.decode([10_000], errors="strict")


def test_special_tokens_refused_by_default(tok, tok_py):
    text = "hi<|endoftext|>there<|im_start|>system"
    for t in (tok, tok_py):
        ids = t.encode(text)
        assert not set(ids) & set(t.special_tokens.values())
        assert t.decode(ids) == text
        allowed = t.encode(text, allowed_special="all")
        assert t.eos_id in allowed and t.special_tokens["<|im_start|>"] in allowed
        only_eos = t.encode(text, allowed_special={"<|endoftext|>"})
        assert t.eos_id in only_eos and t.special_tokens["<|im_start|>"] not in only_eos
        assert t.decode(allowed) == text
    with pytest.raises(ValueError, match="unknown special"):
        tok.encode("x", allowed_special={"<|nope|>"})


def test_lone_surrogates_become_replacement_char(tok, tok_py):
    assert tok.encode("a\ud800b") == tok_py.encode("a\ud800b") == tok.encode("a\ufffdb")


def test_encode_batch(tok, tok_py):
    texts = [MIXED[i:] for i in range(0, 200, 7)] + ["<|endoftext|>"]
    want = [tok.encode(t) for t in texts]
    assert tok.encode_batch(texts, num_workers=2) == want
    assert tok_py.encode_batch(texts, num_workers=2) == want
    assert tok_py.encode_batch(texts, num_workers=1, allowed_special="all") == [
        tok.encode(t, allowed_special="all") for t in texts]


def test_long_chunk_heap_path_equals_reference(tok_py):
    rng = random.Random(0)
    for _ in range(50):
        piece = "".join(rng.choice("ab ") for _ in range(rng.randint(65, 400))).encode()
        assert tok_py._bpe_heap(piece) == _quadratic(tok_py, piece)
        assert tok_py._bpe(piece[:60]) == _quadratic(tok_py, piece[:60])


def _quadratic(t, piece):
    """tiktoken's rule, spelled out: merge the lowest-rank adjacent concatenation, leftmost first."""
    parts = [piece[i:i + 1] for i in range(len(piece))]
    while True:
        cands = [(t.ranks[parts[i] + parts[i + 1]], i) for i in range(len(parts) - 1) if parts[i] + parts[i + 1] in t.ranks]
        if not cands:
            return [t.ranks[p] for p in parts]
        _, i = min(cands)
        parts[i:i + 2] = [parts[i] + parts[i + 1]]


# ---------------------------------------------------------------- save / load


def test_save_load_round_trip(tok, tmp_path):
    tok.save(tmp_path / "t", chat_template="{{ messages }}")
    names = {p.name for p in (tmp_path / "t").iterdir()}
    assert {"scratchlm_tokenizer.json", "ranks.tiktoken", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json"} <= names
    back = load_tokenizer(tmp_path / "t")
    assert back.merges == tok.merges and back.special_tokens == tok.special_tokens
    assert back.encode(MIXED) == tok.encode(MIXED)
    cfg = json.loads((tmp_path / "t" / "tokenizer_config.json").read_text())
    assert cfg["chat_template"] == "{{ messages }}" and cfg["eos_token"] == "<|endoftext|>"


def test_ranks_file_loads_in_tiktoken(tok, tmp_path):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    tok.save(tmp_path)
    ranks = load_tiktoken_bpe(str(tmp_path / "ranks.tiktoken"))
    assert ranks == tok.ranks
    enc = tiktoken.Encoding("t", pat_str=tok.pattern, mergeable_ranks=ranks, special_tokens=tok.special_tokens)
    assert enc.encode(MIXED) == tok.encode(MIXED)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="scratchlm tokenizer train"):
        load_tokenizer(tmp_path)
    (tmp_path / "scratchlm_tokenizer.json").write_text('{"type": "wordpiece"}')
    with pytest.raises(ValueError, match="unknown tokenizer type"):
        load_tokenizer(tmp_path)


# ---------------------------------------------------------------- char tokenizer


def test_char_tokenizer_matches_nanogpt_shakespeare_char(tmp_path):
    path = shared_path("tinyshakespeare/input.txt")
    text = path.read_text(encoding="utf-8")
    tok = CharTokenizer.train(text)
    chars = sorted(set(text))
    assert tok.vocab_size == len(chars) == 65
    assert tok.encode("hii there") == [{c: i for i, c in enumerate(chars)}[c] for c in "hii there"]
    assert tok.eos_id is None and tok.decode(tok.encode(text[:5000])) == text[:5000]
    tok.save(tmp_path / "c")
    back = load_tokenizer(tmp_path / "c")
    assert isinstance(back, CharTokenizer) and back.encode(text[:1000]) == tok.encode(text[:1000])


def test_char_tokenizer_specials_and_errors():
    tok = CharTokenizer.train("abc\n", special_tokens=True)
    assert tok.vocab_size == 4 + len(SPECIAL_TOKENS) and tok.eos_id == 4
    assert tok.encode("a<|endoftext|>", allowed_special="all") == [1, 4]
    with pytest.raises(ValueError, match="not in this char vocabulary"):
        tok.encode("a<|endoftext|>")
    with pytest.raises(ValueError, match="'z'"):
        tok.encode("abz")
    assert tok.decode([0, 99]) == "\n\ufffd"


def test_falls_back_to_pure_python_without_tiktoken(tok, monkeypatch):
    import sys

    want = tok.encode(MIXED)
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # makes `import tiktoken` raise ImportError
    t = BPETokenizer(tok.merges)
    assert t.backend == "python" and t.encode(MIXED) == want
    with pytest.raises(ImportError, match="pip install tiktoken"):
        BPETokenizer(tok.merges, backend="tiktoken")
