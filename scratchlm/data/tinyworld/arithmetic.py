"""TinyWorld arithmetic: sums as statements ("3 plus 4 is 7.") and as little word problems.

Operands: plus and minus within 0..20 (minus never goes below zero), times within 1..10. A fixed ~6% of
(a, op, b) triples (heldout.py) appear only in val, so val measures whether a model adds rather than recalls.
Every problem is a `Problem` with its setup, question and answer, so documents, instructions and verifiable
tasks all come from the same place and are correct by construction (tests re-evaluate them from the text).
"""

from __future__ import annotations

from dataclasses import dataclass

from scratchlm.data.tinyworld.heldout import sum_reserved
from scratchlm.data.tinyworld.lexicon import CHARACTERS

OPS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}


def _pairs(op: str) -> list[tuple[int, int]]:
    if op == "times":
        return [(a, b) for a in range(1, 11) for b in range(1, 11)]
    return [(a, b) for a in range(21) for b in range(21) if op == "plus" or b <= a]


PAIRS = {split: {op: tuple(p for p in _pairs(op) if sum_reserved(p[0], op, p[1]) == (split == "val")) for op in OPS}
         for split in ("train", "val")}

STATEMENTS = {
    "plus": ("{a} plus {b} is {c}.", "{a} and {b} make {c}.", "If you add {a} and {b}, you get {c}.",
             "{a} + {b} = {c}."),
    "minus": ("{a} minus {b} is {c}.", "If you take {b} away from {a}, you get {c}.", "{a} take away {b} is {c}.",
              "{a} - {b} = {c}."),
    "times": ("{a} times {b} is {c}.", "{a} groups of {b} make {c}.", "{a} x {b} = {c}."),
}
QUESTIONS = {"plus": ("What is {a} plus {b}?", "What is {a} + {b}?", "How much is {a} and {b}?"),
             "minus": ("What is {a} minus {b}?", "What is {a} - {b}?", "What is {a} take away {b}?"),
             "times": ("What is {a} times {b}?", "What is {a} x {b}?", "How much is {a} times {b}?")}
ITEMS = (("apple", "apples"), ("cookie", "cookies"), ("shell", "shells"), ("ball", "balls"), ("flower", "flowers"),
         ("crayon", "crayons"), ("marble", "marbles"), ("stone", "stones"), ("book", "books"), ("muffin", "muffins"))
FLOCKS = (("bird", "birds", "in a tree", "flew away"), ("duck", "ducks", "on the pond", "swam away"),
          ("frog", "frogs", "by the pond", "hopped away"), ("bee", "bees", "on a flower", "flew away"))


def count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


@dataclass(frozen=True)
class Problem:
    a: int
    op: str
    b: int
    answer: int
    setup: str  # "" for a bare sum; the story part of a word problem otherwise
    question: str  # "How many apples does Mia have now?"
    answer_sentence: str  # "Now Mia has 7 apples."

    @property
    def key(self) -> tuple:
        return ("sum", self.a, self.op, self.b)

    @property
    def text(self) -> str:
        """The problem as a document sentence: setup and answer, no question."""
        return f"{self.setup} {self.answer_sentence}" if self.setup else self.answer_sentence


def make_problem(rng, split: str = "train", word_problem: bool | None = None) -> Problem:
    r = rng.random
    op = ("plus", "minus", "times")[int(r() * 3)]
    pairs = PAIRS[split][op]
    a, b = pairs[int(r() * len(pairs))]
    c = OPS[op](a, b)
    if word_problem is None:
        word_problem = r() < 0.4
    if not word_problem or a == 0 or b == 0:  # "Jake gave Kai 0 more" is not how anyone talks
        w = int(r() * len(STATEMENTS[op]))
        qs = QUESTIONS[op]
        return Problem(a, op, b, c, "", qs[int(r() * len(qs))].format(a=a, b=b),
                       STATEMENTS[op][w].format(a=a, b=b, c=c))
    x = CHARACTERS[int(r() * len(CHARACTERS))]
    y = x
    while y is x:
        y = CHARACTERS[int(r() * len(CHARACTERS))]
    one, many = ITEMS[int(r() * len(ITEMS))]
    n1, n2 = x.name, y.name
    kind = int(r() * 2)
    if op == "plus" and kind == 0:
        setup = f"{n1} had {count(a, one, many)}. {n2} gave {n1} {b} more."
        return Problem(a, op, b, c, setup, f"How many {many} does {n1} have now?",
                       f"Now {n1} has {count(c, one, many)}.")
    if op == "plus":
        one, many, where, _ = FLOCKS[int(r() * len(FLOCKS))]
        setup = f"There were {count(a, one, many)} {where}. Then {b} more came."
        return Problem(a, op, b, c, setup, f"How many {many} are {where} now?",
                       f"Now there {'is' if c == 1 else 'are'} {count(c, one, many)} {where}.")
    if op == "minus" and kind == 0:
        setup = f"{n1} had {count(a, one, many)}. {n1} gave {b} to {n2}."
        return Problem(a, op, b, c, setup, f"How many {many} does {n1} have now?",
                       f"Now {n1} has {count(c, one, many)}.")
    if op == "minus":
        one, many, where, away = FLOCKS[int(r() * len(FLOCKS))]
        setup = f"There were {count(a, one, many)} {where}. Then {b} {away}."
        return Problem(a, op, b, c, setup, f"How many {many} are {where} now?",
                       f"Now there {'is' if c == 1 else 'are'} {count(c, one, many)} {where}.")
    bag = ("bag", "bags") if kind == 0 else ("box", "boxes")
    setup = f"{n1} has {count(a, *bag)}. There {'is' if b == 1 else 'are'} {count(b, one, many)} in each {bag[0]}."
    return Problem(a, op, b, c, setup, f"How many {many} does {n1} have in all?",
                   f"So {n1} has {count(c, one, many)} in all.")


def arithmetic_document(rng, split: str = "train") -> tuple[str, list[tuple]]:
    """2-5 sums, some as word problems -> (text, keys); keys are ("sum", a, op, b)."""
    r = rng.random
    probs = [make_problem(rng, split) for _ in range(2 + int(r() * 4))]
    return " ".join(p.text for p in probs), [p.key for p in probs]
