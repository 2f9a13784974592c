"""TinyWorld for post-training: instruction pairs (SFT), preference pairs (DPO) and verifiable tasks (RL, eval).

Instructions are Alpaca records {instruction, input, output}: questions about a story given as input, questions
about world facts, arithmetic (bare and word problems), "write a story about ..." requests, "tell me about ..."
requests. Preferences add {chosen, rejected} in the layout of LLMs-from-scratch's
instruction-data-with-preference.json (output == chosen): chosen is the correct, helpful answer; rejected is a
wrong answer (same sentence, wrong name/number/colour), an unhelpful one ("I don't know."), an off-topic one, or
for story requests a story that ignores the request. Tasks carry a short `answer` that `check_answer` verifies.

Every record has `kind` and `split`. Val records come only from held-out stories, sums and questions.
"""

from __future__ import annotations

import re
from typing import Iterator

from scratchlm.data.tinyworld.arithmetic import make_problem
from scratchlm.data.tinyworld.corpus import rng_for
from scratchlm.data.tinyworld.facts import FACTS, FACTS_BY_SUBJECT
from scratchlm.data.tinyworld.heldout import question_reserved
from scratchlm.data.tinyworld.lexicon import (
    ANIMAL_BY_NOUN, CATEGORY, CHARACTER_BY_NAME, LEMMA, NUMBER_WORDS, PLACE_BY_NAME,
)
from scratchlm.data.tinyworld.stories import sample_story

# --------------------------------------------------------------------------------------------------
# checking answers

_TOKEN = re.compile(r"-?\d+|[A-Za-z]+")
_NUMBER_WORD = {w: i for i, w in enumerate(NUMBER_WORDS)}
_NUMBER_WORD.update({"thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
                     "eighteen": 18, "nineteen": 19, "twenty": 20})
_SKIP = {"a", "an", "the", "to", "s"}


def _lemma(t: str) -> str:
    if t in LEMMA:
        return LEMMA[t]
    if len(t) > 3 and t.endswith("s") and not t.endswith("ss"):  # trees -> tree, fruits -> fruit
        return t[:-1]
    return t


def _lemmas(text: str) -> list[str]:
    return [_lemma(t) for t in _TOKEN.findall(text.lower()) if t not in _SKIP]


def _numbers(text: str) -> list[int]:
    out = []
    for t in _TOKEN.findall(text.lower()):
        if t[-1].isdigit():
            out.append(int(t))
        elif t in _NUMBER_WORD:
            out.append(_NUMBER_WORD[t])
    return out


def check_answer(pred: str, answer: str, question: str = "") -> bool:
    """Is `pred` (a model's reply) a correct answer, given the task's short `answer`?

    Numbers: the last number in the reply (digits or a word up to twenty) must equal the answer, so
    "3 plus 4 is 7." and "Mia is six years old." both pass. Words: the answer must appear (as words, ignoring
    case, articles and plural/singular), and the reply must not also name another word of the same kind (another
    name, colour, place, ...) unless the question itself mentions it. That stops a reply that lists every colour
    from collecting the reward. Pass the task's question so "Leo helped Mia." passes for "Who helped Mia?".
    """
    answer = answer.strip()
    if re.fullmatch(r"-?\d+", answer):
        nums = _numbers(pred)
        return bool(nums) and nums[-1] == int(answer)
    want = _lemmas(answer)
    got = _lemmas(pred)
    if not want or not any(got[i:i + len(want)] == want for i in range(len(got) - len(want) + 1)):
        return False
    if len(want) == 1 and want[0] in CATEGORY:
        cat = CATEGORY[want[0]]
        asked = set(_lemmas(question))
        for m in re.finditer(r"(\w+) or (?:an? )?(\w+)", question.lower()):  # "a fruit or a vegetable?": both
            asked -= {_lemma(m.group(1)), _lemma(m.group(2))}               # options are answers, not context
        if any(CATEGORY.get(w) == cat and w != want[0] and w not in asked for w in got):
            return False
    return True


# --------------------------------------------------------------------------------------------------
# instruction pairs

STORY_Q = ("{q}", "Read the story and answer the question. {q}", "Answer this question about the story: {q}")
PLOT_SUMMARY = {
    "lost": "loses something", "stuck": "gets a toy stuck in a tree", "broken": "breaks something",
    "share": "shares a snack with a friend", "fear": "hears a strange sound", "learn": "learns to do something new",
    "gift": "makes a birthday gift", "pup": "helps a lost baby animal", "rainy": "has a rainy day",
    "plant": "plants some seeds",
}
WRITE_Q = ("Write a short story about {hero} {at}.", "Tell me a story about a {kind} named {hero} who {summary}.",
           "Write a story in which {hero} {summary} {at}.", "Can you tell me a story about {hero} {at}?")
TELL_Q = ("Tell me about {x}.", "What do you know about {x}?", "Tell me some facts about {x}.")

