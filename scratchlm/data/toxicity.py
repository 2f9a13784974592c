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

3. Classifiers by name (`load_classifier`, `toxicity.classifier`): "builtin" is the model this package ships
   (assets/toxicity.npz), a hashed n-gram logistic regression distilled from alt-profanity-check's labels (below);
   "profanity-check" is that backend itself (`pip install 'scratchlm[toxicity]'`): TF-IDF word unigrams and a
   calibrated linear SVM trained on ~200k human-labelled tweets and Wikipedia comments (Davidson et al. 2017;
   the Jigsaw toxic comment challenge, 2018); any other value is a folder from `data toxicity train|distill`.

4. Distillation (`distill`): no human-labelled toxicity corpus is available offline, so the shipped model
   learns the backend's P(toxic) (soft labels, Hinton et al. 2015) on open text (chat turns) plus "probes": each
   word the backend knows, inserted into a few short texts, so that every word it learned from people gets a
   weight here too, not only the few that ordinary text happens to hold. Curated text (books, children's
   stories, instructions) is labelled 0 whatever the backend says: the backend, a bag of words, calls "Pigs can
   dig." and "Nuts grow on trees." toxic; these labels teach the student otherwise.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from scratchlm.stats import wilson_interval

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


@dataclass
class ToxicityConfig:
    word_list: str | None = None
    """Path to a word/phrase list (one per line, '#' comments). None disables the word-list filter."""
    max_word_density: float = field(default=0.01, metadata={"range": (0.0, 1.0)})
    """Drop a document when listed terms / words exceeds this (1 per 100 words). 0 reproduces C4's rule
    (any listed word drops the page), which removes much harmless text."""
    classifier: str | None = "builtin"
    """The classifier: "builtin" (shipped with the package, numpy only), "profanity-check" (the alt-profanity-check
    backend: pip install 'scratchlm[toxicity]'), or a folder from `scratchlm data toxicity train|distill`. None
    disables it. On in the web preset; off in books, code, chat and none (PRESETS)."""
    classifier_threshold: float = field(default=0.5, metadata={"range": (0.0, 1.0)})
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
        self.about: dict = {}  # what it was trained on (save's `about`)

    def fit(self, texts: list[str], labels, progress: bool = False) -> list[float]:
        y = np.asarray(labels, dtype=np.float64)  # 0/1, or soft labels in [0, 1] (a teacher's P(toxic))
        if not np.all((y >= 0) & (y <= 1)) or not (y >= 0.5).any() or not (y < 0.5).any():
            raise ValueError("toxicity labels must be 0/1 (or P(toxic) in [0, 1]) with both classes present; "
                             "check --label-field")
        X = featurize(texts, self.cfg.n_features, self.cfg.ngram)
        sample_w = np.ones_like(y)
        if self.cfg.balance:
            pos = y.mean()
            sample_w = y * (0.5 / pos) + (1 - y) * (0.5 / (1 - pos))  # = 0.5/pos on positives, 0.5/(1-pos) on negatives
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

    def save(self, folder: str | Path, about: dict | None = None) -> None:
        """Write weights.npz and classifier.json (with `about`: what it was trained on, held-out figures).
        weights.npz holds the same description too, so the file alone is a classifier (the shipped one is)."""
        from scratchlm.runs import atomic_write, atomic_write_json

        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"kind": "hashed_ngram_logreg", "config": asdict(self.cfg), **({"about": about} if about else {})}

        def write(tmp):
            with open(tmp, "wb") as f:
                # compressed: the buckets no training n-gram reached stay exactly 0 (the shipped model: 1 MB -> 0.2 MB)
                np.savez_compressed(f, w=self.w.astype(np.float32), b=np.float64(self.b), meta=json.dumps(meta))

        atomic_write(d / "weights.npz", write)
        atomic_write_json(d / "classifier.json", meta)

    @classmethod
    def load(cls, path: str | Path) -> "ToxicityClassifier":
        """From a folder (classifier.json + weights.npz) or a weights.npz file on its own."""
        p = Path(path)
        if p.is_file() and p.suffix == ".npz":
            with np.load(p) as z:
                if "meta" not in z:
                    raise ValueError(f"{p} holds no classifier description: pass its folder instead")
                meta = json.loads(str(z["meta"]))
        elif (p / "classifier.json").is_file():
            meta = json.loads((p / "classifier.json").read_text())
            p = p / "weights.npz"
        else:
            raise FileNotFoundError(f"toxicity classifier {str(path)!r} is not builtin, profanity-check or a folder "
                                    "with classifier.json: train one with `scratchlm data toxicity train|distill`")
        clf = cls(ClassifierConfig(**meta["config"]))
        with np.load(p) as z:
            clf.w, clf.b = z["w"].astype(np.float64), float(z["b"])
        clf.about = meta.get("about", {})
        return clf


