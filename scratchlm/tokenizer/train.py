"""Byte-level BPE training: the incremental algorithm.

Start from the 256 byte tokens. Repeatedly find the most frequent adjacent pair of tokens across all words
(weighted by word count), give it a new id, and rewrite the words. The naive loop recounts every pair after every
merge: O(merges x corpus). The incremental one keeps three structures instead, so a merge costs only the words
that contain the pair:

  stats   pair -> total count                  (updated by +-count deltas around each rewritten occurrence)
  where   pair -> ids of words containing it  (entries go stale; a stale word is skipped when scanned)
  heap    (-count, pair), with lazy updates    (an entry may be stale; when it reaches the top its count is
                                                checked against `stats` and it is pushed back if out of date)

Counts of existing pairs only ever fall; rising counts come from pairs that touch the token just made, and those are
pushed fresh. So a heap top whose stored count equals its current count is the true maximum.

Tie-break rule (determinism): the highest count wins; among equal counts, the pair with the smallest
(left id, right id) wins. Ids are ranks: bytes 0..255 are their byte value, merge i makes id 256 + i.
If a merge yields bytes that already are a token (rare: e.g. "aa"+"a" and "a"+"aa"), the words are rewritten with
the existing id and no new id is spent.
"""

from __future__ import annotations

import heapq
from collections import defaultdict

from .pretokenize import SPECIAL_TOKENS, build_pattern

SHIFT = 17  # pair (a, b) is packed as a << 17 | b: int keys hash and compare faster than tuples
MASK = (1 << SHIFT) - 1
MAX_VOCAB = 1 << SHIFT


def learn_merges(word_counts: dict, num_merges: int, min_frequency: int = 1, progress: bool = False):
    """Learn up to num_merges merges from {word (str or bytes): count}.

    Returns (merges, token_bytes): merges[i] = (left id, right id) made token 256 + i, whose bytes are
    token_bytes[256 + i]. Stops early when no pair occurs at least min_frequency times.
    """
    words: list[list[int]] = []
    freqs: list[int] = []
    for w, f in word_counts.items():
        b = w.encode("utf-8") if isinstance(w, str) else bytes(w)
        if len(b) > 1 and f > 0:  # one-byte words have no pairs
            words.append(list(b))
            freqs.append(f)

    stats: dict[int, int] = defaultdict(int)
    where: dict[int, list] = defaultdict(list)
    for i, w in enumerate(words):
        f = freqs[i]
        for a, b in zip(w, w[1:]):
            k = a << SHIFT | b
            stats[k] += f
            where[k].append(i)  # a word may be listed twice; the second visit finds nothing to do
    heap = [(-c, k) for k, c in stats.items()]
    heapq.heapify(heap)

    token_bytes = [bytes([i]) for i in range(256)]
    token_id = {t: i for i, t in enumerate(token_bytes)}
    merges: list[tuple[int, int]] = []

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=num_merges, unit="merge", desc="merges", leave=False, mininterval=0.25)
    heappush, heappop = heapq.heappush, heapq.heappop
    while len(merges) < num_merges and heap:
        # Lazy heap: refresh stale tops until the top's stored count is current.
        negc, k = heap[0]
        c = stats.get(k, 0)
        if c != -negc:
            heappop(heap)
            if c > 0:
                heappush(heap, (-c, k))
            continue
        if c < min_frequency:
            break
        heappop(heap)
        a, b = k >> SHIFT, k & MASK
        new = token_bytes[a] + token_bytes[b]
        t = token_id.get(new)
        if t is None:
            t = len(token_bytes)
            token_bytes.append(new)
            token_id[new] = t
            merges.append((a, b))
            if bar is not None:
                bar.update(1)

        # Rewrite every word containing (a, b) in place, adjusting the counts of the pairs around each occurrence.
        # The left neighbour is read after earlier rewrites (it may be t already), the right one before, so
        # back-to-back occurrences ("a b a b" -> "t t") net out: (t, a) is added then removed again.
        ta = t << SHIFT
        fresh = defaultdict(list)  # pairs with t, whose counts rose -> word ids; they get new heap entries
        for i in where.pop(k):
            w = words[i]
            if a not in w:
                continue  # stale index entry
            f = freqs[i]
            n = len(w)
            j = w.index(a)
            while True:
                if j + 1 < n and w[j + 1] == b:
                    if j:
                        p = w[j - 1] << SHIFT
                        stats[p | a] -= f
                        p |= t
                        stats[p] += f
                        fresh[p].append(i)
                    if j + 2 < n:
                        y = w[j + 2]
                        stats[b << SHIFT | y] -= f
                        y |= ta
                        stats[y] += f
                        fresh[y].append(i)
                    w[j:j + 2] = (t,)
                    n -= 1
                try:
                    j = w.index(a, j + 1)
                except ValueError:
                    break
        del stats[k]
        for p, ids in fresh.items():
            c = stats[p]
            if c > 0:
                heappush(heap, (-c, p))
                if p in where:  # only when t is an old token (the duplicate case above)
                    where[p] += ids
                else:
                    where[p] = ids
    if bar is not None:
        bar.close()
    return merges, token_bytes


