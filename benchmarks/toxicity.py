"""Toxicity classifiers side by side: ours (the shipped `builtin`), the alt-profanity-check backend, a word list.

    .venv/bin/python benchmarks/toxicity.py [--docs 2000]

1. Precision, recall and F1 (95% intervals: Wilson, bootstrap for F1) at the pipeline's thresholds on
   tests/fixtures/toxicity_eval.tsv, 345 texts written and labelled by hand for this (its header says how), which
   no classifier here was trained on; then how many of each kind of hard negative each one removes.
2. Agreement between ours and the backend (percent with a Wilson interval, Cohen's kappa, each one's positives)
   on unlabelled text neither was trained on: the HH-RLHF turns that `data toxicity distill` held out, TinyStories
   validation stories, Alice in Wonderland's paragraphs (../shared/data, when present) and TinyWorld training
   documents. Ours was told that text of the same kind is clean (TinyStories training stories, TinyWorld's val
   split of another seed): on those two rows its positives are false positives avoided by design, not luck.
3. Throughput: documents per second of each on one core, on TinyWorld documents (~60 words) as the pipeline sees
   them (one document at a time) and in one batch.

The backend needs `pip install 'scratchlm[toxicity]'`; without it its rows are left out. The word list is
../shared/data/toxicity/ldnoobw_en.txt at the pipeline's density threshold (more than 1 listed word per 100).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scratchlm.data.shards import is_val_document  # noqa: E402
from scratchlm.data.sources import SourceConfig, read_sources  # noqa: E402
from scratchlm.data.toxicity import ToxicityConfig, WordListScorer, agreement, load_classifier, precision_recall, \
    read_labelled_tsv, text_pieces  # noqa: E402

DATA = Path(os.environ.get("SCRATCHLM_SHARED_DATA") or REPO.parent / "shared" / "data")
EVAL = REPO / "tests" / "fixtures" / "toxicity_eval.tsv"


class WordList:
    """The word list as a classifier: 1.0 when listed words are more than max_word_density of the words."""

    def __init__(self, path: Path):
        self.scorer = WordListScorer.from_file(path)
        self.limit = ToxicityConfig().max_word_density

    def predict_proba(self, texts):
        return np.array([float(self.scorer.density(t) > self.limit) for t in texts])


def classifiers() -> dict:
    out = {"ours (builtin)": load_classifier("builtin")}
    try:
        out["alt-profanity-check"] = load_classifier("profanity-check")
    except ValueError as e:
        print(f"(backend left out: {e})")
    words = DATA / "toxicity" / "ldnoobw_en.txt"
    if words.is_file():
        out["word list (LDNOOBW)"] = WordList(words)
    return out


def unlabelled_sets(n_tinyworld: int) -> dict[str, list[str]]:
    """Text neither classifier learned from: distill's held-out HH-RLHF turns (the same hash split), TinyStories
    validation stories, Alice, TinyWorld training documents."""
    from scratchlm.data.tinyworld import iter_documents

    sets = {}
    hh = DATA / "hh-rlhf" / "harmless-base_test.jsonl"
    if hh.is_file():
        pieces = dict.fromkeys(p for d in read_sources([str(hh)], SourceConfig(text_split="paragraph"))
                               for p in text_pieces(d["text"]))
        sets["HH-RLHF turns (held out)"] = [p for p in pieces if is_val_document(p, 0.2, 0)]
    stories = DATA / "tinystories" / "tinystories_val_head.txt"
    if stories.is_file():
        sets["TinyStories val stories"] = [d["text"] for d in read_sources([str(stories)], SourceConfig(text_split="paragraph"))]
    alice = DATA / "gutenberg" / "pg11.txt"
    if alice.is_file():
        sets["Alice paragraphs"] = [d["text"] for d in read_sources([str(alice)], SourceConfig(text_split="paragraph"))]
    sets["TinyWorld documents"] = list(iter_documents("train", seed=0, max_bytes=n_tinyworld * 400))[:n_tinyworld]
    return sets


def fmt_ci(v: float, ci) -> str:
    return f"{v:.3f} ({ci[0]:.3f}-{ci[1]:.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000, help="TinyWorld documents for agreement and throughput")
    args = ap.parse_args()
    clfs = classifiers()
    texts, y, kinds = read_labelled_tsv(EVAL)
    print(f"\n1. hand-labelled set {EVAL.relative_to(REPO)}: n={len(y)}, toxic={int(y.sum())}; threshold 0.5 "
          f"(word list: density > {ToxicityConfig().max_word_density:g}); 95% intervals")
    print(f"{'classifier':24s} {'precision':>21s} {'recall':>21s} {'F1':>21s}  tp  fp  fn")
    preds = {}
    for name, c in clfs.items():
        scores = c.predict_proba(texts)
        m = precision_recall(scores, y, 0.5)
        preds[name] = scores >= 0.5
        print(f"{name:24s} {fmt_ci(m['precision'], m['precision_ci']):>21s} {fmt_ci(m['recall'], m['recall_ci']):>21s} "
              f"{fmt_ci(m['f1'], m['f1_ci']):>21s} {m['tp']:3d} {m['fp']:3d} {m['fn']:3d}")
    order = list(dict.fromkeys(kinds))
    print("\n   flagged, by kind (label 0 kinds: false positives; label 1: true positives)")
    print(f"   {'kind':14s} {'n':>4s}" + "".join(f"{n[:22]:>24s}" for n in clfs))
    for k in order:
        sel = np.array([kk == k for kk in kinds])
        print(f"   {k:14s} {int(sel.sum()):4d}" + "".join(f"{int(p[sel].sum()):24d}" for p in preds.values()))

    names = list(clfs)
    if "alt-profanity-check" in clfs:
        print("\n2. agreement, ours vs alt-profanity-check, on unlabelled text neither was trained on")
        print(f"   {'set':26s} {'n':>6s} {'agreement (95%)':>22s} {'kappa':>6s} {'ours+':>6s} {'backend+':>8s} {'both+':>6s}")
        for name, docs in unlabelled_sets(args.docs).items():
            a = agreement(clfs[names[0]].predict_proba(docs) >= 0.5, clfs["alt-profanity-check"].predict_proba(docs) >= 0.5)
            print(f"   {name:26s} {a['n']:6,d} {fmt_ci(a['agreement'], a['agreement_ci']):>22s} {a['kappa']:6.3f} "
                  f"{a['positive_a']:6,d} {a['positive_b']:8,d} {a['both_positive']:6,d}")
        a = agreement(preds[names[0]], preds["alt-profanity-check"])
        print(f"   {'the hand-labelled set':26s} {a['n']:6,d} {fmt_ci(a['agreement'], a['agreement_ci']):>22s} "
              f"{a['kappa']:6.3f} {a['positive_a']:6,d} {a['positive_b']:8,d} {a['both_positive']:6,d}")

    from scratchlm.data.tinyworld import iter_documents

    docs = list(iter_documents("train", seed=0, max_bytes=args.docs * 400))[:args.docs]
    words = sum(len(d.split()) for d in docs) / len(docs)
    print(f"\n3. throughput, one core, {len(docs):,} TinyWorld documents ({words:.0f} words each on average)")
    print(f"   {'classifier':24s} {'one at a time':>16s} {'one batch':>12s}")
    for name, c in clfs.items():
        c.predict_proba(docs[:10])  # warm up (the backend's lazy sklearn paths)
        t = time.perf_counter()
        for d in docs:
            c.predict_proba([d])
        single = len(docs) / (time.perf_counter() - t)
        t = time.perf_counter()
        c.predict_proba(docs)
        batch = len(docs) / (time.perf_counter() - t)
        print(f"   {name:24s} {single:12,.0f} d/s {batch:8,.0f} d/s")


if __name__ == "__main__":
    main()
