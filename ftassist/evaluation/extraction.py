"""Find the JSON in a model's reply: the whole reply (strict), or a value inside a longer reply.

    >>> parse_reply('{"a": 1}').strict
    True
    >>> p = parse_reply('Sure! ```json\\n{"a": 1}\\n``` Hope it helps.')
    >>> (p.strict, p.found, p.value, p.fenced, p.before, p.after)
    (False, True, {'a': 1}, True, 'Sure!', 'Hope it helps.')

Strict means `json.loads(reply)` accepts the reply as it is: exactly one JSON value, with
only whitespace around it. Extraction looks for an object or array (never a bare scalar, which
any prose would contain) starting at each `{` or `[`, and prefers the first one whose type
matches the reference's; a code fence around it is recognised and not counted as filler.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_DECODER = json.JSONDecoder()
_FENCE_OPEN = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\r?\n?[ \t]*$")
_FENCE_CLOSE = re.compile(r"^\s*```")


@dataclass(frozen=True)
class Parsed:
    """What `parse_reply` found: `value` is meaningful only when `found` is true."""

    strict: bool
    found: bool
    value: Any = None
    fenced: bool = False
    before: str = ""  # non-JSON text before the value (fence markers excluded), stripped
    after: str = ""  # non-JSON text after the value (fence markers excluded), stripped
    ends_open: bool = False  # nothing found and the reply stops inside an unclosed JSON value
    has_brace: bool = False  # the reply contains `{` or `[` at all


def parse_reply(reply: str, expect: type | None = None) -> Parsed:
    """Parse `reply` strictly, else extract the first JSON object/array (of type `expect` if any).

    Returns a `Parsed`; never raises for any string.
    """
    try:
        return Parsed(strict=True, found=True, value=json.loads(reply))
    except (json.JSONDecodeError, RecursionError):
        pass
    candidates = list(_scan(reply))
    if candidates:
        chosen = next((c for c in candidates if expect is None or isinstance(c[0], expect)), candidates[0])
        return _located(reply, *chosen)
    first = _first_brace(reply)
    return Parsed(strict=False, found=False, ends_open=first >= 0 and _ends_open(reply[first:]), has_brace=first >= 0)


_LENIENT = json.JSONDecoder(strict=False)  # raw control characters inside strings let through


def json_values(text: str, *, lenient: bool = False):
    """Every top-level JSON object/array in `text`, left to right (`lenient`: raw control characters in strings).

    >>> list(json_values('a {"x": 1} b [2] {bad'))
    [{'x': 1}, [2]]
    """
    return (value for value, _, _ in _scan(text, _LENIENT if lenient else _DECODER))


def _scan(reply: str, decoder: json.JSONDecoder = _DECODER):
    """Yield (value, start, end) for each top-level JSON object/array found left to right."""
    i = _first_brace(reply)
    while 0 <= i < len(reply):
        try:
            value, end = decoder.raw_decode(reply, i)
        except (json.JSONDecodeError, RecursionError):
            i = _first_brace(reply, i + 1)
            continue
        yield value, i, end
        i = _first_brace(reply, end)


def _located(reply: str, value: Any, start: int, end: int) -> Parsed:
    head, tail = reply[:start], reply[end:]
    opener, closer = _FENCE_OPEN.search(head), _FENCE_CLOSE.match(tail)
    fenced = opener is not None
    if opener:
        head = head[: opener.start()]
    if fenced and closer:
        tail = tail[closer.end():]
    return Parsed(strict=False, found=True, value=value, fenced=fenced, before=head.strip(), after=tail.strip(), has_brace=True)


def _first_brace(text: str, start: int = 0) -> int:
    """Index of the first `{` or `[` at or after `start`, or -1."""
    hits = [i for i in (text.find("{", start), text.find("[", start)) if i >= 0]
    return min(hits) if hits else -1


def _ends_open(text: str) -> bool:
    """True when `text` (starting at a bracket) ends before its brackets or a string close.

    >>> _ends_open('{"a": [1, 2'), _ends_open('{"a": "x'), _ends_open('{"a" 1}')
    (True, True, False)
    """
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return False
    return depth > 0 or in_string
