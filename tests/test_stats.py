"""Proportion statistics (scratchlm/stats.py): Wilson intervals against hand-computed figures, Newcombe's interval
for a difference against the paper's worked example, and the "within noise" rule for comparing two accuracies."""

from __future__ import annotations

import random

import pytest

from scratchlm.stats import (compare_paired, compare_proportions, difference_interval, format_proportion,
                             paired_difference_interval, wilson_interval)


def test_wilson_interval_matches_hand_computed_figures():
    # centre = (p + z^2/2n) / (1 + z^2/n), half = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2), z = 1.96
    # 0/10: centre 0.19208 / 1.38416 = 0.13877 = half -> 0 to 0.2775 (the Wald interval would say 0 to 0)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27754), abs=1e-5)
    # 5/10: centre 0.5, half 1.41602 * sqrt(0.025 + 0.009604) = 0.26341
    assert wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    # 81/100: centre 0.829208 / 1.038416 = 0.798531, half 1.887490 * sqrt(0.001539 + 0.00009604) = 0.076322
    assert wilson_interval(81, 100) == pytest.approx((0.72221, 0.87485), abs=1e-5)
    assert wilson_interval(10, 10) == pytest.approx((0.72246, 1.0), abs=1e-5)  # the mirror image of 0/10
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_refuses_an_impossible_count():
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(11, 10)


def test_toxicity_uses_the_shared_wilson_interval():
    from scratchlm import stats
    from scratchlm.data import toxicity

    assert toxicity.wilson_interval is stats.wilson_interval  # one definition, imported, not a copy


def test_difference_interval_matches_newcombes_worked_example():
    # Newcombe (1998), Statistics in Medicine 17:873, method 10 on 56/70 vs 48/80: 0.0524 to 0.3339
    assert difference_interval(48, 80, 56, 70) == pytest.approx((0.0524, 0.3339), abs=1e-4)


def test_format_proportion_carries_n_and_the_interval():
    assert format_proportion(62, 500) == "12.4% (n=500, 95% 9.8-15.6%)"
    assert format_proportion(0, 10) == "0.0% (n=10, 95% 0.0-27.8%)"


def test_overlapping_intervals_are_within_noise():
    # 12% -> 17% on 500 tasks each: 9.4-15.1% and 14.0-20.5% overlap
    c = compare_proportions(60, 500, 85, 500)
    assert c["within_noise"] and "within noise" in c["text"] and c["diff"] == pytest.approx(0.05)
    # the demo: 12% -> 5% on 100 tasks each (7.0-19.8% and 2.2-11.2%) was noise, not a loss
    assert compare_proportions(12, 100, 5, 100)["within_noise"]


def test_separate_intervals_give_the_difference_with_its_interval():
    c = compare_proportions(60, 500, 100, 500)  # 9.4-15.1% vs 16.7-23.7%: no overlap
    assert not c["within_noise"] and "within noise" not in c["text"]
    lo, hi = c["diff_ci"]
    assert 0 < lo < 0.08 < hi
    assert c["text"] == f"+8.0 points (95% {100 * lo:+.1f} to {100 * hi:+.1f})"
    assert compare_proportions(100, 500, 60, 500)["text"].startswith("-8.0 points (95% -")


def _pairs(both: int, gained: int, lost: int, neither: int) -> tuple[list[int], list[int]]:
    before = [1] * both + [0] * gained + [1] * lost + [0] * neither
    after = [1] * both + [1] * gained + [0] * lost + [0] * neither
    return before, after


def test_paired_interval_is_agresti_min_adjusted_wald():
    # 100 items: 15 wrong -> right, 5 right -> wrong. Cells + 1/2 over n + 2 = 102: p_gain 15.5/102, p_loss 5.5/102,
    # d = 10/102, var = (21/102 - d^2)/102 -> 0.0121 to 0.1840 (worked by hand from Agresti & Min 2005, eq. 5)
    before, after = _pairs(30, 15, 5, 50)
    assert paired_difference_interval(before, after) == pytest.approx((0.01206, 0.18402), abs=1e-4)
    with pytest.raises(ValueError, match="same items"):
        paired_difference_interval([1, 0], [1])


def test_paired_interval_covers_about_95_percent():
    # Monte Carlo: pairs with P(gain) = 0.06, P(loss) = 0.02 (true difference 0.04), n = 150; the interval must
    # cover the truth about 95% of the time (a plain Wald interval on these counts covers noticeably less)
    rng = random.Random(0)
    hits, reps = 0, 2000
    for _ in range(reps):
        before, after = [], []
        for _ in range(150):
            u = rng.random()
            a = u < 0.30 or 0.36 <= u < 0.38          # right before: both, or lost
            b = u < 0.36                              # right after: both, or gained
            before.append(a)
            after.append(b)
        lo, hi = paired_difference_interval(before, after)
        hits += lo <= 0.04 <= hi
    assert 0.93 <= hits / reps <= 0.975


def test_paired_comparison_sees_what_the_unpaired_one_calls_noise():
    # 500 tasks, 12% -> 16%: 25 gained, 5 lost, the rest unchanged. The Wilson intervals overlap (unpaired: noise),
    # but the same tasks moved one way 5 times more often than the other: the paired interval is above zero.
    before, after = _pairs(55, 25, 5, 415)
    assert compare_proportions(sum(before), 500, sum(after), 500)["within_noise"]
    c = compare_paired(before, after)
    assert not c["within_noise"] and c["diff"] == pytest.approx(0.04) and c["diff_ci"][0] > 0
    assert (c["gained"], c["lost"]) == (25, 5) and "25 tasks gained, 5 lost" in c["text"]
    # as many gained as lost: zero is inside, whatever the marginals
    flat = compare_paired(*_pairs(55, 10, 10, 425))
    assert flat["within_noise"] and "within noise" in flat["text"] and flat["diff"] == 0
    with pytest.raises(ValueError, match="non-empty"):
        compare_paired([], [])
