"""Run an eval: query every arm on the test set through its endpoint, score, and write the report.

    from ftassist.config import EvalConfig
    from ftassist.evaluation.harness import run_eval
    result = run_eval(EvalConfig(base_url="http://127.0.0.1:8000/v1",
                                 models=["base", "tuned", "merged=merged@http://127.0.0.1:8001/v1"],
                                 data="data/test.jsonl", out="evals/tuned", constrained=True))
    print(result.table)

Each `--model` entry is one arm, on `base_url` or on its own endpoint (`LABEL=NAME@URL`, see
`arms`); with `constrained` each also runs as "<label>+json_schema" under structured outputs.
The first arm is compared with each other one. Arms run one after another (so their tokens/s
are comparable), each with `concurrency` requests in flight. Everything is checked (data,
schema, every endpoint and the models it serves) before the first completion is requested.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any, Callable

from ftassist.config import EvalConfig
from ftassist.errors import UserError
from ftassist.evaluation.arms import Arm, check_endpoints, open_endpoints, plan_arms
from ftassist.endpoint import Endpoint, Reply
from ftassist.evaluation.fields import diagnose_fields, suggest, verdict
from ftassist.evaluation.freetext import score_text
from ftassist.evaluation.history import append_history, history_entry, history_path, read_history, render_history
from ftassist.evaluation.metrics import canonical, make_validator, score_reply, score_request_error
from ftassist.evaluation.probe import PROBE_MAX_TOKENS, PROBES, check_probe, probe_messages
from ftassist.evaluation.report import EvalReport, markdown_table, write_report
from ftassist.evaluation.summary import PRIMARY, compare_arms, constrained_speed, select_worst, summarize_arm
from ftassist.evaluation.taxonomy import describe
from ftassist.evaluation.vote import voted_reply
from ftassist.data.fingerprint import read_fingerprint
from ftassist.evaluation.testset import REPLY_CEILING, REPLY_FLOOR, REPLY_MARGIN, Example, file_sha256, load_examples, reply_budget
from ftassist.schema import infer_schema, load_schema

INFERRED = "inferred from the references"


@dataclass
class EvalResult:
    """What `run_eval` produced: the output folder, the markdown table, the report and per-arm summaries."""

    out: Path
    table: str
    report: EvalReport
    arms: list[dict]


def resolve_schema(cfg: EvalConfig, examples: list[Example], task: str) -> tuple[dict | None, str]:
    """(schema, where it came from): --schema, a schema.json beside the test set, or inferred. Raises UserError."""
    if task != "json":
        return None, "none (free-text task)"
    if cfg.schema:
        return load_schema(cfg.schema), f"--schema {cfg.schema}"
    beside = Path(cfg.data).parent / "schema.json"
    if beside.is_file():
        return load_schema(beside), f"{beside} (found beside the test set)"
    return infer_schema([e.reference for e in examples]), INFERRED


def run_eval(cfg: EvalConfig, progress: Callable[[str], None] | None = None) -> EvalResult:
    """Evaluate every arm of `cfg` and write the report into `cfg.out`; returns an `EvalResult`.

    Raises UserError (or ConfigError) for an unreadable test set or schema, an unreachable
    endpoint, a refused key or a model an endpoint does not serve, before any completion.
    """
    say = progress or (lambda msg: print(msg, file=sys.stderr))
    cfg.validate()
    examples, task = load_examples(cfg.data, cfg.limit)
    budget_note = None
    if not cfg.max_tokens:
        cfg = dataclasses.replace(cfg, max_tokens=reply_budget(examples))
        fits = ("a right reply fits" if cfg.max_tokens < REPLY_CEILING else
                f"the longest references may not fit in {REPLY_CEILING}")
        budget_note = (f"max_tokens {cfg.max_tokens} came from the test set (the longest reference's UTF-8 bytes + "
                       f"{REPLY_MARGIN}, between {REPLY_FLOOR} and {REPLY_CEILING}): {fits}; a reply cut "
                       "there counts as truncated. Pass --max-tokens N to set it.")
    schema, schema_source = resolve_schema(cfg, examples, task)
    if cfg.constrained and schema is None:
        raise UserError("--constrained needs a JSON test set (its references are free text)")
    validator = make_validator(schema) if schema is not None else None
    arms = plan_arms(cfg.models, cfg.base_url, cfg.constrained, schema)
    endpoints = open_endpoints(arms, cfg.api_key, cfg.api_keys, cfg.timeout)
    served = check_endpoints(arms, endpoints)

    scores: dict[str, list[list[dict]]] = {}
    summaries: list[dict] = []
    replies_rows: list[dict] = []
    probe: dict[str, Any] = {"probes": [], "arms": {}, "totals": {}}
    for arm in arms:
        endpoint = endpoints[arm.label]
        say(f"eval: {arm.name} ({arm.model} at {arm.url}): {len(examples)} examples x {cfg.samples} sample(s)")
        replies, wall = query_arm(endpoint, arm, examples, cfg)
        arm_scores = [[_score(r, ex, task, validator) for r in row] for row, ex in zip(replies, examples)]
        scores[arm.name] = arm_scores
        canon = [[canonical(r.text, ex.reference) for r in row] for row, ex in zip(replies, examples)] \
            if cfg.samples > 1 else None
        summaries.append(summarize_arm(arm.name, arm_scores, task, model=arm.model, constrained=bool(arm.response_format),
                                       endpoint=arm.url, canon=canon, speed=_speed(replies, wall)))
        if task == "json":
            summaries[-1]["content"] = read_content(summaries[-1], examples, arm_scores, schema,
                                                    [row[0].text for row in replies])
        replies_rows += [_reply_row(ex, arm.name, j, r, s) for ex, row, srow in zip(examples, replies, arm_scores)
                         for j, (r, s) in enumerate(zip(row, srow))]
        if cfg.vote and task == "json":
            name = f"{arm.name} + vote of {cfg.samples}"
            voted = [Reply(voted_reply([r.text for r in row if r.error is None] or [row[0].text], ex.reference),
                           completion_tokens=sum(r.completion_tokens for r in row)) for row, ex in zip(replies, examples)]
            scores[name] = [[_score(r, ex, task, validator)] for r, ex in zip(voted, examples)]
            summaries.append(summarize_arm(name, scores[name], task, model=arm.model, constrained=bool(arm.response_format),
                                           endpoint=arm.url, speed=_speed([[r] for r in voted], wall)))
            summaries[-1]["content"] = read_content(summaries[-1], examples, scores[name], schema, [r.text for r in voted])
            replies_rows += [_reply_row(ex, name, 0, r, s[0]) for ex, r, s in zip(examples, voted, scores[name])]
        if cfg.forgetting_probe and arm.response_format is None:
            say(f"eval: {arm.name}: forgetting probe ({len(PROBES)} prompts)")
            probe["arms"][arm.name] = run_probe(endpoint, arm, cfg)
            probe["totals"][arm.name] = sum(p["passed"] for p in probe["arms"][arm.name].values())
    probe["probes"] = [{"id": p.id, "prompt": p.prompt, "passes_when": p.passes_when} for p in PROBES]

    primary = PRIMARY[task]
    success = {a: [bool(s[0][primary]) for s in sc] for a, sc in scores.items()}
    report: EvalReport = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "out": str(Path(cfg.out)),
        "config": {**dataclasses.asdict(cfg), "api_key": "***" if cfg.api_key else None,
                   "api_keys": {label: "***" for label in cfg.api_keys}},
        "endpoints": served,
        "data": {"path": str(cfg.data), "sha256": file_sha256(cfg.data), "examples": len(examples), "task": task,
                 "dataset": (read_fingerprint(Path(cfg.data).parent) or {}).get("id")},
        "schema": {"source": schema_source, "schema": schema} if schema is not None else None,
        "arms": summaries,
        "comparisons": compare_arms(arms[0].name, [a for a in scores if a != arms[0].name], success, primary),
        "constrained_speed": constrained_speed(summaries),
        "probe": probe if probe["arms"] else None,
        "worst": [_worst_entry(examples[i], scores, replies_rows, task, i) for i in select_worst(scores, task, cfg.worst)],
        "files": {"rates": "rates.png", "failures": "failures.png" if task == "json" else None, "replies": "replies.jsonl"},
        "notes": ([budget_note] if budget_note else []) + _notes(cfg, task, summaries),
    }
    report["table"] = markdown_table(summaries, task)
    hist = history_path(cfg.out, cfg.history)
    entries = read_history(hist) + [history_entry(report)]
    report["history"] = {"path": str(hist), "table": render_history(entries, report["data"]["sha256"],
                                                                    report["data"]["dataset"])}
    write_report(Path(cfg.out), report, replies_rows)
    append_history(hist, entries[-1])
    _track(Path(cfg.out).parent, summaries, say)
    return EvalResult(out=Path(cfg.out), table=report["table"], report=report, arms=summaries)


def _track(run_dir: Path, summaries: list[dict], say: Callable[[str], None]) -> None:
    """The eval's figures into the tracker of the run it sits in (RUN_DIR/eval); a tracker failure is only said."""
    from ftassist.tracking import log_eval

    try:
        if log_eval(run_dir, summaries):
            say(f"eval: figures added to the run's Trackio run ({run_dir.name})")
    except Exception as exc:  # noqa: BLE001 - the report is written; tracking is a copy of it
        say(f"eval: could not add the figures to Trackio ({type(exc).__name__}: {exc})")


