"""Toxicity: word-list matching, the logistic-regression gradient, learning on held-out data, the CLI; the shipped
classifier and the alt-profanity-check backend measured on hand-labelled text, in the web preset and the demo."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from scratchlm.data.toxicity import (ClassifierConfig, ToxicityClassifier, WordListScorer, agreement, featurize,
                                     load_classifier, load_word_list, loss_and_grad, precision_recall,
                                     read_labelled_tsv, wilson_interval)

from conftest import SHARED_DATA as DATA, builtin_corpus, shared_path

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


def test_wilson_interval_and_agreement_by_hand():
    # Wilson (1927): 5/10 -> 0.2366-0.7634; 0/10 -> 0-0.2775 (never the Wald interval's 0-0)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    a = agreement([1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0])
    # observed 5/6; chance 2/6 * 1/6 + 4/6 * 5/6 = 22/36; kappa = (30/36 - 22/36) / (14/36) = 4/7
    assert a["agree"] == 5 and a["kappa"] == pytest.approx(4 / 7) and (a["positive_a"], a["positive_b"]) == (2, 1)
    m = precision_recall(np.array([0.9, 0.8, 0.2, 0.6, 0.1]), [1, 0, 1, 1, 0], 0.5)
    assert m["precision_ci"] == pytest.approx(wilson_interval(2, 3)) and m["f1_ci"][0] <= m["f1"] <= m["f1_ci"][1]


def test_fit_learns_soft_labels():
    """Distillation's targets are a teacher's probabilities: the fit must reach them, not only 0/1."""
    texts = [f"w{i} filler" for i in range(40)]
    soft = np.linspace(0.05, 0.95, 40)
    clf = ToxicityClassifier(ClassifierConfig(n_features=1 << 12, ngram=1, l2=0.0, epochs=400, balance=False))
    clf.fit(texts, soft)
    np.testing.assert_allclose(clf.predict_proba(texts), soft, atol=0.05)
    with pytest.raises(ValueError, match="both classes"):
        clf.fit(texts, np.full(40, 0.2))


# --------------------------------------------------------------------------------------------------
# issue 18.7: a toxicity filter worth turning on, measured on hand-labelled text

EVAL = Path(__file__).parent / "fixtures" / "toxicity_eval.tsv"


def eval_set():
    texts, y, kinds = read_labelled_tsv(EVAL)
    assert len(y) == 345 and int(y.sum()) == 95  # the set whose figures docs/data.md reports
    return texts, y, kinds


def backend():
    """The alt-profanity-check backend, or a skip that names the extra to install."""
    try:
        return load_classifier("profanity-check")
    except ValueError as e:
        pytest.skip(f"needs the toxicity extra: pip install 'scratchlm[toxicity]' ({e})")


def flagged_by_kind(clf, texts, kinds):
    pred = clf.predict_proba(texts) >= 0.5
    out: dict = {}
    for p, k in zip(pred, kinds):
        out[k] = out.get(k, 0) + int(p)
    return out


def test_builtin_classifier_on_hand_labelled_text():
    """The shipped classifier, on 345 texts labelled by hand that it never saw. Measured (2026-12-06): precision
    0.808, recall 0.621, F1 0.702 (95% 0.615-0.774). The floors are under the intervals' low ends: a broken or
    untrained model (F1 0, or flagging everything: F1 0.43) fails them."""
    texts, y, kinds = eval_set()
    clf = load_classifier("builtin")
    m = precision_recall(clf.predict_proba(texts), y)
    assert m["f1"] >= 0.60 and m["precision"] >= 0.68 and m["recall"] >= 0.52, m
    flagged = flagged_by_kind(clf, texts, kinds)
    # clearly abusive (measured: 23 of 25 profanity, 21 of 25 insults) removed; hard negatives kept (measured: 0
    # of 90 ordinary, 3 of 40 Scunthorpe words, 4 of 40 medical, 0 of 20 reported violence flagged)
    assert flagged["profanity"] >= 20 and flagged["insult"] >= 17, flagged
    assert flagged["ordinary"] == 0 and flagged["violence_fact"] == 0, flagged
    assert flagged["scunthorpe"] <= 5 and flagged["medical"] <= 6, flagged


def test_backend_on_hand_labelled_text_and_agreement():
    """alt-profanity-check on the same set (measured: precision 0.747, recall 0.684, F1 0.714), and how often
    ours decides as it does there (measured: 325 of 345, kappa 0.84)."""
    teacher = backend()
    texts, y, kinds = eval_set()
    m = precision_recall(teacher.predict_proba(texts), y)
    assert m["f1"] >= 0.62 and m["recall"] >= 0.58, m
    a = agreement(load_classifier("builtin").predict_proba(texts) >= 0.5, teacher.predict_proba(texts) >= 0.5)
    assert a["agreement"] >= 0.88 and a["kappa"] >= 0.7, a


def _web_page(sentences: list[str]) -> str:
    """A web-page-shaped document (3 lines, 50+ words, 5+ sentences) that the web preset's quality filters keep."""
    third = len(sentences) // 3
    return "\n".join(" ".join(sentences[i * third:(i + 1) * third]) for i in range(3))


