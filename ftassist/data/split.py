"""Train/test split: seeded, duplicates (same prompt) kept on one side, stratified by class label
when the replies are a small set of classes.

    >>> split_rows([0, 1, 2, 3], ["a", "b", "a", "c"], None, 0.5, seed=1)
    ([0, 2], [1, 3])
"""

from __future__ import annotations

import random
from collections import defaultdict


def split_rows(rows: list[int], group_keys: list[str], labels: list[str] | None, test_size: float, seed: int) -> tuple[list[int], list[int]]:
    """(train rows, test rows), both in input order.

    `group_keys[k]` groups rows[k] with its duplicates; `labels[k]` (or None) stratifies.
    `test_size` is a fraction (0 < f < 1) or a count (>= 1); at least one row stays in train.
    """
    n = len(rows)
    if n < 2:
        return list(rows), []
    n_test = round(test_size * n) if test_size < 1 else int(test_size)
    n_test = max(1, min(n - 1, n_test))
    groups: dict[str, list[int]] = defaultdict(list)
    stratum_of: dict[str, str] = {}
    for k, (row, key) in enumerate(zip(rows, group_keys)):
        groups[key].append(row)
        stratum_of.setdefault(key, labels[k] if labels else "")
    strata: dict[str, list[str]] = defaultdict(list)
    for key in groups:
        strata[stratum_of[key]].append(key)
    rng = random.Random(seed)
    test: list[int] = []
    for name in sorted(strata):
        keys = strata[name]
        rng.shuffle(keys)
        size = sum(len(groups[k]) for k in keys)
        quota = round(n_test * size / n)
        taken = 0
        for key in keys:
            if taken >= quota:
                break
            if taken + len(groups[key]) > quota and taken > 0:
                continue
            test.extend(groups[key])
            taken += len(groups[key])
    if len(test) >= n:  # never leave train empty
        test = test[: n - 1]
    chosen = set(test)
    return [r for r in rows if r not in chosen], [r for r in rows if r in chosen]
