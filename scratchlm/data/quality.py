"""Quality filters: cheap heuristics that remove most of the web's junk before a model ever sees it.

Each filter is one function `f(doc: Parsed, cfg: QualityConfig) -> reason | None`: None keeps the document, a
reason code (e.g. "gopher_stop_words") removes it and is what the report counts. Thresholds live in QualityConfig;
the defaults are the published ones (sources next to each field; docs/data.md has the table).

  gopher_quality     Rae et al. 2021 (Gopher / MassiveText), appendix A "quality filters"
  gopher_repetition  the same paper, table A1: repeated lines, paragraphs and n-grams
  c4_filter          Raffel et al. 2020 (T5 / C4), section 2.2; c4_clean_lines removes the lines C4 removes
  fineweb_filter     Penedo et al. 2024 (FineWeb), the three custom filters + datatrove's list-ratio rule
  code_filter        Chen et al. 2021 (Codex) and The Stack / StarCoder: long lines, few alphanumerics, generated files
  token_word_ratio   ours: tokens per word under our tokenizer (junk such as hex, base64 or mojibake needs many)

PRESETS bundles filters and thresholds by kind of text (web, books/prose, code, chat, none); the pipeline picks
one per input file unless told (scratchlm.data.pipeline.plan_inputs).

Words are whitespace-separated tokens, as in Gopher; counts, lengths and stop words use them with surrounding
punctuation stripped (as datatrove's Gopher filter, which tokenises punctuation apart). Repetition statistics are vectorised: words become ids,
n-grams become 64-bit hashes (numpy), duplicates come from np.unique.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


@dataclass
class QualityConfig:
    # --- Gopher quality (Rae et al. 2021, A.1.1) ---
    min_words: int = 50
    """Fewer words: too short to be a useful document (Gopher: 50)."""
    max_words: int = 100_000
    """More words: usually a dump, not prose (Gopher: 100,000)."""
    min_mean_word_length: float = 3.0
    """Mean word length (characters) below this: lists of numbers, ids, stutter (Gopher: 3)."""
    max_mean_word_length: float = 10.0
    """Above this: URLs, hashes, concatenated junk (Gopher: 10)."""
    max_symbol_word_ratio: float = 0.1
    """("#" + ellipsis count) / words above this: hashtag spam, truncated snippets (Gopher: 0.1)."""
    max_bullet_lines_ratio: float = 0.9
    """Fraction of lines starting with a bullet above this: navigation menus (Gopher: 0.9)."""
    max_ellipsis_lines_ratio: float = 0.3
    """Fraction of lines ending with an ellipsis above this: teaser lists (Gopher: 0.3)."""
    min_alpha_words_ratio: float = 0.8
    """At least this fraction of words must contain a letter (Gopher: 80%)."""
    min_stop_words: int = 2
    """At least this many distinct of the, be, to, of, and, that, have, with: real English sentences (Gopher: 2)."""

    # --- Gopher repetition (Rae et al. 2021, table A1) ---
    max_dup_line_frac: float = 0.30
    """Fraction of lines that repeat an earlier line."""
    max_dup_para_frac: float = 0.30
    """Fraction of paragraphs (blank-line separated) that repeat an earlier one."""
    max_dup_line_char_frac: float = 0.20
    """Fraction of characters in repeated lines."""
    max_dup_para_char_frac: float = 0.20
    """Fraction of characters in repeated paragraphs."""
    max_top_ngram_char_frac: tuple = ((2, 0.20), (3, 0.18), (4, 0.16))
    """(n, limit): characters covered by the single most frequent n-gram, as a fraction of all word characters."""
    max_dup_ngram_char_frac: tuple = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))
    """(n, limit): characters covered by n-grams that occur more than once."""

    # --- C4 (Raffel et al. 2020, section 2.2) ---
    c4_min_sentences: int = 5
    """Pages with fewer sentences are dropped (C4: 5)."""
    c4_min_words_per_line: int = 3
    """c4_clean_lines drops lines with fewer words (C4: 3)."""
    c4_max_word_length: int = 1000
    """c4_clean_lines drops lines holding a longer "word" (datatrove's C4 filter: 1000)."""
    c4_terminal_punct: bool = False
    """Also drop lines not ending in terminal punctuation. C4 did; FineWeb found it removes too much good text
    (and it destroys hard-wrapped books), so it is off by default."""
    c4_drop_curly_brace: bool = True
    """Drop any document containing "{" (C4's way of removing code). Off in the books preset: notes quote code."""

    # --- FineWeb (Penedo et al. 2024, section 3.5; datatrove FineWebQualityFilter) ---
    min_line_punct_ratio: float = 0.12
    """Fraction of lines ending in terminal punctuation at or below this: menus, tables, lists (FineWeb: 0.12)."""
    max_short_line_ratio: float = 0.67
    """Fraction of lines of <= short_line_length characters at or above this (FineWeb: 0.67)."""
    short_line_length: int = 30
    """What counts as a short line (FineWeb: 30 characters)."""
    max_dup_line_chars_ratio: float = 0.1
    """Characters in duplicated lines / all characters at or above this (FineWeb paper: 0.1; the datatrove
    code default is 0.01, which is far stricter)."""
    max_newlines_per_word: float = 0.3
    """Newlines per word above this: one-word-per-line lists (datatrove's "list_ratio": 0.3)."""

    # --- code (Chen et al. 2021, Codex, section 3.1; Kocetkov et al. 2022, The Stack; Li et al. 2023, StarCoder) ---
    code_max_line_length: int = field(default=1000, metadata={"range": (1, None)})
    """A line longer than this: minified or generated code, embedded data (Codex, The Stack: 1000)."""
    code_max_mean_line_length: float = field(default=100.0, metadata={"range": (0.0, None)})
    """Mean line length above this: the same, spread over the file (Codex, The Stack: 100)."""
    code_min_alnum_frac: float = field(default=0.25, metadata={"range": (0.0, 1.0)})
    """Fewer letters and digits than this fraction of characters: ASCII art, data tables (Codex, The Stack: 0.25)."""
    code_drop_generated: bool = True
    """Drop files that say in their first 5 lines they were generated ("auto-generated", "do not edit": StarCoder)."""

    # --- ours ---
    max_tokens_per_word: float | None = 3.0
    """Tokens per whitespace word above this: with a BPE tokenizer English prose is ~1.2-1.6 (GPT-2 on Gutenberg
    and TinyStories: 1.3); base64, hex, mojibake and foreign scripts the tokenizer never saw are 3-10. Only used
    when a tokenizer is given; none turns it off (the code, chat and none presets: Python source is 2.8 tokens a
    word under a BPE trained on it, 5.5 under one trained on prose)."""


STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
BULLETS = ("•", "‣", "⁃", "◦", "●", "○", "▪", "■", "-", "*", "·")
ELLIPSES = ("...", "…")
# C4 kept lines ending in "a period, exclamation mark, question mark, or end quotation mark" (Raffel et al. 2020)
C4_TERMINAL_PUNCT = (".", "!", "?", '"', "”", "’", "'")
# FineWeb counts lines ending in sentence-final punctuation only, closing quotes not included (datatrove's
# TERMINAL_PUNCTUATION, whose main members are these): dialogue lines ending in ." do not count
FINEWEB_TERMINAL_PUNCT = (".", "!", "?", "…", "。", "！", "？", "｡", "؟", "।", "॥")
C4_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)]*(?=\s|$)")
_PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~“”‘’«»…–—•·"
_ALPHA_TOKEN = re.compile(r"\S*?[^\W\d_]\S*")  # a whitespace token holding at least one letter
_STOP_WORD = re.compile(r"(?<![^\W_])(?:" + "|".join(sorted(STOP_WORDS)) + r")(?![^\W_])")