# Fact questions for each split: a (subject, relation) is asked only in train or only in val.
QUESTION_FACTS = {split: tuple(f for f in FACTS if f.question and question_reserved(f.id) == (split == "val"))
                  for split in ("train", "val")}
TELL_SUBJECTS = {split: tuple(s for s in FACTS_BY_SUBJECT if s != "nature" and question_reserved("tell:" + s) ==
                              (split == "val")) for split in ("train", "val")}


def _subject_phrase(s: str) -> str:
    if s in ANIMAL_BY_NOUN:
        return ANIMAL_BY_NOUN[s].plural
    return s  # names and foods ("apples", "bread") read as they are


def _pick(r, seq):
    return seq[int(r() * len(seq))]


def make_instruction(rng, split: str = "train") -> dict:
    """One Alpaca record with `kind` (story_qa, fact_qa, arithmetic, write_story, tell_facts), `answer` and
    `split`; `answer` is the short checkable answer where there is one, else ""."""
    r = rng.random
    u = r()
    if u < 0.4:
        s = sample_story(rng, split)
        q, a, sent = _pick(r, s.qa)
        return _rec(_pick(r, STORY_Q).format(q=q), s.text, sent, "story_qa", a, split, question=q)
    if u < 0.6:
        f = _pick(r, QUESTION_FACTS[split])
        return _rec(f.question, "", f.answer_sentence, "fact_qa", f.answer, split)
    if u < 0.8:
        p = make_problem(rng, split)
        text = f"{p.setup} {p.question}" if p.setup else p.question
        return _rec(text, "", p.answer_sentence, "arithmetic", str(p.answer), split, question=p.question)
    if u < 0.92:
        s = sample_story(rng, split)
        hero = CHARACTER_BY_NAME[s.hero]
        q = _pick(r, WRITE_Q).format(hero=s.hero, at=PLACE_BY_NAME[s.place].at, kind=hero.kind,
                                     summary=PLOT_SUMMARY[s.plot])
        rec = _rec(q, "", s.text, "write_story", "", split)
        rec["_story"] = s
        return rec
    subject = _pick(r, TELL_SUBJECTS[split])
    facts = list(FACTS_BY_SUBJECT[subject])
    k = min(len(facts), 2 + int(r() * 2))
    chosen = [facts.pop(int(r() * len(facts))) for _ in range(k)]
    return _rec(_pick(r, TELL_Q).format(x=_subject_phrase(subject)), "", " ".join(f.wordings[0] for f in chosen),
                "tell_facts", "", split)


def _rec(instruction, input_, output, kind, answer, split, question=None) -> dict:
    return {"instruction": instruction, "input": input_, "output": output, "kind": kind, "answer": answer,
            "question": question if question is not None else instruction, "split": split}


def iter_instructions(split: str = "train", seed: int = 0) -> Iterator[dict]:
    """Endless deterministic Alpaca records: {instruction, input, output, kind, split}."""
    rng = rng_for(seed, split, "instructions")
    while True:
        rec = make_instruction(rng, split)
        yield {k: rec[k] for k in ("instruction", "input", "output", "kind", "split")}


# --------------------------------------------------------------------------------------------------
# preference pairs

UNHELPFUL = ("I don't know.", "I do not want to answer that.", "That is a silly question.", "Ask someone else.",
             "Maybe. I am not sure.", "I cannot help with that.", "Why do you want to know?")
_MEMBERS: dict[str, tuple[str, ...]] = {}
for _w, _c in CATEGORY.items():
    if LEMMA[_w] == _w:
        _MEMBERS[_c] = _MEMBERS.get(_c, ()) + (_w,)


def _wrong_answer(r, output: str, answer: str) -> str | None:
    """`output` with its answer swapped for a wrong one of the same kind; None if the answer is not in it."""
    if re.fullmatch(r"\d+", answer):
        n = int(answer)
        wrong = max(2 if n >= 2 else 0, n + _pick(r, (-3, -2, -1, 1, 2, 3)))  # "one legs" would be a giveaway
        if wrong == n:
            wrong = n + 1
        pats = [(rf"\b{n}\b", str(wrong))]
        if n < len(NUMBER_WORDS) and wrong < len(NUMBER_WORDS):
            pats.append((rf"\b{NUMBER_WORDS[n]}\b", NUMBER_WORDS[wrong]))
        for pat, rep in pats:
            hits = list(re.finditer(pat, output))
            if hits:  # the last occurrence is the result ("3 plus 4 is 7"), not an operand
                m = hits[-1]
                return output[:m.start()] + rep + output[m.end():]
        return None
    lemma = LEMMA.get(answer.lower())
    cat = CATEGORY.get(answer.lower())
    if cat is None or not re.search(rf"\b{re.escape(answer)}\b", output, re.IGNORECASE):
        return None
    options = [w for w in _MEMBERS.get(cat, ()) if w != lemma]
    wrong = _pick(r, options)
    if answer[:1].isupper():
        wrong = wrong.capitalize()
    return re.sub(rf"\b{re.escape(answer)}\b", lambda m: wrong.capitalize() if m.group(0)[0].isupper() else wrong,
                  output, flags=re.IGNORECASE)


