"""Read the test set for an eval, failing early with a message that says what to fix.

A test row is `{"messages": [...]}` in OpenAI format; its last message must be the assistant's
reply, which is the reference, and the messages before it are the prompt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftassist.errors import UserError
from ftassist.files import read_jsonl


@dataclass(frozen=True)
class Example:
    """One test row: `row` is 1-based; `reference` is the parsed JSON reply, or None for free text."""

    row: int
    prompt: list[dict]
    reference_text: str
    reference: Any = None


def load_examples(path: str | Path, limit: int = 0) -> tuple[list[Example], str]:
    """The examples of a test JSONL (the first `limit` when > 0) and the task: "json" or "text".

    The task is "json" when every reference is a JSON object or array, "text" when none is.
    Raises UserError for an unreadable file, a row without a final assistant message, or a
    mix of JSON and non-JSON references (naming the rows).
    """
    path = Path(path)
    try:
        rows = read_jsonl(path)
    except OSError as exc:
        raise UserError(f"--data {path}: cannot read it ({exc.strerror or exc}); pass a test.jsonl from `ftassist data build`") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"--data {path}: not a JSONL file: {exc}") from exc
    if limit > 0:
        rows = rows[:limit]
    if not rows:
        raise UserError(f"--data {path}: no examples in it")
    examples, bad = [], []
    for i, row in enumerate(rows, 1):
        messages = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(messages, list) or len(messages) < 2 or not isinstance(messages[-1], dict) \
                or messages[-1].get("role") != "assistant" or not isinstance(messages[-1].get("content"), str):
            bad.append(i)
            continue
        text = messages[-1]["content"]
        examples.append(Example(row=i, prompt=messages[:-1], reference_text=text, reference=_json_container(text)))
    if bad:
        raise UserError(f"--data {path}: row(s) {_rows(bad)} lack a final assistant message (the reference reply) "
                        "in OpenAI messages format")
    not_json = [e.row for e in examples if e.reference is None]
    if not not_json:
        return examples, "json"
    if len(not_json) == len(examples):
        return examples, "text"
    raise UserError(f"--data {path}: the references of row(s) {_rows(not_json)} are not JSON while the others are; "
                    "fix those rows, or evaluate them as a separate free-text set")


REPLY_MARGIN = 32
REPLY_FLOOR, REPLY_CEILING = 64, 1024


def reply_budget(examples: list[Example]) -> int:
    """The `max_tokens` an eval gives each reply when none is set: the longest reference's UTF-8 bytes + 32, kept
    between 64 and 1024. Byte-level tokenizers spend at least one byte per token, so a reply as long as the
    longest right one fits (with room for a code fence or indentation), and an arm that never stops (an untuned
    model's prose) costs no more than that instead of a fixed 256.

    >>> reply_budget([Example(1, [], '{"keyword": "ablaze", "real_disaster": true}')])
    76
    >>> reply_budget([Example(1, [], "x" * 5000)])
    1024
    """
    longest = max((len(e.reference_text.encode("utf-8")) for e in examples), default=0)
    return max(REPLY_FLOOR, min(REPLY_CEILING, longest + REPLY_MARGIN))


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes: runs on the same test set share it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _json_container(text: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, (dict, list)) else None


def _rows(rows: list[int]) -> str:
    shown = ", ".join(map(str, rows[:10]))
    return shown + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
