"""Summaries, paired comparisons, the report files and the history, on synthetic scored results."""

from __future__ import annotations

import json

from ftassist.evaluation.history import append_history, history_entry, history_path, read_history, render_history
from ftassist.evaluation.report import markdown_table, render_markdown, write_report
from ftassist.evaluation.summary import compare_arms, constrained_speed, select_worst, summarize_arm

PNG = b"\x89PNG\r\n\x1a\n"


def s(strict, extractable, valid, fields, failures=()):
    return {"strict": strict, "extractable": extractable, "schema_valid": valid, "fields": fields,
            "field_accuracy": sum(fields.values()) / len(fields), "exact": extractable and all(fields.values()),
            "failures": list(failures), "schema_errors": []}


GOOD = s(True, True, True, {"a": True, "b": True})
FENCED = s(False, True, True, {"a": True, "b": False}, ["code_fence"])
BROKEN = s(False, False, False, {"a": False, "b": False}, ["truncated"])
X, Y = "http://x/v1", "http://y/v1"
SPEED = {"requests": 10, "completion_tokens": 200, "wall_s": 4.0, "tokens_per_s": 50.0, "mean_request_tokens_per_s": 20.0}


def arms_and_scores():
    base = [[FENCED]] * 6 + [[BROKEN]] * 2 + [[GOOD]] * 2
    tuned = [[GOOD]] * 9 + [[BROKEN]]
    scores = {"base": base, "tuned": tuned}
    arms = [summarize_arm("base", base, "json", endpoint=X, speed=SPEED),
            summarize_arm("tuned", tuned, "json", endpoint=Y, speed={**SPEED, "tokens_per_s": 40.0}),
            summarize_arm("base+json_schema", tuned, "json", model="base", constrained=True, endpoint=X,
                          speed={**SPEED, "tokens_per_s": 25.0})]
    return arms, scores


def test_summarize_arm_exact_numbers():
    arms, _ = arms_and_scores()
    base = arms[0]
    assert (base["n"], base["samples"], base["request_errors"], base["endpoint"]) == (10, 1, 0, X)
    assert {m: (e["successes"], e["value"]) for m, e in base["rates"].items()} == \
        {"exact": (2, 0.2), "strict": (2, 0.2), "extractable": (8, 0.8), "schema_valid": (8, 0.8)}
    assert round(base["rates"]["strict"]["low"], 4) == 0.0567 and round(base["rates"]["strict"]["high"], 4) == 0.5098
    assert base["means"]["field_accuracy"]["value"] == (6 * 0.5 + 2 * 1.0) / 10
    assert base["per_field"]["a"]["value"] == 0.8 and base["per_field"]["b"]["value"] == 0.2
    assert base["failures"]["code_fence"] == 6 and base["failures"]["truncated"] == 2
    assert "stability" not in base


def test_sampled_mode_stability():
    scores = [[GOOD, GOOD, FENCED], [GOOD, GOOD, GOOD]]
    canon = [["x", "x", "y"], ["x", "x", "x"]]
    arm = summarize_arm("m", scores, "json", canon=canon)
    assert arm["samples"] == 3
    assert (arm["stability"]["successes"], arm["stability"]["n"]) == (1, 2)
    # The primary metric over all samples is the whole-object match (content first): FENCED gets b wrong.
    assert (arm["all_samples"]["exact"]["successes"], arm["all_samples"]["exact"]["n"]) == (5, 6)
    assert arm["rates"]["strict"]["value"] == 1.0  # first samples only


def test_compare_arms_verdicts():
    success = {"base": [False] * 8 + [True] * 2, "tuned": [True] * 9 + [False], "same": [False] * 7 + [True] * 3}
    out = compare_arms("base", ["tuned", "same"], success, "strict")
    tuned, same = out
    assert (tuned["only_a"], tuned["only_b"], tuned["both"], tuned["neither"]) == (1, 8, 1, 0)
    assert tuned["p_value"] == 2 * (1 + 9) / 2**9 and tuned["significant"] is True
    assert tuned["verdict"].startswith("tuned is better than base on strict (90% vs 20%; exact McNemar p = 0.0391")
    assert (same["only_a"], same["only_b"], same["significant"]) == (0, 1, False)
    assert same["verdict"] == ("same vs base on strict: 30% vs 20%; the difference is not significant "
                               "(exact McNemar p = 1, 1 examples differ).")


