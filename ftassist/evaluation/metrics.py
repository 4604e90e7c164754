"""The JSON-compliance metrics, defined once: each reply scored against its reference and schema.

    >>> from ftassist.evaluation.metrics import make_validator, score_reply
    >>> v = make_validator({"type": "object", "required": ["a"]})
    >>> s = score_reply('Here: {"a": 1, "b": 2}', {"a": 1, "b": 3}, v)
    >>> (s["strict"], s["extractable"], s["schema_valid"], s["field_accuracy"], s["exact"], s["failures"])
    (False, True, True, 0.5, False, ['filler_before'])

- strict: the whole reply is exactly one JSON value (whitespace aside).
- extractable: strict, or a JSON object/array can be found inside the reply.
- schema_valid: the extracted value passes the schema (so it separates content from format:
  a fenced but valid object is extractable and schema-valid, not strict).
- fields: for each top-level key of the reference, whether the extracted value has an equal
  value there (JSON equality: 1 == 1.0, but true != 1); a non-object reference is one field "$".
- exact: the extracted value equals the whole reference (every field right, nothing extra).
- failures: the taxonomy kinds (`ftassist.evaluation.taxonomy`).
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema.validators import validator_for

from ftassist.evaluation.extraction import parse_reply
from ftassist.evaluation.taxonomy import classify_format, classify_schema

WHOLE = "$"  # the one "field" of a reference that is not an object


def json_equal(a: Any, b: Any) -> bool:
    """Equality of two JSON values as JSON sees them (bools are not numbers, 1 equals 1.0).

    >>> json_equal(1, 1.0), json_equal(True, 1), json_equal({"a": [1]}, {"a": [1.0]})
    (True, False, True)
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def field_matches(value: Any, reference: Any, found: bool = True) -> dict[str, bool]:
    """{field: matches} over the reference's top-level keys ({"$": ...} for a non-object).

    A missing value (`found` false), or one that is not an object, matches no field.
    """
    if not isinstance(reference, dict):
        return {WHOLE: found and json_equal(value, reference)}
    ok = found and isinstance(value, dict)
    return {key: ok and key in value and json_equal(value[key], ref) for key, ref in reference.items()}


def make_validator(schema: dict) -> Any:
    """A jsonschema validator for `schema` (its `$schema` draft, else the newest).

    Raises `jsonschema.SchemaError` when the schema itself is invalid.
    """
    cls = validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def score_reply(reply: str, reference: Any, validator: Any, finish_reason: str | None = None) -> dict:
    """All metrics for one reply: strict, extractable, schema_valid, fields, field_accuracy, exact, failures.

    `schema_errors` holds up to three jsonschema messages, for the report.
    """
    parsed = parse_reply(reply, expect=type(reference) if isinstance(reference, (dict, list)) else None)
    failures = classify_format(parsed, finish_reason)
    errors = sorted(validator.iter_errors(parsed.value), key=lambda e: list(e.absolute_path)) if parsed.found else []
    failures += classify_schema(errors)
    fields = field_matches(parsed.value, reference, parsed.found)
    return {
        "strict": parsed.strict,
        "extractable": parsed.found,
        "schema_valid": parsed.found and not errors,
        "fields": fields,
        "field_accuracy": sum(fields.values()) / len(fields) if fields else 0.0,
        "exact": parsed.found and json_equal(parsed.value, reference),
        "value": parsed.value if parsed.found else None,
        "failures": failures,
        "schema_errors": [e.message for e in errors[:3]],
    }


def score_request_error(reference: Any, message: str) -> dict:
    """The score of a request the endpoint refused: every metric false, failure `request_error`."""
    fields = field_matches(None, reference, found=False)
    return {
        "strict": False, "extractable": False, "schema_valid": False, "fields": fields,
        "field_accuracy": 0.0, "exact": False, "value": None, "failures": ["request_error"], "schema_errors": [], "error": message,
    }


def canonical(reply: str, reference: Any = None) -> str:
    """A key for comparing samples: the extracted JSON in sorted canonical form, else the stripped text."""
    parsed = parse_reply(reply, expect=type(reference) if isinstance(reference, (dict, list)) else None)
    if parsed.found:
        return json.dumps(parsed.value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return reply.strip()
