"""What is wrong, field by field: the content reading of a JSON eval, and the verdict that leads the report.

For each top-level field of the references `diagnose_fields` finds its kind and measures what
that kind needs: enums get a confusion table (reference value -> replied value), lists get
precision and recall over their items, numbers get the size of the error, nested objects get
the accuracy of each of their keys. The weakest field comes with three failing examples side by
side, and `suggest` names the next step. `verdict` never calls a model good on format alone:

    >>> verdict({"name": "tuned", "means": {"field_accuracy": {"value": 0.55}},
    ...          "rates": {"exact": {"value": 0.03}, "schema_valid": {"value": 1.0}}})
    'tuned: the format is learned (100% schema-valid) but the content is not: 55% of fields and 3% of whole objects right. Do not ship it yet.'
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

NO_JSON, MISSING = "(no JSON)", "(missing)"
ENUM_MAX_VALUES = 12
READY_EXACT, READY_FIELDS, GOOD_FIELDS = 0.9, 0.95, 0.9


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def field_kind(name: str, references: list[Any], schema: dict | None) -> str:
    """enum, number, list, object, boolean or string: what the references (and the schema) say the field is.

    >>> field_kind("p", ["low", "high", "low"], {"properties": {"p": {"enum": ["low", "high"]}}})
    'enum'
    >>> field_kind("n", [3, None, 4.5], None), field_kind("xs", [["a"], []], None), field_kind("s", ["a b", "c d"], None)
    ('number', 'list', 'string')
    """
    prop = ((schema or {}).get("properties") or {}).get(name) or {}
    if "enum" in prop:
        return "enum"
    present = [r for r in references if r is not None]
    if present and all(isinstance(r, bool) for r in present):
        return "boolean"
    if present and all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in present):
        return "number"
    if present and all(isinstance(r, list) for r in present):
        return "list"
    if present and all(isinstance(r, dict) for r in present):
        return "object"
    return "string"


def replied(score: dict, name: str) -> Any:
    """The value a reply gave for field `name`, or the NO_JSON / MISSING markers."""
    value = score.get("value")
    if not isinstance(value, dict):
        return NO_JSON
    return value.get(name, MISSING)


def list_counts(reference: list, reply: Any) -> tuple[int, int, int]:
    """(items right, items replied, items expected) for one list field, items compared as JSON.

    >>> list_counts(["a", "b"], ["b", "c", "c"])
    (1, 3, 2)
    """
    ref = Counter(_key(x) for x in reference)
    got = Counter(_key(x) for x in reply) if isinstance(reply, list) else Counter()
    return sum((ref & got).values()), sum(got.values()), sum(ref.values())


def diagnose_field(name: str, references: list[Any], scores: list[dict], schema: dict | None) -> dict:
    """The reading of one field over every example: kind, accuracy, and the kind's own figures."""
    kind = field_kind(name, references, schema)
    right = [bool(s["fields"].get(name)) for s in scores]
    out: dict[str, Any] = {"field": name, "kind": kind, "accuracy": sum(right) / len(right) if right else 0.0,
                           "n": len(right), "wrong": len(right) - sum(right)}
    got = [replied(s, name) for s in scores]
    if kind in ("enum", "boolean") or (kind == "string" and len({_key(r) for r in references}) <= ENUM_MAX_VALUES):
        pairs = Counter((_key(r), _key(g) if g not in (NO_JSON, MISSING) else g) for r, g in zip(references, got))
        out["confusion"] = [{"reference": r, "replied": g, "count": c} for (r, g), c in sorted(pairs.items(), key=lambda x: -x[1])]
        mistakes = [(r, g, c) for (r, g), c in pairs.items() if r != g]
        if mistakes:
            r, g, c = max(mistakes, key=lambda x: x[2])
            out["top_mistake"] = {"reference": r, "replied": g, "count": c, "of": sum(n for (rr, _), n in pairs.items() if rr == r)}
    if kind == "list":
        tp = n_got = n_ref = 0
        for r, g in zip(references, got):
            a, b, c = list_counts(r if isinstance(r, list) else [], g)
            tp, n_got, n_ref = tp + a, n_got + b, n_ref + c
        out["precision"] = tp / n_got if n_got else 0.0
        out["recall"] = tp / n_ref if n_ref else 1.0
    if kind == "number":
        errors = [abs(float(g) - float(r)) for r, g in zip(references, got)
                  if isinstance(r, (int, float)) and isinstance(g, (int, float)) and not isinstance(g, bool)]
        out["mean_abs_error"] = sum(errors) / len(errors) if errors else None
        out["null_mismatch"] = sum((r is None) != (g is None) for r, g in zip(references, got) if g not in (NO_JSON, MISSING))
    if kind == "object":
        keys = list(dict.fromkeys(k for r in references if isinstance(r, dict) for k in r))
        out["keys"] = {k: sum(isinstance(g, dict) and isinstance(r, dict) and _key(g.get(k)) == _key(r.get(k))
                              for r, g in zip(references, got)) / len(references) for k in keys}
    return out