class Parsed:
    """A document split once into the pieces the filters share (lines, paragraphs, words)."""

    def __init__(self, text: str):
        self.text = text

    @cached_property
    def lines(self) -> list[str]:
        return [ln.strip() for ln in self.text.split("\n") if ln.strip()]

    @cached_property
    def paragraphs(self) -> list[str]:
        return [p.strip() for p in _PARAGRAPHS.split(self.text) if p.strip()]

    @cached_property
    def words(self) -> list[str]:
        return self.text.split()

    @cached_property
    def core_words(self) -> list[str]:
        """Words with leading/trailing punctuation stripped ("and." -> "and"); punctuation-only tokens dropped."""
        return [c for c in (w.strip(_PUNCT) for w in self.words) if c]

    @cached_property
    def word_ids(self) -> np.ndarray:
        """(n_words,) int64: equal words get equal ids; the basis of the vectorised n-gram statistics."""
        vocab: dict[str, int] = {}
        return np.fromiter((vocab.setdefault(w.lower(), len(vocab)) for w in self.words), np.int64, len(self.words))

    @cached_property
    def word_lengths(self) -> np.ndarray:
        return np.fromiter(map(len, self.words), np.int64, len(self.words))


# --------------------------------------------------------------------------------------------------
# Gopher quality

