"""Column mapping for tables in no known format: which column is the prompt, which the reply.

    >>> suggest_column_map(["ticket_text", "label"], [{"ticket_text": "My order is late", "label": "shipping"}])[0]
    {'instruction': 'ticket_text', 'output': 'label'}

Targets are `instruction` (the user's message), `input` (extra context appended to it),
`output` (the assistant's reply) and `system`. The user overrides with `--map output=col`.
"""

from __future__ import annotations

import re
from typing import Any

TARGETS = ("instruction", "input", "output", "system")

# Column names that mean each target, most specific first (compared lower-cased, _ and - removed).
SYNONYMS = {
    "system": ["system", "systemprompt", "systemmessage"],
    "instruction": ["instruction", "prompt", "question", "query", "request", "user", "usermessage", "message",
                    "ticket", "tickettext", "body", "text", "input_text", "source", "src", "review", "sentence"],
    "input": ["input", "context", "document", "passage"],
    "output": ["output", "response", "answer", "completion", "reply", "assistant", "target", "label",
               "category", "class", "result", "tgt", "summary", "json", "expected"],
}


def norm_name(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(name).lower())


def suggest_column_map(columns: list[str], sample_rows: list[dict[str, Any]]) -> tuple[dict[str, str], str]:
    """Guess {target: column}; returns (mapping, reason), the reason saying why each column was picked.

    In order of trust: a column's whole name (`prompt`, `answer`), values that are JSON (the reply
    of a JSON task), a word of its name (`review_text`, `gold_json`), and last, a guess from the
    contents (the first text column is the prompt, the next the reply), which the reason calls a guess. The mapping
    holds `instruction` and `output` when a guess could be made (else it misses them, and the
    reason says so). Never raises for odd columns.

    >>> suggest_column_map(["notes", "review_text", "gold_json"],
    ...                    [{"notes": "call back", "review_text": "Great phone, battery weak", "gold_json": '{"rating": 4}'}])
    ({'instruction': 'review_text', 'output': 'gold_json'}, 'columns mapped by output=gold_json (its values are JSON), instruction=review_text (a word of its name: text)')
    """
    mapping: dict[str, str] = {}
    why: list[str] = []
    normed = {c: norm_name(c) for c in columns}
    words = {c: set(re.split(r"[\s_\-.]+", str(c).lower())) for c in columns}

    def free(c: str) -> bool:
        return c not in mapping.values()

    for target in ("system", "output", "instruction", "input"):
        for syn in SYNONYMS[target]:
            hit = next((c for c in columns if normed[c] == norm_name(syn) and free(c)), None)
            if hit:
                mapping[target] = hit
                why.append(f"{target}={hit} (its name)")
                break
    if "output" not in mapping:
        hit = next((c for c in columns if free(c) and _mostly_json(c, sample_rows)), None)
        if hit:
            mapping["output"] = hit
            why.append(f"output={hit} (its values are JSON)")
    for target in ("output", "instruction", "input", "system"):
        if target in mapping:
            continue
        for syn in SYNONYMS[target]:
            hit = next((c for c in columns if free(c) and syn in words[c]), None)
            if hit:
                mapping[target] = hit
                why.append(f"{target}={hit} (a word of its name: {syn})")
                break
    text_cols = [c for c in columns if free(c) and _mostly_text(c, sample_rows)]
    if "instruction" not in mapping and text_cols:  # replies are often longer than prompts: order, not length
        col = text_cols.pop(0)
        mapping["instruction"] = col
        why.append(f"instruction={col} (a guess from the contents: the first text column)")
    if "output" not in mapping and text_cols:
        col = text_cols.pop(0)
        mapping["output"] = col
        why.append(f"output={col} (a guess from the contents: the next text column)")
    if "instruction" not in mapping or "output" not in mapping:
        return _ordered(mapping), "no column pair looks like prompt and reply; pass --map instruction=COL --map output=COL"
    return _ordered(mapping), "columns mapped by " + ", ".join(why)


def is_guess(reason: str) -> bool:
    """True when a mapping's reason says a column was picked from its contents alone (worth confirming)."""
    return "a guess" in reason


def _mostly_json(col: str, rows: list[dict[str, Any]]) -> bool:
    from ftassist.schema import parse_json_reply

    vals = [r.get(col) for r in rows if r.get(col) not in (None, "")]
    return bool(vals) and sum(parse_json_reply(v)[0] for v in vals) >= 0.8 * len(vals)


def _ordered(mapping: dict[str, str]) -> dict[str, str]:
    return {t: mapping[t] for t in TARGETS if t in mapping}


def _mostly_text(col: str, rows: list[dict[str, Any]]) -> bool:
    vals = [r.get(col) for r in rows if r.get(col) not in (None, "")]
    return bool(vals) and sum(isinstance(v, str) and not _is_number(v) for v in vals) >= 0.8 * len(vals)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True
