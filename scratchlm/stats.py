"""How sure is a measured proportion? Intervals for accuracies, and comparing two of them honestly.

    wilson_interval(81, 100)                  # (0.722, 0.875): 81 right out of 100
    format_proportion(62, 500)                # "12.4% (n=500, 95% 9.8-15.6%)"
    compare_proportions(60, 500, 85, 500)     # {"diff": 0.05, "diff_ci": (...), "within_noise": ..., "text": ...}
    compare_paired(before_ok, after_ok)       # the same items scored twice: the change and its paired interval

An accuracy of k right out of n is an estimate: 100 tasks at 12% right give 95% limits of about 7-20%, so a model
at 12% and one at 5% on 100 tasks each are not clearly different. Every accuracy the project reports carries n and
this interval, and a comparison says "within noise" when the two intervals overlap.

- Wilson's score interval (Wilson 1927) rather than p +- 1.96 sqrt(p(1-p)/n): the latter collapses to a width of
  zero at 0/n and n/n and undercovers at small n; Wilson's stays inside [0, 1] and covers close to 95% (Brown, Cai &
  DasGupta 2001, "Interval estimation for a binomial proportion").
- The difference of two proportions gets Newcombe's hybrid score interval (Newcombe 1998, method 10), built from
  the two Wilson intervals. It treats the two samples as independent; stages scored on the same tasks are paired,
  for which it is conservative (wider than a paired interval would be).
- When both sides scored the same items (every demo stage answers the same 500 held-out tasks), the per-item
  results are paired, and the change is judged by Agresti & Min's adjusted Wald interval for matched proportions
  (2005, "Simple improved confidence intervals for comparing matched proportions"): add 1/2 to each cell of the 2x2
  table of (right before, right after), then the Wald interval of p(wrong->right) - p(right->wrong). Only the items
  that changed carry information, so it is much narrower than the unpaired interval when most items agree, and
  it still covers close to 95% at small counts, where the plain Wald interval does not.
- "Within noise", unpaired, is the plain rule: the two 95% intervals overlap. It is stricter than asking whether the
  difference's interval holds zero (two intervals can overlap a little while the difference is significant), which
  is what we want of a claim that one stage beat another. Paired, it is: the difference's interval holds zero (the
  two marginal intervals would ignore the pairing, which is the whole information).

This module imports nothing of ours, so data/ (the toxicity classifier's precision/recall) and eval/ both use it.
"""

from __future__ import annotations

import math

Z95 = 1.96  # the two-sided 95% normal quantile, to the precision papers quote it


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval for a proportion k/n (Wilson 1927): honest at small n and at 0 or 1."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"a proportion needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0  # nothing measured: nothing ruled out
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def count_of(rate: float, n: int) -> int:
    """How many of n items a stored rate stands for (results keep the rate; the interval needs the count)."""
    return round(float(rate) * n)


def difference_interval(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """95% interval for p2 - p1 (the second proportion minus the first), Newcombe's hybrid score method."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, z)
    l2, u2 = wilson_interval(k2, n2, z)
    d = p2 - p1
    return d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2), d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)


def format_interval(lo: float, hi: float) -> str:
    return f"95% {100 * lo:.1f}-{100 * hi:.1f}%"


def format_proportion(k: int, n: int, ci: tuple[float, float] | None = None) -> str:
    """"12.4% (n=500, 95% 9.8-15.6%)": the rate, how many items it rests on, and its Wilson interval."""
    lo, hi = ci if ci is not None else wilson_interval(k, n)
    rate = k / n if n else 0.0
    return f"{100 * rate:.1f}% (n={n:,}, {format_interval(lo, hi)})"


def compare_proportions(k1: int, n1: int, k2: int, n2: int) -> dict:
    """The change from k1/n1 (before) to k2/n2 (after): the difference, its 95% interval (Newcombe), whether the
    two Wilson intervals overlap ("within noise"), and a line saying so."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError(f"comparing proportions needs items on both sides, got n={n1} and n={n2}")
    a, b = wilson_interval(k1, n1), wilson_interval(k2, n2)
    d = k2 / n2 - k1 / n1
    lo, hi = difference_interval(k1, n1, k2, n2)
    within = a[0] <= b[1] and b[0] <= a[1]
    if within:
        text = f"{100 * d:+.1f} points, within noise (the 95% intervals overlap)"
    else:
        text = f"{100 * d:+.1f} points (95% {100 * lo:+.1f} to {100 * hi:+.1f})"
    return {"before": k1 / n1, "after": k2 / n2, "diff": d, "diff_ci": (lo, hi), "within_noise": within,
            "text": text}


def paired_difference_interval(before: list, after: list, z: float = Z95) -> tuple[float, float]:
    """95% interval for p_after - p_before on the same items (Agresti & Min 2005, adjusted Wald for matched pairs).

    before[i], after[i]: whether item i was right before and after (bools or 0/1)."""
    if len(before) != len(after):
        raise ValueError(f"paired results need the same items on both sides, got {len(before)} and {len(after)}")
    n = len(before)
    gained = sum(1 for a, b in zip(before, after) if b and not a)  # wrong -> right
    lost = sum(1 for a, b in zip(before, after) if a and not b)    # right -> wrong
    m = n + 2  # four cells, each + 1/2
    pg, pl = (gained + 0.5) / m, (lost + 0.5) / m
    d = pg - pl
    half = z * math.sqrt(max(0.0, (pg + pl) - d * d) / m)
    return max(-1.0, d - half), min(1.0, d + half)


def compare_paired(before: list, after: list) -> dict:
    """The change from `before` to `after`, both scored on the same items: the difference, its paired 95% interval,
    how many items went each way, "within noise" when the interval holds zero, and a line saying so."""
    if not before or len(before) != len(after):
        raise ValueError(f"comparing paired results needs the same, non-empty items on both sides, got "
                         f"{len(before)} and {len(after)}")
    n = len(before)
    k1, k2 = sum(map(bool, before)), sum(map(bool, after))
    gained = sum(1 for a, b in zip(before, after) if b and not a)
    lost = sum(1 for a, b in zip(before, after) if a and not b)
    d = (k2 - k1) / n
    lo, hi = paired_difference_interval(before, after)
    within = lo <= 0.0 <= hi
    ways = f"{gained} tasks gained, {lost} lost"
    if within:
        text = f"{100 * d:+.1f} points, within noise (paired 95% {100 * lo:+.1f} to {100 * hi:+.1f}; {ways})"
    else:
        text = f"{100 * d:+.1f} points (paired 95% {100 * lo:+.1f} to {100 * hi:+.1f}; {ways})"
    return {"before": k1 / n, "after": k2 / n, "diff": d, "diff_ci": (lo, hi), "within_noise": within,
            "gained": gained, "lost": lost, "paired": True, "text": text}
