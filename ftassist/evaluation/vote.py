"""Self-consistency for JSON replies: the per-field majority over k sampled replies of one prompt.

Each key the reference has takes the value most of the k replies gave it (values compared as canonical
JSON; replies without a JSON object do not vote; a key a reply leaves out counts as a vote for "absent").
A tie goes to the value seen first, so the vote is deterministic for a given order of samples. It costs
k completions per prompt: with k sampled in one request batch the wall time grows less than k-fold on a
server that batches, but the tokens generated grow k-fold.

    >>> vote(['{"a": 1, "b": "x"}', '{"a": 2, "b": "x"}', '{"a": 1, "b": "y"}'], ["a", "b"])
    {'a': 1, 'b': 'x'}
    >>> vote(["no JSON here", '{"a": 3}'], ["a", "b"])
    {'a': 3}
    >>> vote(["no JSON here"], ["a"]) is None
    True
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from ftassist.evaluation.extraction import parse_reply

ABSENT = object()


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def vote(replies: list[str], keys: list[str]) -> dict | None:
    """The per-field majority object of `replies` over `keys`; None when no reply holds a JSON object."""
    return vote_agreement(replies, keys)[0]


def vote_agreement(replies: list[str], keys: list[str]) -> tuple[dict | None, float]:
    """(the per-field majority object, its agreement): the agreement is the smallest share of `replies` (all of them,
    those without JSON included) that gave a key its winning value; (None, 0.0) when no reply holds a JSON object.

    >>> vote_agreement(['{"a": 1}', '{"a": 1}', '{"a": 2}', 'no'], ["a"])
    ({'a': 1}, 0.5)
    """
    objects = [p.value for p in (parse_reply(r, expect=dict) for r in replies) if p.found and isinstance(p.value, dict)]
    if not objects:
        return None, 0.0
    voted: dict[str, Any] = {}
    agreement = 1.0
    for key in keys:
        counts: Counter = Counter()
        first: dict[str, Any] = {}
        for obj in objects:
            value = obj.get(key, ABSENT)
            tag = "absent" if value is ABSENT else _canon(value)
            counts[tag] += 1
            first.setdefault(tag, value)
        best = max(counts, key=lambda tag: (counts[tag], -list(first).index(tag)))
        agreement = min(agreement, counts[best] / len(replies))
        if best != "absent":
            voted[key] = first[best]
    return voted, agreement


def voted_reply(replies: list[str], reference: Any) -> str:
    """The vote of `replies` as reply text (the keys are the reference's, or the replies' own without one);
    the first reply unchanged when none holds a JSON object."""
    if isinstance(reference, dict):
        keys = list(reference)
    else:
        keys = list(dict.fromkeys(k for r in replies for p in [parse_reply(r, expect=dict)]
                                  if p.found and isinstance(p.value, dict) for k in p.value))
    result = vote(replies, keys)
    return replies[0] if result is None else json.dumps(result, ensure_ascii=False)
