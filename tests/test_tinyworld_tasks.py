"""TinyWorld post-training data: arithmetic is right, task answers check, preference pairs prefer the right answer."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys

import pytest

from scratchlm.data.tinyworld import check_answer, iter_instructions, iter_preferences, iter_records, iter_tasks
from scratchlm.data.tinyworld.arithmetic import PAIRS
from scratchlm.data.tinyworld.facts import FACTS
from scratchlm.data.tinyworld.heldout import question_reserved, sum_reserved
from scratchlm.data.tinyworld.tasks import preference_pairs

# Every way TinyWorld states a sum, as (regex, op); the last group is the stated result.
N = r"(\d+)"
FORMS = [
    (rf"{N} plus {N} is {N}\.", "+"), (rf"{N} and {N} make {N}\.", "+"), (rf"If you add {N} and {N}, you get {N}\.", "+"),
    (rf"{N} \+ {N} = {N}\.", "+"), (rf"{N} minus {N} is {N}\.", "-"), (rf"{N} take away {N} is {N}\.", "-"),
    (rf"{N} - {N} = {N}\.", "-"), (rf"If you take {N} away from {N}, you get {N}\.", "-r"),
    (rf"{N} times {N} is {N}\.", "*"), (rf"{N} groups of {N} make {N}\.", "*"), (rf"{N} x {N} = {N}\.", "*"),
    (rf"[A-Z][a-z]+ had {N} \w+\. [A-Z][a-z]+ gave [A-Z][a-z]+ {N} more\. Now [A-Z][a-z]+ has {N} \w+\.", "+"),
    (rf"There were {N} \w+ [a-z ]+\. Then {N} more came\. Now there (?:is|are) {N} \w+", "+"),
    (rf"[A-Z][a-z]+ had {N} \w+\. [A-Z][a-z]+ gave {N} to [A-Z][a-z]+\. Now [A-Z][a-z]+ has {N} \w+\.", "-"),
    (rf"There were {N} \w+ [a-z ]+\. Then {N} \w+ away\. Now there (?:is|are) {N} \w+", "-"),
    (rf"[A-Z][a-z]+ has {N} \w+\. There (?:is|are) {N} \w+ in each \w+\. So [A-Z][a-z]+ has {N} \w+ in all\.", "*"),
]


def _evaluate(text: str) -> int:
    """Check every sum stated in `text`; return how many; fail on a wrong one or an unrecognised statement."""
    n = 0
    for pat, op in FORMS:
        for m in re.finditer(pat, text):
            a, b, c = map(int, m.groups())
            want = {"+": a + b, "-": a - b, "-r": b - a, "*": a * b}[op]
            assert c == want, (m.group(0), text)
            n += 1
    return n


def test_arithmetic_documents_are_correct():
    docs = [d for d in itertools.islice(iter_records("train", 0), 3000) if d.kind == "arithmetic"]
    docs += [d for d in itertools.islice(iter_records("val", 0), 1000) if d.kind == "arithmetic"]
    assert len(docs) > 300
    for d in docs:
        assert _evaluate(d.text) == len(d.keys), d.text  # every statement recognised and right


def test_arithmetic_pairs_split_cleanly():
    for op in ("plus", "minus", "times"):
        train, val = set(PAIRS["train"][op]), set(PAIRS["val"][op])
        assert train and val and not train & val
        assert all(sum_reserved(a, op, b) for a, b in val)
    assert all(a >= b for a, b in PAIRS["train"]["minus"])  # no negative answers


@pytest.mark.parametrize("split", ["train", "val"])
def test_tasks_have_correct_checkable_answers(split):
    tasks = list(itertools.islice(iter_tasks(split, 0), 1500))
    kinds = {t["kind"] for t in tasks}
    assert kinds == {"arithmetic", "fact", "story_qa"}
    assert len({t["id"] for t in tasks}) == len(tasks)
    facts = {f.question: f for f in FACTS if f.question}
    for t in tasks:
        assert t["split"] == split and t["answer"] and t["instruction"]
        assert check_answer(t["output"], t["answer"], t["question"]), t
        if t["kind"] == "arithmetic":  # recompute from the text the model sees
            assert _evaluate(t["instruction"].replace(t["question"], "") + " " + t["output"]) >= 0
            nums = [int(x) for x in re.findall(r"\d+", t["instruction"])]
            a, b = nums[0], nums[1]
            assert int(t["answer"]) in (a + b, a - b, a * b)
            _evaluate(t["output"])  # bare sums restate the question with the answer
        elif t["kind"] == "fact":
            f = facts[t["question"]]
            assert t["answer"] == f.answer and question_reserved(f.id) == (split == "val")
        else:
            assert t["input"] and len(t["answer"].split()) == 1


def test_word_problem_answers_recomputed():
    for t in itertools.islice((t for t in iter_tasks("train", 1) if t["kind"] == "arithmetic"), 400):
        assert _evaluate(t["instruction"].replace(t["question"], "").strip() + " " + t["output"]) == 1, t


def test_check_answer():
    assert check_answer("3 plus 4 is 7.", "7") and not check_answer("3 plus 4 is 8.", "7")
    assert check_answer("Mia is six years old.", "6") and check_answer("The answer is 12", "12")
    assert not check_answer("", "7") and not check_answer("I don't know.", "7")
    assert check_answer("Leo helped Mia find the ball.", "Leo", "Who helped Mia find the ball?")
    assert not check_answer("Ben helped Mia.", "Leo", "Who helped Mia?")
    assert not check_answer("Leo and Ben helped Mia.", "Leo", "Who helped Mia?")  # naming everyone is not an answer
    assert check_answer("Carrots are orange.", "orange", "What colour are carrots?")
    assert not check_answer("Carrots are red, orange, blue and green.", "orange", "What colour are carrots?")
    assert check_answer("Cows live on a farm.", "farms", "Where do cows live?")  # plural/singular
    assert check_answer("A cat eats fish.", "fish", "What do cats eat?")
    assert not check_answer("Cats eat fish and mice.", "fish", "What do cats eat?")
    assert check_answer("A cow says \"moo\".", "moo") and not check_answer("A cow says \"baa\".", "moo")
    assert check_answer("Mia wanted to learn to ride a bike.", "to ride a bike")
    assert not check_answer("Mia wanted to ride.", "to ride a bike")
    q = "Is an apple a fruit or a vegetable?"
    assert check_answer("Apples are fruits.", "fruit", q) and check_answer("An apple is a fruit.", "fruit", q)
    assert not check_answer("An apple is a fruit and a vegetable.", "fruit", q)


def test_preference_pairs_prefer_the_right_answer():
    seen = set()
    for split in ("train", "val"):
        for rec, answer, question in itertools.islice(preference_pairs(split, 0), 1500):
            assert set(rec) >= {"instruction", "input", "output", "chosen", "rejected"}
            assert rec["output"] == rec["chosen"] != rec["rejected"]
            assert rec["chosen"].strip() and rec["rejected"].strip()
            seen.add(rec["rejected_kind"])
            if answer:
                assert check_answer(rec["chosen"], answer, question), rec
                assert not check_answer(rec["rejected"], answer, question), rec
    assert seen == {"wrong", "unhelpful", "off_topic", "ignores_request", "too_short"}
    assert next(iter_preferences("train", 0)) == next(iter_preferences("train", 0))


def test_instructions_are_alpaca_and_split_disjoint():
    train = list(itertools.islice(iter_instructions("train", 0), 2000))
    val = list(itertools.islice(iter_instructions("val", 0), 400))
    for r in train + val:
        assert list(r)[:3] == ["instruction", "input", "output"]
        assert all(isinstance(v, str) for v in r.values()) and r["instruction"] and r["output"]
    assert {r["kind"] for r in train} == {"story_qa", "fact_qa", "arithmetic", "write_story", "tell_facts"}
    key = lambda r: (r["instruction"], r["input"], r["output"])  # noqa: E731
    assert not {key(r) for r in train} & {key(r) for r in val}
    json.dumps(train)  # serialisable as is


def test_cli_synth_writes_and_refuses_to_overwrite(tmp_path, capsys):
    from scratchlm.cli.main import main

    out = tmp_path / "tw"
    args = ["data", "synth", "--out", str(out), "--size", "60KB", "--seed", "2", "--instructions", "30"]
    assert main(args) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["seed"] == 2 and m["files"]["instructions.jsonl"]["records"] == 30
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite", "-q"]) == 0
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--size", "20 parsecs"]) == 2
    assert "cannot read size" in capsys.readouterr().err


def test_import_does_not_pull_in_torch():
    code = "import sys, scratchlm.data.tinyworld, scratchlm.cli.data_synth; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
