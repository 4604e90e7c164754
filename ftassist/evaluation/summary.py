"""Per-arm summaries, paired comparisons and worst examples, computed from scored replies.

Pure functions over the score dicts of `ftassist.evaluation.metrics` (or `freetext`), so the
report can be tested on hand-made scores. An "arm" is one model on one endpoint under one
setting (the same model under structured outputs is a second arm). `scores[i][j]` is the score of example i,
sample j. Headline rates use each example's first sample, so every arm is paired with every
other on the same examples; extra samples measure stability.
"""

from __future__ import annotations

from statistics import fmean

from ftassist.evaluation.stats import ALPHA, mcnemar_exact, mean_interval, paired_counts, wilson_interval
from ftassist.evaluation.taxonomy import count_kinds

RATE_METRICS = {"json": ("exact", "schema_valid", "strict", "extractable"), "text": ("exact_match",)}
MEAN_METRICS = {"json": ("field_accuracy",), "text": ("rougeL",)}
# The headline metrics in the order every table and chart shows them: content first, then format.
HEADLINE = {"json": (("means", "field_accuracy"), ("rates", "exact"), ("rates", "schema_valid"), ("rates", "strict"),
                     ("rates", "extractable")),
            "text": (("rates", "exact_match"), ("means", "rougeL"))}
# The paired test compares content first: a reply in the right shape with wrong values is a failure.
PRIMARY = {"json": "exact", "text": "exact_match"}
LABELS = {"exact": "whole object right", "strict": "strict", "extractable": "extractable", "schema_valid": "schema-valid",
          "field_accuracy": "field accuracy", "exact_match": "exact match", "rougeL": "ROUGE-L"}


def rate(successes: int, n: int) -> dict:
    """{"value", "low", "high", "successes", "n"}: a rate with its Wilson 95% interval."""
    low, high = wilson_interval(successes, n)
    return {"value": successes / n if n else 0.0, "low": low, "high": high, "successes": successes, "n": n}


def mean(values: list[float]) -> dict:
    """{"value", "low", "high", "n"}: a mean with its bootstrap 95% interval."""
    low, high = mean_interval(values)
    return {"value": fmean(values) if values else 0.0, "low": low, "high": high, "n": len(values)}


def summarize_arm(name: str, scores: list[list[dict]], task: str, *, model: str | None = None,
                  constrained: bool = False, endpoint: str | None = None, canon: list[list[str]] | None = None,
                  speed: dict | None = None) -> dict:
    """The summary of one arm: rates and means with CIs, per-field accuracy, failure counts, stability.

    `endpoint` is the base URL that served the arm (None when unknown).
    """
    first = [s[0] for s in scores]
    n = len(first)
    out: dict = {"name": name, "model": model or name, "endpoint": endpoint, "constrained": constrained, "n": n,
                 "samples": len(scores[0]) if scores else 0}
    out["rates"] = {m: rate(sum(bool(s[m]) for s in first), n) for m in RATE_METRICS[task]}
    out["means"] = {m: mean([float(s[m]) for s in first]) for m in MEAN_METRICS[task]}
    if task == "json":
        keys = list(dict.fromkeys(k for s in first for k in s["fields"]))
        out["per_field"] = {k: rate(sum(s["fields"][k] for s in first if k in s["fields"]),
                                    sum(k in s["fields"] for s in first)) for k in keys}
        out["failures"] = count_kinds([s["failures"] for s in first])
    out["request_errors"] = sum("error" in s for row in scores for s in row)
    if out["samples"] > 1:
        primary = PRIMARY[task]
        every = [s for row in scores for s in row]
        out["all_samples"] = {primary: rate(sum(bool(s[primary]) for s in every), len(every))}
        if canon is not None:
            agree = sum(len(set(c)) == 1 for c in canon)
            out["stability"] = rate(agree, len(canon))
    out["speed"] = speed
    return out


def compare_arms(first: str, others: list[str], success: dict[str, list[bool]], metric: str) -> list[dict]:
    """The first arm against each other arm on the same examples: exact McNemar test on `metric`.

    Each comparison says in `verdict` whether the difference is significant at the 5% level.
    """
    out = []
    for other in others:
        counts = paired_counts(success[first], success[other])
        p = mcnemar_exact(counts["only_a"], counts["only_b"])
        n = len(success[first])
        ra, rb = sum(success[first]) / n if n else 0.0, sum(success[other]) / n if n else 0.0
        label = LABELS.get(metric, metric)
        if p < ALPHA:
            word = "better" if rb > ra else "worse"
            verdict = (f"{other} is {word} than {first} on {label} ({rb:.0%} vs {ra:.0%}; exact McNemar p = {p:.3g}, "
                       f"{counts['only_b']} examples fixed, {counts['only_a']} broken).")
        else:
            verdict = (f"{other} vs {first} on {label}: {rb:.0%} vs {ra:.0%}; the difference is not significant "
                       f"(exact McNemar p = {p:.3g}, {counts['only_a'] + counts['only_b']} examples differ).")
        out.append({"a": first, "b": other, "metric": metric, "a_rate": ra, "b_rate": rb, **counts,
                    "p_value": p, "significant": p < ALPHA, "verdict": verdict})
    return out


def constrained_speed(arms: list[dict]) -> list[dict]:
    """For each model run with and without structured outputs on one endpoint: tokens/s of both and their ratio.

    Each entry names the plain arm ("arm"), the constrained one ("constrained_arm") and the model.
    """
    plain = {(a["model"], a.get("endpoint")): a for a in arms if not a["constrained"]}
    out = []
    for arm in arms:
        base = plain.get((arm["model"], arm.get("endpoint")))
        if arm["constrained"] and base and base.get("speed") and arm.get("speed"):
            free, tied = base["speed"]["tokens_per_s"], arm["speed"]["tokens_per_s"]
            out.append({"arm": base["name"], "constrained_arm": arm["name"], "model": arm["model"],
                        "tokens_per_s": free, "constrained_tokens_per_s": tied, "ratio": tied / free if free else None})
    return out


def badness(score: dict, task: str) -> float:
    """How bad one score is (0 for a perfect reply): failed rates plus the missing mean metrics."""
    return sum(not score[m] for m in RATE_METRICS[task]) + sum(1 - float(score[m]) for m in MEAN_METRICS[task])


def select_worst(scores: dict[str, list[list[dict]]], task: str, k: int) -> list[int]:
    """Indices of the `k` examples with the most badness summed over arms (ties: earlier first; 0 excluded)."""
    names = list(scores)
    n = len(scores[names[0]]) if names else 0
    total = [sum(badness(scores[a][i][0], task) for a in names) for i in range(n)]
    order = sorted((i for i in range(n) if total[i] > 0), key=lambda i: (-total[i], i))
    return order[:k]
