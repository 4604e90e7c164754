"""`ftassist data build`: the user's files -> validated, fixed, split chat sets plus reports.

    from ftassist.data.build import build_dataset
    result = build_dataset(DataConfig(inputs=["tickets.csv"], out="data/"))
    print(result.summary); raise SystemExit(result.exit_code)

Writes into `cfg.out` in one atomic rename: train.jsonl, test.jsonl, schema.json (JSON tasks),
fingerprint.json (the data set's version: `ftassist.data.fingerprint`),
hf_dataset/ (datasets.DatasetDict), provenance.jsonl (documents: the source passage of each
train/test line), report.json, report.md, lengths.png, dataset_card.md. When errors remain
(exit code 1) only the reports are written. With `cfg.teacher_url`, documents become pairs
written by that teacher model (`ftassist.data.teacher`); otherwise by templates.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftassist.config import DEFAULT_MODEL, DataConfig
from ftassist.data.checks import class_labels, load_tokenizer, prompt_key, reply, usable_messages, valid_messages, validate_records
from ftassist.data.findings import Finding, count_by_severity
from ftassist.data.fingerprint import FILE as FINGERPRINT_FILE, fingerprint
from ftassist.data.fixes import apply_fixes
from ftassist.data.loaders import file_kind
from ftassist.data.pii import mask_pii
from ftassist.data.records import DOCUMENT_KINDS, FileInfo, load_records
from ftassist.data.report import DataReport, build_report, length_stats, write_reports
from ftassist.schema import is_json_task, parse_json_reply
from ftassist.data.split import split_rows
from ftassist.errors import UserError
from ftassist.files import atomic_dir, write_jsonl_atomic, write_json_atomic
from ftassist.schema import MAJORITY_TOLERANCE, infer_schema, load_schema

if TYPE_CHECKING:
    from ftassist.data.teacher import Teacher

OUR_FILES = {"train.jsonl", "test.jsonl", "schema.json", "hf_dataset", "provenance.jsonl", "report.json", "report.md", "lengths.png",
             "dataset_card.md", "evidence.json", "fingerprint.json"}
SECRET_FIELDS = ("teacher_api_key",)


@dataclass
class DataResult:
    """What a build produced: the folder, exit code (0 usable, 1 errors remain), a short summary,
    every finding, the split sizes, per-file detection info and the report.json object."""

    out: Path
    exit_code: int
    summary: str
    findings: list[Finding] = field(default_factory=list)
    train_rows: int = 0
    test_rows: int = 0
    files: list[FileInfo] = field(default_factory=list)
    report: DataReport = field(default_factory=lambda: DataReport())


def check_out_folder(out: Path, inputs: list[str]) -> None:
    """UserError when writing `out` could destroy the user's files (it is replaced as a whole)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; name a folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OUR_FILES and not p.name.startswith("."))
        if foreign:
            raise UserError(f"--out {out}: the folder holds other files ({', '.join(foreign[:3])}); it is replaced on each build, "
                            "so name a new or empty folder")
    for p in inputs:
        if out.resolve() in Path(p).resolve().parents:
            raise UserError(f"--out {out}: holds the input {p}; name a different folder")


