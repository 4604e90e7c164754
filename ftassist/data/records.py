"""Loading several input files into one list of examples, each file's format detected and explained.

    result = load_records(["tickets.jsonl"])
    result.files[0].format, result.files[0].reason
    # -> ('openai_chat', '200 of 200 sampled records have a `messages` list (OpenAI chat format)')
"""

from __future__ import annotations

from collections.abc import Sequence

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ftassist.data.findings import DataRow, Finding
from ftassist.data.loaders import file_kind, read_table

if TYPE_CHECKING:
    from ftassist.data.teacher import Teacher

DOCUMENT_KINDS = ("text", "markdown", "pdf", "docx")


@dataclass
class FileInfo:
    """How one input file was read: kind, encoding, detected format and why, rows read."""

    path: str
    kind: str
    encoding: str
    format: str
    reason: str
    rows: int
    split: str = "train"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LoadResult:
    """All examples of all files (in order), per-file info, and problems met while reading
    (bad JSON lines, ragged CSV rows), reported as findings without a row."""

    examples: list[DataRow] = field(default_factory=list)
    files: list[FileInfo] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def load_records(paths: Sequence[str | Path], column_map: dict[str, str] | None = None, split: str = "train",
                 teacher: Teacher | None = None) -> LoadResult:
    """Read every file in `paths` into examples of the given split; documents become pairs by
    templates, or by `teacher` (a `ftassist.data.teacher.Teacher`) when one is given.

    Returns a LoadResult; raises UserError naming the file (and line) when one cannot be used.
    """
    from ftassist.data.documents import document_examples
    from ftassist.data.formats import to_examples

    result = LoadResult()
    for p in paths:
        path = Path(p)
        kind = file_kind(path)
        if kind in DOCUMENT_KINDS:
            if teacher is not None:
                examples, problems, fmt, reason = teacher.document_examples(path, kind, split)
                result.findings += problems
            else:
                examples, fmt, reason = document_examples(path, kind, split)
            encoding = "utf-8" if kind in ("text", "markdown") else "binary"
        else:
            raw = read_table(path)
            for line, check, message in raw.problems:
                result.findings.append(Finding(check, "error", None, None, message, "", f"{path}:{line}"))
            examples, fmt, reason = to_examples(raw, column_map, split) if raw.rows else ([], "none", "no readable records")
            kind, encoding = raw.kind, raw.encoding
        result.examples.extend(examples)
        result.files.append(FileInfo(str(path), kind, encoding, fmt, reason, len(examples), split))
    return result
