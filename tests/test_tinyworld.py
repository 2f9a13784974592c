"""TinyWorld corpus: determinism, held-out split, variety, grammar, consistency with the world's facts."""

from __future__ import annotations

import itertools
import re

import pytest

from scratchlm.data.tinyworld import iter_documents, iter_records, parse_size, synthesize
from scratchlm.data.tinyworld.heldout import fact_reserved, story_reserved, sum_reserved
from scratchlm.data.tinyworld.lexicon import CHARACTER_BY_NAME, CHARACTERS, GROWNUPS, HOMES, a_an, verb_forms
from scratchlm.data.tinyworld.plots import GIFT_DETAIL
from scratchlm.data.tinyworld import plots
from scratchlm.data.tinyworld.stories import RESERVED_STORIES, sentence_shape, split_sentences
from scratchlm.data.tinyworld.templates import Part


def _records(split, seed, n):
    return list(itertools.islice(iter_records(split, seed), n))


@pytest.fixture(scope="module")
def train_docs():
    return _records("train", 0, 4000)


@pytest.fixture(scope="module")
def val_docs():
    return _records("val", 0, 600)


# --------------------------------------------------------------------------------------------------
# determinism


def test_same_seed_same_documents_other_seed_different():
    a = list(iter_documents("train", seed=7, max_docs=200))
    b = list(iter_documents("train", seed=7, max_docs=200))
    c = list(iter_documents("train", seed=8, max_docs=200))
    assert a == b
    assert a != c and len(set(a) & set(c)) < 5  # a few short arithmetic/fact docs may coincide


def test_iter_documents_is_prefix_stable_and_bounded():
    short = list(iter_documents("val", seed=3, max_docs=10))
    long = list(iter_documents("val", seed=3, max_docs=50))
    assert long[:10] == short
    sized = list(iter_documents("train", seed=3, max_bytes=5000))
    assert sum(map(len, sized[:-1])) < 5000 <= sum(map(len, sized))
    assert all("\n" not in d for d in long)  # one document per line in the files


def test_synthesize_is_byte_identical_for_a_seed(tmp_path):
    kw = dict(n_instructions=60, n_preferences=40, n_tasks=40, progress=False)
    m1 = synthesize(tmp_path / "a", "150KB", seed=0, **kw)
    m2 = synthesize(tmp_path / "b", "150KB", seed=0, **kw)
    m3 = synthesize(tmp_path / "c", "150KB", seed=1, **kw)
    names = ["train.txt", "val.txt", "instructions.jsonl", "instructions_val.jsonl", "preferences.jsonl",
             "preferences_val.jsonl", "tasks.jsonl", "tasks_val.jsonl", "tool_chats.jsonl", "tool_chats_val.jsonl",
             "edits.jsonl", "edits_val.jsonl"]
    assert sorted(m1["files"]) == sorted(names)
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes(), name
    assert m1 == m2 and m1["seed"] == 0 and m1["version"]
    assert (tmp_path / "a" / "manifest.json").exists()
    text = (tmp_path / "a" / "train.txt").read_text()
    assert text.endswith("\n\n") and "\n\n\n" not in text
    docs = text.strip("\n").split("\n\n")
    assert len(docs) == m1["files"]["train.txt"]["documents"]
    assert docs[:5] == list(iter_documents("train", 0, max_docs=5))  # the file and the iterator agree
    assert 145_000 <= m1["files"]["train.txt"]["bytes"] + m1["files"]["val.txt"]["bytes"] < 152_000
    assert m3["files"]["train.txt"]["sha256"] != m1["files"]["train.txt"]["sha256"]


@pytest.mark.parametrize("text,n", [("20MB", 20_000_000), ("500KB", 500_000), ("1GB", 10**9), ("1234", 1234),
                                    ("1.5mb", 1_500_000), ("2KiB", 2048), (" 7 b ", 7), (64, 64)])
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("bad", ["20XB", "MB", "", "-5MB", "0", "ten MB"])
def test_parse_size_rejects_nonsense(bad):
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)


# --------------------------------------------------------------------------------------------------
# held-out split


