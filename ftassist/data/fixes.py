"""Fixes chosen by flags: drop duplicates, drop over-length, drop invalid, mask personal data.

`apply_fixes` never edits its inputs: it returns which rows are kept, their (masked) messages,
what was dropped and why, and the findings that still stand afterwards.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ftassist.data.findings import DataRow, Finding
from ftassist.data.pii import mask_pii

LENGTH_CHECKS = ("too_long", "fully_masked")


@dataclass(frozen=True)
class Fix:
    """A fix worth offering: the DataConfig switch that applies it, a label with the count, the count."""

    switch: str
    label: str
    count: int


def offered_fixes(findings: list[Finding], applied: dict[str, bool] | None = None) -> list[Fix]:
    """The fixes `apply_fixes` can make for `findings` (by check id, as it applies them), skipping the
    switches already on in `applied`; rows are counted once per fix.

    >>> offered_fixes([Finding("duplicate_exact", "warning", 3), Finding("empty_content", "error", 5)])
    [Fix(switch='drop_duplicates', label='Drop 1 duplicates', count=1), Fix(switch='drop_invalid', label='Drop 1 invalid rows', count=1)]
    """
    applied = applied or {}
    rows: dict[str, set] = {
        "drop_duplicates": {f.row for f in findings if f.check == "duplicate_exact"},
        "mask_pii": {(f.row, f.field, f.example) for f in findings if f.check.startswith("pii_")},
        "drop_overlength": {f.row for f in findings if f.check in LENGTH_CHECKS},
        "drop_invalid": {f.row for f in findings if f.severity == "error" and f.row is not None},
    }
    labels = {"drop_duplicates": "Drop {n} duplicates", "mask_pii": "Mask {n} personal data items",
              "drop_overlength": "Drop {n} over-long examples", "drop_invalid": "Drop {n} invalid rows"}
    return [Fix(switch, labels[switch].format(n=len(found)), len(found))
            for switch, found in rows.items() if found and not applied.get(switch)]


@dataclass
class FixResult:
    """Rows kept (indices into the examples) with their final messages, drops by reason, the number
    of personal-data values masked, and the findings left once the fixes are applied."""

    kept: list[int] = field(default_factory=list)
    messages: dict[int, list[dict]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    masked: int = 0
    remaining: list[Finding] = field(default_factory=list)


def apply_fixes(examples: list[DataRow], findings: list[Finding], msgs: list[list[dict] | None], *,
                drop_duplicates: bool = False, drop_overlength: bool = False, drop_invalid: bool = False,
                mask_pii_values: bool = False) -> FixResult:
    """Apply the chosen fixes; returns a FixResult (see its docstring). Pure: inputs are not changed."""
    drop: dict[int, str] = {}
    for f in findings:
        if f.row is None or f.row in drop:
            continue
        if drop_duplicates and f.check == "duplicate_exact":
            drop[f.row] = "duplicate_exact"
        elif drop_overlength and f.check in LENGTH_CHECKS:
            drop[f.row] = "over_max_length"
        elif drop_invalid and f.severity == "error":
            drop[f.row] = "invalid"
    for i, m in enumerate(msgs):
        if m is None and i not in drop and drop_invalid:
            drop[i] = "invalid"
    result = FixResult(dropped=dict(Counter(drop.values())))
    for i, m in enumerate(msgs):
        if i in drop or m is None:
            continue
        if mask_pii_values:
            masked = []
            for msg in m:
                text, n = mask_pii(msg["content"])
                result.masked += n
                masked.append({"role": msg["role"], "content": text})
            m = masked
        result.kept.append(i)
        result.messages[i] = m
    for f in findings:
        if f.row is not None and f.row in drop:
            continue
        if mask_pii_values and f.check.startswith("pii_"):
            continue
        if f.row is None and f.severity == "error" and drop_invalid:
            continue  # unreadable lines are left out
        result.remaining.append(f)
    return result