def test_constrained_speed_and_worst():
    arms, scores = arms_and_scores()
    assert constrained_speed(arms) == [{"arm": "base", "constrained_arm": "base+json_schema", "model": "base",
                                        "tokens_per_s": 50.0, "constrained_tokens_per_s": 25.0, "ratio": 0.5}]
    # The same model on another endpoint is another arm: its constrained run is paired with it, not with base.
    other = summarize_arm("b2", scores["base"], "json", model="base", endpoint=Y, speed={**SPEED, "tokens_per_s": 10.0})
    other_c = summarize_arm("b2+json_schema", scores["base"], "json", model="base", constrained=True, endpoint=Y,
                            speed={**SPEED, "tokens_per_s": 5.0})
    assert [(c["arm"], c["constrained_arm"]) for c in constrained_speed([*arms, other, other_c])] == [
        ("base", "base+json_schema"), ("b2", "b2+json_schema")]
    # Base's broken 6, 7 and tuned's broken 9 tie (badness 4, earlier first); then base's fenced ones (1.5).
    assert select_worst(scores, "json", 4) == [6, 7, 9, 0]
    assert select_worst({"a": [[GOOD]]}, "json", 3) == []


def test_markdown_table():
    arms, _ = arms_and_scores()
    table = markdown_table(arms[:1], "json")
    assert table.splitlines() == [
        "| arm | field accuracy % (95% CI) | whole object right % (95% CI) | schema-valid % (95% CI) | strict % (95% CI) "
        "| extractable % (95% CI) | n | endpoint |",
        "|---|---|---|---|---|---|---|---|",
        "| base | 50.0% (30.0-70.0) | 20.0% (5.7-51.0) | 80.0% (49.0-94.3) | 20.0% (5.7-51.0) | 80.0% (49.0-94.3) | 10 "
        "| http://x/v1 |",
    ]
    # The field-accuracy interval is the seeded bootstrap; normal theory gives 0.5 +- 1.96 * 0.1 = 30.4-69.6.


def synthetic_report(tmp_path, arms, scores):
    report = {
        "created": "2026-11-22T10:00:00+00:00", "out": str(tmp_path / "eval"),
        "config": {"base_url": X, "temperature": 0.0, "samples": 1, "max_tokens": 64},
        "endpoints": [{"url": X, "arms": ["base"], "models": ["base"], "served": ["base"]},
                      {"url": Y, "arms": ["tuned"], "models": ["tuned"], "served": None}],
        "data": {"path": "test.jsonl", "sha256": "ab" * 32, "examples": 10, "task": "json"},
        "schema": {"source": "inferred from the references", "schema": {"type": "object"}},
        "arms": arms, "comparisons": compare_arms("base", ["tuned"], {"base": [False] * 8 + [True] * 2,
                                                                       "tuned": [True] * 9 + [False]}, "strict"),
        "constrained_speed": constrained_speed(arms),
        "probe": {"probes": [{"id": "arithmetic", "prompt": "17+25?", "passes_when": "42"}],
                  "arms": {"base": {"arithmetic": {"passed": True, "reply": "42"}},
                           "tuned": {"arithmetic": {"passed": False, "reply": "{}"}}},
                  "totals": {"base": 1, "tuned": 0}},
        "worst": [{"row": 10, "prompt": "charged twice | help", "reference": '{"a": 1}',
                   "replies": {"base": {"text": "```json\n{\"a\": 1\n", "verdict": "truncated; fields 0%"},
                               "tuned": {"text": "", "verdict": "truncated; fields 0%"}}}],
        "files": {"rates": "rates.png", "failures": "failures.png", "replies": "replies.jsonl"},
        "notes": ["a note"], "table": markdown_table(arms, "json"),
        "history": {"path": "h.jsonl", "table": "_No earlier evals recorded._"},
    }
    return report