def test_heldout_split_shares_no_document_and_no_reserved_combination(train_docs, val_docs):
    train_text = {d.text for d in train_docs}
    assert not train_text & {d.text for d in val_docs}
    for d in train_docs:
        for k in d.keys:
            if k[0] == "story":
                assert not story_reserved(*k[1:]), k
            elif k[0] == "fact":
                assert not fact_reserved(k[1], k[2]), k
            else:
                assert not sum_reserved(*k[1:]), k
    for d in val_docs:  # every val document contains something train never saw
        assert any(story_reserved(*k[1:]) if k[0] == "story" else fact_reserved(k[1], k[2]) if k[0] == "fact"
                   else sum_reserved(*k[1:]) for k in d.keys), d.keys
    assert {d.kind for d in val_docs} == {"story", "facts", "arithmetic"}


def test_heldout_stories_are_unseen_combinations_of_seen_parts(train_docs, val_docs):
    assert 100 < len(RESERVED_STORIES) < 400
    train_keys = {d.story.key for d in train_docs if d.kind == "story"}
    val_keys = {d.story.key for d in val_docs if d.kind == "story"}
    assert val_keys <= set(RESERVED_STORIES) and not val_keys & train_keys
    # ... yet every hero, place and plot of val also appears in train (only the combination is new)
    for i in range(3):
        assert {k[i] for k in val_keys} <= {k[i] for k in train_keys}


# --------------------------------------------------------------------------------------------------
# variety


def test_many_distinct_sentence_shapes(train_docs):
    shapes, n = set(), 0
    for d in train_docs:
        if d.kind == "story":
            for s in split_sentences(d.text):
                shapes.add(sentence_shape(s))
                n += 1
    assert len(shapes) >= 3000, (len(shapes), n)
    spellings = sum(v.n_variants() for v in vars(plots).values() if isinstance(v, Part))
    assert spellings + sum(p.n_variants() for p in GIFT_DETAIL.values()) >= 450
    assert sentence_shape("Mia lost her red kite.") == "NAME lost her COLOUR THING ."


def test_story_lengths_and_mix(train_docs):
    kinds = {k: sum(d.kind == k for d in train_docs) for k in ("story", "facts", "arithmetic")}
    assert kinds["story"] > 0.7 * len(train_docs) and kinds["facts"] > 200 and kinds["arithmetic"] > 200
    lengths = [len(d.text.split()) for d in train_docs if d.kind == "story"]
    assert 60 <= min(lengths) and max(lengths) <= 200
    assert 80 <= sum(lengths) / len(lengths) <= 140
    stories = [d.story for d in train_docs if d.kind == "story"]
    assert len({s.plot for s in stories}) == 10 and len({s.hero for s in stories}) == len(CHARACTERS)
    assert len({d.text for d in train_docs if d.kind == "story"}) == len(stories)  # no repeated story


def test_vocabulary_is_small_and_closed(train_docs):
    words = {w.lower() for d in train_docs for w in re.findall(r"[A-Za-z]+", d.text)}
    assert 500 <= len(words) <= 3000, len(words)
    names = {c.name for c in CHARACTERS} | {g.name for g in GROWNUPS} | {"I", "Saturday"}
    # mid-sentence capitals are only names: catches capitalisation bugs and stray template text
    for d in train_docs[:1500]:
        for s in split_sentences(d.text):
            for w in re.findall(r"(?<=[a-z,] )[A-Z][a-z]*", s):
                assert w in names, (w, s)


# --------------------------------------------------------------------------------------------------
# grammar


def test_every_sentence_is_well_formed(train_docs, val_docs):
    for d in train_docs + val_docs:
        t = d.text
        assert not re.search(r"[{}\[\]|]|  | [,.!?]|\.\.|,,", t), t
        assert not re.search(r"\ba [aeiou]|\ban [^aeiou\s]", t), t
        assert t.count('"') % 2 == 0, t
        for s in split_sentences(t):
            assert re.match(r'^"?[A-Z0-9]', s), (s, t)
            assert s[-1] in ".!?" or (s[-1] == '"' and s[-2] in ".!?,"), (s, t)


