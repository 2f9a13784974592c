"""Quality filters: each rule on crafted documents on both sides of its threshold, metrics vs brute force."""

import collections
import dataclasses

import numpy as np
import pytest

from scratchlm.data.quality import (Parsed, QualityConfig, c4_clean_lines, c4_filter, count_sentences,
                                    dup_ngram_char_frac, fineweb_filter, gopher_quality, gopher_repetition,
                                    quality_reason, token_word_ratio, top_ngram_char_frac)

RNG = np.random.default_rng(0)
LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


def fresh_words(n, length=5):
    """n distinct lowercase words of `length` letters (no stop words, no repeats)."""
    return ["".join(RNG.choice(LETTERS, length)) + "q" * (length > 3) for _ in range(n)]


def sentence(n_words=9):
    return " ".join(["the"] + fresh_words(n_words - 2) + ["and"]) + "."


def good_doc(n_lines=12):
    return "\n".join(sentence() for _ in range(n_lines))


def cfg(**kw):
    return dataclasses.replace(QualityConfig(), **kw)


def test_good_document_passes_everything():
    assert quality_reason(good_doc(), QualityConfig()) is None


# ---- Gopher quality at the default thresholds ----

def test_word_count_boundaries():
    words = ["the", "and"] + fresh_words(48)
    assert gopher_quality(Parsed(" ".join(words)), QualityConfig()) is None  # 50 words
    assert gopher_quality(Parsed(" ".join(words[:-1])), QualityConfig()) == "gopher_word_count"  # 49
    assert gopher_quality(Parsed(" ".join(words)), cfg(max_words=49)) == "gopher_word_count"


def test_mean_word_length_boundaries():
    for length, ok in [(2, False), (3, True), (10, True), (11, False)]:
        words = ["".join(RNG.choice(LETTERS, length)) for _ in range(60)] + ["the", "and"] * 0
        text = " ".join(words)
        reason = gopher_quality(Parsed(text), cfg(min_stop_words=0))
        assert (reason != "gopher_mean_word_length") == ok, (length, reason)


def test_symbol_ratio_boundary():
    base = ["the", "and"] + fresh_words(52)
    ok = " ".join(base + ["#"] * 6)  # 6 symbols / 60 words = 0.10: kept
    bad = " ".join(base + ["#"] * 7)  # 7 / 61 > 0.10
    assert gopher_quality(Parsed(ok), cfg(min_alpha_words_ratio=0)) is None
    assert gopher_quality(Parsed(bad), cfg(min_alpha_words_ratio=0)) == "gopher_symbol_ratio"


def test_bullet_and_ellipsis_lines():
    lines = [sentence() for _ in range(10)]
    bullets9 = "\n".join(["- " + ln for ln in lines[:9]] + lines[9:])
    bullets10 = "\n".join("- " + ln for ln in lines)
    assert gopher_quality(Parsed(bullets9), QualityConfig()) is None  # 0.9 is allowed
    assert gopher_quality(Parsed(bullets10), QualityConfig()) == "gopher_bullet_lines"
    ell3 = "\n".join([ln[:-1] + "..." for ln in lines[:3]] + lines[3:])
    ell4 = "\n".join([ln[:-1] + "…" for ln in lines[:4]] + lines[4:])
    assert gopher_quality(Parsed(ell3), QualityConfig()) is None  # 0.3 is allowed
    assert gopher_quality(Parsed(ell4), QualityConfig()) == "gopher_ellipsis_lines"


def test_alpha_words_and_stop_words():
    alpha = ["the", "and"] + fresh_words(78)  # 80 alphabetic words
    ok = " ".join(alpha + ["1234"] * 20)  # 80% alphabetic: kept
    bad = " ".join(alpha + ["1234"] * 21)
    assert gopher_quality(Parsed(ok), QualityConfig()) is None
    assert gopher_quality(Parsed(bad), QualityConfig()) == "gopher_alpha_words"
    one_stop = " ".join(["the"] + fresh_words(60))
    assert gopher_quality(Parsed(one_stop), QualityConfig()) == "gopher_stop_words"
    assert gopher_quality(Parsed(one_stop + " with"), QualityConfig()) is None
    assert gopher_quality(Parsed(" ".join(["the", "the"] + fresh_words(60))), QualityConfig()) == "gopher_stop_words"


