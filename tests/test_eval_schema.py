"""Schema inference, schema loading and test-set loading, with the exact errors users see."""

from __future__ import annotations

import json

import pytest

from ftassist.errors import UserError
from ftassist.evaluation.testset import load_examples
from ftassist.schema import infer_schema, load_schema
from tests.conftest import EXAMPLE


def test_infer_schema_from_the_example_references_matches_the_shipped_schema():
    examples, task = load_examples(EXAMPLE / "test.jsonl")
    assert task == "json" and len(examples) == 60
    inferred = infer_schema([e.reference for e in examples])
    shipped = json.loads((EXAMPLE / "schema.json").read_text())
    assert inferred["required"] == shipped["required"] and inferred["additionalProperties"] is False
    for key in ("category", "priority", "sentiment"):
        assert inferred["properties"][key]["enum"] == sorted(shipped["properties"][key]["enum"])
    assert inferred["properties"]["order_id"] == {"type": ["string", "null"]}
    assert inferred["properties"]["amount"] == {"type": ["number", "null"]}
    assert inferred["properties"]["products"] == {"type": "array", "items": {"type": "string"}}


def test_infer_schema_rules():
    assert infer_schema([]) == {}
    assert infer_schema([1, 2.5]) == {"type": "number"}
    assert infer_schema([True, None]) == {"type": ["boolean", "null"]}
    # Two distinct values seen twice each: too rare for an enum.
    assert infer_schema(["a", "a", "b", "b"]) == {"type": "string"}
    assert infer_schema(["a"] * 3 + ["b"] * 3) == {"type": "string", "enum": ["a", "b"]}
    assert infer_schema([{"a": {"x": 1}}, {"a": {"x": 2, "y": "s"}, "b": []}]) == {
        "type": "object",
        "properties": {"a": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "string"}},
                             "required": ["x"], "additionalProperties": False},
                       "b": {"type": "array"}},
        "required": ["a"], "additionalProperties": False}


def test_load_schema_errors(tmp_path):
    with pytest.raises(UserError, match=r"--schema .*missing.json: cannot read it"):
        load_schema(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match=r"--schema .*bad.json: not valid JSON"):
        load_schema(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(UserError, match="must be an object, got list"):
        load_schema(tmp_path / "list.json")
    (tmp_path / "invalid.json").write_text(json.dumps({"type": "object", "properties": {"a": {"type": "strnig"}}}))
    with pytest.raises(UserError, match=r"not a valid JSON Schema at properties/a/type: 'strnig' is not valid"):
        load_schema(tmp_path / "invalid.json")
    assert load_schema(EXAMPLE / "schema.json")["type"] == "object"
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + (EXAMPLE / "schema.json").read_bytes())
    assert load_schema(tmp_path / "bom.json") == load_schema(EXAMPLE / "schema.json")


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _row(user, reply):
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def test_load_examples_errors(tmp_path):
    with pytest.raises(UserError, match=r"--data .*nope.jsonl: cannot read it"):
        load_examples(tmp_path / "nope.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"messages": []}\n{oops\n')
    with pytest.raises(UserError, match=r"not a JSONL file: .*broken.jsonl:2: not valid JSON"):
        load_examples(tmp_path / "broken.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="no examples in it"):
        load_examples(tmp_path / "empty.jsonl")
    path = _write(tmp_path / "noref.jsonl", [_row("a", "{}"), {"messages": [{"role": "user", "content": "b"}]}, {"text": "c"}])
    with pytest.raises(UserError, match=r"row\(s\) 2, 3 lack a final assistant message"):
        load_examples(path)
    path = _write(tmp_path / "mixed.jsonl", [_row("a", '{"x": 1}'), _row("b", "plain words"), _row("c", "42")])
    with pytest.raises(UserError, match=r"references of row\(s\) 2, 3 are not JSON while the others are"):
        load_examples(path)


def test_load_examples_tasks_and_limit(tmp_path):
    examples, task = load_examples(EXAMPLE / "test.jsonl", limit=3)
    assert (task, [e.row for e in examples]) == ("json", [1, 2, 3])
    assert [m["role"] for m in examples[0].prompt] == ["system", "user"]
    assert examples[0].reference["order_id"] == "F97782"
    path = _write(tmp_path / "text.jsonl", [_row("capital of France?", "Paris"), _row("2+2?", "4")])
    examples, task = load_examples(path)
    assert task == "text" and [e.reference for e in examples] == [None, None]
