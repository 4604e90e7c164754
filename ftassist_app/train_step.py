"""Train step: plan a configuration for this hardware, start it as a job, and report progress.

Jobs live on disk under the visitor's workspace, `<workspace>/jobs/<run id>` (config, status.json,
metrics.jsonl), so the page finds them again after a reload or an app restart: `newest_active_job`
is what the page reattaches to. Starting goes through `limits.admit_job` (one job per workspace,
the machine's slots, the queue).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from ftassist.config import TrainConfig
from ftassist.errors import UserError
from ftassist.snippets import cli_command

ACTIVE = ("waiting", "queued", "running")  # waiting: in the app's queue for a training slot


def new_run_dir(jobs_dir: Path) -> Path:
    """A fresh run folder name: time first so folders sort by age."""
    return Path(jobs_dir) / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def propose_training(data_dir: str, model: str, out: str, overrides: dict[str, Any] | None = None) -> tuple[TrainConfig, str]:
    """The TrainConfig for `data_dir` plus the user's overrides, with the planner's one-paragraph
    explanation of what it will choose on this hardware. Raises ConfigError/UserError."""
    cfg = dataclasses.replace(TrainConfig(data=data_dir, out=out, model=model), **(overrides or {}))
    cfg.validate()
    return cfg, explain_plan(cfg)


def explain_plan(cfg: TrainConfig) -> str:
    """The planner's explanation for `cfg`: the very calls the trainer makes before it starts (`prepare_run`)."""
    import tempfile

    from ftassist.train.trainer import prepare_run

    with tempfile.TemporaryDirectory() as scratch:  # a carved validation split is written here, not into a run
        prep = prepare_run(cfg, Path(scratch))
    return f"{prep.explanation()} Training uses LoRA r={cfg.lora_r} on {len(prep.train_rows)} examples."


def start_training(ws: Any, cfg: TrainConfig, search: bool = False) -> Path:
    """Start the workspace's job (or `--search`: successive halving within cfg.time_budget) now, or
    queue it for the machine's next free slot; returns its run folder."""
    from ftassist_app.limits import admit_job

    cfg.validate()
    if search and cfg.time_budget <= 0:
        raise UserError("the search needs a time budget: set one in minutes")
    return Path(admit_job(ws, cfg, search=search))


def job_snapshot(run_dir: str | Path) -> tuple[Any, list[dict]]:
    """(JobStatus, metrics rows) of one run."""
    from ftassist.train.jobs import read_metrics, read_status

    return read_status(run_dir), read_metrics(run_dir)


def progress_markdown(status: Any, metrics: list[dict], waiting: str | None = None) -> str:
    """One line for the progress panel: state (and the queue position), step/total, loss, throughput, ETA."""
    run_id = Path(status.run_dir).name
    if waiting:
        return f"**Run `{run_id}`: {waiting}**"
    total = status.total_steps or 0
    pct = f" ({100 * status.step / total:.0f}%)" if total else ""
    parts = [f"**Run `{run_id}`: {status.state}**", f"step {status.step}/{total or '?'}{pct}"]
    last = next((m for m in reversed(metrics) if m.get("loss") is not None), None)
    if last:
        parts.append(f"loss {last['loss']:.4f}")
        if last.get("tokens_per_s"):
            parts.append(f"{last['tokens_per_s']:.0f} tokens/s")
        if status.state in ACTIVE and last.get("eta_s") is not None:
            parts.append(f"ETA {format_seconds(last['eta_s'])}")
    evals = [m for m in metrics if "val_rows" in m]
    if evals:
        from ftassist.train.selection import best_row

        task = "json" if "val_field_accuracy" in evals[-1] else "text"
        best, key = best_row(evals, task) or evals[-1], ("val_field_accuracy" if task == "json" else "val_rougeL")
        parts.append(f"validation: {METRIC_SERIES[key]} {100 * evals[-1][key]:.0f}% at step {evals[-1]['step']} "
                     f"(best {100 * best[key]:.0f}% at step {best['step']})")
    if status.reason and status.state not in ACTIVE:
        parts.append(f"({status.reason})")
    return " · ".join(parts)


