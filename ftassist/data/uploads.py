"""Which of a person's files is what: training rows, a test split kept as it is, or a JSON Schema.

The app hands over whatever was uploaded (one folder's `train.jsonl`/`test.jsonl`/`schema.json`, or a
pile of files); the CLI names each role with its flags. The rules, in one place:

    >>> u = classify_uploads(["d/train.jsonl", "d/test.jsonl", "d/schema.json"])
    >>> (u.train, u.test, u.schema)
    (['d/train.jsonl'], ['d/test.jsonl'], 'd/schema.json')
    >>> classify_uploads(["test.jsonl"]).train  # a lone test.jsonl is all the data there is: split it
    ['test.jsonl']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

TEST_FILE = "test.jsonl"  # beside other data: the test split as it is (no random split)
SCHEMA_SUFFIX = "schema.json"  # e.g. schema.json, tickets.schema.json: the replies' JSON Schema, not data


@dataclass
class Uploads:
    train: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    schema: str | None = None


def is_schema_file(path: str | Path) -> bool:
    return Path(path).name.endswith(SCHEMA_SUFFIX)


def classify_uploads(paths: list[str]) -> Uploads:
    """Training files, the test split (a `test.jsonl` uploaded with other data) and the first schema file."""
    names = {Path(p).name: p for p in paths}
    test = [names[TEST_FILE]] if TEST_FILE in names and len(paths) > 1 else []
    schemas = [p for p in paths if p not in test and is_schema_file(p)]
    return Uploads(train=[p for p in paths if p not in test and p not in schemas], test=test,
                   schema=schemas[0] if schemas else None)