def iter_preferences(split: str = "train", seed: int = 0) -> Iterator[dict]:
    """Endless deterministic preference pairs: {instruction, input, output, chosen, rejected, kind, rejected_kind,
    split}; output == chosen (the correct answer)."""
    for rec, _, _ in preference_pairs(split, seed):
        yield rec


def preference_pairs(split: str = "train", seed: int = 0) -> Iterator[tuple[dict, str, str]]:
    """iter_preferences' records with the short answer ("" if none) and question behind each, for checking."""
    rng = rng_for(seed, split, "preferences")
    r = rng.random
    last_output = "Once upon a time, there was a little girl named Mia."
    while True:
        rec = make_instruction(rng, split)
        chosen = rec["output"]
        rejected, how = None, ""
        u = r()
        if rec["kind"] == "write_story":
            s = rec["_story"]
            if u < 0.5:
                other = s
                while other.hero == s.hero:
                    other = sample_story(rng, split)
                rejected, how = other.text, "ignores_request"
            elif u < 0.8:
                first = s.text.split(". ")[0]
                rejected, how = first + ". The end.", "too_short"
            else:
                rejected, how = "I don't want to write a story.", "unhelpful"
        elif u < 0.55 and rec["answer"]:
            rejected, how = _wrong_answer(r, chosen, rec["answer"]), "wrong"
        elif u < 0.8:
            rejected, how = last_output, "off_topic"
        if rejected is None or rejected == chosen or (rec["answer"] and
                                                      check_answer(rejected, rec["answer"], rec["question"])):
            rejected, how = _pick(r, UNHELPFUL), "unhelpful"  # a rejected reply must really be wrong
        last_output = chosen
        yield ({"instruction": rec["instruction"], "input": rec["input"], "output": chosen, "chosen": chosen,
                "rejected": rejected, "kind": rec["kind"], "rejected_kind": how, "split": split},
               rec["answer"], rec["question"])


# --------------------------------------------------------------------------------------------------
# verifiable tasks

def iter_tasks(split: str = "train", seed: int = 0) -> Iterator[dict]:
    """Endless deterministic tasks with checkable answers: {id, kind, instruction, input, question, answer,
    output, split}. Reward a reply with `check_answer(reply, task["answer"], task["question"])`.

    Kinds: arithmetic (half bare sums, half word problems), fact (world lookups), story_qa (one-word answers
    about a story given as input). `output` is a reference answer sentence (it passes check_answer).
    """
    rng = rng_for(seed, split, "tasks")
    r = rng.random
    i = 0
    while True:
        u = r()
        if u < 0.5:
            p = make_problem(rng, split, word_problem=r() < 0.5)
            instr = f"{p.setup} {p.question}" if p.setup else p.question
            rec = {"kind": "arithmetic", "instruction": instr, "input": "", "question": p.question,
                   "answer": str(p.answer), "output": p.answer_sentence}
        elif u < 0.75:
            f = _pick(r, QUESTION_FACTS[split])
            rec = {"kind": "fact", "instruction": f.question, "input": "", "question": f.question,
                   "answer": f.answer, "output": f.answer_sentence}
        else:
            s = sample_story(rng, split)
            qa = [x for x in s.qa if len(x[1].split()) == 1]  # one-word answers are checkable
            q, a, sent = _pick(r, qa)
            rec = {"kind": "story_qa", "instruction": q, "input": s.text, "question": q, "answer": a, "output": sent}
        yield {"id": f"tinyworld-{split}-{i:06d}", **rec, "split": split}
        i += 1


def distinct_tasks(split: str = "val", n: int = 500, seed: int = 0) -> list[dict]:
    """The first n tasks of iter_tasks(split, seed) whose prompt (instruction and input) has not come before.

    An accuracy over n tasks is only worth n if the tasks differ: a repeated prompt gets the same greedy reply and
    counts twice. The stream repeats, because val holds only 49 fact questions and 44 reserved sums: 500 draws
    give ~375 distinct prompts. Here every task is new. The fact questions run out first, so past ~200 tasks facts
    are fewer than the stream's quarter (49 of 500), and the arithmetic prompts are 44 sums, each worded several
    ways: an eval's per-kind counts say how many of each it holds.
    """
    seen: set[tuple[str, str]] = set()
    out: list[dict] = []
    limit = 20 * n + 1000  # the stream never runs dry (stories are plentiful); this only bounds a broken one
    for i, t in enumerate(iter_tasks(split, seed)):
        if len(out) == n:
            break
        if i >= limit:
            raise ValueError(f"TinyWorld's {split} tasks gave only {len(out)} distinct prompts in {limit} draws; "
                             f"ask for fewer than {n}")
        key = (t["instruction"], t["input"])
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out
