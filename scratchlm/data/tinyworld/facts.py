"""TinyWorld facts and arithmetic: short factual documents that agree with the stories, and sums.

A fact has an id ("cow.eats"), a few wordings ("Cows eat grass.", "A cow eats grass.", ...) and, usually, a
question with a one-word answer ("What do cows eat?" -> "grass"). Documents list a few facts about one subject.
Held-out wordings and sums (heldout.py) appear only in val documents: the model has to carry a fact it read in
one wording over to another, and to add numbers it never saw added.

Example fact documents:

    Cows live on farms. A baby cow is called a calf. A cow says "moo". Cows eat grass. A cow has four legs.
    Max is five years old. Max's favourite colour is blue. Max lives on a farm. Max has a pet horse.

Example arithmetic documents:

    3 plus 4 is 7. 9 minus 5 is 4. 2 times 6 is 12.
    Mia had 5 shells. Leo gave her 3 more shells. Now Mia has 8 shells.
"""

from __future__ import annotations

from dataclasses import dataclass

from scratchlm.data.tinyworld.heldout import fact_reserved
from scratchlm.data.tinyworld.lexicon import (
    ANIMALS, CHARACTERS, FOOD_SINGULAR, FOODS, HOMES, NATURE_FACTS, NUMBER_WORDS, PRONOUNS,
)


@dataclass(frozen=True)
class Fact:
    id: str  # "cow.eats": the held-out split is decided on (id, wording index)
    subject: str  # facts about one subject make one document
    wordings: tuple[str, ...]
    question: str = ""  # "" when the fact has no one-word answer
    answer: str = ""
    answer_sentence: str = ""


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _num(n: int) -> str:
    return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)


def _character_facts() -> list[Fact]:
    out = []
    for c in CHARACTERS:
        n, he, his = c.name, PRONOUNS[c.gender][0], PRONOUNS[c.gender][2]
        home = HOMES[c.home]
        out += [
            Fact(f"{n}.home", n, (f"{n} lives {home}.", f"{n} is a {c.kind} who lives {home}.",
                                  f"{n}'s home is {home}."),
                 f"Where does {n} live?", c.home, f"{n} lives {home}."),
            Fact(f"{n}.age", n, (f"{n} is {_num(c.age)} years old.", f"{n} is a {c.kind}, and {he} is {_num(c.age)}.",
                                 f"{n} is {_num(c.age)}."),
                 f"How old is {n}?", str(c.age), f"{n} is {_num(c.age)} years old."),
            Fact(f"{n}.trait", n, (f"{n} is very {c.trait}.", f"{n} is a {c.trait} {c.kind}.",
                                   f"Everyone says that {n} is {c.trait}."),
                 f"What is {n} like?", c.trait, f"{n} is very {c.trait}."),
            Fact(f"{n}.colour", n, (f"{n}'s favourite colour is {c.colour}.", f"{n} likes {c.colour} best.",
                                    f"The colour {n} loves most is {c.colour}."),
                 f"What is {n}'s favourite colour?", c.colour, f"{n}'s favourite colour is {c.colour}."),
            Fact(f"{n}.food", n, (f"{n}'s favourite food is {c.food}.", f"{n} loves to eat {c.food}.",
                                  f"More than anything, {n} likes to eat {c.food}."),
                 f"What is {n}'s favourite food?", c.food, f"{n}'s favourite food is {c.food}."),
        ]
        if c.pet:
            out.append(Fact(f"{n}.pet", n, (f"{n} has a pet {c.pet}.", f"{n} has a little {c.pet} at home.",
                                            f"At home, {n} takes care of {his} {c.pet}."),
                            f"What pet does {n} have?", c.pet, f"{n} has a pet {c.pet}."))
        else:
            out.append(Fact(f"{n}.pet", n, (f"{n} does not have a pet.", f"{n} has no pet.",
                                            f"{n} would like a pet one day.")))
    return out


