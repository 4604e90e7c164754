"""Metrics for free-text tasks (references that are not JSON): exact match and ROUGE-L.

`evaluate.load("exact_match")` and `evaluate.load("rouge")` fetch their scripts from the
Hugging Face hub, which is not always reachable (it is not on this project's machines), so
these use the same definitions locally: evaluate's exact_match compares the strings as they
are; its rouge wraps Google's `rouge_score` package, which is used here directly.

    >>> score_text("The cat sat.", "the cat sat.")
    {'exact_match': False, 'rougeL': 1.0}
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def score_text(reply: str, reference: str) -> dict:
    """{"exact_match": reply equals reference (surrounding whitespace aside), "rougeL": F-measure 0-1}."""
    return {
        "exact_match": reply.strip() == reference.strip(),
        "rougeL": float(_scorer().score(reference, reply)["rougeL"].fmeasure if reply.strip() else 0.0),
    }