def build_dataset(cfg: DataConfig) -> DataResult:
    """Load, validate, fix, split and export per `cfg`; returns a DataResult.

    Raises UserError (exit 2) when an input cannot be used at all, naming the file (and line), and,
    with a teacher, when its endpoint is unreachable or does not serve the model (before any work).
    """
    cfg.validate()
    out = Path(cfg.out)
    check_out_folder(out, cfg.inputs + cfg.test_inputs)
    schema = load_schema(cfg.schema) if cfg.schema else None
    schema_source = f"given: {cfg.schema}" if cfg.schema else "none (replies are not JSON)"
    teacher = connect_teacher(cfg) if cfg.teacher_url else None
    loaded = load_records(cfg.inputs, cfg.column_map, "train", teacher)
    if cfg.test_inputs:
        held_out = load_records(cfg.test_inputs, cfg.column_map, "test", teacher)
        loaded.examples += held_out.examples
        loaded.files += held_out.files
        loaded.findings += held_out.findings
    if teacher is not None:
        loaded.findings += teacher.final_findings()
    examples = loaded.examples
    if cfg.max_rows and len(examples) > cfg.max_rows:
        raise UserError(f"{', '.join(f.path for f in loaded.files)}: {len(examples)} rows, more than the {cfg.max_rows} "
                        "this build accepts; keep a sample of at most that many rows (or run `ftassist data build` on "
                        "your own machine, which has no cap)")
    if not examples and not (teacher is not None and teacher.stats.asked):
        raise UserError(f"{cfg.inputs[0]}: no readable examples in the inputs; see the problems above or check the files")
    if cfg.system_prompt:
        for ex in examples:
            if isinstance(ex.messages, list) and not (ex.messages and isinstance(ex.messages[0], dict) and ex.messages[0].get("role") == "system"):
                ex.messages = [{"role": "system", "content": cfg.system_prompt}, *ex.messages]
    tokenizer = load_tokenizer(cfg.model)

    replies = [m[-1]["content"] for m in map(valid_messages, examples) if m]
    if schema is None and is_json_task(replies):
        values = [v for ok, v in map(parse_json_reply, replies) if ok]
        schema = infer_schema(values, MAJORITY_TOLERANCE)
        schema_source = f"inferred from the majority of {len(values)} JSON replies"

    findings, lengths = validate_records(examples, schema=schema, tokenizer=tokenizer, max_length=cfg.max_length,
                                         schema_inferred=not cfg.schema)
    findings = loaded.findings + findings
    msgs = usable_messages(examples, findings)
    fixed = apply_fixes(examples, findings, msgs, drop_duplicates=cfg.drop_duplicates, drop_overlength=cfg.drop_overlength,
                        drop_invalid=cfg.drop_invalid, mask_pii_values=cfg.mask_pii)

    if cfg.test_inputs:
        train_idx = [i for i in fixed.kept if examples[i].split == "train"]
        test_idx = [i for i in fixed.kept if examples[i].split == "test"]
        split_desc = f"test split from {', '.join(cfg.test_inputs)}"
    else:
        kept_msgs = [fixed.messages[i] for i in fixed.kept]
        labels = class_labels([reply(m) for m in kept_msgs])
        train_idx, test_idx = split_rows(fixed.kept, [prompt_key(m) for m in kept_msgs],
                                         [reply(m).strip() for m in kept_msgs] if labels else None, cfg.test_size, cfg.seed)
        split_desc = (f"random split, test_size {cfg.test_size}, seed {cfg.seed}, duplicates kept together"
                      + (", stratified by label" if labels else ""))
    remaining = fixed.remaining
    if not train_idx:
        extra = Finding("no_examples", "error", None, None, "no training examples are left; fix the errors instead of dropping the rows")
        findings.append(extra)
        remaining.append(extra)
    exit_code = 1 if any(f.severity == "error" for f in remaining) else 0

    info: dict[str, Any] = {
        "exit_code": exit_code, "model": cfg.model or DEFAULT_MODEL, "inputs": [f.to_dict() for f in loaded.files],
        "counts": {"rows_in": len(examples), "train": len(train_idx) if exit_code == 0 else 0,
                   "test": len(test_idx) if exit_code == 0 else 0, "dropped": fixed.dropped, "masked": fixed.masked},
        "split": split_desc, "schema": {"source": schema_source, "schema": schema},
        "token_lengths": length_stats(lengths.known(), cfg.max_length),
        "open_findings_by_severity": count_by_severity(remaining),
        "config": {k: ("***" if k in SECRET_FIELDS and v else v) for k, v in vars(cfg).items()},
    }
    if any(f.format.startswith("document") for f in loaded.files):
        info["documents"] = {"method": "teacher", **teacher.describe()} if teacher is not None else {"method": "template"}
    report = build_report(info, findings)
    with atomic_dir(out) as tmp:
        if exit_code == 0:
            train = [{"messages": fixed.messages[i]} for i in train_idx]
            test = [{"messages": fixed.messages[i]} for i in test_idx]
            write_jsonl_atomic(tmp / "train.jsonl", train)
            write_jsonl_atomic(tmp / "test.jsonl", test)
            prov = provenance_rows(examples, train_idx, test_idx, cfg.mask_pii)
            if prov:
                write_jsonl_atomic(tmp / "provenance.jsonl", prov)
            if schema is not None:
                if cfg.schema:
                    shutil.copyfile(cfg.schema, tmp / "schema.json")
                else:
                    write_json_atomic(tmp / "schema.json", schema)
            save_hf_dataset(tmp / "hf_dataset", train, test)
            report["fingerprint"] = fingerprint(tmp, cfg.inputs + cfg.test_inputs, vars(cfg), cfg.schema)
            write_json_atomic(tmp / FINGERPRINT_FILE, report["fingerprint"])
        write_reports(tmp, report, findings, lengths.known(), schema)
    summary = render_summary(out, loaded.files, findings, remaining, fixed.dropped, fixed.masked,
                             len(train_idx), len(test_idx), exit_code)
    if teacher is not None:
        st = teacher.stats
        summary += (f"\nteacher {teacher.model}: {st.asked} passages asked, {st.pairs} pairs from {st.answered}; "
                    f"{st.invalid} replies without pairs, {st.failed} failed requests")
    return DataResult(out, exit_code, summary, findings, info["counts"]["train"], info["counts"]["test"], loaded.files, report)