def read_content(summary: dict, examples: list[Example], scores: list[list[dict]], schema: dict | None,
                 replies: list[str] | None = None) -> dict:
    """The arm's field-by-field reading (first samples), its mistakes by kind with the worst rows, its verdict and the
    suggested next step."""
    from ftassist.evaluation.mistakes import cluster_mistakes

    prompts = [str(next((m.get("content", "") for m in reversed(e.prompt) if m.get("role") == "user"), "")) for e in examples]
    references, first = [e.reference for e in examples], [s[0] for s in scores]
    reading = diagnose_fields(references, first, schema, prompts)
    reading["mistakes"] = cluster_mistakes(references, first, prompts, replies)
    return {**reading, "verdict": verdict(summary),
            "suggestion": suggest(reading, summary["rates"]["schema_valid"]["value"], summary["means"]["field_accuracy"]["value"])}


def query_arm(endpoint: Endpoint, arm: Arm, examples: list[Example], cfg: EvalConfig) -> tuple[list[list[Reply]], float]:
    """Every (example, sample) reply of one arm, `cfg.concurrency` at a time, and the wall seconds taken.

    A UserError from any request (server gone, model unknown) cancels the rest and is raised.
    """
    grid: list[list[Reply | None]] = [[None] * cfg.samples for _ in examples]
    start = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="ftassist-eval")
    try:
        futures = {pool.submit(endpoint.chat, arm.model, ex.prompt, temperature=cfg.temperature,
                               max_tokens=cfg.max_tokens, response_format=arm.response_format,
                               sampling=cfg.sampling_fields()): (i, j)
                   for i, ex in enumerate(examples) for j in range(cfg.samples)}
        for fut, (i, j) in futures.items():
            grid[i][j] = fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return grid, time.perf_counter() - start  # type: ignore[return-value]


