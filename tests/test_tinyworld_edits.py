"""TinyWorld edit conversations (data/tinyworld/edits.py): exact replies, the held-out split, an SFT-ready fit."""

from __future__ import annotations

import itertools
import re

import pytest

from scratchlm.data.tinyworld.corpus import rng_for
from scratchlm.data.tinyworld.edits import (
    COPY_Q, EXTRACT_Q, MAX_INPUT_CHARS, MAX_SENTENCES, MIN_SENTENCES, RENAME_Q, check_edit, iter_edits, make_edit,
)
from scratchlm.data.tinyworld.lexicon import CHARACTER_BY_NAME
from scratchlm.data.tinyworld.stories import RESERVED_STORIES, split_sentences


def _count(name: str, text: str) -> int:
    return len(re.findall(rf"\b{name}\b", text))


def _names(text: str) -> set[str]:
    return {n for n in CHARACTER_BY_NAME if _count(n, text)}


@pytest.mark.parametrize("split", ["train", "val"])
def test_edits_are_deterministic_and_exact(split):
    recs = list(itertools.islice(iter_edits(split, 0), 400))
    assert recs == list(itertools.islice(iter_edits(split, 0), 400))
    assert recs != list(itertools.islice(iter_edits(split, 1), 400))
    assert {r["kind"] for r in recs} == {"copy", "rename", "extract"}
    share = {k: sum(r["kind"] == k for r in recs) / len(recs) for k in ("rename", "extract")}
    assert 0.35 < share["rename"] < 0.65 and 0.15 < share["extract"] < 0.4, share
    for r in recs:
        assert set(r) == {"instruction", "input", "output", "kind", "answer", "split"} and r["split"] == split
        assert r["answer"] == r["output"] and check_edit(" " + r["output"] + "\n", r)
        assert not check_edit(r["output"][:-1], r)  # exact: one character short is wrong
        assert len(r["input"]) <= MAX_INPUT_CHARS
        assert MIN_SENTENCES <= len(split_sentences(r["input"])) <= MAX_SENTENCES
        if r["kind"] == "copy":
            assert r["instruction"] in COPY_Q and r["output"] == r["input"]
            continue
        if r["kind"] == "extract":  # exactly the input's sentences that name the child, in order; not all of them
            a = next(n for n in CHARACTER_BY_NAME if r["instruction"] in {q.format(a=n) for q in EXTRACT_Q})
            sentences = split_sentences(r["input"])
            kept = [x for x in sentences if _count(a, x)]
            assert 0 < len(kept) < len(sentences) and r["output"] == " ".join(kept), r
            continue
        gone, new = _names(r["input"]) - _names(r["output"]), _names(r["output"]) - _names(r["input"])
        assert len(gone) == 1 and len(new) == 1, r
        a, b = gone.pop(), new.pop()
        assert r["instruction"] in {q.format(a=a, b=b) for q in RENAME_Q}
        assert CHARACTER_BY_NAME[a].gender == CHARACTER_BY_NAME[b].gender  # he/she still fits
        assert _count(a, r["output"]) == 0 and _count(b, r["output"]) == _count(a, r["input"]) >= 1
        assert re.sub(rf"\b{b}\b", a, r["output"]) == r["input"]  # nothing else changed


def test_rename_covers_possessives():
    hits = 0
    for r in itertools.islice(iter_edits("train", 0), 1000):
        if r["kind"] != "rename":
            continue
        (a,), (b,) = _names(r["input"]) - _names(r["output"]), _names(r["output"]) - _names(r["input"])
        if f"{a}'s" in r["input"]:
            hits += 1
            assert f"{a}'s" not in r["output"] and r["output"].count(f"{b}'s") == r["input"].count(f"{a}'s")
    assert hits >= 5  # "It was Kai's scarf!" is common enough to be tested


def test_edit_excerpts_follow_the_story_split():
    """Val excerpts come only from held-out (hero, place, plot) triples and train's from none: tasks.py's rule."""
    for split in ("train", "val"):
        rng = rng_for(0, split, "edits")
        pairs = [make_edit(rng, split) for _ in range(300)]
        assert [rec for rec, _ in pairs] == list(itertools.islice(iter_edits(split, 0), 300))  # the same stream
        keys = {story.key for _, story in pairs}
        reserved = keys & set(RESERVED_STORIES)
        assert reserved == (keys if split == "val" else set())
        for rec, story in pairs:  # the excerpt is the story's opening, whole sentences
            assert story.text.startswith(rec["input"])
            assert story.text[len(rec["input"]):len(rec["input"]) + 1] in ("", " ")


def test_synth_writes_edits_that_sft_loads_and_that_fit_256_tokens(tmp_path):
    from scratchlm.data.tinyworld import iter_documents, synthesize
    from scratchlm.posttrain.formats import load_sft, to_messages
    from scratchlm.posttrain.tokenize import encode_chat_with_mask
    from scratchlm.tokenizer import train_bpe_from_texts

    m = synthesize(tmp_path, "60KB", seed=0)
    assert m["files"]["edits.jsonl"]["records"] >= 100 and m["files"]["edits_val.jsonl"]["records"] >= 20
    convs = load_sft(tmp_path / "edits.jsonl") + load_sft(tmp_path / "edits_val.jsonl")
    assert all([x["role"] for x in c] == ["user", "assistant"] for c in convs)
    # the demo's tokenizer: 2048-token BPE on TinyWorld text (TinyWorld's small vocabulary makes 300 KB enough)
    tok = train_bpe_from_texts(list(iter_documents("train", 0, max_bytes=300_000)), vocab_size=2048)
    longest = []
    for split in ("train", "val"):  # the longest records of a larger draw: the worst case the files can hold
        recs = list(itertools.islice(iter_edits(split, 0), 3000))
        recs.sort(key=lambda r: len(r["instruction"]) + len(r["input"]) + len(r["output"]))
        longest += [to_messages(r) for r in recs[-50:]]
    lengths = [len(encode_chat_with_mask(tok, c)[0]) for c in convs + longest]
    assert max(lengths) <= 256, max(lengths)