def diagnose_fields(references: list[Any], scores: list[dict], schema: dict | None, prompts: list[str],
                    examples: int = 3) -> dict:
    """Every field's reading, weakest first, plus the weakest field's failing examples and a suggestion."""
    names = list(dict.fromkeys(k for r in references if isinstance(r, dict) for k in r))
    fields = [diagnose_field(n, [r.get(n) if isinstance(r, dict) else None for r in references], scores, schema) for n in names]
    fields.sort(key=lambda f: (f["accuracy"], f["field"]))
    weakest = next((f for f in fields if f["wrong"]), None)
    shown = []
    if weakest is not None:
        for ref, s, prompt in zip(references, scores, prompts):
            if not s["fields"].get(weakest["field"]):
                shown.append({"prompt": prompt, "reference": _key(ref.get(weakest["field"]) if isinstance(ref, dict) else ref),
                              "replied": _key(g) if (g := replied(s, weakest["field"])) not in (NO_JSON, MISSING) else g})
            if len(shown) == examples:
                break
    return {"fields": fields, "weakest": weakest["field"] if weakest else None, "weakest_examples": shown}


def suggest(reading: dict, schema_valid: float, field_accuracy: float) -> str:
    """The next step, in words, from one arm's field reading and its headline rates."""
    if schema_valid < 0.9:
        return ("Fix the format first: only {:.0%} of replies pass the schema. Train longer, or serve with structured "
                "outputs (`ftassist eval --constrained` shows what that gives).").format(schema_valid)
    weakest = next((f for f in reading["fields"] if f["field"] == reading["weakest"]), None)
    if weakest is None:
        return "Every field of every example is right: nothing to fix on this test set."
    name, acc = weakest["field"], weakest["accuracy"]
    head = f"The weakest field is `{name}` ({acc:.0%} right)"
    if "top_mistake" in weakest:
        m = weakest["top_mistake"]
        detail = (f": where the answer is {m['reference']} the model says {m['replied']} in {m['count']} of {m['of']} cases; "
                  f"add more training examples whose `{name}` is {m['reference']}")
    elif weakest["kind"] == "list":
        detail = (": it leaves items out (recall {:.0%}, precision {:.0%}); add examples with several items".format(
            weakest["recall"], weakest["precision"]) if weakest["recall"] < weakest["precision"] else
            ": it adds items that are not there (precision {:.0%}, recall {:.0%}); add examples with few or no items".format(
                weakest["precision"], weakest["recall"]))
    elif weakest["kind"] == "number" and weakest.get("mean_abs_error") is not None:
        detail = f": numbers are off by {weakest['mean_abs_error']:.3g} on average; add examples with varied values"
    else:
        detail = "; add more examples that show it"
    tail = (". Which lever helps (a reward stage, more minutes, a larger rank or model) is measured, not guessed: "
            "`ftassist next RUN_DIR` tries those that fit a budget on the validation split and recommends the one that "
            "moved the metric."
            if field_accuracy < GOOD_FIELDS else ".")
    return head + detail + tail


def verdict(arm: dict) -> str:
    """One sentence on whether the content is right, then the format: never 'good' on format alone."""
    fields, exact = arm["means"]["field_accuracy"]["value"], arm["rates"]["exact"]["value"]
    valid = arm["rates"]["schema_valid"]["value"]
    figures = f"{fields:.0%} of fields and {exact:.0%} of whole objects right"
    if exact >= READY_EXACT and fields >= READY_FIELDS:
        return f"{arm['name']}: the content is right: {figures}, {valid:.0%} schema-valid."
    if fields >= GOOD_FIELDS:
        return f"{arm['name']}: most content is right ({figures}, {valid:.0%} schema-valid); check the weakest field before shipping."
    if valid >= 0.9:
        return (f"{arm['name']}: the format is learned ({valid:.0%} schema-valid) but the content is not: {figures}. "
                "Do not ship it yet.")
    return f"{arm['name']}: neither the format ({valid:.0%} schema-valid) nor the content ({figures}) is there yet."