def format_seconds(seconds: float) -> str:
    """72 -> '1 min 12 s'.

    >>> format_seconds(72), format_seconds(5)
    ('1 min 12 s', '5 s')
    """
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def loss_frame(metrics: list[dict]) -> pd.DataFrame:
    """Rows with a loss as a (step, loss) frame for gr.LinePlot.

    Typed even when empty: an empty object-dtype frame makes the plot take both axes as categories
    (unordered steps, a loss axis upside down) for the rest of the page's life.
    """
    rows = [{"step": int(m["step"]), "loss": float(m["loss"])} for m in metrics if m.get("loss") is not None]
    return pd.DataFrame(rows, columns=["step", "loss"]).astype({"step": "int64", "loss": "float64"})


def selection_sentence(run_dir: str | Path) -> str:
    """What the run kept and why, from its run.json (the library's own sentence), or why it kept the last step."""
    from ftassist.train.record import read_run_record

    record = read_run_record(run_dir)
    if record is None:
        return ""
    if record.selection:
        return f"It {record.selection['summary']}."
    return record.validation_note


METRIC_SERIES = {"val_field_accuracy": "field accuracy", "val_exact": "whole object right",
                 "val_schema_valid": "schema-valid", "val_rougeL": "ROUGE-L", "val_exact_match": "exact match"}


def metric_frame(metrics: list[dict]) -> pd.DataFrame:
    """The task metric on the validation split as a long (step, metric, value) frame for gr.LinePlot.

    >>> metric_frame([{"step": 4, "val_rows": 8, "val_field_accuracy": 0.5, "val_exact": 0.25, "val_schema_valid": 1.0}])
       step              metric  value
    0     4      field accuracy   0.50
    1     4  whole object right   0.25
    2     4        schema-valid   1.00
    """
    rows = [{"step": int(m["step"]), "metric": label, "value": float(m[key])}
            for m in metrics if "val_rows" in m for key, label in METRIC_SERIES.items() if m.get(key) is not None]
    return pd.DataFrame(rows, columns=["step", "metric", "value"]).astype({"step": "int64", "metric": "object", "value": "float64"})


def jobs_table(jobs_dir: Path) -> pd.DataFrame:
    """Every run under `jobs_dir`, newest first: run id, state, step, total."""
    from ftassist.train.jobs import list_jobs

    rows: list[dict[str, Any]] = []
    for st in list_jobs(jobs_dir):
        rows.append({"run": Path(st.run_dir).name, "state": st.state, "step": st.step, "total": st.total_steps or 0})
    rows.sort(key=lambda r: r["run"], reverse=True)
    return pd.DataFrame(rows, columns=["run", "state", "step", "total"])


def newest_active_job(jobs_dir: Path) -> str | None:
    """The run folder of the newest queued/running job, or None."""
    from ftassist.train.jobs import list_jobs

    if not Path(jobs_dir).is_dir():
        return None
    active = [st for st in list_jobs(jobs_dir) if st.state in ACTIVE]
    active.sort(key=lambda st: Path(st.run_dir).name, reverse=True)
    return active[0].run_dir if active else None


def newest_completed_job(jobs_dir: Path) -> str | None:
    """The run folder of the newest completed job that has an adapter (or a full run's model), or None."""
    from ftassist.train.jobs import list_jobs

    if not Path(jobs_dir).is_dir():
        return None
    from ftassist.train.weights import trained_weights

    done = [st for st in list_jobs(jobs_dir) if st.state == "completed" and trained_weights(Path(st.run_dir)) is not None]
    done.sort(key=lambda st: Path(st.run_dir).name, reverse=True)
    return done[0].run_dir if done else None


