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
    """Guess {target: column} from column names, then from contents; returns (mapping, reason).

    The mapping holds `instruction` and `output` when a guess could be made (else it is missing
    them, and the reason says so). Never raises for odd columns.
    """
    mapping: dict[str, str] = {}
    why: list[str] = []
    normed = {c: norm_name(c) for c in columns}
    for target in ("system", "output", "instruction", "input"):
        for syn in SYNONYMS[target]:
            hit = next((c for c in columns if normed[c] == norm_name(syn) and c not in mapping.values()), None)
            if hit:
                mapping[target] = hit
                why.append(f"{target}={hit} (name)")
                break
    text_cols = [c for c in columns if c not in mapping.values() and _mostly_text(c, sample_rows)]
    if "instruction" not in mapping or "output" not in mapping:
        # By contents: text columns in table order, the prompt usually standing left of the reply.
        for target in ("instruction", "output"):
            if target not in mapping and text_cols:
                col = text_cols.pop(0)
                mapping[target] = col
                why.append(f"{target}={col} (contents: {'first' if target == 'instruction' else 'next'} text column)")
    if "instruction" not in mapping or "output" not in mapping:
        return _ordered(mapping), "no column pair looks like prompt and reply; pass --map instruction=COL --map output=COL"
    return _ordered(mapping), "columns mapped by " + ", ".join(why)


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