def connect_teacher(cfg: DataConfig) -> Teacher:
    """The teacher of `cfg`, checked to answer and serve the model; UserError when no input is a
    document (the teacher only writes pairs from documents), the URL is down or the model unknown."""
    from ftassist.data.teacher import Teacher

    if not any(file_kind(Path(p)) in DOCUMENT_KINDS for p in cfg.inputs + cfg.test_inputs):
        raise UserError(f"--teacher-url {cfg.teacher_url}: the teacher writes pairs from documents (TXT, MD, PDF, DOCX) and "
                        "none of the inputs is one; drop --teacher-url or add a document")
    return Teacher.connect(cfg)


def provenance_rows(examples: list, train_idx: list[int], test_idx: list[int], mask: bool = False) -> list[dict]:
    """One row per train/test line made from a document ({split, line, source, file, passage, heading, text,
    method[, model]}), in file order; [] when no example came from a document. `mask` masks personal data
    in the passage text as the examples were masked."""
    rows = []
    for split, idx in (("train", train_idx), ("test", test_idx)):
        for line, i in enumerate(idx, 1):
            prov = examples[i].meta.get("provenance")
            if prov:
                text = mask_pii(prov["text"])[0] if mask else prov["text"]
                rows.append({"split": split, "line": line, "source": examples[i].source, **prov, "text": text})
    return rows


def save_hf_dataset(path: Path, train: list[dict], test: list[dict]) -> None:
    """Save train/test as a datasets.DatasetDict (save_to_disk), without progress bars; empty splits are left out."""
    import datasets
    from datasets.utils import logging as ds_logging

    features = datasets.Features({"messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})})
    was_on = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        # An empty split is left out: datasets writes one it cannot read back (from_list([]) drops the features,
        # and load_from_disk fails on a split of 0 rows), so a one-row input would break the whole folder.
        dd = datasets.DatasetDict({name: datasets.Dataset.from_list(rows, features=features)
                                   for name, rows in (("train", train), ("test", test)) if rows})
        dd.save_to_disk(str(path))
    finally:
        if was_on:
            ds_logging.enable_progress_bar()


def render_summary(out: Path, files: list[FileInfo], findings: list[Finding], remaining: list[Finding], dropped: dict[str, int],
                   masked: int, n_train: int, n_test: int, exit_code: int) -> str:
    """A few human lines: rows in/out, format per file, finding counts, where the files went."""
    total = sum(f.rows for f in files)
    lines = [f"read {total} rows from {len(files)} file(s):"]
    lines += [f"  {f.path} [{f.split}]: {f.format}, {f.rows} rows ({f.kind}, {f.encoding})" for f in files]
    sev = count_by_severity(findings)
    left = count_by_severity(remaining)
    lines.append(f"findings: {sev['error']} errors, {sev['warning']} warnings, {sev['info']} info"
                 + (f" ({left['error']} errors left after fixes)" if left["error"] != sev["error"] else ""))
    if dropped or masked:
        lines.append("fixed: " + ", ".join([f"dropped {v} {k}" for k, v in dropped.items()] + ([f"masked {masked} personal data values"] if masked else [])))
    if exit_code == 0:
        lines.append(f"wrote train {n_train} rows, test {n_test} rows to {out}/ (train.jsonl, test.jsonl, hf_dataset/, report.md)")
    else:
        lines.append(f"errors found: train/test not written; see {out}/report.md, fix the data or pass --drop-invalid")
    return "\n".join(lines)
