"""The JSON-compliance metrics and every failure kind, on hand-written replies with exact expected values."""

from __future__ import annotations

import json

import pytest

from ftassist.evaluation.extraction import parse_reply
from ftassist.evaluation.metrics import canonical, field_matches, json_equal, make_validator, score_reply, score_request_error
from ftassist.evaluation.taxonomy import KINDS, classify_format, count_kinds
from tests.conftest import EXAMPLE

REF = {"category": "billing", "priority": "urgent", "sentiment": "negative", "order_id": "F97782", "amount": 162,
       "products": ["InkJet 300"]}
GOOD = json.dumps(REF)


@pytest.fixture(scope="module")
def validator():
    return make_validator(json.loads((EXAMPLE / "schema.json").read_text()))


def score(reply, validator, finish_reason=None, reference=REF):
    return score_reply(reply, reference, validator, finish_reason)


def test_strict_clean_reply_scores_perfectly(validator):
    s = score("  \n" + GOOD + "\n", validator)
    assert s == {"strict": True, "extractable": True, "schema_valid": True, "fields": {k: True for k in REF},
                 "field_accuracy": 1.0, "exact": True, "value": REF, "failures": [], "schema_errors": []}


@pytest.mark.parametrize("reply, kinds", [
    ("Here is the JSON:\n" + GOOD, ["filler_before"]),
    (GOOD + "\n\nOutput: done", ["filler_after"]),
    ("```json\n" + GOOD + "\n```", ["code_fence"]),
    ("```\n" + GOOD + "\n```", ["code_fence"]),
    ("Sure!\n```json\n" + GOOD + "\n```\nAnything else?", ["filler_before", "filler_after", "code_fence"]),
    ("JSON:\n" + GOOD + "\n\nOutput: " + GOOD, ["filler_before", "filler_after"]),
])
def test_format_kinds_of_extractable_replies(validator, reply, kinds):
    s = score(reply, validator)
    assert (s["strict"], s["extractable"], s["schema_valid"], s["field_accuracy"], s["failures"]) == (False, True, True, 1.0, kinds)


@pytest.mark.parametrize("reply, finish, kinds", [
    ('{"category": "billing", "priority": "urg', None, ["truncated"]),
    ('{"category": "billing", "products": ["InkJet', None, ["truncated"]),
    ('Here: {"category": "billing",', None, ["truncated"]),
    ('{"category": "billing" "priority": "urgent"}', None, ["syntax_error"]),
    ("{'category': 'billing'}", None, ["syntax_error"]),
    ('{"category": "billing", }', None, ["syntax_error"]),
    ("The category is billing and the priority is urgent.", None, ["no_json"]),
    ("", None, ["no_json"]),
    ("The category is billing and", "length", ["truncated"]),
])
def test_replies_without_json(validator, reply, finish, kinds):
    s = score(reply, validator, finish)
    assert (s["strict"], s["extractable"], s["schema_valid"], s["failures"]) == (False, False, False, kinds)
    assert s["fields"] == {k: False for k in REF} and s["field_accuracy"] == 0.0


def test_wrong_type(validator):
    s = score(json.dumps({**REF, "amount": "162"}), validator)
    assert (s["strict"], s["schema_valid"], s["failures"]) == (True, False, ["wrong_type"])
    assert s["fields"]["amount"] is False and s["field_accuracy"] == 5 / 6
    assert s["schema_errors"] == ["'162' is not of type 'number', 'null'"]


def test_wrong_type_top_level_array(validator):
    s = score(json.dumps([REF]), validator)
    assert (s["strict"], s["schema_valid"], s["failures"], s["field_accuracy"]) == (True, False, ["wrong_type"], 0.0)


def test_wrong_type_inside_array_items(validator):
    s = score(json.dumps({**REF, "products": [3]}), validator)
    assert s["failures"] == ["wrong_type"]