def gopher_quality(doc: Parsed, cfg: QualityConfig) -> str | None:
    words = doc.words  # whitespace tokens, for the ratios
    core = doc.core_words  # punctuation stripped, punctuation-only tokens dropped: for counts, lengths, stop words
    n = len(core)
    if n == 0 or not cfg.min_words <= n <= cfg.max_words:
        return "gopher_word_count"
    mean_len = sum(map(len, core)) / n
    if not cfg.min_mean_word_length <= mean_len <= cfg.max_mean_word_length:
        return "gopher_mean_word_length"
    symbols = doc.text.count("#") + doc.text.count("...") + doc.text.count("…")
    if symbols / len(words) > cfg.max_symbol_word_ratio:
        return "gopher_symbol_ratio"
    lines = doc.lines
    if lines:
        if sum(ln.startswith(BULLETS) for ln in lines) / len(lines) > cfg.max_bullet_lines_ratio:
            return "gopher_bullet_lines"
        if sum(ln.endswith(ELLIPSES) for ln in lines) / len(lines) > cfg.max_ellipsis_lines_ratio:
            return "gopher_ellipsis_lines"
    if len(_ALPHA_TOKEN.findall(doc.text)) / len(words) < cfg.min_alpha_words_ratio:
        return "gopher_alpha_words"
    found: set[str] = set()
    for m in _STOP_WORD.finditer(doc.text.lower()):  # stops as soon as enough distinct stop words are seen
        found.add(m.group(0))
        if len(found) >= cfg.min_stop_words:
            break
    if len(found) < cfg.min_stop_words:
        return "gopher_stop_words"
    return None


# --------------------------------------------------------------------------------------------------
# Gopher repetition

def duplicate_fractions(items: list[str]) -> tuple[float, float]:
    """(fraction of items that repeat an earlier item, fraction of characters in those repeats)."""
    if not items:
        return 0.0, 0.0
    seen: set[str] = set()
    dup_n = dup_chars = total_chars = 0
    for it in items:
        total_chars += len(it)
        if it in seen:
            dup_n += 1
            dup_chars += len(it)
        else:
            seen.add(it)
    return dup_n / len(items), dup_chars / max(total_chars, 1)


_MIX = np.random.default_rng(0x5C4A7C).integers(1, 2**63, size=16, dtype=np.uint64) | np.uint64(1)


def ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """(len(ids) - n + 1,) uint64: a hash per word n-gram, sum of id * odd multiplier per position (mod 2^64)."""
    h = np.zeros(len(ids) - n + 1, dtype=np.uint64)
    mixed = (ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
    for k in range(n):
        h += mixed[k : k + len(h)] * _MIX[k]
    return h


def _ngram_char_lengths(lengths: np.ndarray, n: int) -> np.ndarray:
    c = np.concatenate([[0], np.cumsum(lengths)])
    return c[n:] - c[:-n]  # (n_ngrams,) characters of each n-gram (spaces not counted, as in Gopher)


def top_ngram_char_frac(doc: Parsed, n: int) -> float:
    """Characters covered by the most frequent n-gram (all its occurrences) / all word characters."""
    ids, lengths = doc.word_ids, doc.word_lengths
    if len(ids) < n:
        return 0.0
    h = ngram_hashes(ids, n)
    _, first, counts = np.unique(h, return_index=True, return_counts=True)
    top = counts.max()
    if top < 2:
        return 0.0
    # ties: the longest of the most frequent n-grams (the largest fraction, so the rule is order-independent)
    chars = _ngram_char_lengths(lengths, n)[first[counts == top]].max()
    return float(top * chars) / max(int(lengths.sum()), 1)


def dup_ngram_char_frac(doc: Parsed, n: int) -> float:
    """Characters of words covered by any n-gram that occurs more than once / all word characters.

    Every occurrence counts (the first too), each word at most once however many repeats cover it.
    """
    ids, lengths = doc.word_ids, doc.word_lengths
    if len(ids) < n:
        return 0.0
    h = ngram_hashes(ids, n)
    _, inverse, counts = np.unique(h, return_inverse=True, return_counts=True)
    starts = counts[inverse] > 1  # (n_ngrams,) this n-gram occurs again somewhere
    if not starts.any():
        return 0.0
    delta = np.zeros(len(ids) + 1, dtype=np.int64)  # coverage by a difference array: +1 at start, -1 after end
    np.add.at(delta, np.flatnonzero(starts), 1)
    np.add.at(delta, np.flatnonzero(starts) + n, -1)
    covered = np.cumsum(delta[:-1]) > 0
    return float(lengths[covered].sum()) / max(int(lengths.sum()), 1)


def gopher_repetition(doc: Parsed, cfg: QualityConfig) -> str | None:
    line_frac, line_chars = duplicate_fractions(doc.lines)
    if line_frac > cfg.max_dup_line_frac:
        return "gopher_dup_line_frac"
    para_frac, para_chars = duplicate_fractions(doc.paragraphs)
    if para_frac > cfg.max_dup_para_frac:
        return "gopher_dup_para_frac"
    if line_chars > cfg.max_dup_line_char_frac:
        return "gopher_dup_line_char_frac"
    if para_chars > cfg.max_dup_para_char_frac:
        return "gopher_dup_para_char_frac"
    for n, limit in cfg.max_top_ngram_char_frac:
        if top_ngram_char_frac(doc, n) > limit:
            return f"gopher_top_{n}gram"
    rules = sorted(cfg.max_dup_ngram_char_frac)
    for i, (n, limit) in enumerate(rules):
        frac = dup_ngram_char_frac(doc, n)
        if frac > limit:
            return f"gopher_dup_{n}gram"
        # a repeated m-gram (m > n) is made of repeated n-grams, so the covered fraction only shrinks with n:
        # once it is under every remaining limit, the remaining (costly) n are settled
        if all(frac <= lim for _, lim in rules[i + 1:]):
            break
    return None


# --------------------------------------------------------------------------------------------------
# C4

def c4_clean_lines(text: str, cfg: QualityConfig) -> tuple[str, int]:
    """Remove the lines C4 removes (javascript notices, cookie/policy boilerplate, too few words, giant tokens,
    and with c4_terminal_punct lines without terminal punctuation). Returns (text, lines removed)."""
    kept, removed = [], 0
    for line in text.split("\n"):
        s = line.strip()
        if not s:
            kept.append(line)
            continue
        low = s.lower()
        words = s.split()
        if (
            "javascript" in low
            or any(p in low for p in C4_POLICY)
            or len(words) < cfg.c4_min_words_per_line
            or max(map(len, words)) > cfg.c4_max_word_length
            or (cfg.c4_terminal_punct and not s.endswith(C4_TERMINAL_PUNCT))
        ):
            removed += 1
            continue
        kept.append(line)
    return ("\n".join(kept).strip() if removed else text), removed


def count_sentences(text: str) -> int:
    """Sentence ends (., !, ? runs, optionally followed by closing quotes) plus an unterminated tail."""
    ends = list(_SENTENCE_END.finditer(text))
    tail = text[ends[-1].end():] if ends else text
    return len(ends) + (1 if tail.strip() else 0)


def c4_filter(doc: Parsed, cfg: QualityConfig) -> str | None:
    low = doc.text.lower()
    if "lorem ipsum" in low:
        return "c4_lorem_ipsum"
    if cfg.c4_drop_curly_brace and "{" in doc.text:
        return "c4_curly_brace"
    if count_sentences(doc.text) < cfg.c4_min_sentences:
        return "c4_min_sentences"
    return None


# --------------------------------------------------------------------------------------------------
# FineWeb

def fineweb_filter(doc: Parsed, cfg: QualityConfig) -> str | None:
    lines = doc.lines
    if not lines:
        return "fineweb_empty"
    if sum(ln.endswith(FINEWEB_TERMINAL_PUNCT) for ln in lines) / len(lines) <= cfg.min_line_punct_ratio:
        return "fineweb_line_punct"
    if sum(len(ln) <= cfg.short_line_length for ln in lines) / len(lines) >= cfg.max_short_line_ratio:
        return "fineweb_short_lines"
    _, dup_chars = duplicate_fractions(lines)
    if dup_chars >= cfg.max_dup_line_chars_ratio:
        return "fineweb_dup_line_chars"
    if doc.text.count("\n") / max(len(doc.words), 1) > cfg.max_newlines_per_word:
        return "fineweb_newlines_per_word"
    return None


# --------------------------------------------------------------------------------------------------
# code

GENERATED_MARKERS = ("auto-generated", "autogenerated", "automatically generated", "generated automatically",
                     "this file is generated", "this file was generated", "do not edit")


def code_filter(doc: Parsed, cfg: QualityConfig) -> str | None:
    lengths = [len(ln) for ln in doc.text.split("\n")]
    if max(lengths) > cfg.code_max_line_length:
        return "code_max_line_length"
    if sum(lengths) / len(lengths) > cfg.code_max_mean_line_length:
        return "code_mean_line_length"
    if sum(c.isalnum() for c in doc.text) / max(len(doc.text), 1) < cfg.code_min_alnum_frac:
        return "code_alnum_frac"
    head = "\n".join(doc.text.split("\n", 5)[:5]).lower()
    if cfg.code_drop_generated and any(m in head for m in GENERATED_MARKERS):
        return "code_generated"
    return None


# --------------------------------------------------------------------------------------------------
# tokens per word (ours)

def tokens_per_word(text: str, tokenizer) -> float:
    n_words = len(text.split())
    return len(tokenizer.encode(text)) / max(n_words, 1)


def token_word_ratio(doc: Parsed, cfg: QualityConfig, tokenizer) -> str | None:
    if tokenizer is not None and cfg.max_tokens_per_word is not None and \
            tokens_per_word(doc.text, tokenizer) > cfg.max_tokens_per_word:
        return "token_word_ratio"
    return None


QUALITY_FILTERS = {
    "gopher_quality": gopher_quality,
    "gopher_repetition": gopher_repetition,
    "c4": c4_filter,
    "fineweb": fineweb_filter,
    "code": code_filter,
}
"""The document-level filters, in the order a preset lists them (cheap and most selective first)."""


# --------------------------------------------------------------------------------------------------
# presets: which filters, with which thresholds, for which kind of text

@dataclass(frozen=True)
class Preset:
    """The filter settings for one kind of text. The web filters encode what bad *web pages* look like: a novel's
    hard-wrapped lines, a note's bullet list and a source file's braces are what they were built to remove."""

    cleans: str
    """What the preset is for, in a few words (printed with the plan)."""
    filters: tuple[str, ...]
    """QUALITY_FILTERS to run, in order."""
    quality: dict = field(default_factory=dict)
    """QualityConfig fields that differ from the published (web) defaults."""
    c4_clean_lines: bool = False
    """Remove C4's boilerplate lines (< 3 words, javascript, cookie notices) first: web pages only."""
    text_split: str = "auto"
    """How plain-text files are cut (SourceConfig.text_split): "auto" is one document per source file and
    chapters (or ~2,000-character runs of paragraphs) for everything else."""
    collapse_whitespace: bool = True
    """NormalizeConfig.collapse_whitespace: off where spaces carry meaning (code, and code quoted in chats)."""
    toxicity: dict = field(default_factory=lambda: {"classifier": None})
    """ToxicityConfig fields: the classifier is on for web pages only. A user's own books, code and chats are
    theirs to keep (a novel's villain swears; HH-RLHF's rejected answers are harmful on purpose)."""


PRESETS = {
    # the shipped toxicity classifier (docs/data.md: precision/recall on hand-labelled text, removals measured)
    "web": Preset("web pages (Common Crawl, FineWeb-like rows)", ("gopher_quality", "gopher_repetition", "c4", "fineweb"),
                  c4_clean_lines=True, text_split="file", toxicity={"classifier": "builtin"}),
    # Gopher applied its quality and repetition filters to MassiveWeb only, not to its books (Rae et al. 2021, A.1).
    # Here they stay on to catch junk in a user's files, loosened where prose differs from a web page: notes are
    # short, lists, tagged (#) and quote code; any language is welcome (no English stop words); a chapter is 5-20x
    # a web page, so repeated 5- to 10-grams (names, refrains) pile up by length alone: the n-gram limits are
    # raised, while repeated lines, paragraphs and top phrases keep Gopher's limits. C4 keeps only its lorem-ipsum
    # rule; FineWeb's line rules are off: they read every hard-wrapped line as a broken sentence (80% of Pride and
    # Prejudice's chapters fail them).
    "books": Preset("books, stories, articles and notes (prose)", ("gopher_quality", "gopher_repetition", "c4"),
                    quality={"min_words": 10, "max_symbol_word_ratio": 0.5, "max_bullet_lines_ratio": 1.0,
                             "min_alpha_words_ratio": 0.6, "min_stop_words": 0, "c4_min_sentences": 1,
                             "c4_drop_curly_brace": False,
                             "max_dup_ngram_char_frac": ((5, 0.50), (6, 0.48), (7, 0.46), (8, 0.44), (9, 0.42),
                                                         (10, 0.40))}),
    "code": Preset("source code, one document per file", ("code",), {"max_tokens_per_word": None},
                   collapse_whitespace=False),
    "chat": Preset("instruction, chat and preference data (never web-filtered)", (), {"max_tokens_per_word": None},
                   collapse_whitespace=False),
    "none": Preset("no filter: normalise and deduplicate only", (), {"max_tokens_per_word": None}),
}
"""The filter presets by name. Every value can still be overridden with --set (e.g. --set quality.min_words=5)."""
PRESET_ALIASES = {"prose": "books"}


def get_preset(name: str) -> tuple[str, Preset]:
    """(canonical name, preset); raises ValueError naming the choices."""
    key = PRESET_ALIASES.get(name, name)
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose auto, {', '.join(PRESETS)} or prose (= books)")
    return key, PRESETS[key]


def quality_reason(text: str, cfg: QualityConfig, enabled=PRESETS["web"].filters, tokenizer=None) -> str | None:
    """Run the enabled filters; return the first reason to drop the document, or None to keep it."""
    doc = Parsed(text)
    for name in enabled:
        reason = QUALITY_FILTERS[name](doc, cfg)
        if reason is not None:
            return reason
    return token_word_ratio(doc, cfg, tokenizer)
