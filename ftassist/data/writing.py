"""New inputs written by a teacher in the style of the user's own, for `ftassist data augment --write N`.

Each request shows the teacher a different handful of the labelled rows' inputs (never their labels) and asks
for one new input of the same kind, under a small `json_schema` ({"input": "..."}). Requests take turns asking
for what the rows vary, so the written set does not all come out alike: as typical as the examples, shorter or
longer than most, or a case where a field has nothing to put in it (only fields the labelled rows or the schema
leave empty). Written inputs then go through the same checks and labelling as unlabelled ones.
"""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

WRITE_FORMAT = {"type": "json_schema", "json_schema": {"name": "new_input", "schema": {
    "type": "object", "properties": {"input": {"type": "string", "minLength": 1}}, "required": ["input"],
    "additionalProperties": False}}}
SHOWN = 6  # inputs shown per request


@dataclass
class Written:
    """One writing request's result: the input (None: nothing usable came back), what it was asked, what it saw."""

    text: str | None
    twist: str
    shown: list[int]


def empty_fields(labels: list[dict], schema: dict, keys: list[str]) -> list[str]:
    """The fields a row may leave empty: empty in some labelled row, or null/array in the schema.

    >>> empty_fields([{"a": None, "b": "x", "c": "y"}], {"properties": {"c": {"type": ["string", "null"]}}}, ["a", "b", "c"])
    ['a', 'c']
    """
    props = schema.get("properties") or {}
    out = []
    for key in keys:
        kinds = props.get(key, {}).get("type")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if any(lab.get(key) in (None, "", [], {}) for lab in labels) or "null" in kinds or "array" in kinds:
            out.append(key)
    return out


def twists(fields: list[str]) -> list[str]:
    """What the requests ask for, in turn: typical, shorter, longer, then each field left empty.

    >>> twists(["city"])[-1]
    'Make it one where there is nothing to put in `city`: the text simply does not have it.'
    """
    return ["", "Make it shorter than most of them.", "Make it longer than most of them."] + [
        f"Make it one where there is nothing to put in `{key}`: the text simply does not have it." for key in fields]


def writing_messages(examples: list[str], twist: str) -> list[dict]:
    """The request for one new input: the examples, the twist, the JSON reply. One user message (some chat
    templates refuse a system role).

    >>> writing_messages(["Flood in Leeds"], "")[0]["content"].splitlines()[0]
    'Here are inputs from a dataset, one JSON string per line:'
    """
    shown = "\n".join(json.dumps(t, ensure_ascii=False) for t in examples)
    return [{"role": "user", "content": (
        f"Here are inputs from a dataset, one JSON string per line:\n{shown}\n\nWrite one new input of the same kind: the "
        "same language, register and format, a length within the range of these, about something none of them is "
        f"about. {twist + ' ' if twist else ''}Reply with only a JSON object {{\"input\": \"...\"}}.")}]


def parse_input(text: str | None) -> str | None:
    """The written input from a reply, or None when it is not {"input": non-empty string}.

    >>> parse_input('{"input": "  Bridge shut in Hull  "}'), parse_input('{"input": ""}'), parse_input("Sure! Here")
    ('Bridge shut in Hull', None, None)
    """
    try:
        value = json.loads(text or "")
    except ValueError:
        return None
    found = value.get("input") if isinstance(value, dict) else None
    return found.strip() if isinstance(found, str) and found.strip() else None


def write_inputs(endpoint, model: str, texts: list[str], fields: list[str], count: int, *, temperature: float,
                 max_tokens: int, concurrency: int, seed: int = 0) -> list[Written]:
    """`count` new inputs in the style of `texts`, each request showing its own sample of them."""
    rng = random.Random(seed)
    asks = twists(fields)
    plans = [(sorted(rng.sample(range(len(texts)), min(SHOWN, len(texts)))), asks[i % len(asks)]) for i in range(count)]
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ftassist-write") as pool:
        replies = list(pool.map(lambda plan: endpoint.chat(model, writing_messages([texts[i] for i in plan[0]], plan[1]),
                                                           temperature=temperature, max_tokens=max_tokens,
                                                           response_format=WRITE_FORMAT), plans))
    return [Written(parse_input(r.text) if r.error is None else None, twist, shown)
            for r, (shown, twist) in zip(replies, plans)]
