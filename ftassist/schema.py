"""JSON Schemas for JSON tasks: read the user's `--schema` file, or infer one from reference replies.

Used by `ftassist data` (to check training replies) and `ftassist eval` (to score model replies).

    >>> infer_schema([{"a": 1, "b": "x"}, {"a": 2.5}])
    {'type': 'object', 'properties': {'a': {'type': 'number'}, 'b': {'type': 'string'}}, 'required': ['a'], 'additionalProperties': False}
    >>> infer_schema(["high"] * 3 + ["low"] * 4)
    {'type': 'string', 'enum': ['high', 'low']}
    >>> infer_schema([True, None, "x"])
    {'type': ['string', 'boolean', 'null']}

What `infer_schema` infers, deliberately plain so a report can show it and the user can check it:
the JSON types seen (integers and floats both become "number"; several types are listed in the
order object, array, string, number, boolean, null), object properties with the keys present in
every value as `required`, `additionalProperties: false`, array item schemas, and an `enum` for a
string field only when few distinct values each recur often (at most `ENUM_MAX` values, each seen
at least `ENUM_MIN_SEEN` times). The values may miss a valid value of such a field: pass
`--schema` when that matters. `ftassist data build` infers the schema of the majority of the
replies (`tolerance` MAJORITY_TOLERANCE) and reports the rows that disagree with it.

Whether replies are JSON at all (a JSON task) is told here too:

    >>> parse_json_reply('{"a": 1}'), parse_json_reply("plain words")
    ((True, {'a': 1}), (False, None))
    >>> is_json_task(['{"a": 1}', '[1, 2]', '{}', '{"b": 2}', "sorry, no"])
    True
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema

from ftassist.evaluation.extraction import parse_reply

from ftassist.errors import UserError

ENUM_MAX = 10
MAJORITY_TOLERANCE = 0.1  # a type, key or enum value in at most 10% of the replies counts as the minority
ENUM_MIN_SEEN = 3
_ORDER = ("object", "array", "string", "number", "boolean", "null")


def load_schema(path: str | Path) -> dict:
    """The JSON Schema in `path` (UTF-8, with or without a BOM), checked against its metaschema.

    The metaschema is the one its `$schema` names, else the newest draft. Raises UserError naming
    `--schema PATH`, what is wrong (and where, for an invalid schema) and what to do.
    """
    path = Path(path)
    try:
        schema = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise UserError(f"--schema {path}: cannot read it ({exc.strerror or exc}); check the path") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"--schema {path}: not valid JSON ({exc}); fix the file") from exc
    if not isinstance(schema, dict):
        raise UserError(f"--schema {path}: a JSON Schema must be an object, got {type(schema).__name__}; "
                        'fix the file (e.g. {"type": "object", "properties": {...}})')
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise UserError(f"--schema {path}: not a valid JSON Schema at {where}: {exc.message}; fix the file") from exc
    return schema


def _json_type(value: Any) -> str:
    """The JSON type name of a Python value from `json.loads` ("number" for ints and floats)."""
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


def infer_schema(values: list[Any], tolerance: float = 0.0) -> dict:
    """A JSON Schema of `values` ({} for no values; see the module notes).

    With `tolerance` 0 every value satisfies it. With `tolerance` t > 0 it is the schema of the
    majority: a type, a key or an enum value seen in at most a share t of the values is left out
    (a key missing from at most that share is still required), so the rows that disagree with the
    rest fail it and can be reported.

    >>> infer_schema([1, 2, 3, 4, 5, 6, 7, 8, 9, "4"], tolerance=0.1)
    {'type': 'number'}
    """
    if not values:
        return {}
    n = len(values)
    seen = Counter(_json_type(v) for v in values)
    common = seen.most_common(1)[0][0]
    types = sorted((t for t, c in seen.items() if c > tolerance * n or t == common), key=_ORDER.index)
    schema: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
    objects = [v for v in values if isinstance(v, dict)]
    if objects and "object" in types:
        counts = Counter(k for obj in objects for k in obj)
        keys = [k for k in dict.fromkeys(k for obj in objects for k in obj) if counts[k] > tolerance * len(objects)]
        schema["properties"] = {k: infer_schema([obj[k] for obj in objects if k in obj], tolerance) for k in keys}
        schema["required"] = [k for k in keys if counts[k] >= (1 - tolerance) * len(objects)]
        schema["additionalProperties"] = False
    items = [x for v in values if isinstance(v, list) for x in v]
    if items and "array" in types:
        schema["items"] = infer_schema(items, tolerance)
    strings = Counter(v for v in values if isinstance(v, str))
    if strings and types == ["string"]:
        frequent = {v: c for v, c in strings.items() if c >= ENUM_MIN_SEEN}
        rare = sum(strings.values()) - sum(frequent.values())
        if frequent and len(frequent) <= ENUM_MAX and rare <= tolerance * sum(strings.values()):
            schema["enum"] = sorted(frequent)
    return schema


JSON_SHARE = 0.8  # replies are a JSON task when at least this share parse as objects or arrays


def parse_json_reply(text: Any) -> tuple[bool, Any]:
    """(True, value) when `text` is, strictly, a JSON object or array (the eval's `parse_reply`), else (False, None)."""
    if not isinstance(text, str) or not text.strip().startswith(("{", "[")):
        return False, None
    parsed = parse_reply(text)
    return (True, parsed.value) if parsed.strict and isinstance(parsed.value, (dict, list)) else (False, None)


def is_json_task(replies: list[Any]) -> bool:
    """True when at least JSON_SHARE of the replies parse as JSON objects or arrays."""
    if not replies:
        return False
    return sum(parse_json_reply(r)[0] for r in replies) >= JSON_SHARE * len(replies)
