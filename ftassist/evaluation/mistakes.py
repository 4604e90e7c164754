"""What kind of wrong: each wrong field of each reply sorted into a kind a user can act on, and the worst rows.

Kinds, per (row, field), the first that applies:

- no_json: the reply holds no JSON object, so no field was given
- missing_key: the object lacks the field
- null_for_value: the reference has a value, the reply null or empty
- value_for_null: the reference is null or empty, the reply invents a value
- wrong_key: the reply puts the reference's value under another key
- span_too_short / span_too_long: a text (or a list item) cut inside the reference, or running past it
- items_missing / items_extra: a list that leaves out items, or adds some, and is otherwise right
- wrong_value: anything else

    >>> mistake_kind("Santa Monica Pier", "Santa Monica"), mistake_kind("Kenya", "Kenya Airways")
    ('span_too_short', 'span_too_long')
    >>> mistake_kind(["Obama", "Merkel"], ["Obama"]), mistake_kind(["Obama"], ["Barack Obama"])
    ('items_missing', 'span_too_long')
    >>> mistake_kind("Paris", None), mistake_kind(None, "Paris"), mistake_kind("Paris", "Lyon")
    ('null_for_value', 'value_for_null', 'wrong_value')
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from ftassist.evaluation.fields import MISSING, NO_JSON, replied

KINDS = ("no_json", "missing_key", "null_for_value", "value_for_null", "wrong_key", "span_too_short", "span_too_long",
         "items_missing", "items_extra", "wrong_value")
ADVICE = {
    "no_json": "the reply is not a JSON object: fix the format first (more minutes, or structured outputs)",
    "missing_key": "keys are left out: add examples where every key is present, null where there is no value",
    "null_for_value": "values that are in the text are answered null: add examples where the value is present",
    "value_for_null": "values are invented where the answer is null: add examples whose answer is null",
    "wrong_key": "the right value lands under the wrong key: add examples that tell these keys apart",
    "span_too_short": "spans are cut short: add examples with long, multi-word values",
    "span_too_long": "spans run past the value: add examples whose values are short and sit inside longer phrases",
    "items_missing": "lists leave items out: add examples with several items",
    "items_extra": "lists add items that are not there: add examples with few or no items",
    "wrong_value": "the value is simply wrong: more (and more varied) examples of this field",
}
WORST_ROWS = 5


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _norm(value: Any) -> str:
    return " ".join(str(value).casefold().split())


def _span(reference: Any, reply: Any) -> str | None:
    """span_too_short / span_too_long when one text sits strictly inside the other, else None."""
    if not isinstance(reference, str) or not isinstance(reply, str):
        return None
    ref, got = _norm(reference), _norm(reply)
    if ref == got or not ref or not got:
        return None
    if got in ref:
        return "span_too_short"
    if ref in got:
        return "span_too_long"
    return None


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _list_kind(reference: list, reply: list) -> str:
    ref, got = Counter(_key(x) for x in reference), Counter(_key(x) for x in reply)
    missing, extra = ref - got, got - ref
    if missing and not extra:
        return "items_missing"
    if extra and not missing:
        return "items_extra"
    # Unmatched items that are cut or stretched versions of each other are span errors, the commonest in extraction.
    spans = [k for m in missing.elements() for e in extra.elements()
             if (k := _span(json.loads(m), json.loads(e))) is not None]
    if spans:
        return Counter(spans).most_common(1)[0][0]
    return "wrong_value"


def mistake_kind(reference: Any, reply: Any, others: dict | None = None) -> str:
    """The kind of one wrong field: `reference` and `reply` its two values (`reply` may be the NO_JSON / MISSING
    markers of `fields.replied`), `others` the reply's other keys (for wrong_key)."""
    if reply == NO_JSON:
        return "no_json"
    if reply == MISSING:
        return "missing_key"
    if _empty(reply) and not _empty(reference):
        if others and any(_key(v) == _key(reference) for v in others.values()):
            return "wrong_key"
        return "null_for_value"
    if _empty(reference) and not _empty(reply):
        return "value_for_null"
    if others and any(_key(v) == _key(reference) for v in others.values()):
        return "wrong_key"
    span = _span(reference, reply)
    if span is not None:
        return span
    if isinstance(reference, list) and isinstance(reply, list):
        return _list_kind(reference, reply)
    return "wrong_value"


def cluster_mistakes(references: list[Any], scores: list[dict], prompts: list[str], replies: list[str] | None = None,
                     rows: int = WORST_ROWS) -> dict:
    """Every wrong field sorted into a kind: {"kinds": [(kind, count), ...] commonest first, "by_field": {field:
    {kind: count}}, "worst_rows": the `rows` rows with the most wrong fields, input / reference / reply side by side,
    "advice": what the commonest kind asks for}. `scores` are `score_reply` results (their "fields" and "value");
    `replies` the raw texts, shown where a reply holds no JSON."""
    names = list(dict.fromkeys(k for r in references if isinstance(r, dict) for k in r))
    kinds: Counter = Counter()
    by_field: dict[str, Counter] = {n: Counter() for n in names}
    wrong_per_row = []
    for i, (ref, score) in enumerate(zip(references, scores)):
        value = score.get("value")
        wrong = 0
        for name in names:
            if score["fields"].get(name):
                continue
            got = replied(score, name)
            others = {k: v for k, v in value.items() if k != name} if isinstance(value, dict) else None
            kind = mistake_kind(ref.get(name) if isinstance(ref, dict) else None, got, others)
            kinds[kind] += 1
            by_field[name][kind] += 1
            wrong += 1
        wrong_per_row.append((wrong, i))
    worst = [i for wrong, i in sorted(wrong_per_row, key=lambda x: (-x[0], x[1])) if wrong][:rows]
    shown = [{"row": i, "prompt": prompts[i], "reference": _key(references[i]),
              "replied": _key(scores[i]["value"]) if isinstance(scores[i].get("value"), dict) else (replies or [""] * len(scores))[i],
              "wrong_fields": wrong_per_row[i][0]} for i in worst]
    ordered = sorted(kinds.items(), key=lambda kv: (-kv[1], KINDS.index(kv[0])))
    return {"kinds": ordered, "by_field": {n: dict(c.most_common()) for n, c in by_field.items() if c},
            "worst_rows": shown, "advice": ADVICE[ordered[0][0]] if ordered else None}
