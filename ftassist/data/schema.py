"""JSON tasks: read a given JSON Schema, or infer one from the assistant replies.

    >>> infer_schema([{"a": 1, "b": "x"}, {"a": 2.5, "b": None}])["properties"]["a"]
    {'type': 'number'}
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from ftassist.errors import UserError

JSON_SHARE = 0.8  # replies are a JSON task when at least this share parse as objects or arrays
ENUM_MAX = 12


def load_schema(path: str | Path) -> dict:
    """The JSON Schema in `path`, checked against its metaschema; UserError naming the file otherwise."""
    import jsonschema

    path = Path(path)
    try:
        schema = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise UserError(f"--schema {path}: cannot read it ({exc.strerror}); check the path") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"--schema {path}: not valid JSON ({exc}); fix the file") from exc
    if not isinstance(schema, dict):
        raise UserError(f"--schema {path}: a JSON Schema must be an object, got {type(schema).__name__}")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise UserError(f"--schema {path}: not a valid JSON Schema ({exc.message}); fix the file") from exc
    return schema


def parse_reply(text: Any) -> tuple[bool, Any]:
    """(True, value) when `text` is a JSON object or array, else (False, None)."""
    if not isinstance(text, str):
        return False, None
    s = text.strip()
    if not s.startswith(("{", "[")):
        return False, None
    try:
        return True, json.loads(s)
    except (json.JSONDecodeError, RecursionError):
        return False, None


def is_json_task(replies: list[Any]) -> bool:
    """True when at least JSON_SHARE of the replies parse as JSON objects or arrays."""
    if not replies:
        return False
    return sum(parse_reply(r)[0] for r in replies) >= JSON_SHARE * len(replies)


def infer_schema(values: list[Any]) -> dict:
    """A JSON Schema every value in `values` matches: types merged, object keys present in all
    values required, strings with few repeated values turned into an `enum`."""
    schema = _infer(values)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(v)]


def _infer(values: list[Any]) -> dict:
    types = {_type(v) for v in values}
    if {"integer", "number"} <= types:
        types.discard("integer")
    if types == {"object"}:
        keys = Counter(k for v in values for k in v)
        props = {k: _infer([v[k] for v in values if k in v]) for k in keys}
        return {"type": "object", "properties": props, "required": [k for k, n in keys.items() if n == len(values)]}
    if types == {"array"}:
        items = [x for v in values for x in v]
        return {"type": "array", "items": _infer(items)} if items else {"type": "array"}
    if types <= {"string", "null"} and "string" in types:
        strings = [v for v in values if isinstance(v, str)]
        distinct = set(strings)
        if len(distinct) <= ENUM_MAX and len(strings) >= 3 * len(distinct) and len(strings) >= 10:
            return {"enum": sorted(distinct) + ([None] if "null" in types else [])}
    if len(types) == 1:
        return {"type": types.pop()}
    return {"type": sorted(types)}
