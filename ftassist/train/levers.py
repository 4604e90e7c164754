"""The next step, measured: try what could improve a finished SFT run on its own validation split, and say what moved.

    ftassist next runs/first --budget 60 [--larger-model PATH] [--levers dpo,rank]

Levers (each a run of its own under RUN/next/<lever>, scored by the task metric on the validation split the run
was judged on, so every figure is comparable with the run's own kept step):

- dpo / grpo: a reward stage from the run's kept adapter, for a share of the budget;
- minutes: the same SFT again with the time it took plus a share, and twice the plateau patience;
- rank: the same SFT at twice the LoRA rank, in the minutes the run took;
- model: the same SFT on `--larger-model`, in the minutes the run took (only when one is given).

The cheapest levers go first; one that does not fit what is left of `--budget` is skipped and said so. A lever
whose folder already holds a finished run is read, not trained again (a second `ftassist next` resumes).
`choose` then recommends the lever that moved whole objects most (fields break ties) without losing schema
validity, or says that none did, with the figures.

The app runs the same as a background job (`chat_config`, `run_next_job`): its folder holds next.yaml and
status.json, the levers' runs and next.md go where `ftassist next` puts them (RUN/next), so a second try resumes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ftassist.config import NextConfig, TrainConfig, load_config
from ftassist.errors import UserError

LEVERS = ("dpo", "grpo", "minutes", "rank", "model")
CHAT_LEVERS = ["dpo", "grpo", "rank", "minutes"]  # what the app tries (no larger model is at hand there)
CHAT_BUDGET_RUNS = 9.0  # the app's budget in the run's minutes R: a share B/4 each for dpo and grpo, R for rank and
# R + B/4 for minutes fit when B >= 8R; one R more for loading models and scoring between them
METRICS = ("val_exact", "val_field_accuracy", "val_schema_valid")


@dataclass
class Trial:
    """One lever to try: its config, the minutes it may take, and (once run or read) its kept step's figures."""

    lever: str
    what: str
    config: TrainConfig
    minutes: float
    metrics: dict | None = None
    seconds: float | None = None
    note: str = ""


@dataclass
class Choice:
    """What `choose` recommends: a lever (None: nothing moved the metric) and the sentences that say why."""

    lever: str | None
    lines: list[str] = field(default_factory=list)


def kept_metrics(run: Path) -> dict | None:
    """The task metric of a finished run's kept step (run.json's selection), or None when it has none."""
    path = run / "run.json"
    if not path.is_file():
        return None
    try:
        selection = json.loads(path.read_text(encoding="utf-8")).get("selection") or {}
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable run record ({exc}); delete the folder to try the lever again") from exc
    metrics = selection.get("metrics") or {}
    return metrics if all(k in metrics for k in METRICS) else None


def trials_for(cfg: NextConfig, run_cfg: TrainConfig, run_minutes: float) -> list[Trial]:
    """The levers `cfg` asks for that apply to this run, cheapest first."""
    out, run = Path(cfg.out or Path(cfg.run_dir) / "next"), Path(cfg.run_dir).resolve()
    applies = [lever for lever in cfg.levers
               if not (lever == "model" and not cfg.larger_model) and not (lever == "rank" and run_cfg.method == "full")]
    share = cfg.budget / max(1, len(applies))  # the incremental levers' share of the budget
    base = dataclasses.replace(run_cfg, from_run=None, stage="sft")
    found = []
    for lever in cfg.levers:
        where = str(out / lever)
        if lever in ("dpo", "grpo"):
            found.append(Trial(lever, f"--stage {lever} from the kept adapter, {share:g} min", TrainConfig(
                data=run_cfg.data, out=where, model=run_cfg.model, stage=lever, from_run=str(run), time_budget=share,
                seed=run_cfg.seed, report_to="none"), share))
        elif lever == "minutes":  # more training: more minutes, twice the patience (and the steps, when capped)
            minutes = run_minutes + share
            found.append(Trial(lever, f"SFT again with {minutes:.0f} min and plateau patience "
                                      f"{2 * run_cfg.early_stopping_patience}", dataclasses.replace(
                base, out=where, time_budget=minutes, early_stopping_patience=2 * run_cfg.early_stopping_patience,
                max_steps=2 * run_cfg.max_steps if run_cfg.max_steps > 0 else run_cfg.max_steps, report_to="none"),
                minutes))
        elif lever == "rank" and run_cfg.method != "full":
            found.append(Trial(lever, f"SFT at LoRA rank {2 * run_cfg.lora_r} (was {run_cfg.lora_r}), {run_minutes:.0f} min",
                               dataclasses.replace(base, out=where, lora_r=2 * run_cfg.lora_r, lora_alpha=None,
                                                   time_budget=run_minutes, report_to="none"), run_minutes))
        elif lever == "model" and cfg.larger_model:
            found.append(Trial(lever, f"SFT on {cfg.larger_model}, {run_minutes:.0f} min", dataclasses.replace(
                base, out=where, model=cfg.larger_model, time_budget=run_minutes, report_to="none"), run_minutes))
        else:  # a lever that does not apply here is listed with the reason, never trained
            why = "no --larger-model given" if lever == "model" else "the run trained every weight (--method full)"
            found.append(Trial(lever, lever, dataclasses.replace(base, out=where), 0.0, note=why))
    return sorted(found, key=lambda t: (t.minutes, LEVERS.index(t.lever)))


