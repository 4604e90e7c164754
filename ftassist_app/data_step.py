"""Data step: build train/test sets from uploaded files and describe the result for the chat.

`build_data` calls `ftassist.data.build.build_dataset`; `describe_data` turns its result into
markdown (how each file was read, the schema, the findings with file and line, the command); the
fixes offered are the library's (`ftassist.data.fixes.offered_fixes`).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from ftassist.config import DataConfig
from ftassist.data.uploads import classify_uploads, is_schema_file
from ftassist.data.fixes import Fix, offered_fixes  # noqa: F401 - the chat offers the library's fixes
from ftassist.errors import UserError
from ftassist.markdown import cell, table
from ftassist.snippets import cli_command

def data_config(inputs: list[str], out: Path, model: str, fixes: dict[str, bool], max_rows: int = 0,
                 column_map: dict[str, str] | None = None, schema: str | None = None) -> DataConfig:
    """The DataConfig the app builds for `inputs` (a folder's train/test.jsonl pair is kept as a pair);
    `column_map` the mapping the user chose for a table, `schema` a schema file they edited."""
    uploads = classify_uploads(inputs)
    mapping = {k: v for k, v in (column_map or {}).items() if v}
    switches: dict[str, Any] = {k: v for k, v in fixes.items() if v}
    return DataConfig(inputs=uploads.train, test_inputs=uploads.test, schema=schema or uploads.schema,
                      out=str(out), model=model, max_rows=max_rows, column_map=mapping,
                      **switches)


def mapping_needed(inputs: list[str]) -> Any:
    """The first input that is a table in no known format, with its suggested mapping (a
    `ftassist.data.formats.TableMapping`), or None."""
    from ftassist.data.formats import table_mapping

    for p in inputs:
        if is_schema_file(p):  # a schema the user gave, not data
            continue
        found = table_mapping(p)
        if found is not None:
            return found
    return None


def mapping_markdown(found: Any) -> str:
    """What the chat says about a table's mapping: each role, its column, and why."""
    why = dict(part.split("=", 1) for part in found.reason.removeprefix("columns mapped by ").split(", ") if "=" in part)
    lines = [f"`{Path(found.path).name}` is a table with the columns {', '.join(f'`{c}`' for c in found.columns)}. "
             "I would read it as:", "",
             *table(["role", "column", "why"], [[ROLE_WORDS[role], f"`{found.mapping[role]}`",
                                                  why.get(role, "").partition(" (")[2].rstrip(")")]
                                                 for role in ("instruction", "input", "output", "system")
                                                 if found.mapping.get(role)])]
    if found.guess:
        lines += ["", "Part of this is a **guess** from the contents: check it in the dropdowns below the chat, "
                  "then press **Use this mapping**."]
    else:
        lines += ["", "Change it in the dropdowns below the chat if that is wrong."]
    return "\n".join(lines)


ROLE_WORDS = {"instruction": "the prompt (user message)", "input": "extra context (appended to the prompt)",
              "output": "the reply to learn", "system": "the system prompt"}


def save_schema(text: str, folder: Path) -> str:
    """Write a schema the user edited into their uploads as schema.json, checked first; returns its path.
    UserError (naming what is wrong) when it is not a valid JSON Schema."""
    from ftassist.files import write_text_atomic
    from ftassist.schema import load_schema

    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / ".schema-edit.json"
    probe.write_text(text, encoding="utf-8")
    try:
        load_schema(probe)
    except UserError as exc:
        raise UserError(str(exc).replace(f"--schema {probe}", "the edited schema")) from exc
    finally:
        probe.unlink(missing_ok=True)
    path = folder / "schema.json"
    write_text_atomic(path, text)
    return str(path)


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


def describe_data(result: Any, cfg: DataConfig, max_findings: int = 12) -> str:
    """Markdown for the chat: summary, how each file was read, the schema, the findings as a table
    (file, line, check, what is wrong and the fix) and the CLI command."""
    findings = list(result.findings)
    lines = [f"**Data checked:** {result.train_rows} train / {result.test_rows} test examples."]
    if getattr(result, "summary", ""):
        lines += ["", "```text", str(result.summary).strip(), "```"]
    for f in getattr(result, "files", []):
        lines.append(f"- `{Path(f.path).name}`: {f.format} — {f.reason}")
    schema = (getattr(result, "report", {}) or {}).get("schema") or {}
    if schema.get("schema"):
        minority = sum(f.check == "schema_minority" for f in findings)
        note = f"; {minority} row(s) disagree with it (below)" if minority else ""
        lines += ["", f"**Schema** ({schema.get('source', '')}{note}); edit it in the **Data** tab if it is wrong:", "",
                  *schema_table(schema["schema"])]
    if findings:
        by_sev = Counter(f.severity for f in findings)
        lines += ["", "**Findings:** " + ", ".join(f"{n} {sev}" for sev, n in sorted(by_sev.items())), ""]
        lines += findings_table(findings, max_findings)
        if len(findings) > max_findings:
            lines.append(f"\n… and {len(findings) - max_findings} more in the report (download it below).")
    else:
        lines += ["", "No problems found."]
    lines += ["", "Same thing from the command line:", "```bash", cli_command("data build", cfg), "```"]
    return "\n".join(lines)


def schema_table(schema: dict) -> list[str]:
    """Markdown rows, one per top-level field of an object schema: type, required, allowed values."""
    props = schema.get("properties") or {}
    if not props:
        return ["```json", json.dumps(schema, ensure_ascii=False)[:2000], "```"]
    required = set(schema.get("required") or [])
    return table(["field", "type", "required", "allowed values"],
                 [[f"`{name}`", _type_words(sub), "yes" if name in required else "no",
                   cell(", ".join(map(str, sub.get("enum", []))), CELL_LIMIT)] for name, sub in props.items()])


def _type_words(sub: dict) -> str:
    kind = sub.get("type") or ("enum" if "enum" in sub else "any")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    if "array" in kind and isinstance(sub.get("items"), dict):
        inner = sub["items"]
        fields = ", ".join(inner.get("properties", {}))
        kind = kind.replace("array", f"list of {_type_words(inner)}" + (f" ({fields})" if fields else ""))
    elif kind == "object" and sub.get("properties"):
        kind = f"object ({', '.join(sub['properties'])})"
    return kind


def findings_table(findings: list[Any], limit: int = 12) -> list[str]:
    """Markdown rows: file, line, check, severity, what is wrong (and the fix), the row's text; errors first."""
    order = {"error": 0, "warning": 1, "info": 2}
    shown = sorted(findings, key=lambda f: order.get(f.severity, 3))[:limit]
    return table(FINDING_COLUMNS, [[cell(file, CELL_LIMIT), line, f"`{f.check}`", f.severity, cell(f.message, CELL_LIMIT),
                                    cell(f.example, CELL_LIMIT, empty="")] for f in shown for file, line in [where(f)]])


FINDING_COLUMNS = ["file", "line", "check", "severity", "what is wrong", "the row"]


def findings_rows(findings: list[Any]) -> list[list[str]]:
    """Every finding as a row for a table (FINDING_COLUMNS), errors first: the failing rows, viewable."""
    order = {"error": 0, "warning": 1, "info": 2}
    return [[*where(f), f.check, f.severity, f.message, f.example or ""]
            for f in sorted(findings, key=lambda f: order.get(f.severity, 3))]


def schema_text(data_dir: str | Path) -> str:
    """The built data set's schema.json as text ("" when the task has none)."""
    path = Path(data_dir) / "schema.json"
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def where(f: Any) -> tuple[str, str]:
    """(file name, line) of a finding: its source "path:line" as the user knows the file; ("all", "-") for the whole set."""
    src = getattr(f, "source", None)
    if not src:
        return "all", "-"
    path, _, line = str(src).rpartition(":")
    if not path:
        return Path(src).name, "-"
    return Path(path).name, line.replace("row ", "")


CELL_LIMIT = 200  # characters of a table cell in the chat


def preview(data_dir: str | Path, n: int = 2) -> str:
    """The first `n` training examples as the model will see them: each message with its role."""
    from ftassist.files import read_jsonl

    path = Path(data_dir) / "train.jsonl"
    if not path.is_file():
        return ""
    parts = [f"**Preview: the first {min(n, len(rows := read_jsonl(path)))} training examples, as chat messages**"]
    for i, row in enumerate(rows[:n], 1):
        parts.append(f"\n*Example {i}*")
        for m in row["messages"]:
            text = str(m.get("content", "")).strip().replace("\n", "\n> ")
            parts.append(f"> **{m.get('role')}**: {text[:600]}")
    return "\n".join(parts)


def is_json_data(data_dir: str | Path) -> bool:
    """True when the built data set is a JSON task (it has a schema.json)."""
    return (Path(data_dir) / "schema.json").is_file()


def measure_evidence(data_dir: str | Path, model: str, rows: int) -> Any:
    """The base model measured with prompting on `rows` test rows (`ftassist.evidence`), saved as evidence.json."""
    from ftassist.config import EvidenceConfig
    from ftassist.evidence import gather

    return gather(EvidenceConfig(data=str(data_dir), model=model, rows=rows))


def report_file(result: Any) -> str | None:
    """The build's report.md, to offer as a download."""
    path = Path(result.out) / "report.md"
    return str(path) if path.is_file() else None


def lengths_chart(result: Any) -> str | None:
    path = Path(result.out) / "lengths.png"
    return str(path) if path.exists() else None
