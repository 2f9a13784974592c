"""Toxicity: word-list matching, the logistic-regression gradient, learning on held-out data, the CLI."""

import json

import numpy as np
import pytest

from scratchlm.data.toxicity import (ClassifierConfig, ToxicityClassifier, WordListScorer, featurize, load_word_list,
                                     loss_and_grad, precision_recall)

from conftest import SHARED_DATA as DATA, shared_path

WORDS = DATA / "toxicity" / "ldnoobw_en.txt"


def test_word_list_matches_whole_words_and_phrases():
    s = WordListScorer(["bad", "very bad thing", "x-rated"])
    assert s.hits("Bad, badly, BAD! a very bad thing; X-Rated.") == ["bad", "bad", "very bad thing", "x-rated"]
    assert s.hits("abad badminton") == []
    assert s.density("bad good good good") == 0.25 and s.density("") == 0.0


def test_shared_word_list_loads():
    shared_path("toxicity/ldnoobw_en.txt")
    terms = load_word_list(WORDS)
    assert len(terms) > 300
    s = WordListScorer(terms)
    term = next(t for t in terms if " " not in t and t.isalpha())
    assert s.hits(f"a sentence with {term.upper()} in it") == [term]


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(["a", "b", "c", "d", "e", "f"], 8)) for _ in range(20)]
    X = featurize(texts, 64, 2)
    y = rng.integers(0, 2, 20).astype(float)
    sw = rng.uniform(0.5, 2, 20)
    w, b = rng.normal(size=64), 0.3
    loss, dw, db = loss_and_grad(w, b, X, y, sw, 0.01)
    eps = 1e-6
    for i in rng.choice(64, 10, replace=False):
        wp, wm = w.copy(), w.copy()
        wp[i] += eps
        wm[i] -= eps
        num = (loss_and_grad(wp, b, X, y, sw, 0.01)[0] - loss_and_grad(wm, b, X, y, sw, 0.01)[0]) / (2 * eps)
        assert dw[i] == pytest.approx(num, rel=1e-5, abs=1e-8)
    num_b = (loss_and_grad(w, b + eps, X, y, sw, 0.01)[0] - loss_and_grad(w, b - eps, X, y, sw, 0.01)[0]) / (2 * eps)
    assert db == pytest.approx(num_b, rel=1e-5)


def test_features_are_normalised_and_deterministic():
    indptr, idx, val = featurize(["the cat the cat sat", ""], 1 << 10)
    assert indptr.tolist()[0] == 0 and indptr[1] == indptr[2]  # the empty text has no features
    assert np.sum(val[: indptr[1]] ** 2) == pytest.approx(1.0)
    assert np.array_equal(featurize(["the cat the cat sat"], 1 << 10)[1], idx[: indptr[1]])


def test_precision_recall_by_hand():
    m = precision_recall(np.array([0.9, 0.8, 0.2, 0.6, 0.1]), [1, 0, 1, 1, 0], 0.5)
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 1)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3) and m["accuracy"] == 0.6


def labelled_corpus(n=2500, seed=0, n_terms=30):
    """TinyStories paragraphs; 30% get two terms of a 30-term slice of the word list inserted (label 1)."""
    f = shared_path("tinystories/tinystories_train_first5000_lowercased.txt")
    shared_path("toxicity/ldnoobw_en.txt")
    paras = [p.strip() for p in f.read_text(encoding="utf-8").split("\n") if len(p.split()) >= 30][:n]
    rng = np.random.default_rng(seed)
    terms = list(rng.choice([t for t in load_word_list(WORDS) if t.isalpha()], n_terms, replace=False))
    texts, labels = [], []
    for p in paras:
        words = p.split()
        if rng.random() < 0.3:
            for t in rng.choice(terms, 2):
                words.insert(int(rng.integers(len(words))), str(t))
            labels.append(1)
        else:
            labels.append(0)
        texts.append(" ".join(words))
    return texts, np.array(labels)


def test_classifier_learns_and_generalises(tmp_path):
    texts, y = labelled_corpus()
    split = int(0.8 * len(texts))
    # a few thousand labelled documents are needed: with hundreds, the model memorises each story's n-grams
    clf = ToxicityClassifier(ClassifierConfig(n_features=1 << 16, ngram=1, epochs=150))
    losses = clf.fit(texts[:split], y[:split])
    assert losses[-1] < 0.5 * losses[0]
    m = precision_recall(clf.predict_proba(texts[split:]), y[split:])
    assert m["precision"] >= 0.9 and m["recall"] >= 0.85, m
    clf.save(tmp_path / "tox")
    again = ToxicityClassifier.load(tmp_path / "tox")
    np.testing.assert_allclose(again.predict_proba(texts[:20]), clf.predict_proba(texts[:20]), atol=1e-5)


def test_toxicity_cli_train_and_score(tmp_path, capsys):
    import argparse

    from scratchlm.cli.data import register

    texts, y = labelled_corpus(1500, seed=1)
    f = tmp_path / "labelled.jsonl"
    f.write_text("".join(json.dumps({"text": t, "label": bool(l)}) + "\n" for t, l in zip(texts, y)))

    def run(argv):
        parser = argparse.ArgumentParser()
        register(parser.add_subparsers())
        args = parser.parse_args(argv)
        return args.func(args)

    assert run(["data", "toxicity", "train", "--input", str(f), "--out", str(tmp_path / "m"), "-q",
                "--set", "epochs=100", "--set", "ngram=1", "--set", "n_features=65536"]) == 0
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["heldout"]["recall"] > 0.7 and "held-out: n=" in capsys.readouterr().out
    assert run(["data", "toxicity", "score", "--model", str(tmp_path / "m"), "--toxic-words", str(WORDS),
                "--input", str(f), "--label-field", "label", "--out", str(tmp_path / "s.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "classifier: n=1,500" in out and "word list: n=1,500" in out
    scored = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(scored) == 1500 and {"toxicity", "toxic_word_density", "label"} <= set(scored[0])
