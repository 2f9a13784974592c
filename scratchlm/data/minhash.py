"""MinHash signatures, LSH banding and union-find: near-duplicate detection, vectorised with numpy.

Why: the web repeats itself (templates, mirrors, quotes, boilerplate). Exact hashing misses a page that differs by
a date; comparing all pairs is O(N^2). MinHash (Broder 1997) turns each document into k small numbers whose
agreement rate estimates the Jaccard similarity of the documents' shingle sets; LSH banding (Indyk & Motwani
1998) then finds similar pairs by bucketing, in O(N).

1. Shingles: the document's lowercased alphanumeric words, as overlapping word 5-grams (FineWeb: n=5), each
   hashed to 64 bits. A document shorter than 5 words is one shingle of all its words.
2. Signature: for permutation i, sig[i] = min over shingles s of h_i(s), with h_i(s) = (a_i * s + b_i) mod 2^64
   (a_i odd: a bijection of 64-bit values), keeping the top 32 bits. All k permutations of all shingles of a
   batch of documents are one (S, k) numpy computation, followed by a segmented minimum per document.
   P(sig_A[i] == sig_B[i]) = Jaccard(A, B), so the fraction of equal entries estimates Jaccard with standard
   error sqrt(J (1 - J) / k).
3. LSH: the k = b * r values are cut into b bands of r rows; documents whose signatures agree on all r rows of
   any band land in the same bucket. P(candidate) = 1 - (1 - J^r)^b: with b=14, r=8 (FineWeb) that is 0.08 at
   J=0.5, 0.45 at J=0.7, 0.92 at J=0.8 and 0.9998 at J=0.9: a sharp step near J ~ 0.72.
4. Union-find joins candidate pairs into clusters; the pipeline keeps one document per cluster. At corpus scale
   the pairs come from disk (dedup.py) a batch at a time and union_pairs links a whole batch with numpy.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"\w+")  # 2x faster than [^\W_]+; underscores are rare in prose
_U64 = np.uint64
MAX_SIG = np.uint32(0xFFFFFFFF)  # the signature of a document with no shingles (never bucketed)


@dataclass
class MinHashConfig:
    ngram: int = 5
    """Words per shingle (FineWeb: 5). Smaller n finds looser paraphrases, and more false matches."""
    bands: int = 14
    """LSH bands b (FineWeb: 14)."""
    rows: int = 8
    """Rows per band r (FineWeb: 8); num_perm = bands * rows = 112. The threshold is about (1/b)^(1/r) ~ 0.72."""
    seed: int = 1
    """Seed of the permutations; signatures compared with each other must share it (and ngram, bands, rows)."""

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows


def candidate_probability(jaccard, bands: int = 14, rows: int = 8):
    """P(two documents with this Jaccard similarity share at least one LSH bucket) = 1 - (1 - J^r)^b."""
    return 1.0 - (1.0 - np.asarray(jaccard, dtype=np.float64) ** rows) ** bands


# --------------------------------------------------------------------------------------------------
# shingles

def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over every output bit (uint64 in, uint64 out)."""
    x = x ^ (x >> _U64(30))
    x = x * _U64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U64(27))
    x = x * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


_WORD_HASH: dict[str, int] = {}  # word -> 64-bit hash; vocabularies are Zipfian, so most lookups hit


