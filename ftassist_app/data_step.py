"""Data step: build train/test sets from uploaded files and describe the result for the chat.

`build_data` calls `ftassist.data.build.build_dataset`; `describe_data` turns its result into
markdown (format, counts, examples per check, split sizes); `offered_fixes` maps findings to
the DataConfig switches that fix them, labelled with counts ("Drop 12 duplicates").
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftassist.config import DataConfig
from ftassist.errors import UserError
from ftassist.snippets import cli_command

# DataConfig switch -> (words that mark a finding it fixes, label template)
FIXES: dict[str, tuple[tuple[str, ...], str]] = {
    "drop_duplicates": (("duplicate",), "Drop {n} duplicates"),
    "mask_pii": (("pii", "email", "phone", "card", "iban", "personal"), "Mask {n} personal data items"),
    "drop_overlength": (("too_long", "overlength", "over_length", "long"), "Drop {n} over-long examples"),
}
DROP_INVALID = "drop_invalid"


@dataclass
class Fix:
    switch: str
    label: str
    count: int


def build_config(inputs: list[str], out: Path, model: str, fixes: dict[str, bool], max_rows: int = 0) -> DataConfig:
    """The DataConfig the app builds for `inputs` (a folder's train/test.jsonl pair is kept as a pair)."""
    names = {Path(p).name: p for p in inputs}
    test_inputs = [names["test.jsonl"]] if "test.jsonl" in names and len(inputs) > 1 else []
    train = [p for p in inputs if p not in test_inputs]
    schemas = [p for p in train if Path(p).name.endswith("schema.json")]
    train = [p for p in train if p not in schemas]
    return DataConfig(inputs=train, test_inputs=test_inputs, schema=schemas[0] if schemas else None,
                      out=str(out), model=model, max_rows=max_rows, **{k: v for k, v in fixes.items() if v})


def stash_uploads(files: list[str], folder: Path) -> list[str]:
    """Copy uploaded files (gradio's temp cache) into the session's folder; returns the copies."""
    if not files:
        raise UserError("no files were attached: drop a JSONL, CSV, JSON, Parquet or XLSX file into the message box")
    folder.mkdir(parents=True, exist_ok=True)
    kept = []
    for src in files:
        dst = folder / Path(src).name
        shutil.copyfile(src, dst)
        kept.append(str(dst))
    return kept


def build_data(cfg: DataConfig) -> Any:
    """Run the data build (raises ConfigError/UserError for the user's mistakes)."""
    from ftassist.data.build import build_dataset

    cfg.validate()
    return build_dataset(cfg)


def offered_fixes(findings: list[Any], applied: dict[str, bool]) -> list[Fix]:
    """Fixes worth offering for `findings`, skipping switches already on."""
    fixes = []
    for switch, (words, template) in FIXES.items():
        n = sum(1 for f in findings if any(w in f.check.lower() for w in words))
        if n and not applied.get(switch):
            fixes.append(Fix(switch, template.format(n=n), n))
    errors = {f.row for f in findings if f.severity == "error" and f.row is not None}
    if errors and not applied.get(DROP_INVALID):
        fixes.append(Fix(DROP_INVALID, f"Drop {len(errors)} invalid rows", len(errors)))
    return fixes


def describe_data(result: Any, cfg: DataConfig, examples_per_check: int = 2) -> str:
    """Markdown for the chat: summary, findings counted by check with examples, and the CLI command."""
    findings = list(result.findings)
    lines = [f"**Data checked:** {result.train_rows} train / {result.test_rows} test examples."]
    if getattr(result, "summary", ""):
        lines += ["", "```text", str(result.summary).strip(), "```"]
    if findings:
        by_sev = Counter(f.severity for f in findings)
        lines += ["", "**Findings:** " + ", ".join(f"{n} {sev}" for sev, n in sorted(by_sev.items())), ""]
        lines += ["| check | severity | count | example |", "|---|---|---|---|"]
        for check, n in sorted(Counter(f.check for f in findings).items()):
            shown = [f for f in findings if f.check == check][:examples_per_check]
            sev = shown[0].severity
            ex = "; ".join(_one_line(f) for f in shown)
            lines.append(f"| `{check}` | {sev} | {n} | {ex} |")
    else:
        lines += ["", "No problems found."]
    lines += ["", "Same thing from the command line:", "```bash", cli_command("data build", cfg), "```"]
    return "\n".join(lines)


def _one_line(f: Any) -> str:
    where = f"row {f.row}" if f.row is not None else "data set"
    text = f"{where}: {f.message}"
    return text.replace("|", "\\|").replace("\n", " ")[:200]


def lengths_chart(result: Any) -> str | None:
    path = Path(result.out) / "lengths.png"
    return str(path) if path.exists() else None