def choose(baseline: dict, trials: list[Trial]) -> Choice:
    """The lever that moved whole objects most (field accuracy breaks ties) on the validation split without losing
    schema validity; None when none moved it. Pure: figures in, recommendation and its sentences out.

    >>> base = {"val_exact": 0.5, "val_field_accuracy": 0.8, "val_schema_valid": 1.0, "val_rows": 32}
    >>> t = Trial("rank", "r32", TrainConfig(), 30, {"val_exact": 0.5625, "val_field_accuracy": 0.82, "val_schema_valid": 1.0})
    >>> choose(base, [t]).lever
    'rank'
    """
    rows = int(baseline.get("val_rows") or 0)
    slack = 1 / rows if rows else 0.0  # one row of schema validity may come and go by chance
    lines = [f"The run's kept step: {_figures(baseline)} on its validation split ({rows or '?'} rows)."]
    best, best_key = None, (0.0, 0.0)
    for t in trials:
        if t.metrics is None:
            lines.append(f"- {t.lever} ({t.what}): not tried: {t.note}")
            continue
        gain = (t.metrics["val_exact"] - baseline["val_exact"], t.metrics["val_field_accuracy"] - baseline["val_field_accuracy"])
        kept = t.metrics["val_schema_valid"] >= baseline["val_schema_valid"] - slack
        took = f", {t.seconds / 60:.1f} min" if t.seconds is not None else ""
        lines.append(f"- {t.lever} ({t.what}): {_figures(t.metrics)}: whole objects {100 * gain[0]:+.1f}, fields "
                     f"{100 * gain[1]:+.1f} points{took}" + ("" if kept else " (loses schema validity: not recommended)"))
        if kept and gain > best_key:
            best, best_key = t, gain
    if best is None:
        lines.append("None of these moved the task metric on the validation split: more labelled examples (or "
                     "`ftassist data augment` with a teacher) is what is left; the figures above say how close each came.")
        return Choice(None, lines)
    lines.append(f"**Recommended: {best.lever}** ({best.what}): it moved whole objects by {100 * best_key[0]:+.1f} and "
                 f"fields by {100 * best_key[1]:+.1f} points; its run is {best.config.out}.")
    return Choice(best.lever, lines)


def _figures(m: dict) -> str:
    return (f"whole objects {100 * m['val_exact']:.1f}%, fields {100 * m['val_field_accuracy']:.1f}%, "
            f"schema-valid {100 * m['val_schema_valid']:.1f}%")


def sft_run(run: Path) -> tuple[TrainConfig, dict]:
    """(config, kept step's metrics) of a finished SFT run scored on a validation split; UserError naming what is not."""
    baseline = kept_metrics(run)
    if not (run / "config.yaml").is_file() or baseline is None:
        raise UserError(f"{run}: not a finished run with a validation split (config.yaml and run.json's kept step); "
                        "run `ftassist next` on a run that `ftassist train` completed with the task metric on")
    import yaml

    try:
        stage = (yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}).get("stage", "sft")
    except (yaml.YAMLError, AttributeError):
        stage = "sft"  # load_config below names what is wrong with the file
    if stage != "sft":
        raise UserError(f"{run} is a --stage {stage} run: run `ftassist next` on the SFT run it started from")
    return load_config(TrainConfig, run / "config.yaml"), baseline


