"""Dataset versions: a content fingerprint of what a data build wrote, and of what it was built from.

`ftassist data build` writes `fingerprint.json` beside train.jsonl/test.jsonl: the SHA-256 of each
written split, of each input file, and of the settings that shaped the output, and one short
`id` over all of them. A training run records the id of the data it read (`run.json`,
"data_fingerprint"), an eval records the id of its test set's build, and the eval history groups
by it, so a changed data set is said so instead of being compared silently.

    >>> short_id({"train.jsonl": "ab", "test.jsonl": "cd"}) == short_id({"test.jsonl": "cd", "train.jsonl": "ab"})
    True
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

FILE = "fingerprint.json"
# Settings that change what a build writes (paths and caps do not).
SHAPING = ("column_map", "system_prompt", "test_size", "seed", "max_length", "drop_duplicates", "drop_overlength",
           "drop_invalid", "mask_pii", "model")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def short_id(parts: dict[str, str]) -> str:
    """A 12-hex-digit id over named hashes (order-free)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def fingerprint(folder: Path, inputs: list[str], settings: dict[str, Any], schema: str | None = None) -> dict:
    """The fingerprint of the splits written in `folder`, the `inputs` they came from and the shaping `settings`."""
    splits = {name: sha256_file(folder / name) for name in ("train.jsonl", "test.jsonl", "schema.json")
              if (folder / name).is_file()}
    sources = {str(p): sha256_file(p) for p in inputs}
    if schema:
        sources[str(schema)] = sha256_file(schema)
    shaping = {k: settings.get(k) for k in SHAPING}
    config = hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()
    return {"id": short_id(splits), "splits": splits, "inputs": sources, "settings": shaping, "settings_sha256": config}


def read_fingerprint(folder: str | Path | None) -> dict | None:
    """The fingerprint.json of a built data folder, or None (older builds, hand-made folders)."""
    if folder is None:
        return None
    path = Path(folder) / FILE
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and "id" in value else None
