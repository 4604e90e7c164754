"""Record formats: recognise how a file's rows are shaped, and turn each row into chat messages.

Recognised (each with the reason recorded in the report):
`openai_chat` ({"messages": [{role, content}, ...]}), `sharegpt` ({"conversations": [{from, value}]}),
`alpaca` (instruction / input / output), `prompt_completion`, `question_answer`, `text` (plain
passages, turned into instruction pairs like documents) and `mapped` (any other table, through a
suggested or user-given column map).

    >>> to_messages_alpaca({"instruction": "Add 2 and 2", "input": "", "output": "4"})
    [{'role': 'user', 'content': 'Add 2 and 2'}, {'role': 'assistant', 'content': '4'}]
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftassist.data.findings import DataRow
from ftassist.data.loaders import RawFile
from ftassist.data.mapping import TARGETS, is_guess, suggest_column_map
from ftassist.errors import UserError

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bard": "assistant", "model": "assistant", "bing": "assistant", "system": "system"}
TABULAR_KINDS = ("csv", "tsv", "xlsx", "parquet")


def to_text(value: Any) -> str | None:
    """A cell as text: None/NaN -> None, numbers -> str, dicts/lists -> compact JSON."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def detect_format(rows: list[Any], column_map: dict[str, str] | None = None) -> tuple[str, str]:
    """(format id, reason) for a file's records, judged on up to 200 of them.

    Raises UserError when no record is a JSON object / table row.
    """
    sample = rows[:200]
    dicts = [r for r in sample if isinstance(r, dict)]
    if not dicts:
        raise UserError(f"no record is an object with fields (first one is {type(sample[0]).__name__ if sample else 'nothing'}); "
                        "each record must look like {\"messages\": [...]} or a table row")
    keys = Counter(k for d in dicts for k in d)
    lower = {str(k).lower(): k for k in keys}

    def share(*names: str) -> float:
        return min(sum(1 for d in dicts if lower.get(name) in d) for name in names) / len(dicts)

    n = len(dicts)
    if share("messages") >= 0.5:
        return "openai_chat", f"{keys[lower['messages']]} of {n} sampled records have a `messages` list (OpenAI chat format)"
    if share("conversations") >= 0.5:
        return "sharegpt", f"{keys[lower['conversations']]} of {n} sampled records have `conversations` with from/value turns (ShareGPT)"
    if column_map and set(column_map.values()) <= set(map(str, keys)):
        return "mapped", "columns mapped by --map " + " ".join(f"{k}={v}" for k, v in column_map.items())
    if share("instruction", "output") >= 0.5:
        return "alpaca", f"records have `instruction`{' / `input`' if 'input' in lower else ''} / `output` fields (Alpaca)"
    if share("prompt", "completion") >= 0.5:
        return "prompt_completion", "records have `prompt` / `completion` fields"
    if share("question", "answer") >= 0.5:
        return "question_answer", "records have `question` / `answer` fields"
    if set(lower) == {"text"}:
        return "text", "records hold only a `text` field: each is a passage turned into instruction pairs by templates"
    return "mapped", ""


def to_messages_alpaca(rec: dict, keys: tuple[str, str, str, str] = ("instruction", "input", "output", "system")) -> list[dict]:
    """Alpaca-style record -> messages; a missing field gives content None (reported by the checks)."""
    ins, inp, out, sysk = keys
    instruction, extra = to_text(_get(rec, ins)), to_text(_get(rec, inp)) if inp else None
    user = instruction if not extra or not extra.strip() else f"{instruction or ''}\n\n{extra}"
    messages: list[dict[str, Any]] = []
    system = to_text(_get(rec, sysk)) if sysk else None
    if system and system.strip():
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": user})
    messages.append({"role": "assistant", "content": to_text(_get(rec, out))})
    return messages


def _get(rec: dict, key: str) -> Any:
    if key in rec:
        return rec[key]
    low = key.lower()
    return next((v for k, v in rec.items() if str(k).lower() == low), None)


def to_messages_sharegpt(rec: dict) -> Any:
    """ShareGPT record -> messages; turns that are not {from, value} objects are passed on as they
    are so the format checks report them."""
    turns = _get(rec, "conversations")
    if not isinstance(turns, list):
        return turns
    messages: list[Any] = []
    system = to_text(_get(rec, "system"))
    if system and system.strip():
        messages.append({"role": "system", "content": system})
    for turn in turns:
        if isinstance(turn, dict) and "from" in turn:
            role = SHAREGPT_ROLES.get(str(turn["from"]).lower(), str(turn["from"]))
            messages.append({"role": role, "content": to_text(turn.get("value"))})
        else:
            messages.append(turn)
    return messages


