"""Wrong fields sorted by kind, exactly, on planted replies; the worst rows; the report's and the chat's lines."""

from __future__ import annotations

import json

from ftassist.evaluation.metrics import make_validator, score_reply
from ftassist.evaluation.mistakes import cluster_mistakes
from ftassist.evaluation.report import mistake_lines
from ftassist_app.compare_step import field_sentences

SCHEMA = {"type": "object", "properties": {k: {"type": "array", "items": {"type": "string"}}
                                           for k in ("persons", "locations", "organizations")}}


def ents(p=(), l=(), o=()):
    return {"persons": list(p), "locations": list(l), "organizations": list(o)}


ROWS = [  # (reference, reply)
    (ents(["Barack Obama"], ["Paris"]), json.dumps(ents(["Obama"], ["Paris"]))),  # persons cut short
    (ents([], ["Santa Monica Pier"], ["NASA"]),
     json.dumps(ents(["NASA"], ["Santa Monica Pier Park"], []))),  # NASA invented as a person and missing as an org
    (ents(["A"], ["X"], ["O"]), "Sorry, I cannot help with that."),  # no JSON at all
    (ents(["A"], ["X"], ["O"]), json.dumps({"persons": ["A"], "locations": []})),  # null for a value, key left out
    (ents(["A"], ["X"]), json.dumps(ents(["A"], ["X"]))),  # right
    (ents(["A", "B"], ["Rome"]), json.dumps(ents(["A"], ["Oslo"]))),  # an item left out, a wrong item
]


def test_every_wrong_field_gets_its_kind_and_the_worst_rows_come_first():
    validator = make_validator(SCHEMA)
    refs = [r for r, _ in ROWS]
    replies = [reply for _, reply in ROWS]
    scores = [score_reply(reply, ref, validator) for ref, reply in ROWS]
    prompts = [f"tweet {i}" for i in range(len(ROWS))]
    found = cluster_mistakes(refs, scores, prompts, replies)
    assert found["by_field"] == {
        "persons": {"span_too_short": 1, "value_for_null": 1, "no_json": 1, "items_missing": 1},
        "locations": {"span_too_long": 1, "no_json": 1, "null_for_value": 1, "wrong_value": 1},
        "organizations": {"wrong_key": 1, "no_json": 1, "missing_key": 1},
    }
    assert found["kinds"][0] == ("no_json", 3)
    assert sum(n for _, n in found["kinds"]) == 11
    # 3 wrong fields in rows 1 and 2, 2 in rows 3 and 5, 1 in row 0; row 4 is right and never shown
    assert [(r["row"], r["wrong_fields"]) for r in found["worst_rows"]] == [(1, 3), (2, 3), (3, 2), (5, 2), (0, 1)]
    assert found["worst_rows"][1]["replied"] == "Sorry, I cannot help with that."  # the raw text where no JSON was
    assert json.loads(found["worst_rows"][0]["replied"]) == ents(["NASA"], ["Santa Monica Pier Park"], [])
    assert found["advice"].startswith("the reply is not a JSON object")
    assert cluster_mistakes(refs[4:5], scores[4:5], prompts[4:5])["kinds"] == []

    md = "\n".join(mistake_lines(found))
    assert "Wrong fields by kind (11 in all): no_json 3," in md and "| 1 | tweet 1 |" in md
    arm = {"name": "tuned", "constrained": False, "content": {"fields": [], "mistakes": found}}
    chat = "\n".join(field_sentences([arm]))
    assert "**What kind of wrong**: no json 3," in chat and "5 worst rows" in chat
