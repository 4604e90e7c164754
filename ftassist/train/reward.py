"""The eval's scorer as a reward: what GRPO maximises and what marks a DPO pair's rejected reply.

A reply earns, part by part (each weighted, weights settable with `--reward-weights`):

- `json`: 1 when a JSON value can be read from it, else 0 - and then every other part is 0 too
  (the hard gate: nothing in an unreadable reply counts);
- `schema`: 1 when that value passes the user's schema;
- `fields`: the share of the reference's top-level fields it gets right (the eval's field accuracy);
- `exact`: 1 when the whole object equals the reference;
- `length`: 0 while the reply is at most a quarter longer than the reference (in characters),
  then minus the excess as a share of the reference, down to -1: replies that run on cost.

    >>> from ftassist.evaluation.metrics import make_validator
    >>> v = make_validator({"type": "object", "required": ["a", "b"]})
    >>> ref = {"a": 1, "b": "x"}
    >>> reward_parts("sorry, no", ref, v)
    {'json': 0.0, 'schema': 0.0, 'fields': 0.0, 'exact': 0.0, 'length': 0.0}
    >>> reward_parts('{"a": 1}', ref, v)
    {'json': 1.0, 'schema': 0.0, 'fields': 0.5, 'exact': 0.0, 'length': 0.0}
    >>> reward_parts('{"a": 1, "b": "x"}', ref, v)
    {'json': 1.0, 'schema': 1.0, 'fields': 1.0, 'exact': 1.0, 'length': 0.0}
    >>> total_reward(reward_parts('{"a": 1, "b": "x"}', ref, v), DEFAULT_WEIGHTS)
    5.0
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable

from ftassist.evaluation.metrics import score_reply

PARTS = ("json", "schema", "fields", "exact", "length")
DEFAULT_WEIGHTS = {"json": 1.0, "schema": 1.0, "fields": 2.0, "exact": 1.0, "length": 0.5}
LENGTH_SLACK = 0.25  # a reply up to this share longer than its reference costs nothing


def check_weights(weights: dict[str, Any]) -> list[str]:
    """Problems with `--reward-weights` (unknown parts, non-numbers, negatives, all zero), each with the fix."""
    problems = []
    unknown = sorted(set(weights) - set(PARTS))
    if unknown:
        problems.append(f"--reward-weights {', '.join(unknown)}: unknown part; the parts are {', '.join(PARTS)}")
    for key in set(weights) & set(PARTS):
        try:
            value = float(weights[key])
            if not math.isfinite(value) or value < 0:
                problems.append(f"--reward-weights {key}={weights[key]} must be a finite number >= 0 (0 turns the part off)")
        except (TypeError, ValueError):
            problems.append(f"--reward-weights {key}={weights[key]!r} is not a number, e.g. {key}=1")
    if not problems and not any(w > 0 for w in resolve_weights(weights).values()):
        problems.append("--reward-weights are all 0: nothing would be rewarded; give at least one part a weight, e.g. fields=2")
    return problems


def resolve_weights(weights: dict[str, Any]) -> dict[str, float]:
    """The defaults with the user's weights over them (call `check_weights` first)."""
    return {k: float(weights.get(k, DEFAULT_WEIGHTS[k])) for k in PARTS}


def reward_parts(reply: str, reference: Any, validator: Any, reference_text: str | None = None) -> dict[str, float]:
    """Each part of the reward of `reply` against `reference` (see the module docstring), before weighting.

    The length part measures against `reference_text` (the reference as the data wrote it, so a reply that copies
    a pretty-printed reference costs nothing), else the reference as compact JSON.
    """
    score = score_reply(reply, reference, validator)
    if not score["extractable"]:
        return dict.fromkeys(PARTS, 0.0)
    written = reference_text.strip() if reference_text is not None else json.dumps(reference, ensure_ascii=False)
    ref_len = max(1, len(written))
    excess = len(reply.strip()) / ref_len - 1.0 - LENGTH_SLACK
    return {"json": 1.0, "schema": float(score["schema_valid"]), "fields": float(score["field_accuracy"]),
            "exact": float(score["exact"]), "length": 0.0 - min(1.0, max(0.0, excess))}


def total_reward(parts: dict[str, float], weights: dict[str, float]) -> float:
    """The weighted sum of `parts`."""
    return round(sum(weights[k] * parts[k] for k in PARTS), 6)


def describe_weights(weights: dict[str, float]) -> str:
    """'json 1 + schema 1 + fields 2 + exact 1 + length 0.5' - the reward as the plan shows it."""
    return " + ".join(f"{k} {weights[k]:g}" for k in PARTS if weights[k])


def reward_funcs(validator: Any, weights: dict[str, float]) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """(one trl reward function per weighted part, their weights) for `GRPOTrainer`.

    trl logs each function's mean as `rewards/<part>/mean` and sums them with `reward_weights`, so
    the parts stay visible in the metrics. Each reads the row's `reference` column (JSON text).
    """
    funcs, used = [], []
    for part in PARTS:
        if not weights[part]:
            continue

        def func(prompts, completions, reference, _part=part, **_):
            return [reward_parts(_text(c), json.loads(r), validator, r)[_part] for c, r in zip(completions, reference)]

        func.__name__ = part
        funcs.append(func)
        used.append(weights[part])
    return funcs, used


def _text(completion: Any) -> str:
    """A trl completion (a string, or a conversational list of messages) as the reply text."""
    if isinstance(completion, list):
        return "".join(str(m.get("content") or "") for m in completion if isinstance(m, dict))
    return str(completion)