def test_web_preset_runs_the_toxicity_filter(tmp_path, capsys):
    """`--preset web` removes abusive pages with the shipped classifier and counts them in the report's table;
    ordinary pages and pages about medicine stay. The books, code, chat and none presets leave it off."""
    from scratchlm.cli.main import main
    from scratchlm.data.pipeline import preset_config

    texts, y, kinds = eval_set()
    by_kind = {k: [t for t, kk in zip(texts, kinds) if kk == k] for k in set(kinds)}
    abusive = [_web_page(by_kind["profanity"][i:i + 9]) for i in (0, 9)] + [_web_page(by_kind["insult"][:9])]
    clean = [_web_page(by_kind["ordinary"][i:i + 9]) for i in range(0, 81, 9)] + [_web_page(by_kind["medical"][:9])]
    f = tmp_path / "crawl.jsonl"
    f.write_text("".join(json.dumps({"text": t}) + "\n" for t in abusive + clean))
    assert main(["data", "prepare", "--input", str(f), "--preset", "web", "--workers", "1",
                 "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["removed"]["toxic_classifier"]["docs"] == len(abusive), report["removed"]
    assert report["docs_out"] == len(clean)
    assert report["toxicity"] == {"classifiers": ["builtin"], "scored": len(abusive + clean), "removed": len(abusive)}
    out = capsys.readouterr().out
    assert re.search(r"^removed by toxicity\s+3\s", out, re.M)
    assert "toxic_classifier" in out and "toxicity classifier builtin gives P(toxic) of 0.5 or more" in out
    assert preset_config("web").toxicity.classifier == "builtin"
    assert all(preset_config(p).toxicity.classifier is None for p in ("books", "code", "chat", "none"))


def test_demo_toxicity_step_is_not_a_no_op(tmp_path):
    """The demo's data step runs the shipped classifier: TinyWorld keeps its stories (it is clean: on the full
    demo's 8 MB, 7 of 15,871 documents scored were removed, monkey fact sheets), and abusive paragraphs slipped in
    are removed and counted."""
    from scratchlm.cli.demo import demo_data_config
    from scratchlm.data.pipeline import format_report, iter_clean_texts, run_pipeline

    cfg = demo_data_config()
    assert cfg.toxicity.classifier == "builtin"
    texts, y, kinds = eval_set()
    stories = builtin_corpus(60_000)
    abusive = [" ".join(t for t, k in zip(texts, kinds) if k == "profanity")[:400],
               " ".join(t for t, k in zip(texts, kinds) if k == "insult")[:400]]
    f = tmp_path / "train.txt"
    f.write_text("\n\n".join(stories[:40] + abusive + stories[40:]))
    report = run_pipeline([str(f)], tmp_path / "data", cfg, progress=False)
    kept = list(iter_clean_texts(report["clean_files"]))
    assert not any("fuck" in t.lower() or "idiot" in t.lower() for t in kept)  # both abusive paragraphs removed
    removed = report["removed"]["toxic_classifier"]["docs"]
    assert 2 <= removed <= 2 + len(stories) // 100, removed  # and at most 1% of TinyWorld's (measured: 0.04%)
    assert report["toxicity"]["scored"] >= len(stories) - 20 and report["toxicity"]["removed"] == removed
    assert f"toxicity classifier builtin: {report['toxicity']['scored']:,} documents scored, {removed:,} removed" \
        in format_report(report)


def test_missing_backend_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import scratchlm.data.pipeline as pipeline
    from scratchlm.cli.main import main

    monkeypatch.setitem(sys.modules, "profanity_check", None)  # as if not installed: import raises ImportError
    monkeypatch.setattr(pipeline, "_CACHE", {})
    with pytest.raises(ValueError, match=r"pip install 'scratchlm\[toxicity\]'"):
        load_classifier("profanity-check")
    f = tmp_path / "a.jsonl"
    f.write_text(json.dumps({"text": "hello world"}) + "\n")
    for argv in (["data", "prepare", "--input", str(f), "--toxicity-model", "profanity-check", "--out", str(tmp_path / "o")],
                 ["data", "toxicity", "score", "--toxicity-model", "profanity-check", "--input", str(f), "--out", str(tmp_path / "s.jsonl")],
                 ["data", "toxicity", "distill", "--input", str(f), "--out", str(tmp_path / "d")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "alt-profanity-check" in err and "scratchlm[toxicity]" in err, err
    assert main(["data", "toxicity", "score", "--toxicity-model", str(tmp_path / "nothing"), "--input", str(f)]) == 2
    assert "classifier.json" in capsys.readouterr().err


def test_bad_toxicity_settings_are_one_line_errors(tmp_path, capsys):
    """An unknown classifier name, a threshold outside [0, 1] (2 would silently remove nothing), a weights file
    without its description and a negative probe count are named, in one line, before anything is read."""
    from scratchlm.cli.main import main

    f = tmp_path / "a.jsonl"
    f.write_text(json.dumps({"text": "hello world"}) + "\n")
    np.savez(tmp_path / "w.npz", w=np.zeros(3))
    cases = [(["data", "prepare", "--set", "toxicity.classifier=garbage"], "is not builtin, profanity-check or a folder"),
             (["data", "prepare", "--set", "toxicity.classifier_threshold=2"], "out of range"),
             (["data", "filter", "--set", "toxicity.max_word_density=-1"], "out of range"),
             (["data", "toxicity", "score", "--toxicity-model", str(tmp_path / "w.npz")], "no classifier description"),
             (["data", "toxicity", "distill", "--per-word", "-1"], "--per-word must be 0 or more")]
    for i, (argv, message) in enumerate(cases):
        assert main(argv + ["--input", str(f), "--out", str(tmp_path / f"o{i}")]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, (argv, err)


def test_distill_cli_learns_the_backend(tmp_path, capsys):
    """`data toxicity distill` on a little text: the model it writes says what taught it and agrees with it."""
    backend()
    from scratchlm.cli.main import main

    texts, y, kinds = eval_set()
    stories = builtin_corpus(150_000)
    f = tmp_path / "mix.txt"
    f.write_text("\n\n".join(stories + texts[::2]))
    assert main(["data", "toxicity", "distill", "-q", "--input", str(f), "--out", str(tmp_path / "m"),
                 "--per-word", "1", "--set", "epochs=150"]) == 0
    assert "held-out: n=" in capsys.readouterr().out
    about = json.loads((tmp_path / "m" / "classifier.json").read_text())["about"]
    assert about["teacher"].startswith("alt-profanity-check") and about["probes"] > 10_000
    clf = load_classifier(str(tmp_path / "m"))
    a = agreement(clf.predict_proba(texts[1::2]) >= 0.5, load_classifier("profanity-check").predict_proba(texts[1::2]) >= 0.5)
    assert a["agreement"] >= 0.8, a


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
    assert run(["data", "toxicity", "score", "--toxicity-model", str(tmp_path / "m"), "--toxic-words", str(WORDS),
                "--input", str(f), "--label-field", "label", "--out", str(tmp_path / "s.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "classifier: n=1,500" in out and "word list: n=1,500" in out
    scored = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(scored) == 1500 and {"toxicity", "toxic_word_density", "label"} <= set(scored[0])
