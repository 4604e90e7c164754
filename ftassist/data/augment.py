"""From a handful of labelled rows to a training set: a teacher labels unlabelled inputs, and only labels the user's
own scorer vouches for are kept.

    ftassist data augment data/train.jsonl --unlabelled tweets.txt --write 50 \\
        --teacher-url http://127.0.0.1:8000/v1 --teacher-model big --out data/augmented
    ftassist train --data data/augmented --out runs/augmented

1. **The teacher is measured first.** Some labelled rows (`--holdout`) are kept out of the examples the teacher
   sees; it labels them like any input, and its field accuracy on them (the eval's own field comparison) opens the
   report. Below `--accuracy-floor` nothing is labelled (exit 2) unless `--force`.
2. **Labels.** Each request shows the teacher `--shots` labelled rows as earlier turns and asks for the label under
   the schema (`json_schema` structured outputs); `--samples` labels are sampled per input and each field keeps the
   majority's value (`ftassist.evaluation.vote`).
3. **What is kept.** A row survives when every field's value had `--agreement` of the samples behind it, the label
   passes the schema, and its input is not a near-duplicate (the data checks' similarity) of a labelled row, of a
   row already kept, or of a test row. Every rejection is counted by reason; every kept row gets provenance
   (teacher, prompt id, agreement, where the input came from) in provenance.jsonl, line for line with
   augmented.jsonl.
4. **New inputs** (`--write N`): the teacher also writes N inputs in the style of the labelled ones
   (`ftassist.data.writing`), which then go through 3. like any unlabelled input.
5. **A data folder to train on.** OUT is what `ftassist train --data OUT` reads: train.jsonl holds the labelled
   rows not held out, then the kept rows; val.jsonl holds the held-out labelled rows the teacher was
   measured on, so the run is judged by the user's own labels, never the teacher's; schema.json and test.jsonl
   are copied beside them. augment.json says which lines of train.jsonl are augmented, and the run records it.

Nothing is written until the end, and then each file whole.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftassist.config import AugmentConfig
from ftassist.errors import UserError

TARGET_ROWS = 200  # below this many training rows the app offers to augment
WRITE_AT_ONCE = 100  # the most inputs one offer asks the teacher to write
REASONS = ("no_input", "no_json", "disagreement", "schema_invalid", "duplicate", "test_leak", "request_error")
SAMPLE_SHOWN = 5


@dataclass
class Labelled:
    """One labelled row: its prompt messages (system + user), its input text and its label."""

    prompt: list[dict]
    text: str
    label: dict


@dataclass
class Outcome:
    """The teacher's vote on one input: the label (None: no JSON), its agreement, the reason it was dropped."""

    text: str
    label: dict | None = None
    agreement: float = 0.0
    reason: str | None = None
    line: int = 0  # its line in --unlabelled (0: written by the teacher)
    written: dict | None = None  # --write: what the writing request asked and which labelled rows' inputs it showed


@dataclass
class AugmentResult:
    """What `augment` wrote and measured."""

    out: Path
    kept: int
    rejected: dict[str, int]
    teacher_accuracy: float
    report: dict = field(default_factory=dict)


def rows_to_write(train_rows: int) -> int:
    """How many inputs to ask the teacher for so a small set nears TARGET_ROWS (0: it holds enough).

    >>> rows_to_write(12), rows_to_write(150), rows_to_write(400)
    (100, 50, 0)
    """
    return max(0, min(WRITE_AT_ONCE, TARGET_ROWS - train_rows))


def read_labelled(path: Path) -> list[Labelled]:
    """The labelled rows of a messages JSONL; UserError naming the row when one is not a chat ending in a JSON object."""
    from ftassist.files import read_jsonl

    if not path.is_file():
        raise UserError(f"{path}: no such file; pass the labelled rows (train.jsonl from `ftassist data build`)")
    rows = []
    for i, row in enumerate(read_jsonl(path), 1):
        msgs = row.get("messages") if isinstance(row, dict) else None
        try:
            label = json.loads(msgs[-1]["content"]) if msgs and msgs[-1].get("role") == "assistant" else None
        except (ValueError, TypeError, KeyError):
            label = None
        users = [m for m in msgs or [] if m.get("role") == "user"]
        if not isinstance(label, dict) or not users:
            raise UserError(f"{path}, row {i}: not a labelled row (messages ending in an assistant reply that is a JSON "
                            "object, after a user message); build the file with `ftassist data build`")
        rows.append(Labelled(list((msgs or [])[:-1]), str(users[-1]["content"]), label))
    return rows


