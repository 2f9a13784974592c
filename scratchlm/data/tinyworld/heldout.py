"""Which combinations belong to the held-out (validation) split.

The split is by *combination*, not by document: a fixed ~6% of (hero, place, plot) triples, of (fact, wording)
pairs and of (a, op, b) sums are reserved for validation and never appear in train. A model that scores well on
val has therefore combined things it saw separately (Mia, the beach, a lost-shell plot) rather than recalled a
story it memorised. The reservation is a hash of the names, independent of the corpus seed, so every seed and
every size holds out the same combinations and val numbers are comparable across runs.
"""

from __future__ import annotations

import zlib

HOLDOUT_FRACTION = 0.06


def _unit(*parts: object) -> float:
    """A stable number in [0, 1) for a tuple of names (crc32: identical on every platform and Python version)."""
    return zlib.crc32("|".join(map(str, parts)).encode()) / 2**32


def story_reserved(hero: str, place: str, plot: str) -> bool:
    return _unit("story", hero, place, plot) < HOLDOUT_FRACTION


def fact_reserved(fact_id: str, wording: int) -> bool:
    """A fact's wording 0 is never reserved, so every fact is stated in train at least once."""
    return wording > 0 and _unit("fact", fact_id, wording) < 2 * HOLDOUT_FRACTION


def sum_reserved(a: int, op: str, b: int) -> bool:
    return _unit("sum", a, op, b) < HOLDOUT_FRACTION


def question_reserved(key: str) -> bool:
    """Fact questions whose (subject, relation) pair is only asked in the held-out instruction/task split."""
    return _unit("question", key) < 2 * HOLDOUT_FRACTION
