"""Markdown tables, the one way every report, card and chat message of ftassist builds them.

    >>> print("\\n".join(table(["a", "b"], [["1", cell("x|y")], [2, None]])))
    | a | b |
    |---|---|
    | 1 | x\\|y |
    | 2 | - |
"""

from __future__ import annotations

from typing import Any


def cell(text: Any, limit: int | None = None, empty: str = "-") -> str:
    """`text` safe inside a table cell: pipes and backslashes escaped, line breaks as <br>, cut at `limit` characters."""
    if text is None:
        return empty
    text = str(text)
    if limit is not None and len(text) > limit:
        text = text[:limit] + " [...]"
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>") or empty


def table(head: list[str], rows: list[list[Any]]) -> list[str]:
    """The lines of a table: header, rule, one line per row (cells as given; None shows as '-')."""
    def line(cells: list[Any]) -> str:
        return "| " + " | ".join("-" if c is None else str(c) for c in cells) + " |"

    return [line(head), "|" + "---|" * len(head), *[line(r) for r in rows]]
