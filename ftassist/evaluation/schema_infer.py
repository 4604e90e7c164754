"""Infer a JSON Schema from the reference replies, for tasks whose user gave no schema.

    >>> infer_schema([{"a": 1, "b": "x"}, {"a": 2.5}])
    {'type': 'object', 'properties': {'a': {'type': 'number'}, 'b': {'type': 'string'}}, 'required': ['a'], 'additionalProperties': False}

What it infers, deliberately plain so the report can show it and the user can check it:
the JSON types seen (integers and floats both become "number"), object properties with the keys
present in every reference as `required`, `additionalProperties: false`, array item schemas,
and an `enum` for a string field only when few distinct values each recur often
(at most `ENUM_MAX` values, each seen at least `ENUM_MIN_SEEN` times). A test set may miss a
valid value of such a field: pass `--schema` when that matters.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

ENUM_MAX = 10
ENUM_MIN_SEEN = 3
_ORDER = ("object", "array", "string", "number", "boolean", "null")


def json_type(value: Any) -> str:
    """The JSON type name of a Python value from `json.loads`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def infer_schema(values: list[Any]) -> dict:
    """A JSON Schema that every value in `values` satisfies (see the module notes)."""
    if not values:
        return {}
    types = sorted({json_type(v) for v in values}, key=_ORDER.index)
    schema: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
    objects = [v for v in values if isinstance(v, dict)]
    if objects:
        keys = list(dict.fromkeys(k for obj in objects for k in obj))
        schema["properties"] = {k: infer_schema([obj[k] for obj in objects if k in obj]) for k in keys}
        schema["required"] = [k for k in keys if all(k in obj for obj in objects)]
        schema["additionalProperties"] = False
    arrays = [v for v in values if isinstance(v, list)]
    items = [x for arr in arrays for x in arr]
    if items:
        schema["items"] = infer_schema(items)
    strings = Counter(v for v in values if isinstance(v, str))
    if strings and types == ["string"] and len(strings) <= ENUM_MAX and min(strings.values()) >= ENUM_MIN_SEEN:
        schema["enum"] = sorted(strings)
    return schema