def read_inputs(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every input: JSONL rows with `text` or `input`, else one input per non-empty line."""
    if not path.is_file():
        raise UserError(f"--unlabelled {path}: no such file; pass a text file (one input per line) or JSONL with `text`")
    found = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix.lower() == ".jsonl":
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise UserError(f"--unlabelled {path}, line {n}: not JSON ({exc}); one JSON object per line") from exc
            text = row.get("text", row.get("input")) if isinstance(row, dict) else None
            if not isinstance(text, str):
                raise UserError(f"--unlabelled {path}, line {n}: no `text` or `input` string field")
            found.append((n, text))
        else:
            found.append((n, line.strip()))
    return found


def teacher_messages(shots: list[Labelled], text: str) -> list[dict]:
    """The request for one input: the seed's system message, the shots as earlier turns, then the input."""
    system = [m for m in shots[0].prompt if m.get("role") == "system"][:1] if shots else []
    turns: list[dict] = []
    for s in shots:
        turns += [{"role": "user", "content": s.text}, {"role": "assistant", "content": json.dumps(s.label, ensure_ascii=False)}]
    return system + turns + [{"role": "user", "content": text}]


def label_all(endpoint, cfg: AugmentConfig, shots: list[Labelled], texts: list[str], keys: list[str],
              schema: dict) -> list[tuple[dict | None, float, bool]]:
    """(voted label, agreement, any request failed) per text: `cfg.samples` sampled labels each, then the vote."""
    from ftassist.evaluation.vote import vote_agreement

    fmt = {"type": "json_schema", "json_schema": {"name": "label", "schema": schema}}
    jobs = [(i, j) for i in range(len(texts)) for j in range(cfg.samples)]
    replies: list[list[Any]] = [[None] * cfg.samples for _ in texts]
    with ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="ftassist-augment") as pool:
        futures = {pool.submit(endpoint.chat, cfg.teacher_model, teacher_messages(shots, texts[i]),
                               temperature=cfg.temperature, max_tokens=cfg.max_tokens, response_format=fmt): (i, j)
                   for i, j in jobs}
        for fut, (i, j) in futures.items():
            replies[i][j] = fut.result()
    out = []
    for row in replies:
        label, agreement = vote_agreement([r.text for r in row if r.error is None], keys)
        if label is not None:
            agreement *= sum(r.error is None for r in row) / len(row)  # a failed sample is a sample that did not agree
        out.append((label, agreement, any(r.error is not None for r in row)))
    return out


def distribution(labels: list[dict], keys: list[str]) -> dict[str, dict]:
    """Per field: the share of empty values, and the commonest values (lists: their mean length)."""
    out: dict[str, dict] = {}
    for key in keys:
        values = [lab.get(key) for lab in labels]
        n = max(1, len(values))
        empty = sum(v in (None, "", [], {}) for v in values) / n
        if values and all(isinstance(v, list) for v in values if v is not None):
            out[key] = {"empty": round(empty, 3), "mean_items": round(sum(len(v or []) for v in values) / n, 2)}
        else:
            top = Counter(json.dumps(v, ensure_ascii=False) for v in values).most_common(3)
            out[key] = {"empty": round(empty, 3), "top": {v: round(c / n, 3) for v, c in top}}
    return out