# ---- Gopher repetition ----

ONLY_LINES = dict(max_dup_para_frac=1, max_dup_line_char_frac=1, max_dup_para_char_frac=1,
                  max_top_ngram_char_frac=(), max_dup_ngram_char_frac=())


def test_duplicate_line_fraction_boundary():
    lines = [sentence() for _ in range(7)]
    ok = "\n".join(lines + lines[:3])  # 3 repeats of 10 lines = 0.30: kept
    bad = "\n".join(lines + lines[:4])  # 4 / 11 > 0.30
    c = cfg(**ONLY_LINES)
    assert gopher_repetition(Parsed(ok), c) is None
    assert gopher_repetition(Parsed(bad), c) == "gopher_dup_line_frac"
    # and by characters, at the default 0.2
    c2 = cfg(**{**ONLY_LINES, "max_dup_line_frac": 1, "max_dup_line_char_frac": 0.2})
    eq = [" ".join(fresh_words(10)) for _ in range(5)]  # 5 lines of equal length
    assert gopher_repetition(Parsed("\n".join(eq[:4] + eq[:1])), c2) is None  # 1/5 = 0.2 of chars
    assert gopher_repetition(Parsed("\n".join(eq[:3] + eq[:2])), c2) == "gopher_dup_line_char_frac"


def test_duplicate_paragraph_fraction():
    paras = ["\n".join(sentence() for _ in range(2)) for _ in range(7)]
    c = cfg(max_dup_line_frac=1, max_dup_line_char_frac=1, max_dup_para_char_frac=1, max_top_ngram_char_frac=(),
            max_dup_ngram_char_frac=())
    assert gopher_repetition(Parsed("\n\n".join(paras + paras[:3])), c) is None
    assert gopher_repetition(Parsed("\n\n".join(paras + paras[:4])), c) == "gopher_dup_para_frac"


def brute_top(words, n):
    grams = collections.Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    c = max(grams.values())
    chars = max(sum(map(len, g)) for g, k in grams.items() if k == c)  # ties: the longest
    return c * chars / sum(map(len, words)) if c > 1 else 0.0


def brute_dup(words, n):
    grams = collections.Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        if grams[tuple(words[i:i + n])] > 1:
            covered[i:i + n] = [True] * n
    return sum(len(w) for w, c in zip(words, covered) if c) / sum(map(len, words))


@pytest.mark.parametrize("seed", range(20))
def test_ngram_statistics_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    vocab = ["".join(rng.choice(LETTERS, rng.integers(1, 8))) for _ in range(rng.integers(3, 40))]
    words = list(rng.choice(vocab, rng.integers(5, 300)))
    doc = Parsed(" ".join(words))
    for n in (2, 3, 4):
        assert top_ngram_char_frac(doc, n) == pytest.approx(brute_top(words, n))
    for n in (5, 6, 7, 8, 9, 10):
        assert dup_ngram_char_frac(doc, n) == pytest.approx(brute_dup(words, n))


def test_top_and_duplicated_ngram_thresholds():
    filler = fresh_words(80)
    # the bigram "xx yy" (4 chars) repeated 25 times: 100 of the characters
    words = filler[:40] + ["xx", "yy"] * 25 + filler[40:]
    frac = top_ngram_char_frac(Parsed(" ".join(words)), 2)
    only_top = dict(max_dup_line_frac=1, max_dup_para_frac=1, max_dup_line_char_frac=1, max_dup_para_char_frac=1,
                    max_dup_ngram_char_frac=())
    assert gopher_repetition(Parsed(" ".join(words)), cfg(**only_top, max_top_ngram_char_frac=((2, frac),))) is None
    assert gopher_repetition(Parsed(" ".join(words)), cfg(**only_top, max_top_ngram_char_frac=((2, frac - 1e-9),))) \
        == "gopher_top_2gram"
    passage = fresh_words(12)
    words = fresh_words(100) + passage + fresh_words(50) + passage
    frac5 = dup_ngram_char_frac(Parsed(" ".join(words)), 5)
    assert frac5 == pytest.approx(2 * sum(map(len, passage)) / sum(map(len, words)))
    only_dup = {k: v for k, v in only_top.items() if k != "max_dup_ngram_char_frac"}
    only_dup["max_top_ngram_char_frac"] = ()
    assert gopher_repetition(Parsed(" ".join(words)), cfg(**only_dup, max_dup_ngram_char_frac=((5, frac5),))) is None
    assert gopher_repetition(Parsed(" ".join(words)), cfg(**only_dup, max_dup_ngram_char_frac=((5, frac5 - 1e-9),))) \
        == "gopher_dup_5gram"


