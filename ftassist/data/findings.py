"""Findings: what validation reports, one per problem, each naming its check, place and fix.

    >>> f = Finding("empty_content", "error", row=3, field="messages[1].content", message="...")
    >>> f.severity
    'error'
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

SEVERITIES = ("error", "warning", "info")


@dataclass
class DataRow:
    """One training example on its way to the canonical chat form.

    `messages` is the list of {"role", "content"} dicts (or, for chat-format input, whatever the
    file held there, so the format checks can report it); `raw` is the record as read.
    `source` is "file:line" (or "file:row N"), `split` is "train" or "test".
    """

    messages: Any
    source: str
    split: str = "train"
    raw: Any = None
    fmt: str = ""
    tabular: bool = False
    meta: dict = field(default_factory=dict)


@dataclass
class Finding:
    """One problem: `check` id, `severity` (error/warning/info), `row` (index into the examples,
    None for the whole data set), `field`, `message` (what is wrong and the fix), `example` text."""

    check: str
    severity: str
    row: int | None = None
    field: str | None = None
    message: str = ""
    example: str = ""
    source: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def clip(text: Any, limit: int = 160) -> str:
    """A short, one-line rendering of `text` for reports."""
    s = text if isinstance(text, str) else repr(text)
    s = s.replace("\n", "\\n")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def count_by_severity(findings: list[Finding]) -> dict[str, int]:
    """{'error': n, 'warning': n, 'info': n} (every severity present, zeros included)."""
    counts = Counter(f.severity for f in findings)
    return {s: counts.get(s, 0) for s in SEVERITIES}


def count_by_check(findings: list[Finding]) -> dict[str, int]:
    """{check id: number of findings}, sorted by check id."""
    return dict(sorted(Counter(f.check for f in findings).items()))
