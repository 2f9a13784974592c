"""Toxicity: a word-list density score and a small trainable classifier.

1. Word-list density. C4 dropped every page containing any word of the LDNOOBW list; that also drops medical,
   biological and LGBTQ+ text (Dodge et al. 2021, "Documenting large webtext corpora"). A density (listed terms
   per word) with a threshold keeps a page that mentions a word once but drops one that is made of them. The list
   is the user's: this package ships none (e.g. ../shared/data/toxicity/ldnoobw_en.txt in the tests).

2. A hashed n-gram logistic regression (numpy). Features: lowercased word 1- and 2-grams, hashed (crc32, with a
   sign bit to cancel collisions on average: Weinberger et al. 2009) into 2^18 buckets, log(1 + count), L2
   normalised per document. Trained with full-batch Adam on the class-weighted logistic loss plus L2; it
   learns from labelled data, so it catches what a list cannot (context, spelling variants) and can be
   retrained for any notion of "unwanted". Scores are P(toxic); a threshold turns them into decisions, and
   `evaluate` prints precision/recall on held-out labelled data.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


@dataclass
class ToxicityConfig:
    word_list: str | None = None
    """Path to a word/phrase list (one per line, '#' comments). None disables the word-list filter."""
    max_word_density: float = 0.01
    """Drop a document when listed terms / words exceeds this (1 per 100 words). 0 reproduces C4's rule
    (any listed word drops the page), which removes much harmless text."""
    classifier: str | None = None
    """Path to a trained classifier folder (`scratchlm data toxicity train`). None disables it."""
    classifier_threshold: float = 0.5
    """Drop a document when the classifier's P(toxic) is at least this."""


# --------------------------------------------------------------------------------------------------
# word list

def load_word_list(path: str | Path) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"toxicity word list {p} not found: pass a text file with one term per line")
    terms = {ln.strip().lower() for ln in p.read_text(encoding="utf-8").splitlines()}
    terms = sorted(t for t in terms if t and not t.startswith("#"))
    if not terms:
        raise ValueError(f"toxicity word list {p} is empty: it needs one term per line")
    return terms


class WordListScorer:
    """Counts whole-word (and whole-phrase) matches of the listed terms, case-insensitively."""

    def __init__(self, terms: list[str]):
        self.terms = terms
        # longest first, so "blue waffle" wins over "blue"; \b..\b so "class" never matches "ass"
        alternatives = "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True))
        self.pattern = re.compile(rf"(?<![^\W_])(?:{alternatives})(?![^\W_])", re.IGNORECASE)

    @classmethod
    def from_file(cls, path: str | Path) -> "WordListScorer":
        return cls(load_word_list(path))

    def hits(self, text: str) -> list[str]:
        return [m.group(0).lower() for m in self.pattern.finditer(text)]

    def density(self, text: str) -> float:
        """Listed-term occurrences per whitespace word."""
        n_words = len(text.split())
        return len(self.hits(text)) / n_words if n_words else 0.0


# --------------------------------------------------------------------------------------------------
# hashed n-gram features

@dataclass
class ClassifierConfig:
    n_features: int = 2**18
    """Hash buckets. 2^18 = 262k: collisions stay rare for vocabularies of ~100k n-grams, weights fit in 1 MB."""
    ngram: int = 2
    """Word n-grams up to this length (1 = bag of words; 2 adds "kill you" vs "kill time")."""
    l2: float = 1e-4
    """L2 penalty on the weights (mean loss + l2/2 |w|^2)."""
    lr: float = 0.1
    """Adam learning rate (full batch)."""
    epochs: int = 200
    """Full-batch Adam steps."""
    balance: bool = True
    """Weight classes inversely to their frequency, so a rare toxic class is not ignored."""


def featurize(texts: list[str], n_features: int, ngram: int = 2):
    """Sparse CSR-style features: (indptr (N+1,), indices (nnz,), values (nnz,)), rows L2-normalised."""
    indptr = [0]
    indices: list[int] = []
    values: list[float] = []
    mask = n_features - 1
    for text in texts:
        words = _WORD.findall(text.lower())
        grams = list(words)
        for n in range(2, ngram + 1):
            grams += [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
        counts: dict[int, float] = {}
        for g in grams:
            h = zlib.crc32(g.encode("utf-8", "surrogatepass"))
            sign = 1.0 if h & 0x80000000 else -1.0  # the top bit, which the bucket index does not use
            key = h & mask
            counts[key] = counts.get(key, 0.0) + sign
        if counts:
            idx = np.fromiter(counts.keys(), np.int64, len(counts))
            val = np.fromiter(counts.values(), np.float64, len(counts))
            val = np.sign(val) * np.log1p(np.abs(val))
            norm = np.sqrt((val**2).sum())
            if norm > 0:
                val /= norm
            indices.extend(idx.tolist())
            values.extend(val.tolist())
        indptr.append(len(indices))
    return np.asarray(indptr, np.int64), np.asarray(indices, np.int64), np.asarray(values, np.float64)


def _logits(w: np.ndarray, b: float, X) -> np.ndarray:
    indptr, indices, values = X
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))  # (nnz,) document of each non-zero
    return np.bincount(rows, weights=w[indices] * values, minlength=len(indptr) - 1) + b  # (N,)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


