"""TinyWorld edit conversations: SFT data whose reply repeats its input, so a model learns to copy.

Prompt-lookup speculative decoding (docs/inference.md) guesses the next tokens by finding the last few generated
tokens earlier in the prompt and proposing what followed them there. It pays only when the model really does
repeat its prompt: summaries, edits, code changes. Real LMs learn copying from the repetition all over web text
(quotes, boilerplate, code); TinyWorld's stories never repeat one another, so the demo's model never copies and
prompt lookup accepts ~1% of its guesses. These records teach copying directly. Each is an Alpaca record

    {"instruction": "Change the name Kai to Finn in this story.",
     "input": "There once was a boy named Kai. He was eight years old. One day, Kai walked to the pond.",
     "output": "There once was a boy named Finn. He was eight years old. One day, Finn walked to the pond.",
     "kind": "rename", "answer": <output>, "split": "train"}

where the input is the first 2..5 sentences of a story and the output is the input copied ("copy"), with one
child's name changed to another child's of the same gender ("rename": same pronouns, so the text stays true to
itself, though the new child keeps the old one's age and home: these records teach copying, not the world, and
nothing pretrains on them), or an extractive summary: only the sentences that name one child, in order
("extract": "Keep only the sentences about Kai.", the reply quotes the input but skips parts of it). `answer` is the exact expected reply; `check_edit` compares by exact match. Stories follow
`stories.sample_story`'s split: val excerpts come only from the held-out (hero, place, plot) triples.
"""

from __future__ import annotations

import re
from typing import Iterator

from scratchlm.data.tinyworld.corpus import rng_for
from scratchlm.data.tinyworld.lexicon import CHARACTER_BY_NAME, CHARACTERS
from scratchlm.data.tinyworld.stories import Story, sample_story, split_sentences

COPY_Q = ("Copy this text exactly.", "Repeat the story word for word.", "Write this story out again.")
RENAME_Q = ("Tell this story again, but call {a} {b}.", "Rewrite the text with the name {b} instead of {a}.",
            "Change the name {a} to {b} in this story.")
EXTRACT_Q = ("Keep only the sentences about {a}.", "Summarise: copy just the sentences that name {a}.",
             "Which sentences mention {a}? Write them out.")
RENAME_SHARE = 0.7  # of the excerpts that name a child; the rest (and those naming none) are plain copies
EXTRACT_SHARE = 0.3  # of the excerpts where some, not all, sentences name a child (decided before renaming)
MIN_SENTENCES, MAX_SENTENCES = 2, 5
# Instruction + input + output must fit the demo's 256-token SFT context with its 2048-token BPE (~4 bytes a
# token on TinyWorld): 2 x 380 characters plus the instruction and the chat template stay under it (a test checks).
MAX_INPUT_CHARS = 380

_NAME = {c.name: re.compile(rf"\b{c.name}\b") for c in CHARACTERS}  # whole word: "Max" and "Max's", not "Maxi"


def names_in(text: str) -> list[str]:
    """The children (lexicon.CHARACTERS) named in `text`, in lexicon order."""
    return [name for name, pat in _NAME.items() if pat.search(text)]


def rename(text: str, a: str, b: str) -> str:
    """`text` with every whole-word `a` replaced by `b` (possessives included: "Max's" -> "Finn's")."""
    return _NAME[a].sub(b, text) if a in _NAME else re.sub(rf"\b{re.escape(a)}\b", b, text)


def excerpt(story_text: str, k: int) -> str | None:
    """The first k sentences, fewer (down to MIN_SENTENCES) if they pass MAX_INPUT_CHARS; None if even that does."""
    sentences = split_sentences(story_text)
    for n in range(min(k, len(sentences)), MIN_SENTENCES - 1, -1):
        text = " ".join(sentences[:n])
        if len(text) <= MAX_INPUT_CHARS:
            return text
    return None


def _pick(r, seq):
    return seq[int(r() * len(seq))]


def make_edit(rng, split: str = "train") -> tuple[dict, Story]:
    """One edit record and the story its excerpt comes from (tests check the split on the story's key)."""
    r = rng.random
    while True:
        story = sample_story(rng, split)
        text = excerpt(story.text, MIN_SENTENCES + int(r() * (MAX_SENTENCES - MIN_SENTENCES + 1)))
        if text is not None:
            break
    present = names_in(text)
    sentences = split_sentences(text)
    # a child named in some sentences but not all: the summary must choose (all or none would be a copy or empty)
    partial = [n for n in present if 0 < sum(bool(_NAME[n].search(x)) for x in sentences) < len(sentences)]
    if partial and r() < EXTRACT_SHARE:
        a = _pick(r, partial)
        output = " ".join(x for x in sentences if _NAME[a].search(x))
        instruction, kind = _pick(r, EXTRACT_Q).format(a=a), "extract"
    elif present and r() < RENAME_SHARE:
        a = _pick(r, present)
        gender = CHARACTER_BY_NAME[a].gender
        # b must be absent from the excerpt, or "call Mia Lily" in a story with Lily would merge two children
        b = _pick(r, [c.name for c in CHARACTERS if c.gender == gender and c.name not in present])
        instruction, output, kind = _pick(r, RENAME_Q).format(a=a, b=b), rename(text, a, b), "rename"
    else:
        instruction, output, kind = _pick(r, COPY_Q), text, "copy"
    rec = {"instruction": instruction, "input": text, "output": output, "kind": kind, "answer": output,
           "split": split}
    return rec, story


def iter_edits(split: str = "train", seed: int = 0) -> Iterator[dict]:
    """Endless deterministic edit records: {instruction, input, output, kind, answer, split}; kind is "copy" or
    "rename", and answer == output (the one correct reply)."""
    rng = rng_for(seed, split, "edits")
    while True:
        yield make_edit(rng, split)[0]


def check_edit(pred: str, rec: dict) -> bool:
    """Is `pred` (a model's reply) exactly the expected edit? Surrounding whitespace aside, every character counts."""
    return pred.strip() == rec["answer"].strip()