def run_data_dir(run_dir: str | Path) -> str | None:
    """The data folder a run was trained on (from its config.yaml), if it still exists."""
    from ftassist.config import load_config

    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        return None
    data = load_config(TrainConfig, path).data
    return data if (Path(data) / "train.jsonl").exists() else None


STAGES = {"dpo": "DPO on the model's own mistakes", "grpo": "GRPO with the eval's scorer as the reward"}


def propose_stage(ws: Any, run_id: str, stage: str) -> TrainConfig:
    """The config of a reward stage (`stage`: dpo or grpo) that starts from one of the workspace's finished SFT runs.

    Raises UserError (no run picked, not this workspace's, not finished, itself a stage, its data gone)."""
    from ftassist.train.stages import read_source

    if stage not in STAGES:
        raise UserError(f"pick a reward stage: {', '.join(STAGES)}")
    if not run_id:
        raise UserError("pick the finished training run to improve in the Run list first")
    run = ws.run(run_id)
    if next_source(run) is not None:
        raise UserError(f"{run_id} is a try of levers, not a training run: pick the run it tried, or the run it recommended")
    data = run_data_dir(run)
    if data is None:
        raise UserError(f"the data run {run_id} was trained on is gone: build it again, then train")
    cfg = TrainConfig(data=data, out=str(new_run_dir(ws.jobs_dir)), model=ws.model, stage=stage, from_run=str(run))
    cfg.validate()
    read_source(cfg)  # finished, and an SFT run: said now rather than by a failed job
    return cfg


def start_next(ws: Any, run_dir: str | Path | None) -> Path:
    """Start (or queue) the levers' try (`ftassist next`) on one of the workspace's finished SFT runs; returns the
    job's folder. UserError for no run, another workspace's, an unfinished one or one with nothing to measure by."""
    from ftassist.train.levers import chat_config
    from ftassist_app.limits import admit_job

    if not run_dir or not ws.owns(run_dir) or job_snapshot(run_dir)[0].state != "completed":
        raise UserError("no finished training run in this conversation: train first")
    return Path(admit_job(ws, chat_config(Path(run_dir)), job_dir=new_run_dir(ws.jobs_dir)))


def levers_config(job_dir: str | Path | None) -> Any:
    """The NextConfig of a levers' try (its job folder's next.yaml), or None when `job_dir` is any other job."""
    from ftassist.config import NextConfig, load_config
    from ftassist.train.jobs import NEXT_FILE

    path = Path(job_dir or "") / NEXT_FILE
    return load_config(NextConfig, path) if job_dir and path.is_file() else None


def next_result(job_dir: str | Path) -> tuple[str, str] | None:
    """(next.md's text, the run to go on with) when `job_dir` is a finished levers' try; None for any other job."""
    from ftassist.train.levers import outcome

    cfg = levers_config(job_dir)
    return outcome(cfg) if cfg is not None else None


def next_source(job_dir: str | Path | None) -> str | None:
    """The run a levers' try works on, when `job_dir` is one; None for any other job."""
    cfg = levers_config(job_dir)
    return cfg.run_dir if cfg is not None else None


def can_try_next(run_dir: str | Path | None) -> bool:
    """True when `run_dir` is a finished SFT run scored on a validation split (what the levers are measured against)."""
    from ftassist.train.levers import sft_run

    if not run_dir:
        return False
    try:
        sft_run(Path(run_dir))
    except (UserError, ValueError, OSError):
        return False
    return True


def cancel_training(run_dir: str | Path) -> None:
    from ftassist.train.jobs import cancel_job

    cancel_job(run_dir)


def resume_training(ws: Any, run_dir: str | Path) -> None:
    """Resume one of the workspace's runs when the machine has a free training slot (`limits.admit_resume`)."""
    from ftassist_app.limits import admit_resume

    admit_resume(ws, Path(run_dir))


def train_command(cfg: TrainConfig) -> str:
    return cli_command("train", cfg)
