"""Render an eval's report (a plain dict, saved as report.json) as markdown and write every file.

`write_report` writes report.json, report.md, rates.png, failures.png (JSON tasks) and
replies.jsonl into the output folder, each file atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypedDict, cast

from ftassist.evaluation.charts import failures_chart, rates_chart
from ftassist.evaluation.summary import HEADLINE, LABELS
from ftassist.evaluation.taxonomy import KINDS
from ftassist.markdown import cell, table
from ftassist.files import write_bytes_atomic, write_json_atomic, write_jsonl_atomic, write_text_atomic

DEFINITIONS = {
    "exact": "the extracted JSON equals the whole reference: every field right and nothing extra",
    "strict": "the whole reply is exactly one JSON value (whitespace aside)",
    "extractable": "a JSON object or array can be found in the reply (e.g. inside a code fence or after filler)",
    "schema_valid": "the extracted JSON passes the schema",
    "field_accuracy": "share of the reference's top-level fields whose value the reply matches exactly "
                      "(mean over examples; a reply without JSON scores 0)",
    "exact_match": "the reply equals the reference, surrounding whitespace aside",
    "rougeL": "ROUGE-L F-measure against the reference (rouge_score)",
}


class EvalReport(TypedDict, total=False):
    """report.json: one eval, as `run_eval` builds it, `write_report` writes it and `read_report` reads it back.

    `arms` (one `summary.summarize_arm` dict per arm: rates and means with 95% intervals, the content
    reading for JSON tasks, speed) is what the card, the chat and the tracker read; the rest is for report.md.
    """

    created: str  # ISO time, UTC
    out: str  # the eval's folder
    config: dict[str, Any]  # the EvalConfig, keys masked
    endpoints: list[dict[str, Any]]  # URL and the arms each served
    data: dict[str, Any]  # path, sha256, examples, task ("json" or "text"), dataset (the data build's id)
    schema: dict[str, Any] | None  # source and the schema the replies were validated against
    arms: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]  # each arm against the first: McNemar test on the primary metric
    constrained_speed: list[dict[str, Any]]  # structured outputs' speed against the same model without
    probe: dict[str, Any] | None  # the forgetting probe
    worst: list[dict[str, Any]]  # the rows the arms got most wrong
    files: dict[str, Any]  # rates, failures (JSON tasks; else None), replies: file names in `out`
    notes: list[str]
    table: str  # the headline table (markdown)
    history: dict[str, Any]  # where the history lives, and its table


def pct(entry: dict) -> str:
    """'45.0% (32.9-57.7)': a rate or mean entry with its 95% interval, in percent."""
    return f"{100 * entry['value']:.1f}% ({100 * entry['low']:.1f}-{100 * entry['high']:.1f})"


def markdown_table(arms: list[dict], task: str) -> str:
    """One row per arm: every headline metric with its 95% CI, n, then the endpoint that served it."""
    metrics = HEADLINE[task]
    head = ["arm", *[f"{LABELS[m]} % (95% CI)" for _, m in metrics], "n", "endpoint"]
    return "\n".join(table(head, [[arm["name"], *[pct(arm[g][m]) for g, m in metrics], arm["n"], arm.get("endpoint") or "-"]
                                   for arm in arms]))


def endpoints_line(report: EvalReport) -> str:
    """'Endpoint URL' for one endpoint, else 'Endpoints: URL (arm, arm); URL (arm)'."""
    found = report.get("endpoints") or [{"url": report["config"].get("base_url"), "arms": None}]
    if len(found) == 1:
        return f"Endpoint {found[0]['url']}"
    return "Endpoints: " + "; ".join(f"{e['url']} ({', '.join(e['arms'])})" for e in found)


def _cell(text: str, limit: int = 400) -> str:
    return cell(text, limit, empty="(empty)")


def content_verdicts(arms: list[dict]) -> list[str]:
    """The report's first section: each arm's verdict on the content, then what to do next."""
    readings = [a for a in arms if a.get("content")]
    if not readings:
        return []
    lines = ["## Verdict: is the content right?", ""]
    lines += [f"- {a['content']['verdict']}" for a in readings]
    last = next((a for a in reversed(readings) if not a["constrained"]), readings[-1])
    return lines + ["", f"**Next step** ({last['name']}): {last['content']['suggestion']}", ""]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def content_sections(arms: list[dict]) -> list[str]:
    """'Content, field by field': per arm, each field's kind and figures, enum confusions, the weakest field's examples."""
    md = []
    for arm in (a for a in arms if a.get("content")):
        reading = arm["content"]
        md += [f"## Content, field by field: {arm['name']}", ""]
        rows = []
        for f in reading["fields"]:
            extra = []
            if "precision" in f:
                extra.append(f"precision {_pct(f['precision'])}, recall {_pct(f['recall'])}")
            if f.get("mean_abs_error") is not None:
                extra.append(f"mean abs error {f['mean_abs_error']:.3g}")
            if f.get("null_mismatch"):
                extra.append(f"null vs value {f['null_mismatch']}x")
            if "keys" in f:
                extra.append(", ".join(f"{k} {_pct(v)}" for k, v in f["keys"].items()))
            if "top_mistake" in f:
                m = f["top_mistake"]
                extra.append(f"{m['reference']} -> {m['replied']} {m['count']} of {m['of']}")
            rows.append([f"`{f['field']}`", f["kind"], _pct(f["accuracy"]), str(f["wrong"]), _cell("; ".join(extra), 200)])
        md += table(["field", "kind", "right", "wrong", "detail"], rows) + [""]
        for f in reading["fields"]:
            confusion = [c for c in f.get("confusion", []) if c["reference"] != c["replied"]]
            if confusion:
                md += [f"Confusions of `{f['field']}` (reference -> replied, count): "
                       + ", ".join(f"{c['reference']} -> {c['replied']} {c['count']}" for c in confusion[:8]), ""]
        if reading["weakest_examples"]:
            md += [f"Weakest field `{reading['weakest']}`, examples:", ""]
            md += table(["input", "reference", "replied"], [[_cell(e["prompt"], 200), _cell(e["reference"]), _cell(e["replied"])]
                                                          for e in reading["weakest_examples"]]) + [""]
        md += mistake_lines(reading.get("mistakes"))
        md += [f"_Next step_: {reading['suggestion']}", ""]
    return md


def mistake_lines(mistakes: dict | None) -> list[str]:
    """The wrong fields by kind (all fields, then per field) and the worst rows side by side."""
    if not mistakes or not mistakes["kinds"]:
        return []
    total = sum(n for _, n in mistakes["kinds"])
    md = [f"Wrong fields by kind ({total} in all): " + ", ".join(f"{k} {n}" for k, n in mistakes["kinds"])
          + f". The commonest: {mistakes['advice']}.", ""]
    md += table(["field", "wrong fields by kind"], [[f"`{f}`", ", ".join(f"{k} {n}" for k, n in kinds.items())]
                                                    for f, kinds in mistakes["by_field"].items()]) + [""]
    if mistakes["worst_rows"]:
        md += [f"The {len(mistakes['worst_rows'])} rows with the most wrong fields:", ""]
        md += table(["row", "input", "reference", "replied", "wrong fields"],
                    [[str(r["row"]), _cell(r["prompt"], 200), _cell(r["reference"]), _cell(r["replied"]), str(r["wrong_fields"])]
                     for r in mistakes["worst_rows"]]) + [""]
    return md


def render_markdown(report: EvalReport) -> str:
    """The whole report.md text for a report dict."""
    task, arms, data, cfg = report["data"]["task"], report["arms"], report["data"], report["config"]
    md = ["# Evaluation report", "",
          f"Test set `{data['path']}`: {data['examples']} examples ({task} task, sha256 {data['sha256'][:12]}). "
          f"{endpoints_line(report)}, temperature {cfg['temperature']}, {cfg['samples']} sample(s) per example, "
          f"max_tokens {cfg['max_tokens']}. Written {report['created']}.", "",
          *content_verdicts(arms), "## Results", "", report["table"], ""]
    used = [m for _, m in HEADLINE[task]]
    md += [f"- **{LABELS[m]}**: {DEFINITIONS[m]}." for m in used]
    md += ["- Intervals are 95%: Wilson for rates, bootstrap over examples for means.", ""]
    md += [f"![rates with 95% CIs]({report['files']['rates']})", ""]
    if report["comparisons"]:
        md += ["## Paired comparisons", "", *[f"- {c['verdict']}" for c in report["comparisons"]], ""]
    if task == "json":
        md += content_sections(arms)
        kinds = [k for k in KINDS if any(a["failures"].get(k) for a in arms)]
        md += ["## Failure taxonomy", ""]
        if kinds:
            md += table(["kind", *[a["name"] for a in arms]], [[k, *[str(a["failures"].get(k, 0)) for a in arms]] for k in kinds])
        else:
            md.append("No failures.")
        md += ["", f"![failure taxonomy]({report['files']['failures']})", "", "## Per-field accuracy", ""]
        fields = list(dict.fromkeys(k for a in arms for k in a["per_field"]))
        md += table(["field", *[a["name"] for a in arms]],
                     [[f, *[pct(a["per_field"][f]) if f in a["per_field"] else "-" for a in arms]] for f in fields])
        md.append("")
    if any("stability" in a or "all_samples" in a for a in arms):
        md += ["## Stability (sampled)", ""]
        md += table(["arm", "samples agree", "primary metric over all samples"],
                     [[a["name"], pct(a["stability"]) if "stability" in a else "-",
                       pct(next(iter(a["all_samples"].values()))) if "all_samples" in a else "-"] for a in arms])
        md += ["", "_Samples agree_: share of examples whose samples give the same JSON (or text).", ""]
    md += ["## Speed", ""]
    md += table(["arm", "completion tokens", "wall s", "tokens/s (all requests)", "tokens/s per request"],
                 [[a["name"], str(a["speed"]["completion_tokens"]), f"{a['speed']['wall_s']:.1f}",
                   f"{a['speed']['tokens_per_s']:.1f}", f"{a['speed']['mean_request_tokens_per_s']:.1f}"]
                  for a in arms if a.get("speed")])
    for c in report.get("constrained_speed", []):
        md.append(f"\nWith structured outputs {c.get('arm', c['model'])} ran at {c['constrained_tokens_per_s']:.1f} tokens/s "
                  f"against {c['tokens_per_s']:.1f} without ({c['ratio']:.2f}x).")
    md.append("")
    probe = report.get("probe")
    if probe:
        names = list(probe["arms"])
        md += ["## Did it forget? (general-instruction probe)", ""]
        md += table(["probe", "passes when", *names],
                     [[p["id"], p["passes_when"], *["pass" if probe["arms"][n][p["id"]]["passed"] else "FAIL" for n in names]]
                      for p in probe["probes"]])
        md += ["", "_Totals_: " + ", ".join(f"{n} {probe['totals'][n]}/{len(probe['probes'])}" for n in names), ""]
    if report["worst"]:
        md += ["## Worst examples", ""]
        for w in report["worst"]:
            names = list(w["replies"])
            md += [f"**Row {w['row']}**: {_cell(w['prompt'], 300)}", ""]
            md += table(["reference", *names], [[_cell(w["reference"]), *[_cell(w["replies"][n]["text"]) for n in names]],
                                                 ["", *[w["replies"][n]["verdict"] for n in names]]])
            md.append("")
    schema = report.get("schema")
    if schema:
        md += ["## Schema", "", f"Source: {schema['source']}."]
        if schema["source"] == "inferred from the references":
            md += ["Inferred from the test references; pass `--schema FILE` to use your own:", "", "```json",
                   json.dumps(schema["schema"], indent=2), "```"]
        md.append("")
    md += ["## History", "", f"From `{report['history']['path']}`:", "", report["history"]["table"], ""]
    if report.get("notes"):
        md += ["## Notes", "", *[f"- {n}" for n in report["notes"]], ""]
    return "\n".join(md)


REPORT_FILE = "report.json"


def read_report(folder: str | Path) -> EvalReport | None:
    """The report.json `write_report` left in `folder` (an eval's --out), or None when it has none or it is unreadable."""
    path = Path(folder) / REPORT_FILE
    try:
        report = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None
    return cast(EvalReport, report) if isinstance(report, dict) and isinstance(report.get("arms"), list) else None


def write_report(out: Path, report: EvalReport, replies: list[dict]) -> None:
    """Write report.json, report.md, the charts and replies.jsonl into `out` (each atomically)."""
    out = Path(out)
    task = report["data"]["task"]
    write_bytes_atomic(out / report["files"]["rates"], rates_chart(report["arms"], task))
    if task == "json":
        write_bytes_atomic(out / report["files"]["failures"], failures_chart(report["arms"]))
    write_jsonl_atomic(out / report["files"]["replies"], replies)
    write_text_atomic(out / "report.md", render_markdown(report))
    write_json_atomic(out / REPORT_FILE, report)