def augment(cfg: AugmentConfig, progress=print) -> AugmentResult:
    """Measure the teacher, label the inputs, keep what the checks vouch for; write the files and the report."""
    from ftassist.data.checks import NEAR_JACCARD, similarity
    from ftassist.data.teacher import TeacherEndpoint
    from ftassist.evaluation.metrics import field_matches, make_validator
    from ftassist.files import write_json_atomic, write_text_atomic
    from ftassist.schema import load_schema

    cfg.validate()
    started = time.time()
    seed_path = Path(cfg.seed)
    seed = read_labelled(seed_path)
    if len(seed) < 5:
        raise UserError(f"{seed_path}: {len(seed)} labelled rows; augmenting needs at least 5 (some to show the teacher, "
                        "some to measure it)")
    out = Path(cfg.out)
    if out.resolve() == seed_path.parent.resolve() or ((out / "train.jsonl").is_file() and not (out / "augment.json").is_file()):
        raise UserError(f"--out {out}: holds training rows augment did not write ({out / 'train.jsonl'}); name a new "
                        "folder, so the labelled rows are never overwritten")
    schema_path = Path(cfg.schema) if cfg.schema else seed_path.parent / "schema.json"
    if not schema_path.is_file():
        raise UserError(f"no schema: {schema_path} is missing; pass --schema schema.json (what `ftassist data build` writes)")
    schema = load_schema(schema_path)
    validator = make_validator(schema)
    keys = list((schema.get("properties") or {}) or dict.fromkeys(k for s in seed for k in s.label))
    test_path = Path(cfg.test) if cfg.test else seed_path.parent / "test.jsonl"
    test_texts = [r.text for r in read_labelled(test_path)] if test_path.is_file() else []
    inputs = read_inputs(Path(cfg.unlabelled)) if cfg.unlabelled else []
    left_out = max(0, len(inputs) - cfg.max_inputs) if cfg.max_inputs else 0
    inputs = inputs[:cfg.max_inputs] if cfg.max_inputs else inputs
    if not inputs and not cfg.write:
        raise UserError("nothing to label: pass --unlabelled FILE (inputs without labels) and/or --write N (new inputs "
                        "the teacher writes in the style of the labelled ones)")

    rng = random.Random(0)
    order = list(range(len(seed)))
    rng.shuffle(order)
    held = cfg.holdout or min(10, len(seed) // 3)
    held = min(held, len(seed) - 1)
    measure_rows, shot_pool = [seed[i] for i in order[:held]], [seed[i] for i in order[held:]]
    shots = shot_pool[:cfg.shots]
    prompt_id = hashlib.sha256(json.dumps(teacher_messages(shots, ""), sort_keys=True).encode()).hexdigest()[:12]
    endpoint = TeacherEndpoint(cfg.teacher_url, cfg.teacher_api_key, cfg.timeout)
    endpoint.check_models([cfg.teacher_model])

    progress(f"augment: measuring the teacher on {len(measure_rows)} held-out labelled rows ({cfg.samples} samples each)")
    measured = label_all(endpoint, cfg, shots, [r.text for r in measure_rows], keys, schema)
    per_field = {k: 0 for k in keys}
    for row, (label, _, _) in zip(measure_rows, measured):
        for k, ok in field_matches(label, {k: row.label.get(k) for k in keys}, label is not None).items():
            per_field[k] += ok
    accuracy = sum(per_field.values()) / max(1, len(keys) * len(measure_rows))
    teacher = {"url": cfg.teacher_url, "model": cfg.teacher_model, "rows": len(measure_rows), "field_accuracy": accuracy,
               "per_field": {k: v / max(1, len(measure_rows)) for k, v in per_field.items()}, "prompt_id": prompt_id,
               "shots": len(shots), "samples": cfg.samples}
    refused = accuracy < cfg.accuracy_floor and not cfg.force

    outcomes = [Outcome(text, line=n) for n, text in inputs]
    if not refused and cfg.write:
        from ftassist.data.writing import empty_fields, write_inputs

        progress(f"augment: the teacher writes {cfg.write} new inputs in the style of the labelled ones")
        for w in write_inputs(endpoint, cfg.teacher_model, [s.text for s in seed], empty_fields([s.label for s in seed],
                              schema, keys), cfg.write, temperature=cfg.write_temperature, max_tokens=cfg.max_tokens,
                              concurrency=cfg.concurrency):
            outcomes.append(Outcome(w.text or "", written={"twist": w.twist, "shown_rows": [i + 1 for i in w.shown]},
                                    reason=None if w.text else "no_input"))
    if not refused and outcomes:
        seen = [s.text for s in seed]
        for o in outcomes:  # duplicates and test look-alikes are dropped before any request
            if o.reason is not None:
                continue
            if any(similarity(o.text, t) >= NEAR_JACCARD for t in test_texts):
                o.reason = "test_leak"
            elif any(similarity(o.text, t) >= NEAR_JACCARD for t in seen):
                o.reason = "duplicate"
            else:
                seen.append(o.text)
        asked = [o for o in outcomes if o.reason is None]
        progress(f"augment: labelling {len(asked)} inputs ({cfg.samples} samples each; "
                 f"{len(outcomes) - len(asked)} dropped before asking)")
        for o, (label, agreement, failed) in zip(asked, label_all(endpoint, cfg, shots, [o.text for o in asked], keys, schema)):
            o.label, o.agreement = label, agreement
            if label is None:
                o.reason = "request_error" if failed else "no_json"
            elif agreement < cfg.agreement:
                o.reason = "disagreement"
            elif not validator.is_valid(label):
                o.reason = "schema_invalid"
    kept = [o for o in outcomes if o.reason is None and o.label is not None]
    rejected = {r: sum(o.reason == r for o in outcomes) for r in REASONS}
    system = [m for m in seed[0].prompt if m.get("role") == "system"][:1]
    rows = [{"messages": system + [{"role": "user", "content": o.text},
                                   {"role": "assistant", "content": json.dumps(o.label, ensure_ascii=False)}]} for o in kept]
    seed_rows = [{"messages": s.prompt + [{"role": "assistant", "content": json.dumps(s.label, ensure_ascii=False)}]}
                 for s in shot_pool]
    first = len(seed_rows) + 1  # the first augmented line of OUT/train.jsonl
    provenance = [{"row": i, "train_line": first + i, "source": "written" if o.written else "unlabelled",
                   **({"written": o.written} if o.written else {"input_line": o.line}),
                   "teacher": f"{cfg.teacher_model}@{cfg.teacher_url}", "prompt_id": prompt_id,
                   "agreement": round(o.agreement, 3), "samples": cfg.samples} for i, o in enumerate(kept)]
    written = [o for o in outcomes if o.written]
    report = {"teacher": teacher, "refused": refused, "inputs": len(outcomes), "inputs_left_out": left_out, "kept": len(kept), "rejected": rejected,
              "written": {"asked": cfg.write, "usable": sum(o.reason != "no_input" for o in written),
                          "kept": sum(bool(o.written) for o in kept)},
              "train": {"seed_rows": len(seed_rows), "augmented_rows": len(kept),
                        "augmented_lines": [first, first + len(kept) - 1] if kept else [],
                        "validation_rows": len(measure_rows)},
              "distribution": {"seed": distribution([s.label for s in seed], keys),
                               "kept": distribution([o.label for o in kept if o.label is not None], keys)},
              "sample": [{"input": o.text, "label": o.label, "agreement": round(o.agreement, 3)} for o in kept[:SAMPLE_SHOWN]],
              "out": str(out), "wall_s": round(time.time() - started, 1), "settings": {"agreement": cfg.agreement, "floor": cfg.accuracy_floor}}
    def jsonl(items: list[dict]) -> str:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items)

    files = {"augmented.jsonl": jsonl(rows), "provenance.jsonl": jsonl(provenance), "train.jsonl": jsonl(seed_rows + rows),
             "val.jsonl": jsonl([{"messages": s.prompt + [{"role": "assistant", "content": json.dumps(
                 s.label, ensure_ascii=False)}]} for s in measure_rows])}
    copies = {"schema.json": schema_path, "test.jsonl": test_path}  # under the names `ftassist train` and eval read
    out.mkdir(parents=True, exist_ok=True)
    (out / "augment.json").unlink(missing_ok=True)  # written last: a folder without it was not finished
    for name, source in copies.items():
        if source.is_file() and source.resolve() == (out / name).resolve():
            continue  # the user's own file, already in place
        if refused or not source.is_file():
            (out / name).unlink(missing_ok=True)  # an earlier run's copy must not outlive this report
        else:
            write_text_atomic(out / name, source.read_text(encoding="utf-8"))
    for name, text in files.items():
        if refused:
            (out / name).unlink(missing_ok=True)  # an earlier run's rows are not trained on under this report
        else:
            write_text_atomic(out / name, text)
    write_json_atomic(out / "augment.json", report)
    write_text_atomic(out / "augment.md", render(report))
    if refused:
        raise UserError(f"the teacher got {accuracy:.0%} of fields right on {len(measure_rows)} held-out labelled rows, "
                        f"below --accuracy-floor {cfg.accuracy_floor:.0%}: its labels would teach mistakes. Use a stronger "
                        f"teacher, more --shots, or pass --force to label anyway (report: {out / 'augment.md'})")
    return AugmentResult(out, len(kept), rejected, accuracy, report)