# ---- C4 ----

def test_c4_document_rules():
    five = " ".join(sentence() for _ in range(5))
    assert count_sentences(five) == 5
    assert c4_filter(Parsed(five), QualityConfig()) is None
    assert c4_filter(Parsed(" ".join(sentence() for _ in range(4))), QualityConfig()) == "c4_min_sentences"
    assert c4_filter(Parsed(five + " Lorem Ipsum dolor sit amet."), QualityConfig()) == "c4_lorem_ipsum"
    assert c4_filter(Parsed(five + " int main() { return 0; }"), QualityConfig()) == "c4_curly_brace"


def test_c4_line_cleaning():
    keep = ["The cat sat on the mat.", "Three words here"]
    drop = ["Please enable JavaScript to view this page.", "This site uses cookies to improve things.",
            "Read our Privacy Policy for details.", "Two words", "the " + "x" * 1001]
    text, removed = c4_clean_lines("\n".join(keep[:1] + drop + keep[1:]), QualityConfig())
    assert text == "\n".join(keep) and removed == len(drop)
    text, removed = c4_clean_lines("\n".join(keep), cfg(c4_terminal_punct=True))
    assert text == keep[0] and removed == 1


# ---- FineWeb ----

def test_fineweb_line_punctuation_boundary():
    ends = [sentence() for _ in range(4)]
    plain = [sentence()[:-1] for _ in range(21)]
    # 3 of 25 lines end in punctuation = 0.12: removed (the rule is <= 0.12); 4 of 25 = 0.16 kept
    assert fineweb_filter(Parsed("\n".join(ends[:3] + plain + plain[:1])), QualityConfig()) == "fineweb_line_punct"
    assert fineweb_filter(Parsed("\n".join(ends + plain)), QualityConfig()) is None


def test_fineweb_short_lines_boundary():
    long_lines = [sentence() for _ in range(33)]
    short = [f"Short {w}." for w in fresh_words(67)]
    assert fineweb_filter(Parsed("\n".join(long_lines + short)), QualityConfig()) == "fineweb_short_lines"  # 0.67
    assert fineweb_filter(Parsed("\n".join(long_lines + short[:-1])), QualityConfig()) is None  # 66/99 < 0.67


def test_fineweb_duplicate_line_chars_and_newlines():
    lines = [sentence() for _ in range(10)]
    assert fineweb_filter(Parsed("\n".join(lines)), QualityConfig()) is None
    assert fineweb_filter(Parsed("\n".join(lines + lines[:1])), cfg(max_dup_line_chars_ratio=0.2)) is None
    assert fineweb_filter(Parsed("\n".join(lines + lines[:2])), QualityConfig()) == "fineweb_dup_line_chars"
    # 10 words on 4 lines: 3 newlines / 10 words = 0.3 kept; 4 newlines / 10 words > 0.3 removed
    w = [f"{x}." for x in fresh_words(10)]
    c = cfg(max_short_line_ratio=1.1)
    assert fineweb_filter(Parsed(" ".join(w[:3]) + "\n" + " ".join(w[3:6]) + "\n" + " ".join(w[6:8]) + "\n" + " ".join(w[8:])), c) is None
    assert fineweb_filter(Parsed("\n".join([" ".join(w[:2]), " ".join(w[2:4]), " ".join(w[4:6]), " ".join(w[6:8]),
                                            " ".join(w[8:])])), c) == "fineweb_newlines_per_word"


# ---- tokens per word ----

class ByteTok:
    def encode(self, text):
        return list(text.encode())


def test_token_word_ratio_boundary():
    text = "abc de"  # 6 bytes / 2 words = 3.0 tokens per word
    assert token_word_ratio(Parsed(text), QualityConfig(), ByteTok()) is None
    assert token_word_ratio(Parsed(text + "f"), QualityConfig(), ByteTok()) == "token_word_ratio"
    assert token_word_ratio(Parsed(text + "f"), QualityConfig(), None) is None  # no tokenizer: filter off
