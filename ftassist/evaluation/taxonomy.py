"""The failure taxonomy: why a reply is not clean, schema-valid JSON, as a list of kinds.

A reply can have several kinds at once ("Here you go: ```json {...}```" is filler_before and
code_fence). Format kinds come from the extraction, schema kinds from jsonschema's errors on
the extracted value:

- filler_before / filler_after: prose before or after the JSON value (fence markers excluded)
- code_fence: the JSON sits inside a Markdown code fence
- truncated: no complete value, and the reply stops inside one (or the server said "length")
- syntax_error: no complete value, but a bracket was opened and closed: broken JSON
- no_json: no `{` or `[` anywhere: a prose answer
- wrong_type, missing_key, extra_key, enum_violation: jsonschema `type`, `required`,
  `additionalProperties`, `enum`/`const` errors; schema_other: any other schema keyword
- request_error: the endpoint refused the request (the reply is empty)
"""

from __future__ import annotations

from jsonschema.exceptions import ValidationError

from ftassist.evaluation.extraction import Parsed

FORMAT_KINDS = ("filler_before", "filler_after", "code_fence", "truncated", "syntax_error", "no_json")
SCHEMA_KINDS = ("wrong_type", "missing_key", "extra_key", "enum_violation", "schema_other")
KINDS = FORMAT_KINDS + SCHEMA_KINDS + ("request_error",)

_BY_VALIDATOR = {
    "type": "wrong_type",
    "required": "missing_key",
    "additionalProperties": "extra_key",
    "unevaluatedProperties": "extra_key",
    "enum": "enum_violation",
    "const": "enum_violation",
}


def classify_format(parsed: Parsed, finish_reason: str | None = None) -> list[str]:
    """Format failure kinds of one parsed reply, in `KINDS` order; [] for a strict reply.

    >>> from ftassist.evaluation.extraction import parse_reply
    >>> classify_format(parse_reply('Answer: {"a": 1}'))
    ['filler_before']
    >>> classify_format(parse_reply('{"a": [1,'))
    ['truncated']
    """
    if parsed.strict:
        return []
    if not parsed.found:
        if parsed.ends_open or finish_reason == "length":
            return ["truncated"]
        return ["syntax_error"] if parsed.has_brace else ["no_json"]
    kinds = []
    if parsed.before:
        kinds.append("filler_before")
    if parsed.after:
        kinds.append("filler_after")
    if parsed.fenced:
        kinds.append("code_fence")
    return kinds


def classify_schema(errors: list[ValidationError]) -> list[str]:
    """Schema failure kinds for jsonschema errors (unique, in `KINDS` order).

    For `anyOf`/`oneOf` errors the kinds of the branch errors are used.
    """
    found = {_kind(err) for err in errors}
    return [k for k in SCHEMA_KINDS if k in found]


def _kind(err: ValidationError) -> str:
    if err.validator in ("anyOf", "oneOf") and err.context:
        # The branch that got deepest into the value says best what was wrong.
        best = max(err.context, key=lambda e: len(e.absolute_path))
        return _kind(best)
    return _BY_VALIDATOR.get(str(err.validator), "schema_other")


def count_kinds(kind_lists: list[list[str]]) -> dict[str, int]:
    """How many replies show each kind: {kind: count} over all `KINDS` (zeros included)."""
    counts: dict[str, int] = {k: 0 for k in KINDS}
    for kinds in kind_lists:
        for k in set(kinds):
            counts[k] = counts.get(k, 0) + 1
    return counts


def describe(kinds: list[str]) -> str:
    """'filler_before, code_fence' or 'clean' for an empty list."""
    return ", ".join(kinds) if kinds else "clean"
