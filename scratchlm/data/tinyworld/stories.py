"""TinyWorld stories: plots composed from parts, told by the template engine.

A story is a plot (lost thing, stuck kite, broken toy, sharing, fear, learning, gift, lost animal, rainy day,
growing a plant) told as a sequence of parts: setting, want, problem, attempts, help, resolution, feeling, moral.
Each part has several options, each option several spellings, and the cast (hero, friend, grown-up, thing, place,
animal, food) fills the slots. The hero's home, pet, favourite colour and favourite food come from the lexicon, so
stories agree with the facts.

Three of them (train split, seed 0):

    There once was a boy named Kai. He was eight years old. One day, Kai walked to the pond. His friend Jake was
    there too. Kai loved his gray scarf very much. A little later, Kai could not find his scarf. "Oh no! Where
    is my scarf?" he cried. First, Kai looked near the water. Then he looked behind a log. The scarf was not in
    either place. Jake wanted to help. "Let's look together," he said. Jake saw something gray under a rock. It
    was Kai's scarf! "Thank you, Jake! You are a good friend!" said Kai. From that day on, Kai always kept his
    scarf safe.

    There once was a girl named Sara. She was four years old. Late one evening, she was in the backyard with
    Dad. Then she heard a sound: "Meow! Meow!" She was a little scared. Dad smiled. "Don't be scared. Let's look
    together," he said. They looked near the gate. There was a cat! Sara was not scared anymore. From then on,
    she liked to listen for the cat.

    Once upon a time, a funny girl named Ella lived in a small village. Her friend Lily could swim. Ella wanted
    to swim too. One bright afternoon, Ella and Lily were at the beach. Ella tried to swim, but it was very
    hard. She felt upset and wanted to give up. Lily showed Ella how to swim. "Go slowly," Lily said. Ella
    practiced every day for a long time. Then, one day, she swam well! "I did it!" Ella shouted. Ella learned
    that practice helps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from scratchlm.data.tinyworld.heldout import story_reserved
from scratchlm.data.tinyworld.lexicon import (
    ANIMAL_BY_NOUN, CATEGORY, CHARACTERS, COLOURS, FOOD_BY_NOUN, FOODS, GOOD_FEELINGS, GROWNUPS, HOMES, NUMBER_WORDS,
    PLACE_BY_NAME, SIZES, THINGS, a_an, verb_forms,
)
from scratchlm.data.tinyworld.plots import (
    GIFTS, INDOOR_OK, LISTS, PLAY, PLOTS, PUP_PLACES, PUPS, REVEALS, SEEDS, SKILLS, Plot,
)
from scratchlm.data.tinyworld.templates import Teller


@dataclass
class Story:
    text: str
    plot: str
    hero: str
    place: str
    cast: tuple[tuple[str, str], ...]  # (name, gender) of every person who may appear
    teller: Teller = field(repr=False, compare=False, default=None)

    @property
    def qa(self) -> list[tuple[str, str, str]]:
        """Questions the text answers: (question, short answer, answer sentence)."""
        return self.teller.questions()

    @property
    def key(self) -> tuple[str, str, str]:
        """The combination the held-out split is decided on."""
        return (self.hero, self.place, self.plot)


def _skill_forms(verb: str, rest: str) -> dict:
    base, s, past, ing = verb_forms(verb)
    tail = " " + rest if rest else ""
    return {"": base + tail, "s": s + tail, "past": past + tail, "ing": ing + tail, "key": verb}


def _food_forms(food) -> dict:
    return {"": food.noun, "some": "some " + food.noun, "was": "were" if food.plural else "was",
            "taste": food.taste}


def make_story(rng, hero, place: str, plot: Plot) -> Story:
    """Tell one story about `hero` (a Character) at `place` with `plot`. All randomness comes from `rng`."""
    r = rng.random

    def pick(seq):
        return seq[int(r() * len(seq))]

    friend = hero
    while friend is hero:
        friend = pick(CHARACTERS)
    grown = pick(GROWNUPS)
    pl = PLACE_BY_NAME[place]
    spots = list(pl.spots)
    s1 = spots.pop(int(r() * len(spots)))
    s2 = spots.pop(int(r() * len(spots)))
    s3 = spots.pop(int(r() * len(spots)))
    forms = {"L": {"": place, "at": pl.at, "to": pl.to, "spot1": s1, "spot2": s2, "spot3": s3},
             "E": {"good": pick(GOOD_FEELINGS[:5])}}
    for who in (hero, friend):
        forms["@" + who.name] = {"kind": who.kind, "trait": who.trait, "home": HOMES[who.home], "pet": who.pet,
                                 "age": NUMBER_WORDS[who.age]}
    cast = {"A": hero, "B": friend, "P": grown, "O_fav": False, "F_fav": False}
    # the thing: coloured, and 40% of the time in the hero's favourite colour (stories agree with the facts)
    things = _things(plot, place)
    if things:
        th = pick(things)
        fav = r() < 0.4
        col = hero.colour if fav else pick(COLOURS)
        cast["O_fav"] = fav
        adj = (pick(SIZES) + " " + col) if r() < 0.3 else col
        forms["O"] = {"": th.noun, "a": a_an(adj + " " + th.noun), "the": ("the " + th.noun, f"the {col} {th.noun}"),
                      "col": col, "play": PLAY.get(th.noun, "")}
    food = FOOD_BY_NOUN[hero.food] if r() < 0.4 else pick(FOODS)
    cast["F_fav"] = food.noun == hero.food
    forms["F"] = _food_forms(food)
    if plot.name == "fear":
        an = ANIMAL_BY_NOUN[pick(REVEALS[place])]
        forms["R"] = {"": an.noun, "a": a_an(an.noun), "sound": an.sound, "Sound": an.sound.capitalize()}
    elif plot.name == "learn":
        ok = [s for s in SKILLS if not s[2] or place in s[2]]
        verb, rest, _ = pick(ok)
        forms["K"] = _skill_forms(verb, rest)
    elif plot.name == "gift":
        ok = [g for g in GIFTS if place in g[3]] or [GIFTS[0]]
        g = pick(ok)
        forms["G"] = {"": g[0], "noun": g[1].split()[1], "a": g[1]}
        cast["gift"] = g[1]
    elif plot.name == "pup":
        young = pick(PUP_PLACES.get(place, ("puppy", "kitten", "duckling", "chick")))
        adult, small, loud = PUPS[young]
        forms["N"] = {"": young, "a": (a_an(young), "a little " + young), "sound": small, "Sound": small.capitalize(),
                      "adult": adult, "Asound": loud.capitalize()}
    elif plot.name == "plant":
        seed = pick(tuple(SEEDS))
        crop = SEEDS[seed]
        grown_phrase = "tall yellow sunflowers" if not crop else f"{FOOD_BY_NOUN[crop].colour} {crop}"
        mass = bool(crop) and not FOOD_BY_NOUN[crop].plural  # "there was yellow corn"
        forms["S"] = {"": seed, "grown": grown_phrase, "key": seed, "was": "was" if mass else "were",
                      "crop": crop or "sunflowers"}

    people = {"A": hero, "B": friend, "P": grown}
    t = Teller(rng, people, forms, LISTS)
    plot.tell(t, cast)
    t.ask("Where was {A} in the story?", "{L}", "{A} was {L.at}.")
    if "E" in t.used:
        t.ask("How did {A} feel at the end?", "{E.good}", "{A} felt {E.good}.")
    cast_names = tuple((p.name, p.gender) for p in (hero, friend, grown))
    return Story(" ".join(t.sentences), plot.name, hero.name, place, cast_names, t)


_THINGS_CACHE: dict = {}


def _things(plot: Plot, place: str) -> tuple:
    key = (plot.name, place)
    if key not in _THINGS_CACHE:
        ts = tuple(t for t in THINGS if plot.thing_tag and plot.thing_tag in t.tags)
        if plot.name == "broken" and PLACE_BY_NAME[place].outdoor:
            ts = tuple(t for t in ts if t.noun not in INDOOR_OK)
        if plot.name == "stuck":
            ts = tuple(t for t in ts if t.noun in PLAY)
        _THINGS_CACHE[key] = ts
    return _THINGS_CACHE[key]


# --------------------------------------------------------------------------------------------------
# which stories each split tells

def _all_combinations() -> list[tuple[str, str, str]]:
    return [(c.name, place, p.name) for p in PLOTS for place in p.places for c in CHARACTERS]


# The held-out triples, in a fixed order; val stories are drawn only from these, train stories never.
RESERVED_STORIES: tuple[tuple[str, str, str], ...] = tuple(k for k in _all_combinations() if story_reserved(*k))
_CHAR = {c.name: c for c in CHARACTERS}
_PLOT = {p.name: p for p in PLOTS}


def sample_story(rng, split: str = "train") -> Story:
    """One story for `split` ("train" or "val"); val uses only reserved (hero, place, plot) triples."""
    r = rng.random
    if split == "val":
        hero, place, plot = RESERVED_STORIES[int(r() * len(RESERVED_STORIES))]
        return make_story(rng, _CHAR[hero], place, _PLOT[plot])
    if split != "train":
        raise ValueError(f"unknown split {split!r}; use 'train' or 'val'")
    while True:
        plot = PLOTS[int(r() * len(PLOTS))]
        place = plot.places[int(r() * len(plot.places))]
        hero = CHARACTERS[int(r() * len(CHARACTERS))]
        if not story_reserved(hero.name, place, plot.name):
            return make_story(rng, hero, place, plot)


# --------------------------------------------------------------------------------------------------
# reading stories back: sentences and sentence shapes (used by tests and for counting variety)

_WORDS = re.compile(r"[A-Za-z]+(?:'s)?|\d+|[^\sA-Za-z\d]")


def split_sentences(text: str) -> list[str]:
    """Split at . ! ? outside quotes, and after a closing quote that ends speech followed by a capital
    ('"Help!" Mia cried.' stays whole only when the next word is lowercase)."""
    out, start, quoted, i, n = [], 0, False, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            quoted = not quoted
            if not quoted and i + 2 < n and text[i + 1] == " " and text[i + 2].isupper() and text[i - 1] in ".!?,":
                if text[i - 1] != ",":
                    out.append(text[start:i + 1])
                    start = i + 2
        elif ch in ".!?" and not quoted and (i + 1 == n or text[i + 1] == " "):
            out.append(text[start:i + 1])
            start = i + 2
        i += 1
    if start < n:
        out.append(text[start:].strip())
    return [s for s in out if s]


def sentence_shape(sentence: str) -> str:
    """The sentence with content words replaced by their category: 'Mia lost her red kite.' ->
    'NAME lost her COLOUR THING .' Two sentences with the same shape differ only in which words fill the slots."""
    out = []
    for w in _WORDS.findall(sentence):
        low = w.lower()
        base = low[:-2] if low.endswith("'s") else low
        cat = "NUMBER" if w.isdigit() else CATEGORY.get(low) or CATEGORY.get(base)
        out.append(cat + ("'s" if low.endswith("'s") and cat else "") if cat else w)
    return " ".join(out)

