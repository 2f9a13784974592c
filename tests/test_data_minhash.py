"""MinHash, LSH and union-find: exactness of the vectorised code, accuracy of the estimates, recall on planted
near-duplicates."""

import re

import numpy as np
import pytest

from scratchlm.data.minhash import (MAX_SIG, MinHashConfig, UnionFind, bucket_edges, candidate_probability,
                                    cluster_labels, duplicates_to_remove, estimate_jaccard, lsh_edges,
                                    minhash_signatures, permutations, shingle_batch, shingle_hashes,
                                    signatures_from_shingles, words_of)

from conftest import SHARED_DATA as DATA


def exact_jaccard(a: str, b: str, n: int = 5) -> float:
    def grams(t):
        w = words_of(t)
        return {tuple(w[i:i + n]) for i in range(max(len(w) - n + 1, 1))}
    ga, gb = grams(a), grams(b)
    return len(ga & gb) / len(ga | gb)


def test_shingle_batch_matches_one_by_one():
    texts = ["a b c d e f g", "x y", "", "one two three four five", "Hello, world! hello WORLD again and again",
             " ".join(f"w{i}" for i in range(50))]
    flat, counts = shingle_batch(texts)
    assert counts.tolist() == [3, 1, 0, 1, 3, 46]
    starts = np.concatenate([[0], np.cumsum(counts)])
    for i, t in enumerate(texts):
        np.testing.assert_array_equal(flat[starts[i]:starts[i + 1]], shingle_hashes(t))
    # case and punctuation do not matter; word order does
    assert np.array_equal(shingle_hashes("Hello, World."), shingle_hashes("hello world"))
    assert not np.array_equal(shingle_hashes("a b c d e"), shingle_hashes("e d c b a"))


def test_signatures_equal_a_direct_reference():
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(["w%d" % i for i in range(40)], rng.integers(0, 60))) for _ in range(30)]
    a, b = permutations(64, seed=3)
    flat, counts = shingle_batch(texts)
    got = signatures_from_shingles(flat, counts, a, b, max_elements=64 * 50)  # force many small chunks
    starts = np.concatenate([[0], np.cumsum(counts)])
    for i in range(len(texts)):
        x = flat[starts[i]:starts[i + 1]]
        if len(x) == 0:
            assert (got[i] == MAX_SIG).all()
            continue
        for p in range(64):
            with np.errstate(over="ignore"):
                expect = ((x * a[p] + b[p]).min() >> np.uint64(32))
            assert got[i, p] == expect


def test_jaccard_estimates_are_unbiased_and_within_005():
    """128 permutations: |estimate - exact| has sd sqrt(J(1-J)/128) <= 0.044; on average well within 0.05."""
    rng = np.random.default_rng(1)
    cfg = MinHashConfig(bands=16, rows=8)  # 128 permutations
    errors, js = [], []
    for _ in range(150):
        n = int(rng.integers(80, 250))
        a = [f"t{rng.integers(10**9)}" for _ in range(n)]
        keep = int(rng.integers(0, n))  # shared prefix length: spans J from 0 to 1
        b = a[:keep] + [f"u{rng.integers(10**9)}" for _ in range(n - keep)]
        ta, tb = " ".join(a), " ".join(b)
        sig = minhash_signatures([ta, tb], cfg)
        j = exact_jaccard(ta, tb)
        errors.append(estimate_jaccard(sig[0], sig[1]) - j)
        js.append(j)
    errors, js = np.array(errors), np.array(js)
    assert js.min() < 0.1 and js.max() > 0.9
    assert np.abs(errors).mean() < 0.05
    assert np.quantile(np.abs(errors), 0.95) < 0.1
    assert abs(errors.mean()) < 0.01
    # the spread matches theory: the z-scores have unit variance (permutations behave independently)
    mid = (js > 0.1) & (js < 0.9)
    z = errors[mid] / np.sqrt(js[mid] * (1 - js[mid]) / 128)
    assert 0.7 < z.std() < 1.3


def test_union_find_matches_brute_force_components():
    rng = np.random.default_rng(2)
    n = 300
    edges = rng.integers(0, n, size=(200, 2))
    labels = cluster_labels(n, edges)
    # reference: repeated relaxation to the smallest reachable index
    ref = np.arange(n)
    changed = True
    while changed:
        new = ref.copy()
        np.minimum.at(new, edges[:, 0], ref[edges[:, 1]])
        np.minimum.at(new, edges[:, 1], ref[edges[:, 0]])
        new = new[new]
        changed = not np.array_equal(new, ref)
        ref = new
    np.testing.assert_array_equal(labels, ref)
    remove = duplicates_to_remove(labels)
    assert len(remove) == n - len(np.unique(labels)) and not np.isin(np.unique(labels), remove).any()
    uf = UnionFind(4)
    uf.union(0, 3)
    assert uf.find(3) == uf.find(0) != uf.find(1)


def test_bucket_edges_link_every_bucket_member():
    keys = np.array([5, 7, 5, 9, 7, 5], dtype=np.uint64)
    edges = bucket_edges(keys)
    assert sorted(map(tuple, edges.tolist())) == [(0, 2), (0, 5), (1, 4)]
    active = np.array([False, True, True, True, True, True])
    assert sorted(map(tuple, bucket_edges(keys, active).tolist())) == [(1, 4), (2, 5)]


def test_candidate_probability_s_curve():
    p = candidate_probability([0.5, 0.8, 0.9], 14, 8)
    assert p[0] < 0.1 and p[1] > 0.9 and p[2] > 0.999


def paragraphs():
    if not DATA.exists():
        pytest.skip(f"needs shared data (Gutenberg, TinyStories): {DATA} is absent")
    out = []
    for f in ["gutenberg/pg1342.txt", "gutenberg/pg11.txt", "tinystories/tinystories_val_head.txt"]:
        raw = (DATA / f).read_text(encoding="utf-8").replace("\r\n", "\n")
        out += [p.strip() for p in re.split(r"\n\s*\n", raw) if len(p.split()) >= 60]
    return out


def test_lsh_finds_planted_near_duplicates():
    rng = np.random.default_rng(3)
    paras = paragraphs()
    base = [paras[i] for i in rng.permutation(len(paras))[:1200]]
    docs = list(base)
    planted = []
    for i in rng.choice(len(base), 150, replace=False):
        words = base[i].split()
        # one edit every ~50 words: a substitution, a deletion or an insertion
        for pos in sorted(rng.choice(len(words), max(1, len(words) // 50), replace=False), reverse=True):
            op = rng.integers(3)
            if op == 0:
                words[pos] = "edited"
            elif op == 1:
                del words[pos]
            else:
                words.insert(pos, "inserted")
        planted.append((int(i), len(docs)))
        docs.append(" ".join(words))
    cfg = MinHashConfig()
    sig = minhash_signatures(docs, cfg)
    edges = lsh_edges(sig, cfg.bands, cfg.rows)
    labels = cluster_labels(len(docs), edges)
    positives = [(a, b) for a, b in planted if exact_jaccard(docs[a], docs[b]) >= 0.8]
    assert len(positives) > 100
    recall = np.mean([labels[a] == labels[b] for a, b in positives])
    jac = np.array([exact_jaccard(docs[a], docs[b]) for a, b in edges.tolist()])
    precision = (jac >= 0.8).mean()
    print(f"recall {recall:.3f} precision {precision:.3f} edges {len(edges)} below0.5 {(jac < 0.5).mean():.3f}")
    assert recall >= 0.95, recall
    assert precision >= 0.95, precision
    assert (jac < 0.5).mean() <= 0.02