def loss_and_grad(w: np.ndarray, b: float, X, y: np.ndarray, sample_w: np.ndarray, l2: float):
    """Weighted mean logistic loss + l2/2 |w|^2, and its gradient (dw, db)."""
    indptr, indices, values = X
    z = _logits(w, b, X)
    # log(1 + e^z) - y z, computed stably
    loss = float((sample_w * (np.logaddexp(0.0, z) - y * z)).sum() / sample_w.sum() + 0.5 * l2 * (w @ w))
    r = sample_w * (_sigmoid(z) - y) / sample_w.sum()  # (N,) dloss/dz
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    dw = np.bincount(indices, weights=r[rows] * values, minlength=len(w)) + l2 * w
    return loss, dw, float(r.sum())


class ToxicityClassifier:
    """Hashed n-gram logistic regression: fit(texts, labels), predict_proba(texts), save/load."""

    def __init__(self, cfg: ClassifierConfig | None = None):
        self.cfg = cfg or ClassifierConfig()
        self.w = np.zeros(self.cfg.n_features)
        self.b = 0.0

    def fit(self, texts: list[str], labels, progress: bool = False) -> list[float]:
        y = np.asarray(labels, dtype=np.float64)
        if set(np.unique(y)) - {0.0, 1.0} or len(np.unique(y)) < 2:
            raise ValueError("toxicity labels must be 0/1 with both classes present; check --label-field")
        X = featurize(texts, self.cfg.n_features, self.cfg.ngram)
        sample_w = np.ones_like(y)
        if self.cfg.balance:
            pos = y.mean()
            sample_w = np.where(y == 1, 0.5 / pos, 0.5 / (1 - pos))
        # Adam (Kingma & Ba 2015) on [w, b]
        m_w, v_w, m_b, v_b = np.zeros_like(self.w), np.zeros_like(self.w), 0.0, 0.0
        b1, b2, eps = 0.9, 0.999, 1e-8
        losses = []
        steps = range(1, self.cfg.epochs + 1)
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc="train toxicity", unit="step")
        for t in steps:
            loss, dw, db = loss_and_grad(self.w, self.b, X, y, sample_w, self.cfg.l2)
            losses.append(loss)
            m_w = b1 * m_w + (1 - b1) * dw
            v_w = b2 * v_w + (1 - b2) * dw * dw
            m_b = b1 * m_b + (1 - b1) * db
            v_b = b2 * v_b + (1 - b2) * db * db
            self.w -= self.cfg.lr * (m_w / (1 - b1**t)) / (np.sqrt(v_w / (1 - b2**t)) + eps)
            self.b -= self.cfg.lr * (m_b / (1 - b1**t)) / (np.sqrt(v_b / (1 - b2**t)) + eps)
        return losses

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """(N,) P(toxic) for each text."""
        return _sigmoid(_logits(self.w, self.b, featurize(texts, self.cfg.n_features, self.cfg.ngram)))

    def save(self, folder: str | Path) -> None:
        from scratchlm.runs import atomic_write, atomic_write_json

        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, w=self.w.astype(np.float32), b=np.float64(self.b))

        atomic_write(d / "weights.npz", write)
        atomic_write_json(d / "classifier.json", {"kind": "hashed_ngram_logreg", "config": asdict(self.cfg)})

    @classmethod
    def load(cls, folder: str | Path) -> "ToxicityClassifier":
        d = Path(folder)
        if not (d / "classifier.json").is_file():
            raise FileNotFoundError(f"{d} holds no classifier.json: train one with `scratchlm data toxicity train`")
        meta = json.loads((d / "classifier.json").read_text())
        clf = cls(ClassifierConfig(**meta["config"]))
        with np.load(d / "weights.npz") as z:
            clf.w, clf.b = z["w"].astype(np.float64), float(z["b"])
        return clf


def precision_recall(scores: np.ndarray, labels, threshold: float = 0.5) -> dict:
    """Precision, recall, F1 and accuracy of `scores >= threshold` against 0/1 labels."""
    y = np.asarray(labels).astype(bool)
    pred = np.asarray(scores) >= threshold
    tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"threshold": threshold, "n": int(len(y)), "positives": int(y.sum()), "tp": tp, "fp": fp, "fn": fn,
            "precision": precision, "recall": recall, "f1": f1, "accuracy": float((pred == y).mean()) if len(y) else 0.0}