def next_step(cfg: NextConfig, progress: Callable[[str], None] = print) -> tuple[Choice, list[Trial]]:
    """Try the levers within `cfg.budget` minutes (reading those already tried), recommend one, and write
    next.md and next.json into the levers' folder. Raises UserError for a run that is not a finished SFT run."""
    cfg.validate()
    run = Path(cfg.run_dir)
    run_cfg, baseline = sft_run(run)
    trials = trials_for(cfg, run_cfg, run_minutes(run, run_cfg))
    left = cfg.budget
    for t in trials:
        if t.note:  # does not apply to this run
            continue
        t.metrics = kept_metrics(Path(t.config.out))
        if t.metrics is not None:
            t.note = "read from its finished run"
            continue
        if t.minutes > left + 1e-9:
            t.note = f"needs {t.minutes:.0f} min, {left:.0f} of the {cfg.budget:g}-min budget left (raise --budget)"
            continue
        from ftassist.train.trainer import train

        progress(f"next: trying {t.lever}: {t.what}")
        started = time.time()
        try:
            train(t.config, progress=False)
        except UserError as exc:
            t.note = f"its run failed: {exc}"
        except Exception as exc:  # one lever's crash (its train.log has the traceback) must not cost the others
            t.note = f"its run crashed: {type(exc).__name__}: {exc} (see {t.config.out}/train.log)"
        t.seconds = time.time() - started
        left -= t.seconds / 60
        t.metrics = kept_metrics(Path(t.config.out))
        if t.metrics is None and not t.note:
            t.note = "its run kept no validated step"
    choice = choose(baseline, trials)
    out = Path(cfg.out or run / "next")
    out.mkdir(parents=True, exist_ok=True)
    from ftassist.files import write_json_atomic, write_text_atomic

    write_text_atomic(out / "next.md", "# The next step, measured\n\n" + "\n".join(choice.lines) + "\n")
    write_json_atomic(out / "next.json", {"run": str(run), "baseline": baseline, "recommended": choice.lever,
                                          "trials": [{"lever": t.lever, "what": t.what, "minutes": t.minutes, "out": t.config.out,
                                                      "metrics": t.metrics, "seconds": t.seconds, "note": t.note}
                                                     for t in trials]})
    return choice, trials


def run_minutes(run: Path, run_cfg: TrainConfig) -> float:
    """The minutes a finished run trained (run.json; its time budget when it did not say), at least 1."""
    try:
        record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{run}: no readable run.json ({exc}); pick a run that `ftassist train` completed") from exc
    return max(1.0, float(record.get("train_runtime_s") or 60.0 * (run_cfg.time_budget or 30.0)) / 60.0)


def chat_config(run: Path) -> NextConfig:
    """What the app's "find what helps next" tries on `run`: CHAT_LEVERS within CHAT_BUDGET_RUNS times the run's
    minutes, into RUN/next (where `ftassist next` resumes from). UserError for a run that is not a finished SFT run
    scored on a validation split."""
    run_cfg, _ = sft_run(run)
    cfg = NextConfig(run_dir=str(run), budget=round(CHAT_BUDGET_RUNS * run_minutes(run, run_cfg), 1), levers=list(CHAT_LEVERS),
                     out=str(run / "next"))
    cfg.validate()
    return cfg


def run_next_job(cfg: NextConfig, job: Path) -> str:
    """`next_step` as a background job whose status.json is in `job`: running / completed (the recommendation is its
    reason) / failed / cancelled; returns the summary line."""
    import os
    import signal

    from ftassist.train.status import StatusWriter
    from ftassist.train.trainer import JobCancelled, raise_cancelled

    status = StatusWriter(job, state="running", pid=os.getpid(), started_at=time.time(), mergeable=False,
                          reason=f"trying {', '.join(cfg.levers)} within {cfg.budget:g} min", step=0, total_steps=0)
    status.update()
    status.start_heartbeat()
    old = signal.signal(signal.SIGTERM, raise_cancelled)  # between levers too (each train() sets its own)
    try:
        choice, _ = next_step(cfg, progress=lambda m: print(m, flush=True))
    except BaseException as exc:
        status.update(state="cancelled" if isinstance(exc, (KeyboardInterrupt, JobCancelled)) else "failed",
                      reason=str(exc) or type(exc).__name__, ended_at=time.time())
        raise
    finally:
        signal.signal(signal.SIGTERM, old)
        status.stop_heartbeat()
    said = f"recommended: {choice.lever}" if choice.lever else "no lever moved the task metric"
    status.update(state="completed", reason=said, ended_at=time.time())
    return f"{said}; table: {Path(cfg.out or Path(cfg.run_dir) / 'next') / 'next.md'}"


def outcome(cfg: NextConfig) -> tuple[str, str]:
    """(next.md's text, the run to go on with: the recommended lever's run, else the run itself) of a finished try."""
    out = Path(cfg.out or Path(cfg.run_dir) / "next")
    try:
        report = json.loads((out / "next.json").read_text(encoding="utf-8"))
        text = (out / "next.md").read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise UserError(f"{out}: the levers' report is missing or unreadable ({exc}); try again") from exc
    chosen = next((t["out"] for t in report.get("trials", []) if t.get("lever") == report.get("recommended")), None)
    return text, str(chosen or cfg.run_dir)
