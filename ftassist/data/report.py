"""The build's reports: report.json (machine-readable), report.md (with a token-length histogram,
lengths.png, and example rows per finding) and dataset_card.md."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, TypedDict, cast

from ftassist.data.findings import Finding, count_by_check, count_by_severity
from ftassist.markdown import table
from ftassist.files import write_json_atomic, write_text_atomic

EXAMPLES_PER_CHECK = 3


def length_stats(lengths: list[int], max_length: int) -> dict[str, Any]:
    """{count, min, mean, p50, p95, max, over_max_length} of token lengths ({} when none)."""
    if not lengths:
        return {}
    s = sorted(lengths)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
    return {"count": len(s), "min": s[0], "mean": round(sum(s) / len(s), 1), "p50": pick(0.5), "p95": pick(0.95),
            "max": s[-1], "max_length": max_length, "over_max_length": sum(n > max_length for n in s)}


def chart_range(lengths: list[int], max_length: int) -> tuple[float, float]:
    """The x range of the length chart: the data with a margin, stretched to max_length only when it is near.

    >>> chart_range([100, 200], 1024)
    (90.0, 210.0)
    >>> chart_range([100, 900], 1024)
    (20.0, 1075.2)
    """
    lo, hi = min(lengths), max(lengths)
    margin = max(0.1 * (hi - lo), 0.05 * hi, 1.0)
    high = max(hi + margin, 1.05 * max_length) if max_length <= 1.5 * hi else hi + margin
    return float(max(0.0, lo - margin)), float(round(high, 1))


def plot_lengths(lengths: list[int], max_length: int, path: Path) -> bool:
    """Write a histogram PNG of token lengths with the max_length line; False when there is nothing to plot."""
    if not lengths:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    low, high = chart_range(lengths, max_length)
    ax.hist(lengths, bins=min(50, max(5, len(set(lengths)))), range=(low, max(lengths)), color="#4C72B0")
    ax.set_xlim(low, high)
    if max_length <= high:
        ax.axvline(max_length, color="#C44E52", linestyle="--", label=f"max_length {max_length}")
    else:  # off the chart: say where it is rather than squeeze the data into a sliver of the axis
        ax.plot([], [], " ", label=f"max_length {max_length} (off the chart, {max_length - max(lengths)} tokens of room)")
    ax.set_xlabel("tokens per example (chat template applied)")
    ax.set_ylabel("examples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


class DataReport(TypedDict, total=False):
    """report.json of a data build: written once by `write_reports` (with report.md and the dataset card)."""

    exit_code: int  # 0 usable, 1 errors remain (then no train/test files are written)
    model: str  # whose tokenizer and chat template measured the lengths
    inputs: list[dict[str, Any]]  # per file: path, split, kind, encoding, format, rows, why it was read so
    counts: dict[str, Any]  # rows_in, train, test, dropped (per reason), masked
    split: str  # how train and test were made
    schema: dict[str, Any]  # source and the schema (None for free-text tasks)
    token_lengths: dict[str, Any]  # count, min, mean, p50, p95, max, over_max_length, max_length ({} when none)
    open_findings_by_severity: dict[str, int]  # what the drop/mask flags left
    config: dict[str, Any]  # the DataConfig, secrets masked
    documents: dict[str, Any]  # how documents became pairs (templates or the teacher), when any were read
    findings_by_severity: dict[str, int]
    findings_by_check: dict[str, int]
    findings: list[dict[str, Any]]
    fingerprint: dict[str, Any]  # the data set version (`data.fingerprint`), when the build is usable


def build_report(info: dict[str, Any], findings: list[Finding]) -> DataReport:
    """The report.json object: `info` (inputs, counts, lengths, schema) plus all findings and their counts."""
    return cast(DataReport, {**info, "findings_by_severity": count_by_severity(findings),
                             "findings_by_check": count_by_check(findings), "findings": [f.to_dict() for f in findings]})


def render_report(report: DataReport, findings: list[Finding], has_plot: bool) -> str:
    """report.md: summary, inputs with detection reasons, findings table, examples per check."""
    c = report["counts"]
    lines = ["# Data report", "", f"Exit code **{report['exit_code']}**: " +
             ("usable." if report["exit_code"] == 0 else "errors found; fix them or use the --drop-* flags, then build again."), "",
             f"- rows read: {c['rows_in']}; train: {c['train']}; test: {c['test']}",
             f"- dropped: {', '.join(f'{k} {v}' for k, v in c['dropped'].items()) or 'none'}; personal data masked: {c['masked']}",
             "- findings: " + ", ".join(f"{k} {v}" for k, v in report["findings_by_severity"].items()),
             f"- schema: {report['schema']['source']}"]
    if "documents" in report:
        lines.append(f"- documents: {describe_documents(report['documents'])}")
    lines += ["", "## Inputs", "", *table(["file", "split", "kind", "encoding", "format", "rows", "why"],
                                          [[f"`{f['path']}`", f["split"], f["kind"], f["encoding"], f["format"], f["rows"],
                                            f["reason"]] for f in report["inputs"]])]
    st = report["token_lengths"]
    lines += ["", "## Token lengths", ""]
    if st:
        lines.append(f"Tokenizer and chat template of `{report['model']}`: min {st['min']}, median {st['p50']}, p95 {st['p95']}, "
                     f"max {st['max']}; {st['over_max_length']} over max_length {st['max_length']} (would be truncated).")
        if has_plot:
            lines += ["", "![token lengths](lengths.png)"]
    else:
        lines.append("No valid examples to measure.")
    lines += ["", "## Findings", ""]
    if not findings:
        lines.append("None.")
    else:
        by_check: dict[str, list[Finding]] = defaultdict(list)
        for f in findings:
            by_check[f.check].append(f)
        ranked = sorted(by_check.items(), key=lambda kv: (["error", "warning", "info"].index(kv[1][0].severity), kv[0]))
        lines += table(["check", "severity", "count", "fix"],
                       [[f"`{check}`", fs[0].severity, len(fs), _md(fs[0].message)] for check, fs in ranked])
        for check, fs in sorted(by_check.items()):
            lines += ["", f"### `{check}` ({len(fs)})", ""]
            for f in fs[:EXAMPLES_PER_CHECK]:
                where = f"row {f.row}" if f.row is not None else "file"
                lines.append(f"- {where} `{f.source or ''}` {f.field or ''}: {_md(f.message)}")
                if f.example:
                    lines.append(f"  > {_md(f.example)}")
            if len(fs) > EXAMPLES_PER_CHECK:
                lines.append(f"- ... and {len(fs) - EXAMPLES_PER_CHECK} more in report.json")
    return "\n".join(lines) + "\n"


def describe_documents(doc: dict[str, Any]) -> str:
    """One line on how documents became pairs, for report.md and the dataset card.

    >>> describe_documents({"method": "template"})
    'one pair per passage by templates; provenance.jsonl gives the source passage of each line'
    """
    tail = "; provenance.jsonl gives the source passage of each line"
    if doc.get("method") != "teacher":
        return "one pair per passage by templates" + tail
    return (f"pairs written by the teacher model `{doc['model']}` at {doc['url']} (temperature {doc['temperature']}, "
            f"response_format {doc['response_format']}): {doc['pairs']} pairs from {doc['answered']} of {doc['asked']} passages, "
            f"{doc['invalid']} replies without pairs, {doc['failed']} failed requests" + tail)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_card(report: DataReport, schema: dict | None) -> str:
    """dataset_card.md, written with huggingface_hub's DatasetCard: metadata (task, size, the two splits'
    files, the data set version) as the Hub reads it, then prose."""
    from huggingface_hub import DatasetCard, DatasetCardData

    c = report["counts"]
    total = c["train"] + c["test"]
    size = "n<1K" if total < 1000 else "1K<n<10K" if total < 10_000 else "10K<n<100K" if total < 100_000 else "n>100K"
    formats = sorted({f["format"] for f in report["inputs"]})
    version = (report.get("fingerprint") or {}).get("id")
    meta = DatasetCardData(task_categories=["text-generation"], size_categories=[size], tags=["ftassist"],
                           configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "train.jsonl"},
                                                                             {"split": "test", "path": "test.jsonl"}]}],
                           **({"ftassist_version_id": version} if version else {}))
    lines = ["# Dataset card", "", "Chat examples in OpenAI messages format (`{\"messages\": [{\"role\", \"content\"}, ...]}`), "
             "built by `ftassist data build`.", "", "## Contents", "",
             f"- train: {c['train']} examples; test: {c['test']} examples ({report['split']})",
             "- sources: " + ", ".join(f"`{Path(f['path']).name}` ({f['format']}, {f['rows']} rows)" for f in report["inputs"]),
             f"- input formats: {', '.join(formats)}",
             *([f"- from documents: {describe_documents(report['documents'])}"] if "documents" in report else []),
             f"- dropped while building: {', '.join(f'{k} {v}' for k, v in c['dropped'].items()) or 'none'}",
             f"- personal data masked: {c['masked']} values" if c["masked"] else "- personal data: not masked (see report.md)",
             f"- token lengths ({report['model']}): " + (f"median {report['token_lengths']['p50']}, max {report['token_lengths']['max']}"
                                                         if report["token_lengths"] else "n/a"),
             "", "## Reply format", ""]
    if schema is not None:
        lines += [f"Replies are JSON matching `schema.json` ({report['schema']['source']}).", "", "```json",
                  json.dumps(schema, indent=2)[:4000], "```"]
    else:
        lines.append("Replies are free text.")
    lines += ["", "## Known issues", "", "Findings left after the build: " +
              (", ".join(f"{k} {v}" for k, v in report["findings_by_check"].items()) or "none") + " (details in report.md).", ""]
    if version:
        lines += [f"Data set version `{version}` (`fingerprint.json`: hashes of the splits, the inputs and the settings).", ""]
    return str(DatasetCard(f"---\n{meta.to_yaml()}\n---\n\n" + "\n".join(lines)))


def write_reports(folder: Path, report: DataReport, findings: list[Finding], lengths: list[int], schema: dict | None) -> None:
    """Write report.json, report.md, lengths.png (when there are lengths) and dataset_card.md into `folder`."""
    has_plot = plot_lengths(lengths, report["token_lengths"].get("max_length", 0), folder / "lengths.png")
    write_json_atomic(folder / "report.json", report)
    write_text_atomic(folder / "report.md", render_report(report, findings, has_plot))
    write_text_atomic(folder / "dataset_card.md", render_card(report, schema))