def precision_recall(scores: np.ndarray, labels, threshold: float = 0.5) -> dict:
    """Precision, recall, F1 and accuracy of `scores >= threshold` against 0/1 labels, with 95% intervals (Wilson
    for precision and recall, bootstrap for F1)."""
    y = np.asarray(labels).astype(bool)
    pred = np.asarray(scores) >= threshold
    tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"threshold": threshold, "n": int(len(y)), "positives": int(y.sum()), "tp": tp, "fp": fp, "fn": fn,
            "precision": precision, "recall": recall, "f1": f1, "accuracy": float((pred == y).mean()) if len(y) else 0.0,
            "precision_ci": wilson_interval(tp, tp + fp), "recall_ci": wilson_interval(tp, tp + fn),
            "f1_ci": f1_interval(pred, y) if len(y) else (0.0, 1.0)}


# --------------------------------------------------------------------------------------------------
# classifiers by name: the shipped model, the alt-profanity-check backend, or a trained folder

BUILTIN = Path(__file__).resolve().parent / "assets" / "toxicity.npz"
"""The shipped classifier: the weights.npz that `data toxicity distill` wrote (docs/data.md has the command), which
holds its own description (what taught it, on what, held-out agreement). One file, not a folder with a .json, so
that the package folder, fed to `data prepare`, still reads as source code and not as data rows."""
BACKEND = "profanity-check"


class ProfanityCheck:
    """The alt-profanity-check backend (TF-IDF word unigrams + calibrated linear SVM, trained on human labels),
    with the same predict_proba as ToxicityClassifier. Its model ships inside the wheel: nothing is downloaded."""

    def __init__(self):
        try:
            from profanity_check import profanity_check as pc
        except ImportError:  # the package, or the scikit-learn/joblib version its pickled model needs
            raise ValueError("toxicity.classifier = 'profanity-check' needs alt-profanity-check: "
                             "pip install 'scratchlm[toxicity]' (or use the builtin classifier)") from None
        self._pc = pc

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        return np.asarray(self._pc.predict_prob(texts), dtype=np.float64) if texts else np.zeros(0)

    def vocabulary(self) -> list[str]:
        """The words the backend has a weight for (15,442 in alt-profanity-check 1.9.1), sorted."""
        return sorted(self._pc.vectorizer.vocabulary_)


def load_classifier(name: str | Path):
    """"builtin" (shipped), "profanity-check" (the backend) or a classifier folder -> an object with predict_proba."""
    if str(name) == "builtin":
        return ToxicityClassifier.load(BUILTIN)
    if str(name) == BACKEND:
        return ProfanityCheck()
    return ToxicityClassifier.load(name)


# --------------------------------------------------------------------------------------------------
# distillation: our classifier learns the backend's P(toxic)

_SPEAKER = re.compile(r"^(?:Human|Assistant|User|System):\s*")