_PRON = {"she": "f", "her": "f", "herself": "f", "he": "m", "him": "m", "his": "m", "himself": "m"}


def _narration(sentence: str) -> str:
    return re.sub(r'"[^"]*"', " ", sentence)


def test_pronouns_agree_and_are_unambiguous(train_docs):
    """Every he/she/his/her in narration has an antecedent of its gender in this or the previous sentence, and no
    second person of that gender is named there (so "she" can only mean one girl or woman)."""
    checked = 0
    for d in train_docs:
        if d.kind != "story":
            continue
        gender = dict(d.story.cast)
        prev: list[tuple[str, str]] = []  # (gender, "name"/"pron", who) mentions in the previous sentence
        for s in split_sentences(d.text):
            text = _narration(s)
            if not text.strip(" .!?,"):
                continue  # speech only: transparent
            cur: list[tuple] = []
            for w in re.findall(r"[A-Za-z]+", text):
                lw = w.lower()
                if w in gender:
                    cur.append((gender[w], "name", w))
                elif lw in _PRON:
                    g = _PRON[lw]
                    names_here = {x[2] for x in cur if x[0] == g and x[1] == "name"}
                    names_near = names_here | {x[2] for x in prev if x[0] == g and x[1] == "name"}
                    local = any(x[0] == g for x in cur) and len(names_here) <= 1
                    cross = (any(x[0] == g for x in cur) or any(x[0] == g for x in prev)) and len(names_near) <= 1
                    assert local or cross, (w, s, d.text)
                    cur.append((g, "pron", None))
                    checked += 1
            prev = cur
    assert checked > 5000


def test_verb_forms_and_articles():
    table = {"hop": ("hops", "hopped", "hopping"), "ride": ("rides", "rode", "riding"), "open": ("opens", "opened", "opening"),
             "swim": ("swims", "swam", "swimming"), "catch": ("catches", "caught", "catching"), "cry": ("cries", "cried", "crying"),
             "play": ("plays", "played", "playing"), "skip": ("skips", "skipped", "skipping"), "tie": ("ties", "tied", "tying"),
             "kick": ("kicks", "kicked", "kicking"), "visit": ("visits", "visited", "visiting"), "fly": ("flies", "flew", "flying"),
             "whistle": ("whistles", "whistled", "whistling"), "go": ("goes", "went", "going"), "draw": ("draws", "drew", "drawing")}
    for base, forms in table.items():
        assert verb_forms(base) == (base, *forms)
    assert a_an("orange kite") == "an orange kite" and a_an("red apple") == "a red apple"


# --------------------------------------------------------------------------------------------------
# stories agree with the facts


def test_stories_agree_with_world_facts(train_docs):
    seen = 0
    for d in train_docs:
        if d.kind != "story":
            continue
        hero = CHARACTER_BY_NAME[d.story.hero]
        for m in re.finditer(r"\b([A-Z][a-z]+) (?:lived|was a [a-z ]+ who lived) ([a-z ]+?)(?: with|\.)", d.text):
            if m.group(1) == hero.name:
                assert m.group(2) == HOMES[hero.home], (m.group(0), hero)
                seen += 1
        for m in re.finditer(r"([A-Z][a-z]+) was ([a-z]+) years old", d.text):
            who = hero if m.group(1) in ("He", "She") else CHARACTER_BY_NAME[m.group(1)]
            assert who.age == ["zero", "one", "two", "three", "four", "five", "six",
                                                         "seven", "eight", "nine"].index(m.group(2))
        m = re.search(r"(?:([A-Z][a-z]+)'s|(?:Her|His)) best friend at home was a ([a-z]+)", d.text)
        if m:
            assert m.group(2) == hero.pet
        for m in re.finditer(r"(?:^|\. )([A-Z][a-z]+) was (?:her|his|[A-Z][a-z]+'s) favourite colour|"
                             r"loved ([a-z]+), because it was (?:her|his|[A-Z][a-z]+'s) favourite colour", d.text):
            assert (m.group(1) or m.group(2)).lower() == hero.colour, m.group(0)
    assert seen > 300