def augmented_rows(data_dir: str | Path) -> dict | None:
    """What a run records of a data folder `augment` wrote: its labelled and augmented rows, which lines of
    train.jsonl are augmented, the teacher and its measured accuracy; None for any other folder."""
    path = Path(data_dir) / "augment.json"
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        if report.get("refused"):
            raise UserError(f"{path.parent}: the teacher was refused there (below the accuracy floor), so it holds no "
                            "rows to train on; train on your own data folder, or augment again with a stronger teacher")
        return {**report["train"], "teacher": report["teacher"]["model"],
                "teacher_field_accuracy": report["teacher"]["field_accuracy"], "report": str(path.with_suffix(".md"))}
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a report `ftassist data augment` wrote ({exc}); delete it or run augment again") from exc


def render(report: dict, command: bool = True) -> str:
    """augment.md: the teacher's measured accuracy first, then kept/rejected, distributions and a sample to review
    (`command`: with the `ftassist train` line, which names the folder)."""
    t = report["teacher"]
    lines = ["# Augmented rows", "",
             f"**The teacher first**: {t['model']} got **{t['field_accuracy']:.1%} of fields** right on {t['rows']} labelled "
             f"rows held out of its examples ({', '.join(f'{k} {v:.0%}' for k, v in t['per_field'].items())}); "
             f"{t['shots']} examples per request, {t['samples']} samples per input, prompt id {t['prompt_id']}.", ""]
    if report["refused"]:
        lines += [f"**Refused**: below the accuracy floor {report['settings']['floor']:.0%}; nothing was labelled.", ""]
        return "\n".join(lines)
    w, tr = report["written"], report["train"]
    lines += [f"Inputs {report['inputs']}"
              + (f" ({w['asked']} written by the teacher, {w['usable']} usable, {w['kept']} kept)" if w["asked"] else "")
              + f": **kept {report['kept']}**, rejected " + ", ".join(f"{r} {n}" for r, n in report["rejected"].items() if n)
              + "." + (f" {report['inputs_left_out']} more unlabelled inputs were left out (--max-inputs)."
                       if report.get("inputs_left_out") else ""), "",
              (f"To train: `ftassist train --data {report['out']}` trains" if command else "Training on them trains")
              + f" on {tr['seed_rows']} labelled + "
              f"{tr['augmented_rows']} augmented rows (train.jsonl lines "
              f"{'-'.join(map(str, tr['augmented_lines'])) or 'none'}) and is judged on the {tr['validation_rows']} labelled "
              "rows the teacher was measured on (val.jsonl): your labels, not the teacher's.", "",
              "| field | seed rows | kept rows |", "|---|---|---|"]
    for key, seed in report["distribution"]["seed"].items():
        kept = report["distribution"]["kept"].get(key, {})
        lines.append(f"| `{key}` | {json.dumps(seed, ensure_ascii=False)} | {json.dumps(kept, ensure_ascii=False)} |")
    lines += ["", "A sample to review:", ""]
    lines += [f"- {s['input'][:200]!r} -> `{json.dumps(s['label'], ensure_ascii=False)}` (agreement {s['agreement']:.0%})"
              for s in report["sample"]]
    return "\n".join(lines) + "\n"