def text_pieces(text: str, min_words: int = 3, max_words: int = 200) -> list[str]:
    """Blank-line paragraphs (a chat's turns) with whitespace folded and a leading speaker tag ("Human:") dropped:
    comment-sized pieces, the size of the backend's training texts. Pieces outside [min_words, max_words] are
    left out."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        t = _SPEAKER.sub("", " ".join(para.split()))
        if min_words <= len(t.split()) <= max_words:
            out.append(t)
    return out


def probe_texts(words: list[str], carriers: list[str], per_word: int = 2, seed: int = 0) -> list[str]:
    """Each word inserted at a random position of `per_word` random carrier texts."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(len(carriers), size=(len(words), per_word))
    out = []
    for w, row in zip(words, pick):
        for j in row:
            c = carriers[j].split()
            c.insert(int(rng.integers(len(c) + 1)), w)
            out.append(" ".join(c))
    return out


def distill(texts: list[str], teacher, cfg: ClassifierConfig | None = None, clean: list[str] = (), per_word: int = 2,
            seed: int = 0, progress: bool = False) -> tuple[ToxicityClassifier, dict]:
    """Train a ToxicityClassifier on `teacher`'s P(toxic) for `texts`, plus probes of every word the teacher knows
    (ProfanityCheck.vocabulary) carried by texts of 5-40 words, plus `clean` texts labelled 0 whatever the teacher
    says (curated text: books, children's stories; they teach that "pigs can dig" is not an insult). Returns
    (classifier, what it saw)."""
    cfg = cfg or ClassifierConfig(balance=False)  # soft labels: match the teacher's probabilities, not re-weight them
    clean = list(clean)
    carriers = [t for t in list(texts) + clean if 5 <= len(t.split()) <= 40] or list(texts) + clean
    probes = probe_texts(teacher.vocabulary(), carriers, per_word, seed) if hasattr(teacher, "vocabulary") else []
    taught = list(texts) + probes
    y = np.concatenate([teacher.predict_proba(taught), np.zeros(len(clean))])
    clf = ToxicityClassifier(cfg)
    losses = clf.fit(taught + clean, y, progress=progress)
    return clf, {"texts": len(texts), "probes": len(probes), "clean": len(clean),
                 "teacher_positive": int((y >= 0.5).sum()), "train_loss": losses[-1]}


# --------------------------------------------------------------------------------------------------
# measuring: intervals and agreement

def f1_interval(pred, labels, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of F1 (no closed form: it mixes precision's and recall's denominators)."""
    pred, y = np.asarray(pred, bool), np.asarray(labels, bool)
    idx = np.random.default_rng(seed).integers(len(y), size=(n_boot, len(y)))
    p, t = pred[idx], y[idx]
    tp, fp, fn = (p & t).sum(1), (p & ~t).sum(1), (~p & t).sum(1)
    f1 = np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    return float(np.percentile(f1, 2.5)), float(np.percentile(f1, 97.5))


def agreement(a, b) -> dict:
    """How often two sets of 0/1 decisions agree (with a Wilson interval), Cohen's kappa, and each one's rate."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    n, k = len(a), int((a == b).sum())
    pa, pb = a.mean() if n else 0.0, b.mean() if n else 0.0
    chance = pa * pb + (1 - pa) * (1 - pb)
    kappa = (k / n - chance) / (1 - chance) if n and chance < 1 else float("nan")
    return {"n": n, "agree": k, "agreement": k / n if n else 0.0, "agreement_ci": wilson_interval(k, n),
            "kappa": float(kappa), "positive_a": int(a.sum()), "positive_b": int(b.sum()),
            "both_positive": int((a & b).sum())}


def read_labelled_tsv(path: str | Path) -> tuple[list[str], np.ndarray, list[str]]:
    """(texts, 0/1 labels, kinds) of a hand-labelled set: `label<TAB>kind<TAB>text` lines, '#' comments
    (tests/fixtures/toxicity_eval.tsv says how its labels were made)."""
    texts, labels, kinds = [], [], []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3 or parts[0] not in ("0", "1"):
            raise ValueError(f"{path}:{i}: expected label<TAB>kind<TAB>text with label 0 or 1")
        labels.append(int(parts[0]))
        kinds.append(parts[1])
        texts.append(parts[2])
    return texts, np.array(labels), kinds