def test_missing_key(validator):
    reply = {k: v for k, v in REF.items() if k != "order_id"}
    s = score(json.dumps(reply), validator)
    assert (s["schema_valid"], s["failures"], s["fields"]["order_id"], s["field_accuracy"]) == (False, ["missing_key"], False, 5 / 6)


def test_extra_key(validator):
    s = score(json.dumps({**REF, "note": "x"}), validator)
    assert (s["strict"], s["schema_valid"], s["failures"], s["field_accuracy"]) == (True, False, ["extra_key"], 1.0)


def test_enum_violation(validator):
    s = score(json.dumps({**REF, "category": "payment"}), validator)
    assert (s["schema_valid"], s["failures"], s["fields"]["category"]) == (False, ["enum_violation"], False)


def test_several_schema_kinds_and_filler_together(validator):
    reply = "Result: " + json.dumps({"category": "payment", "priority": 3, "sentiment": "negative", "order_id": None,
                                       "amount": "lots", "products": [], "extra": 1})
    s = score(reply, validator)
    assert s["failures"] == ["filler_before", "wrong_type", "extra_key", "enum_violation"]
    assert s["fields"] == {"category": False, "priority": False, "sentiment": True, "order_id": False, "amount": False,
                           "products": False}
    assert s["field_accuracy"] == 1 / 6


def test_schema_other_and_anyof_branch():
    v = make_validator({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0},
                                                          "t": {"anyOf": [{"type": "string"}, {"type": "null"}]}}})
    assert score_reply('{"n": -1}', {"n": 1}, v)["failures"] == ["schema_other"]
    assert score_reply('{"t": 5}', {"t": "a"}, v)["failures"] == ["wrong_type"]


def test_field_accuracy_is_json_equality(validator):
    s = score(json.dumps({**REF, "amount": 162.0}), validator)
    assert s["fields"]["amount"] is True
    assert json_equal(True, 1) is False and json_equal(1, 1.0) is True and json_equal("1", 1) is False
    assert json_equal({"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]}) is True
    assert json_equal({"a": 1}, {"a": 1, "b": 2}) is False and json_equal([1, 2], [2, 1]) is False


def test_field_matches_non_object_reference_and_missing_value():
    assert field_matches([1, 2], [1, 2]) == {"$": True}
    assert field_matches([1], [1, 2]) == {"$": False}
    assert field_matches(None, {"a": None}, found=False) == {"a": False}
    assert field_matches([{"a": 1}], {"a": 1}) == {"a": False}


def test_extraction_prefers_the_reference_type():
    reply = 'See [1] for details: {"a": 1}'
    assert parse_reply(reply, expect=dict).value == {"a": 1}
    assert parse_reply(reply).value == [1]
    assert parse_reply('{"a": {"b": [1]}} tail', expect=dict).value == {"a": {"b": [1]}}


def test_strict_accepts_any_single_json_value_but_extraction_ignores_scalars():
    assert parse_reply("42").strict is True
    p = parse_reply("The answer is 42")
    assert (p.strict, p.found, p.has_brace) == (False, False, False)
    assert classify_format(p) == ["no_json"]


def test_request_error_score():
    s = score_request_error(REF, "HTTP 400: prompt too long")
    assert (s["strict"], s["extractable"], s["schema_valid"], s["field_accuracy"], s["failures"], s["error"]) == \
        (False, False, False, 0.0, ["request_error"], "HTTP 400: prompt too long")


def test_count_kinds_counts_replies_not_occurrences():
    counts = count_kinds([["filler_before", "filler_before"], ["code_fence"], []])
    assert list(counts) == list(KINDS)
    assert counts["filler_before"] == 1 and counts["code_fence"] == 1 and sum(counts.values()) == 2


def test_canonical_ignores_layout_and_key_order():
    assert canonical('{"b": 1, "a": 2}') == canonical('Here:\n```json\n{"a":2,"b":1}\n```') == '{"a":2,"b":1}'
    assert canonical("  no json ") == "no json"