def _num_merges(vocab_size: int) -> int:
    n_special = len(SPECIAL_TOKENS)
    if not 256 + n_special <= vocab_size <= MAX_VOCAB:
        raise ValueError(
            f"vocab_size={vocab_size} is out of range; use {256 + n_special}..{MAX_VOCAB} "
            f"(256 byte tokens + {n_special} special tokens are always included)"
        )
    return vocab_size - 256 - n_special


def train_bpe(
    inputs,
    vocab_size: int,
    pattern: str = "gpt4",
    digits: int | None = None,
    num_workers: int | None = None,
    min_frequency: int = 1,
    progress: bool = True,
    report: dict | None = None,
):
    """Train a byte-level BPE tokenizer on a corpus.

    inputs: plain UTF-8 text files or folders (.txt, .md), or a corpus object (see corpus.py):
        scratchlm.data.sources.SourceCorpus reads JSONL/JSON fields, Parquet and .gz/.zst files.
    vocab_size: total ids, the 256 bytes and the special tokens included (e.g. 8192, 32768, 50304).
    pattern: split regex, "gpt4" (cl100k-style, default) or "gpt2", or a raw regex.
    digits: longest digit group kept in one chunk (None = pattern default; 1 = single digits).
    num_workers: processes for chunk counting (None = all CPUs).
    min_frequency: stop merging when the best pair occurs fewer times than this.
    report: a dict that receives what was read (files, documents, bytes, invalid UTF-8, skipped inputs).

    Raises ValueError when there is no text to train on, or no pair occurs min_frequency times (the result
    would be a bytes-only vocabulary that no one asked for). A vocabulary smaller than vocab_size because the
    corpus ran out of pairs is returned as is: check tok.vocab_size.
    """
    from .bpe import BPETokenizer
    from .corpus import count_words, describe_report, new_report

    num_merges = _num_merges(vocab_size)
    pat = build_pattern(pattern, digits)
    report = new_report() if report is None else report
    counts = count_words(inputs, pat, num_workers=num_workers, progress=progress, report=report)
    if not counts:
        raise ValueError(f"no text to train on: {describe_report(report)}")
    merges, _ = learn_merges(counts, num_merges, min_frequency=min_frequency, progress=progress)
    if not merges and num_merges:
        raise ValueError(f"no pair of bytes occurs {min_frequency}+ times, so no merge could be learned "
                         f"({describe_report(report)}); give more text or lower --min-frequency")
    return BPETokenizer(merges, pattern=pattern, digits=digits)


def train_bpe_from_texts(texts, vocab_size: int, pattern: str = "gpt4", digits: int | None = None,
                         min_frequency: int = 1, progress: bool = False):
    """Train on in-memory strings (each one a document); same rules as train_bpe."""
    from collections import Counter

    import regex

    from .bpe import BPETokenizer
    from .pretokenize import special_splitter

    num_merges = _num_merges(vocab_size)
    pat = regex.compile(build_pattern(pattern, digits))
    split = special_splitter(SPECIAL_TOKENS)
    counts: Counter = Counter()
    for text in [texts] if isinstance(texts, str) else texts:
        for i, part in enumerate(split.split(text)):
            if i % 2 == 0:
                counts.update(pat.findall(part))
    merges, _ = learn_merges(counts, num_merges, min_frequency=min_frequency, progress=progress)
    return BPETokenizer(merges, pattern=pattern, digits=digits)
