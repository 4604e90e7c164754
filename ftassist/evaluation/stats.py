"""Confidence intervals and the paired test, so a report never shows a bare rate.

    >>> [round(x, 4) for x in wilson_interval(81, 263)]
    [0.2553, 0.3662]
    >>> mcnemar_exact(1, 9)
    0.021484375

- `wilson_interval`: Wilson score interval for a binomial rate (good at small n and at 0 or 1).
- `bootstrap_interval`: percentile bootstrap over examples for any statistic (field accuracy).
- `mcnemar_exact`: exact two-sided McNemar test on paired successes (binomial on the
  discordant pairs), the test for "did arm B fix examples arm A got wrong, beyond chance?".
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

Z95 = 1.959963984540054
ALPHA = 0.05


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval; (0.0, 1.0) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(
    rows: Sequence, statistic: Callable[[Sequence], float], *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """(low, high) percentile bootstrap interval of `statistic` over `rows` resampled with replacement.

    Seeded, so the same rows always give the same interval; (nan, nan) for no rows.
    """
    n = len(rows)
    if n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for i in range(resamples):
        idx = rng.integers(0, n, size=n)
        stats[i] = statistic([rows[j] for j in idx])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def mean_interval(values: Sequence[float], **kw) -> tuple[float, float]:
    """Bootstrap interval of the mean of `values` (vectorised; same seed rules as above)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(kw.get("seed", 0))
    idx = rng.integers(0, arr.size, size=(kw.get("resamples", 2000), arr.size))
    means = arr[idx].mean(axis=1)
    tail = (1 - kw.get("level", 0.95)) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value for `b` pairs only A got right and `c` only B got right.

    p = min(1, 2 * P(X <= min(b, c))) with X ~ Binomial(b + c, 1/2); 1.0 with no discordant pairs.
    """
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_counts(a: Sequence[bool], b: Sequence[bool]) -> dict[str, int]:
    """Counts of the 2x2 paired table: both, only_a, only_b, neither. Raises ValueError on unequal lengths."""
    if len(a) != len(b):
        raise ValueError(f"paired results differ in length: {len(a)} vs {len(b)}")
    out = {"both": 0, "only_a": 0, "only_b": 0, "neither": 0}
    for x, y in zip(a, b):
        out["both" if x and y else "only_a" if x else "only_b" if y else "neither"] += 1
    return out