def _word_hash(word: str) -> int:
    h = _WORD_HASH.get(word)
    if h is None:
        if len(_WORD_HASH) > 2_000_000:  # bound the memory of the cache
            _WORD_HASH.clear()
        h = int.from_bytes(hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
        _WORD_HASH[word] = h
    return h


_POS_MULT = _mix64(np.arange(1, 65, dtype=np.uint64)) | _U64(1)  # odd multiplier per position in the n-gram


def words_of(text: str) -> list[str]:
    """The words MinHash compares: lowercased runs of word characters (punctuation and spacing ignored)."""
    return _WORD.findall(text.lower())


def shingle_batch(texts: list[str], ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Shingles of many documents at once: (flat (S,) uint64 hashes, counts (N,) int64 shingles per document).

    A document of L >= n words has L - n + 1 shingles, a shorter one a single shingle of all its words, an empty one
    none. Vectorised over the whole batch: the n-gram hashes are computed over the concatenated word hashes and the
    n-grams that straddle two documents are dropped.
    """
    words = [words_of(t) for t in texts]
    lengths = np.fromiter(map(len, words), np.int64, len(words))  # (N,) words per document
    total = int(lengths.sum())
    wh = np.zeros(total + ngram, dtype=np.uint64)  # zero padding so every window below has full length
    wh[:total] = np.fromiter(map(_word_hash, itertools.chain.from_iterable(words)), np.uint64, total)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)  # (N,) first word of each document
    acc = np.zeros(total, dtype=np.uint64)
    short = (lengths > 0) & (lengths < ngram)
    short_hash = np.zeros(len(texts), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(ngram):
            acc += wh[k : k + total] * _POS_MULT[k]  # acc[i] = sum_{j<=k} word[i+j] * mult[j]
            done = short & (lengths == k + 1)
            short_hash[done] = acc[starts[done]]  # a short document's only shingle: all its words
        counts = np.where(lengths >= ngram, lengths - ngram + 1, short.astype(np.int64))
        # position i is a valid n-gram start if it lies in a long document and its n-gram ends inside it
        doc_of = np.repeat(np.arange(len(texts)), lengths)  # (total,)
        pos_in_doc = np.arange(total) - starts[doc_of]
        valid = pos_in_doc <= lengths[doc_of] - ngram
        # assemble in document order: each document's long shingles, or its one short shingle
        flat = np.empty(int(counts.sum()), dtype=np.uint64)
        out_starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        flat_is_short = np.zeros(len(flat), dtype=bool)
        flat_is_short[out_starts[short]] = True
        flat[flat_is_short] = short_hash[short]
        flat[~flat_is_short] = acc[valid]
        return _mix64(flat), counts


def shingle_hashes(text: str, ngram: int = 5) -> np.ndarray:
    """(n_shingles,) uint64: one hash per word n-gram of one document (duplicates kept; the min does not care)."""
    return shingle_batch([text], ngram)[0]


# --------------------------------------------------------------------------------------------------
# signatures

def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(a, b), each (num_perm,) uint64; a is odd so x -> a*x + b is a bijection mod 2^64."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False) | _U64(1)
    b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False)
    return a, b


def signatures_from_shingles(flat: np.ndarray, counts: np.ndarray, a: np.ndarray, b: np.ndarray,
                             max_elements: int = 1 << 22) -> np.ndarray:
    """(N, k) uint32 MinHash signatures from a shingle batch; all permutations at once, in memory-bounded chunks.

    The intermediate is laid out (k, S): each permutation's values for the chunk are contiguous, which makes the
    per-document minimum (np.minimum.reduceat along the last axis) about 8x faster than the (S, k) layout.
    max_elements bounds it (4M uint64 = 32 MB).
    """
    k, n = len(a), len(counts)
    sig = np.full((n, k), MAX_SIG, dtype=np.uint32)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # (N+1,)
    budget = max(max_elements // k, 1)
    buf = np.empty(k * min(budget, max(len(flat), 1)), dtype=np.uint64)
    i = 0
    while i < n:
        # as many whole documents as fit in the budget (at least one)
        j = max(int(np.searchsorted(offsets, offsets[i] + budget, side="right")) - 1, i + 1)
        j = min(j, n)
        lo, hi = offsets[i], offsets[j]
        docs = np.arange(i, j)[counts[i:j] > 0]
        if hi > lo:
            x = flat[lo:hi]  # (S,)
            h = buf[: k * (hi - lo)].reshape(k, hi - lo) if k * (hi - lo) <= len(buf) else np.empty((k, hi - lo), np.uint64)
            with np.errstate(over="ignore"):
                np.multiply(a[:, None], x[None, :], out=h)  # (k, S): every permutation of every shingle
                np.add(h, b[:, None], out=h)
            # the min of the 64-bit values has the min top 32 bits: shift after the reduction, not before
            mins = np.minimum.reduceat(h, offsets[docs] - lo, axis=1)  # (k, n_docs)
            sig[docs] = (mins >> _U64(32)).astype(np.uint32).T
        i = j
    return sig


def minhash_signatures(texts: list[str], cfg: MinHashConfig | None = None, batch_size: int = 2048) -> np.ndarray:
    """(N, num_perm) uint32 signatures of N texts. Texts without a single word get MAX_SIG rows."""
    cfg = cfg or MinHashConfig()
    a, b = permutations(cfg.num_perm, cfg.seed)
    out = []
    for i in range(0, len(texts), batch_size):
        flat, counts = shingle_batch(texts[i : i + batch_size], cfg.ngram)
        out.append(signatures_from_shingles(flat, counts, a, b))
    return np.concatenate(out) if out else np.zeros((0, cfg.num_perm), np.uint32)


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Fraction of equal signature entries (last axis)."""
    return (np.asarray(sig_a) == np.asarray(sig_b)).mean(axis=-1)


# --------------------------------------------------------------------------------------------------
# LSH

_BAND_MULT = _mix64(np.arange(101, 101 + 64, dtype=np.uint64)) | _U64(1)


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(N, bands) uint64: one 64-bit key per band of r signature rows (equal bands -> equal keys)."""
    n = sig.shape[0]
    v = sig[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)  # (N, b, r)
    with np.errstate(over="ignore"):
        keys = (v * _BAND_MULT[:rows]).sum(axis=2, dtype=np.uint64)  # (N, b)
        return _mix64(keys + np.arange(bands, dtype=np.uint64))


def bucket_edges(keys: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
    """Candidate pairs from one band's keys (N,): (E, 2) int64 edges (first member of a bucket, other member).

    Linking every member to its bucket's first member is enough for connected components: E = N - n_buckets.
    `active` (N,) bool excludes documents (already removed, or with no shingles).
    """
    idx = np.arange(len(keys)) if active is None else np.flatnonzero(active)
    k = keys[idx]
    order = np.argsort(k, kind="stable")
    sk, si = k[order], idx[order]
    new_bucket = np.ones(len(sk), dtype=bool)
    new_bucket[1:] = sk[1:] != sk[:-1]
    first = si[np.maximum.accumulate(np.where(new_bucket, np.arange(len(sk)), 0))]  # (n,) first member of my bucket
    dup = ~new_bucket
    return np.stack([first[dup], si[dup]], axis=1).astype(np.int64)


def sorted_bucket_pairs(rec: np.ndarray, carry: tuple[int, int] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """bucket_edges for one band streamed from disk: `rec` is a batch of (key, doc) rows in sorted order.

    Each document is linked to its bucket's first (smallest) document, exactly as bucket_edges does in memory.
    A bucket can span two batches: `carry` is (key, first doc) of the previous batch's last bucket, and the
    carry for the next batch is returned with the (E, 2) uint64 pairs.
    """
    keys, docs = rec[:, 0], rec[:, 1]
    new_bucket = np.ones(len(keys), dtype=bool)
    new_bucket[1:] = keys[1:] != keys[:-1]
    first = docs[np.maximum.accumulate(np.where(new_bucket, np.arange(len(keys)), 0))]  # first member of my bucket
    if carry is not None and len(keys) and int(keys[0]) == carry[0]:
        new_bucket[0] = False
        first[: int(np.argmax(new_bucket)) if new_bucket.any() else len(keys)] = carry[1]
    pairs = np.stack([first[~new_bucket], docs[~new_bucket]], axis=1)
    return pairs, ((int(keys[-1]), int(first[-1])) if len(keys) else carry)


def lsh_edges(sig: np.ndarray, bands: int, rows: int, active: np.ndarray | None = None) -> np.ndarray:
    """All bands' candidate edges, de-duplicated: (E, 2) int64 with edge[:, 0] < edge[:, 1]."""
    if active is None:
        active = ~(sig == MAX_SIG).all(axis=1)
    else:
        active = active & ~(sig == MAX_SIG).all(axis=1)
    keys = band_keys(sig, bands, rows)
    edges = [bucket_edges(keys[:, j], active) for j in range(bands)]
    return unique_edges(np.concatenate(edges) if edges else np.zeros((0, 2), np.int64))


def unique_edges(edges: np.ndarray) -> np.ndarray:
    if len(edges) == 0:
        return edges.reshape(0, 2).astype(np.int64)
    e = np.sort(edges, axis=1)
    return np.unique(e, axis=0)


# --------------------------------------------------------------------------------------------------
# union-find

class UnionFind:
    """Disjoint sets over 0..n-1 (Tarjan 1975): near-constant time per operation."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)
        self.size = np.ones(n, dtype=np.int64)

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression: point the whole path at the root
            parent[x], x = root, parent[x]
        return int(root)

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx == ry:
            return
        if self.size[rx] < self.size[ry]:  # union by size keeps trees shallow
            rx, ry = ry, rx
        self.parent[ry] = rx
        self.size[rx] += self.size[ry]

    def union_edges(self, edges: np.ndarray) -> None:
        for x, y in edges.tolist():
            self.union(x, y)

    def labels(self) -> np.ndarray:
        """(n,) int64: the smallest member of each document's set (a stable, order-independent cluster id)."""
        roots = self.parent.copy()
        while True:  # pointer jumping, vectorised: every node ends up pointing at its root
            nxt = roots[roots]
            if np.array_equal(nxt, roots):
                break
            roots = nxt
        smallest = np.full(len(roots), np.iinfo(np.int64).max)
        np.minimum.at(smallest, roots, np.arange(len(roots)))
        return smallest[roots]


def find_roots(parent: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The root of each node in x, by pointer jumping over the whole batch at once."""
    r = parent[x]
    while True:
        up = parent[r]
        if np.array_equal(up, r):
            return r
        r = up


def union_pairs(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Union-find over a parent array, a batch of pairs at a time (numpy, no Python loop per pair).

    Every link points from the larger root to the smaller, so each tree's root is its smallest node: the same
    labels as UnionFind.labels(), whatever the order of the pairs. Pairs whose roots differ hook the larger root
    under the smallest root it meets (np.minimum.at resolves the collisions); the pairs still apart go round
    again, and each round removes at least one root, so the loop ends (in a few rounds on real clusters).
    """
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    while len(a):
        ra, rb = find_roots(parent, a), find_roots(parent, b)
        parent[a], parent[b] = ra, rb  # path compression for the nodes we touched
        apart = ra != rb
        lo, hi = np.minimum(ra[apart], rb[apart]), np.maximum(ra[apart], rb[apart])
        np.minimum.at(parent, hi, lo)
        a, b = a[apart], b[apart]


def cluster_labels(n: int, edges: np.ndarray) -> np.ndarray:
    """(n,) cluster id per document (its smallest member), from candidate edges."""
    parent = np.arange(n, dtype=np.int64)
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    union_pairs(parent, edges[:, 0], edges[:, 1])
    return find_roots(parent, np.arange(n))


def duplicates_to_remove(labels: np.ndarray) -> np.ndarray:
    """Sorted indices of documents that are not their cluster's representative (the smallest index is kept)."""
    return np.flatnonzero(labels != np.arange(len(labels)))