def column_map_for(raw: RawFile, fmt: str, column_map: dict[str, str] | None) -> tuple[dict[str, str], str]:
    """The column map used for a `mapped` file; UserError naming the file when none fits."""
    columns = raw.columns or sorted({str(k) for _, r in raw.rows[:200] if isinstance(r, dict) for k in r})
    if column_map:
        bad = [k for k in column_map if k not in TARGETS]
        if bad:
            raise UserError(f"--map {bad[0]}=...: unknown target {bad[0]!r}; use {', '.join(TARGETS)}")
        missing = [f"{k}={v}" for k, v in column_map.items() if v not in columns]
        if missing:
            raise UserError(f"{raw.path}: --map {missing[0]}: no such column; the columns are {', '.join(columns)}")
        if "instruction" not in column_map or "output" not in column_map:
            raise UserError(f"{raw.path}: --map needs both instruction=COL and output=COL; the columns are {', '.join(columns)}")
        return column_map, "columns mapped by --map " + " ".join(f"{k}={v}" for k, v in column_map.items())
    sample = [r for _, r in raw.rows[:200] if isinstance(r, dict)]
    mapping, reason = suggest_column_map(columns, sample)
    if "instruction" not in mapping or "output" not in mapping:
        raise UserError(f"{raw.path}: columns {', '.join(columns)} match no known format and {reason}")
    return mapping, reason + " (override with --map)"


def to_examples(raw: RawFile, column_map: dict[str, str] | None = None, split: str = "train") -> tuple[list[DataRow], str, str]:
    """Turn a RawFile's rows into Examples; returns (examples, format id, reason).

    Raises UserError naming the file when its rows match no format and no mapping can be made.
    """
    try:
        fmt, reason = detect_format([r for _, r in raw.rows], column_map)
    except UserError as exc:
        raise UserError(f"{raw.path}: {exc}") from exc
    tabular = raw.kind in TABULAR_KINDS
    if fmt == "text":
        from ftassist.data.documents import passage_messages

        title = raw.path.stem
        examples = [DataRow(messages=passage_messages(to_text(_get(r, "text")) or "", title), raw=r, fmt=fmt,
                            source=f"{raw.path}:{line}", split=split, tabular=tabular) for line, r in raw.rows]
        return examples, fmt, reason
    mapping: dict[str, str] = {}
    if fmt == "mapped":
        mapping, reason = column_map_for(raw, fmt, column_map)
    examples = []
    for line, rec in raw.rows:
        ex = DataRow(messages=None, raw=rec, fmt=fmt, source=f"{raw.path}:{line}", split=split, tabular=tabular)
        if isinstance(rec, dict):
            if fmt == "openai_chat":
                ex.messages = _get(rec, "messages")
            elif fmt == "sharegpt":
                ex.messages = to_messages_sharegpt(rec)
            elif fmt == "alpaca":
                ex.messages = to_messages_alpaca(rec)
            elif fmt == "prompt_completion":
                ex.messages = to_messages_alpaca(rec, ("prompt", "", "completion", "system"))
            elif fmt == "question_answer":
                ex.messages = to_messages_alpaca(rec, ("question", "context", "answer", "system"))
            else:
                ex.messages = to_messages_alpaca(rec, (mapping["instruction"], mapping.get("input", ""),
                                                       mapping["output"], mapping.get("system", "")))
                ex.meta["column_map"] = mapping
        examples.append(ex)
    return examples, fmt, reason


@dataclass(frozen=True)
class TableMapping:
    """How a table in no known format would be mapped: its `columns`, the `mapping` suggested and why."""

    path: str
    columns: tuple[str, ...]
    mapping: dict
    reason: str

    @property
    def guess(self) -> bool:
        """True when a column was picked from its contents alone: the user should confirm it."""
        return is_guess(self.reason) or "instruction" not in self.mapping or "output" not in self.mapping


def table_mapping(path: str | Path) -> TableMapping | None:
    """The suggested mapping of a table file whose columns match no known format (None for other files
    and for tables in a known format). Raises UserError when the file cannot be read."""
    from ftassist.data.loaders import file_kind, read_table

    if file_kind(Path(path)) in ("text", "markdown", "pdf", "docx"):
        return None
    raw = read_table(Path(path))
    rows = [r for _, r in raw.rows[:200] if isinstance(r, dict)]
    if not rows or detect_format(rows)[0] != "mapped":
        return None
    columns = raw.columns or sorted({str(k) for r in rows for k in r})
    mapping, reason = suggest_column_map(list(columns), rows)
    return TableMapping(str(path), tuple(columns), mapping, reason)
