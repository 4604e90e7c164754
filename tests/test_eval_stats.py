"""Wilson, bootstrap and exact McNemar against published or hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ftassist.evaluation.stats import bootstrap_interval, mcnemar_exact, mean_interval, paired_counts, wilson_interval


@pytest.mark.parametrize("x, n, low, high", [
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3 (Wilson).
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_newcombe(x, n, low, high):
    lo, hi = wilson_interval(x, n)
    assert (round(lo, 4), round(hi, 4)) == (low, high)


def test_wilson_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and round(lo, 4) == 0.8389  # mirror of 0/20


@pytest.mark.parametrize("b, c, p", [
    (0, 0, 1.0),
    (1, 9, 0.021484375),  # 2 * (1 + 10) / 2**10
    (0, 5, 0.0625),  # 2 / 2**5
    (3, 3, 1.0),
    (2, 10, 2 * (1 + 12 + 66) / 4096),
])
def test_mcnemar_exact(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, abs=1e-15)
    assert mcnemar_exact(c, b) == mcnemar_exact(b, c)


def test_paired_counts():
    assert paired_counts([True, True, False, False, True], [True, False, True, False, False]) == \
        {"both": 1, "only_a": 2, "only_b": 1, "neither": 1}
    with pytest.raises(ValueError, match="differ in length"):
        paired_counts([True], [])


def test_bootstrap_is_seeded_degenerate_for_constant_data_and_close_to_normal_theory():
    mean = lambda rows: sum(rows) / len(rows)  # noqa: E731
    assert bootstrap_interval([0.5] * 10, mean) == (0.5, 0.5)
    data = [1.0] * 60 + [0.0] * 40
    lo, hi = bootstrap_interval(data, mean, seed=3)
    assert (lo, hi) == bootstrap_interval(data, mean, seed=3)
    half = 1.96 * math.sqrt(0.6 * 0.4 / 100)  # 0.096: the normal-theory half width
    assert abs(lo - (0.6 - half)) <= 0.02 and abs(hi - (0.6 + half)) <= 0.02
    assert all(math.isnan(x) for x in bootstrap_interval([], mean))


def test_mean_interval_matches_the_generic_bootstrap_distribution():
    values = np.random.default_rng(7).random(50).tolist()
    lo, hi = mean_interval(values)
    glo, ghi = bootstrap_interval(values, lambda r: sum(r) / len(r))
    assert lo < sum(values) / 50 < hi
    assert abs(lo - glo) < 0.02 and abs(hi - ghi) < 0.02
    assert mean_interval([1.0, 1.0]) == (1.0, 1.0)
