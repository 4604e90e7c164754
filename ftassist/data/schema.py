"""JSON tasks: tell whether the assistant replies of a data set are JSON.

    >>> parse_json_reply('{"a": 1}'), parse_json_reply("plain words")
    ((True, {'a': 1}), (False, None))
    >>> is_json_task(['{"a": 1}', '[1, 2]', '{}', '{"b": 2}', "sorry, no"])
    True

Reading a given schema and inferring one from the replies live in `ftassist.schema`.
"""

from __future__ import annotations

from typing import Any

from ftassist.evaluation.extraction import parse_reply

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
