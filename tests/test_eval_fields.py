"""The content reading of a JSON eval on fixed replies: per-field kinds, confusions, list P/R, number errors, verdict."""

from __future__ import annotations

import json

from ftassist.evaluation.fields import diagnose_fields, suggest, verdict
from ftassist.evaluation.metrics import make_validator, score_reply
from ftassist.evaluation.report import content_sections, content_verdicts
from ftassist.evaluation.summary import summarize_arm

SCHEMA = {"type": "object", "properties": {"sentiment": {"enum": ["negative", "neutral", "positive"]},
                                           "rating": {"type": "integer"}, "issues": {"type": "array", "items": {"type": "string"}},
                                           "shop": {"type": "object"}},
          "required": ["sentiment", "rating", "issues", "shop"]}
REFS = [
    {"sentiment": "negative", "rating": 1, "issues": ["late", "broken"], "shop": {"city": "Lyon", "id": 3}},
    {"sentiment": "negative", "rating": 2, "issues": ["late"], "shop": {"city": "Oslo", "id": 4}},
    {"sentiment": "positive", "rating": 5, "issues": [], "shop": {"city": "Rome", "id": 5}},
    {"sentiment": "neutral", "rating": 3, "issues": ["price"], "shop": {"city": "Kyiv", "id": 6}},
]
REPLIES = [
    json.dumps({"sentiment": "neutral", "rating": 1, "issues": ["late", "broken"], "shop": {"city": "Lyon", "id": 3}}),
    json.dumps({"sentiment": "neutral", "rating": 4, "issues": ["late", "rude"], "shop": {"city": "Oslo", "id": 9}}),
    json.dumps({"sentiment": "positive", "rating": 5, "issues": [], "shop": {"city": "Rome", "id": 5}}),
    "I think it is neutral.",
]


def _scores():
    v = make_validator(SCHEMA)
    return [score_reply(r, ref, v) for r, ref in zip(REPLIES, REFS)]


def test_reading_of_each_field_kind():
    reading = diagnose_fields(REFS, _scores(), SCHEMA, [f"review {i}" for i in range(4)])
    by = {f["field"]: f for f in reading["fields"]}
    assert {k: f["kind"] for k, f in by.items()} == {"sentiment": "enum", "rating": "number", "issues": "list", "shop": "object"}
    # sentiment: right only on row 3; negative -> neutral twice is the top mistake.
    assert by["sentiment"]["accuracy"] == 0.25 and by["sentiment"]["wrong"] == 3
    assert by["sentiment"]["top_mistake"] == {"reference": '"negative"', "replied": '"neutral"', "count": 2, "of": 2}
    assert {"reference": '"neutral"', "replied": "(no JSON)", "count": 1} in by["sentiment"]["confusion"]
    # issues: 3 items right of 4 replied (row 1 adds "rude") and of 4 expected (the prose reply gives none).
    assert by["issues"]["precision"] == 0.75 and by["issues"]["recall"] == 0.75
    # rating: errors 0, 2, 0 over the three numeric replies; the prose reply has no number.
    assert by["rating"]["mean_abs_error"] == 2 / 3 and by["rating"]["accuracy"] == 0.5
    assert by["shop"]["keys"] == {"city": 0.75, "id": 0.5}
    # Weakest first; its failing examples side by side.
    assert reading["weakest"] == "sentiment" and reading["fields"][0]["field"] == "sentiment"
    assert [e["prompt"] for e in reading["weakest_examples"]] == ["review 0", "review 1", "review 3"]
    assert reading["weakest_examples"][2]["replied"] == "(no JSON)"


def test_suggestion_names_the_confusion_and_next_steps():
    reading = diagnose_fields(REFS, _scores(), SCHEMA, ["a", "b", "c", "d"])
    text = suggest(reading, schema_valid=0.95, field_accuracy=0.5)
    assert text.startswith("The weakest field is `sentiment` (25% right)")
    assert '"negative" the model says "neutral" in 2 of 2' in text and "`ftassist next RUN_DIR` tries those that fit a budget" in text
    assert suggest(reading, schema_valid=0.5, field_accuracy=0.5).startswith("Fix the format first")


def _arm(name, fields, exact, valid):
    return {"name": name, "constrained": False, "means": {"field_accuracy": {"value": fields}},
            "rates": {"exact": {"value": exact}, "schema_valid": {"value": valid}}}


def test_verdict_is_about_content_first():
    assert "Do not ship it yet" in verdict(_arm("tuned", 0.548, 0.025, 1.0))
    assert "format is learned" in verdict(_arm("tuned", 0.548, 0.025, 1.0))
    assert verdict(_arm("t", 0.97, 0.92, 1.0)).startswith("t: the content is right")
    assert "check the weakest field" in verdict(_arm("t", 0.92, 0.5, 1.0))
    assert verdict(_arm("base", 0.0, 0.0, 0.0)).startswith("base: neither the format")


def test_report_sections_from_a_summary():
    scores = _scores()
    arm = summarize_arm("tuned", [[s] for s in scores], "json")
    reading = diagnose_fields(REFS, scores, SCHEMA, ["a", "b", "c", "d"])
    arm["content"] = {**reading, "verdict": verdict(arm), "suggestion": suggest(reading, 0.75, arm["means"]["field_accuracy"]["value"])}
    assert arm["rates"]["exact"]["value"] == 0.25  # only row 3 is right as a whole
    head = "\n".join(content_verdicts([arm]))
    assert head.startswith("## Verdict: is the content right?") and "neither the format (75% schema-valid)" in head
    body = "\n".join(content_sections([arm]))
    assert "| `sentiment` | enum | 25.0% | 3 |" in body
    assert "precision 75.0%, recall 75.0%" in body and '"negative" -> "neutral" 2' in body
