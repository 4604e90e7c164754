"""A history of evals, one JSON line per run, so runs from different trainings can be compared.

By default the file is `history.jsonl` in the parent folder of the eval's `--out`
(`--out evals/run-a` and `--out evals/run-b` share `evals/history.jsonl`); pass `--history FILE`
to share one file across any layout.
Only rows on the same test set (same SHA-256) are comparable; the table says which are, and which
came from another build of the data (`ftassist.data.fingerprint`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ftassist.markdown import table
from ftassist.files import write_text_atomic
from ftassist.evaluation.summary import HEADLINE

if TYPE_CHECKING:  # report imports history's neighbours; the type alone is needed here
    from ftassist.evaluation.report import EvalReport


def history_path(out: str | Path, history: str | None = None) -> Path:
    """The history file: `history` when given, else history.jsonl beside the `out` folder."""
    return Path(history) if history else Path(out).resolve().parent / "history.jsonl"


def history_entry(report: EvalReport) -> dict:
    """The one-line summary of a report: when, where, which test set, and each arm's headline numbers."""
    task = report["data"]["task"]
    metrics = HEADLINE[task]
    return {
        "created": report["created"],
        "out": report["out"],
        "data": report["data"]["path"],
        "data_sha256": report["data"]["sha256"],
        "dataset": report["data"].get("dataset"),
        "task": task,
        "n": report["data"]["examples"],
        "temperature": report["config"]["temperature"],
        "samples": report["config"]["samples"],
        "arms": [{"name": a["name"], "endpoint": a.get("endpoint"), **{m: a[g][m]["value"] for g, m in metrics}}
                 for a in report["arms"]],
    }


def append_history(path: Path, entry: dict) -> None:
    """Add `entry` as the last line of the history file (rewritten atomically)."""
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    write_text_atomic(path, old + json.dumps(entry, ensure_ascii=False) + "\n")


def read_history(path: Path) -> list[dict]:
    """The entries of a history file, oldest first; lines that are not JSON objects are skipped."""
    path = Path(path)
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("arms"), list):
            entries.append(entry)
    return entries


def render_history(entries: list[dict], current_sha: str | None = None, current_dataset: str | None = None,
                   last: int = 20) -> str:
    """A markdown table of the last `last` entries, one row per arm and its endpoint; marks rows on another
    test set, and rows whose test set came from another build of the data (`dataset`, its fingerprint id)."""
    if not entries:
        return "_No earlier evals recorded._"
    metrics = list(dict.fromkeys(k for e in entries for a in e["arms"] for k in a if k not in ("name", "endpoint")))
    head = ["when", "out", "arm", "endpoint", *[m.replace("_", " ") for m in metrics], "n", "same test set", "data set"]
    rows = []
    for e in entries[-last:]:
        same = "yes" if current_sha is None or e.get("data_sha256") == current_sha else "no (not comparable)"
        for a in e["arms"]:
            cells = [str(e.get("created", ""))[:16], str(e.get("out", "")), a["name"], str(a.get("endpoint") or "-")]
            cells += [f"{100 * a[m]:.1f}%" if isinstance(a.get(m), (int, float)) else "-" for m in metrics]
            data = e.get("dataset") or "-"
            if current_dataset and e.get("dataset") and e["dataset"] != current_dataset:
                data += " (another build of the data)"
            cells += [str(e.get("n", "")), same, data]
            rows.append(cells)
    return "\n".join(table(head, rows))
