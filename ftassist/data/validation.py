"""All checks together: `validate_records` returns every finding for a list of examples.

    findings, lengths = validate_records(load_records(["a.jsonl"]).examples, tokenizer=tok)
"""

from __future__ import annotations

from typing import Any

from ftassist.data import checks_content as content
from ftassist.data.checks_format import check_format, valid_messages
from ftassist.data.checks_length import Lengths, check_lengths
from ftassist.data.findings import DataRow, Finding

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def validate_records(examples: list[DataRow], *, schema: dict | None = None, tokenizer: Any = None,
                     max_length: int = 1024, schema_inferred: bool = False) -> tuple[list[Finding], Lengths]:
    """Every finding for `examples` (format, content, JSON/schema when `schema` is given, personal
    data, and token lengths when a `tokenizer` is given), sorted by row; and the token lengths.
    A reply that breaks a `schema_inferred` from the majority is a schema_minority warning, not an
    error. Never raises for bad data: problems are findings."""
    findings = check_format(examples)
    broken = {f.row for f in findings if f.severity == "error"}
    msgs = [None if i in broken else valid_messages(ex) for i, ex in enumerate(examples)]
    findings += content.check_duplicates(examples, msgs)
    findings += content.check_leakage(examples, msgs)
    findings += content.check_labels(examples, msgs)
    findings += content.check_text(examples, msgs)
    findings += content.check_formulas(examples)
    findings += content.check_json(examples, msgs, schema, schema_inferred)
    lengths = Lengths([None] * len(examples), [None] * len(examples))
    if tokenizer is not None:
        found, lengths = check_lengths(examples, msgs, tokenizer, max_length)
        findings += found
    findings.sort(key=lambda f: (f.row if f.row is not None else -1, SEVERITY_ORDER[f.severity], f.check))
    return findings, lengths


def usable_messages(examples: list[DataRow], findings: list[Finding]) -> list[list[dict] | None]:
    """Per example, its [{role, content}] messages, or None when it has a format error."""
    broken = {f.row for f in findings if f.severity == "error" and f.check in FORMAT_ERRORS}
    return [None if i in broken else valid_messages(ex) for i, ex in enumerate(examples)]


FORMAT_ERRORS = {"not_a_dict", "missing_messages", "message_missing_key", "unknown_key", "unknown_role", "missing_content",
                 "no_assistant_message", "role_order", "empty_content", "record_too_large"}