def run_probe(endpoint: Endpoint, arm: Arm, cfg: EvalConfig) -> dict:
    """{probe id: {"passed", "reply"}} for one arm, greedy (temperature 0) so reruns agree; the probes are sent
    together (the server batches them; no more than --concurrency at once), each with `PROBE_MAX_TOKENS`, whatever
    the task's replies get."""
    with ThreadPoolExecutor(max_workers=min(len(PROBES), cfg.concurrency), thread_name_prefix="ftassist-probe") as pool:
        replies = list(pool.map(lambda p: endpoint.chat(arm.model, probe_messages(p), temperature=0.0,
                                                        max_tokens=PROBE_MAX_TOKENS, sampling=cfg.sampling_fields()),
                                PROBES))
    return {p.id: {"passed": reply.error is None and check_probe(p.id, reply.text), "reply": reply.text or reply.error}
            for p, reply in zip(PROBES, replies)}


def _score(reply: Reply, ex: Example, task: str, validator) -> dict:
    if task == "json":
        if reply.error is not None:
            return score_request_error(ex.reference, reply.error)
        return score_reply(reply.text, ex.reference, validator, reply.finish_reason)
    if reply.error is not None:
        return {"exact_match": False, "rougeL": 0.0, "error": reply.error}
    return score_text(reply.text, ex.reference_text)