def _animal_facts() -> list[Fact]:
    out = []
    for a in ANIMALS:
        n, pl, Pl = a.noun, a.plural, _cap(a.plural)
        an = a_or_an(n)  # "an owl", "a cow"
        An = _cap(an)
        out.append(Fact(f"{n}.eats", n, (f"{Pl} eat {a.eats}.", f"{An} eats {a.eats}.", f"{Pl} like to eat {a.eats}."),
                        f"What do {pl} eat?", a.eats, f"{Pl} eat {a.eats}."))
        if a.sound:
            out.append(Fact(f"{n}.sound", n, (f"{An} says \"{a.sound}\".", f"{Pl} say \"{a.sound}\".",
                                              f"The sound {an} makes is \"{a.sound}\"."),
                            f"What does {an} say?", a.sound, f"{An} says \"{a.sound}\"."))
        where = a.lives.split()[-1]
        out.append(Fact(f"{n}.lives", n, (f"{Pl} live {a.lives}.", f"Many {pl} live {a.lives}.",
                                          f"You can find {pl} {a.lives}."),
                        f"Where do {pl} live?", where, f"{Pl} live {a.lives}."))
        if a.legs > 0:
            out.append(Fact(f"{n}.legs", n, (f"{An} has {_num(a.legs)} legs.", f"{Pl} have {_num(a.legs)} legs.",
                                             f"If you count the legs of {an}, you get {_num(a.legs)}."),
                            f"How many legs does {an} have?", str(a.legs), f"{An} has {_num(a.legs)} legs."))
        elif a.legs == 0:
            out.append(Fact(f"{n}.legs", n, (f"{Pl} have no legs.", f"{An} has no legs.", f"{Pl} do not have legs.")))
        baby = a_or_an(a.baby)
        out.append(Fact(f"{n}.baby", n, (f"A baby {n} is called {baby}.", f"A young {n} is {baby}.",
                                         f"When {an} is little, it is called {baby}."),
                        f"What is a baby {n} called?", a.baby, f"A baby {n} is called {baby}."))
        if a.covering == "a shell":
            out.append(Fact(f"{n}.covering", n, (f"{An} has a shell.", f"{Pl} have shells.",
                                                 f"{An} carries its shell on its back.")))
        elif a.covering:
            out.append(Fact(f"{n}.covering", n, (f"{An} is covered in {a.covering}.", f"{Pl} have {a.covering}.",
                                                 f"The body of {an} is covered in {a.covering}.")))
        out.append(Fact(f"{n}.can", n, (f"{Pl} can {a.can}.", f"{An} can {a.can}.",
                                        f"One thing {an} can do is {a.can}.")))
    return out


def _food_facts() -> list[Fact]:
    out = []
    for f in FOODS:
        n, one, N = f.noun, FOOD_SINGULAR.get(f.noun, f.noun), _cap(f.noun)
        # agreement: "apples are / they taste" vs "bread is / it tastes"
        are, they, s = ("are", "they", "") if f.plural else ("is", "it", "s")
        kinds = f.kind + "s" if f.plural else a_or_an(f.kind)  # "fruits" / "a vegetable"
        out.append(Fact(f"{n}.colour", n, (f"{N} {are} {f.colour}.", f"The colour of {n} is {f.colour}.",
                                           f"A ripe {one} is {f.colour}." if f.plural else f"Most {n} is {f.colour}."),
                        f"What colour {are} {n}?", f.colour, f"{N} {are} {f.colour}."))
        out.append(Fact(f"{n}.taste", n, (f"{N} taste{s} {f.taste}.", f"{N} {are} {f.taste}.",
                                          f"If you eat {n}, {they} taste{s} {f.taste}.")))
        if f.grows:
            out.append(Fact(f"{n}.grows", n, (f"{N} grow{s} {f.grows}.", f"Did you know? {N} grow{s} {f.grows}.",
                                              f"Farmers grow {n}, and {they} grow{s} {f.grows}."),
                            f"Where do{'es' if s else ''} {n} grow?", f.grows.split()[-1], f"{N} grow{s} {f.grows}."))
        if f.kind in ("fruit", "vegetable"):
            out.append(Fact(f"{n}.kind", n, (f"{N} {are} {kinds}.",
                                             f"{_cap(a_or_an(one))} is a {f.kind}." if f.plural else
                                             f"{N} is a kind of {f.kind}.",
                                             f"{N} {are} good for you, and {they} {are} {kinds}."),
                            f"Is {a_or_an(one) if f.plural else n} a fruit or a vegetable?", f.kind,
                            f"{N} {are} {kinds}."))
    return out