def test_write_report_files_and_markdown(tmp_path):
    arms, scores = arms_and_scores()
    report = synthetic_report(tmp_path, arms, scores)
    out = tmp_path / "eval"
    write_report(out, report, [{"row": 1, "arm": "base", "reply": "{}"}])
    assert sorted(p.name for p in out.iterdir()) == ["failures.png", "rates.png", "replies.jsonl", "report.json", "report.md"]
    assert (out / "rates.png").read_bytes()[:8] == PNG and (out / "failures.png").read_bytes()[:8] == PNG
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    assert (out / "replies.jsonl").read_text() == '{"row": 1, "arm": "base", "reply": "{}"}\n'
    md = (out / "report.md").read_text()
    for heading in ("## Results", "## Paired comparisons", "## Failure taxonomy", "## Per-field accuracy", "## Speed",
                    "## Did it forget?", "## Worst examples", "## Schema", "## History", "## Notes"):
        assert heading in md
    assert "| code_fence | 6 | 0 | 0 |" in md
    assert "| arithmetic | 42 | pass | FAIL |" in md
    assert "**Row 10**: charged twice \\| help" in md
    assert '| {"a": 1} | ```json<br>{"a": 1<br> | (empty) |' in md
    assert "With structured outputs base ran at 25.0 tokens/s against 50.0 without (0.50x)." in md
    assert "tuned is better than base on strict" in md
    assert "Endpoints: http://x/v1 (base); http://y/v1 (tuned), temperature 0.0" in md
    assert "| base+json_schema | 90.0% (" in md and md.count("| http://x/v1 |") == 2
    assert render_markdown(report) == md


def test_history_append_read_render(tmp_path):
    arms, scores = arms_and_scores()
    report = synthetic_report(tmp_path, arms[:2], scores)
    assert history_path(tmp_path / "evals" / "a") == (tmp_path / "evals" / "history.jsonl").resolve()
    assert history_path("x", "custom.jsonl").name == "custom.jsonl"
    path = tmp_path / "history.jsonl"
    entry = history_entry(report)
    assert entry["arms"][1] == {"name": "tuned", "endpoint": Y, "field_accuracy": 0.9, "exact": 0.9, "schema_valid": 0.9,
                                "strict": 0.9, "extractable": 0.9}
    append_history(path, entry)
    path.write_text(path.read_text() + "garbage\n")
    append_history(path, {**entry, "data_sha256": "other", "out": "evals/b"})
    entries = read_history(path)
    assert len(entries) == 2
    table = render_history(entries, current_sha="ab" * 32).splitlines()
    assert table[0] == ("| when | out | arm | endpoint | field accuracy | exact | schema valid | strict | extractable | n "
                        "| same test set | data set |")
    assert table[3] == f"| 2026-11-22T10:00 | {tmp_path / 'eval'} | tuned | {Y} | 90.0% | 90.0% | 90.0% | 90.0% | 90.0% | 10 | yes | - |"
    assert table[5].endswith(f"| evals/b | tuned | {Y} | 90.0% | 90.0% | 90.0% | 90.0% | 90.0% | 10 | no (not comparable) | - |")
    # a test set from another build of the data is said so
    versions = [{**entry, "dataset": "aaaaaaaaaaaa"}, {**entry, "dataset": "bbbbbbbbbbbb"}]
    rows = render_history(versions, current_sha="ab" * 32, current_dataset="bbbbbbbbbbbb").splitlines()
    assert rows[2].endswith("| aaaaaaaaaaaa (another build of the data) |") and rows[4].endswith("| bbbbbbbbbbbb |")
    # Entries written before arms had endpoints still render.
    old = {**entry, "arms": [{k: v for k, v in a.items() if k != "endpoint"} for a in entry["arms"]]}
    assert render_history([old]).splitlines()[2].split(" | ")[3] == "-"
    assert render_history([]) == "_No earlier evals recorded._"