def _speed(replies: list[list[Reply]], wall: float) -> dict:
    flat = [r for row in replies for r in row]
    tokens = sum(r.completion_tokens for r in flat)
    per = [r.completion_tokens / r.latency_s for r in flat if r.error is None and r.latency_s > 0]
    return {"requests": len(flat), "completion_tokens": tokens, "wall_s": wall,
            "tokens_per_s": tokens / wall if wall > 0 else 0.0, "mean_request_tokens_per_s": fmean(per) if per else 0.0}


def _reply_row(ex: Example, arm: str, sample: int, r: Reply, score: dict) -> dict:
    return {"row": ex.row, "arm": arm, "sample": sample, "reply": r.text, "finish_reason": r.finish_reason,
            "completion_tokens": r.completion_tokens, "latency_s": round(r.latency_s, 4), "error": r.error, "score": score}


def _worst_entry(ex: Example, scores: dict, rows: list[dict], task: str, i: int) -> dict:
    user = [m.get("content", "") for m in ex.prompt if m.get("role") == "user"]
    texts = {(r["row"], r["arm"]): r["reply"] or (r["error"] or "") for r in rows if r["sample"] == 0}
    replies = {}
    for arm, sc in scores.items():
        s = sc[i][0]
        verdict = (f"{describe(s['failures'])}; fields {100 * s['field_accuracy']:.0f}%" if task == "json"
                   else f"exact {'yes' if s['exact_match'] else 'no'}; ROUGE-L {s['rougeL']:.2f}")
        replies[arm] = {"text": texts[(ex.row, arm)], "verdict": verdict}
    return {"row": ex.row, "prompt": str(user[-1] if user else ""), "reference": ex.reference_text, "replies": replies}


def _notes(cfg: EvalConfig, task: str, arms: list[dict]) -> list[str]:
    notes = []
    if task == "text":
        notes.append("Free-text task: exact match and ROUGE-L are computed locally with rouge_score, because "
                     "evaluate.load('exact_match'/'rouge') needs the Hugging Face hub.")
    if cfg.vote:
        notes.append(f"'+ vote of {cfg.samples}' arms: each key takes the value most of the {cfg.samples} sampled replies "
                     f"gave it (ties: the first seen); they cost {cfg.samples} completions per example, the wall time "
                     "shown is that of the arm's whole sampling.")
    if cfg.samples > 1:
        notes.append(f"{cfg.samples} samples per example at temperature {cfg.temperature}: headline rates and the paired "
                     "tests use each example's first sample; stability compares all samples.")
    failed = sum(a["request_errors"] for a in arms)
    if failed:
        notes.append(f"{failed} request(s) failed (see replies.jsonl); they count as failures.")
    if cfg.limit:
        notes.append(f"Only the first {cfg.limit} examples were evaluated (--limit).")
    return notes