def a_or_an(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


NATURE_QA = {
    "sky": ("What colour is the sky?", "blue", "The sky is blue."),
    "grass": ("What colour is grass?", "green", "Grass is green."),
    "snow": ("What colour is snow?", "white", "Snow is white."),
    "week": ("How many days are in a week?", "7", "There are seven days in a week."),
    "year": ("How many seasons are in a year?", "4", "There are four seasons in a year."),
    "moon": ("When does the moon come out?", "night", "The moon comes out at night."),
    "rain": ("Where does rain come from?", "clouds", "Rain comes from clouds."),
}


def _nature_facts() -> list[Fact]:
    out = []
    for key, wordings in NATURE_FACTS:
        q, a, s = NATURE_QA.get(key, ("", "", ""))
        out.append(Fact(f"nature.{key}", "nature", wordings, q, a, s))
    return out


FACTS: tuple[Fact, ...] = tuple(_character_facts() + _animal_facts() + _food_facts() + _nature_facts())
FACTS_BY_SUBJECT: dict[str, tuple[Fact, ...]] = {}
for _f in FACTS:
    FACTS_BY_SUBJECT.setdefault(_f.subject, ())
    FACTS_BY_SUBJECT[_f.subject] += (_f,)
SUBJECTS = tuple(FACTS_BY_SUBJECT)
# Subjects with at least one held-out wording: the only ones a val document can be about.
VAL_SUBJECTS = tuple(s for s in SUBJECTS if any(fact_reserved(f.id, w) for f in FACTS_BY_SUBJECT[s]
                                                for w in range(len(f.wordings))))


# Wordings train may use, per fact (every fact keeps wording 0).
TRAIN_WORDINGS = {f.id: tuple(w for w in range(len(f.wordings)) if not fact_reserved(f.id, w)) for f in FACTS}


def fact_document(rng, split: str = "train") -> tuple[str, list[tuple]]:
    """3-6 facts about one subject, each in one wording -> (text, keys); keys are ("fact", id, wording).

    A train document uses only train wordings; a val document includes at least one held-out wording.
    """
    r = rng.random
    pool = VAL_SUBJECTS if split == "val" else SUBJECTS
    subject = pool[int(r() * len(pool))]
    facts = list(FACTS_BY_SUBJECT[subject])
    k = min(len(facts), 3 + int(r() * 4))
    chosen = [facts.pop(int(r() * len(facts))) for _ in range(k)]  # a random subset in random order
    must = None
    if split == "val":
        held = [(f, w) for f in FACTS_BY_SUBJECT[subject] for w in range(len(f.wordings)) if fact_reserved(f.id, w)]
        must = held[int(r() * len(held))]
        if must[0] not in chosen:
            chosen[int(r() * k)] = must[0]
    sentences, keys = [], []
    for f in chosen:
        if must is not None and f is must[0]:
            w = must[1]
        else:
            options = range(len(f.wordings)) if split == "val" else TRAIN_WORDINGS[f.id]
            w = options[int(r() * len(options))]
        keys.append(("fact", f.id, w))
        sentences.append(f.wordings[w])
    return " ".join(sentences), keys
