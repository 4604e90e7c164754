"""Select and stop by the task metric: score the validation split during training, keep the best.

`TaskMetricCallback` runs at every `every` optimizer steps (with the automatic interval, skipping
one while validation has taken over `EVAL_SHARE` of the time, and one that would leave no training
before the budget's last evaluation), at the last step, and when the wall-clock budget runs out —
early enough that this last evaluation, as long as the one before, ends within the budget: it scores the model on the validation split
(`ftassist.train.validation.score_model`), appends one row to metrics.jsonl (keys `val_*`
beside the loss rows), saves the adapter to `RUN/best/` when the row beats every earlier one
(`selection_key`: the task metrics, then the lower validation loss), and stops training when
`patience` evaluations in a row did not beat the best (a plateau) or the budget is spent.
`RUN/best/best.json` says which step won and why. After a kill -9 the rows on disk (trimmed
to the resumed checkpoint) rebuild the history, so resume picks up the same selection.

    >>> rows = [{"step": 10, "val_field_accuracy": 0.5, "val_exact": 0.1, "val_schema_valid": 1.0, "val_loss": 0.4},
    ...         {"step": 20, "val_field_accuracy": 0.7, "val_exact": 0.2, "val_schema_valid": 1.0, "val_loss": 0.3},
    ...         {"step": 30, "val_field_accuracy": 0.7, "val_exact": 0.2, "val_schema_valid": 1.0, "val_loss": 0.5}]
    >>> best_row(rows, "json")["step"], evals_since_best(rows, "json")
    (20, 1)
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from transformers import TrainerCallback

from ftassist.files import atomic_dir, read_jsonl, write_json_atomic
from ftassist.train.checkpoints import save_adapter
from ftassist.train.schedule import Clock
from ftassist.train.validation import TASK_METRICS, ValidationSet, score_model, selection_key

BEST_DIR = "best"
# Scoring the split costs generation: an interval evaluation is skipped while validation has taken more than this
# share of the run's time (on 2 CPU cores 32 replies take about as long as 5 training steps). The last step and
# the end of the time budget are always scored.
EVAL_SHARE = 0.2


def eval_rows(rows: list[dict]) -> list[dict]:
    """The validation rows of a metrics.jsonl (those with a `val_loss` key), in step order."""
    return sorted((r for r in rows if "val_loss" in r), key=lambda r: r["step"])


def counted_seconds(rows: list[dict]) -> float:
    """The training seconds (evaluations included) a run's clock has counted: the last metrics row's `elapsed_s`.

    >>> counted_seconds([{"step": 1, "elapsed_s": 10.0}, {"step": 2, "val_loss": 0.5}, {"step": 2, "elapsed_s": 21.5}])
    21.5
    """
    counted = [r["elapsed_s"] for r in rows if isinstance(r.get("elapsed_s"), (int, float))]
    return float(counted[-1]) if counted else 0.0


def best_row(rows: list[dict], task: str) -> dict | None:
    """The validation row that wins (`selection_key`; the earliest of equals), or None."""
    best = None
    for row in eval_rows(rows):
        if best is None or selection_key(row, task) > selection_key(best, task):
            best = row
    return best


def drop_stale_best(run: Path, rows: list[dict] | None = None) -> int | None:
    """A best/ saved after the checkpoint a run resumes from belongs to steps that run again: drop it. Returns the
    step whose adapter best/ holds afterwards, or None."""
    if rows is None:
        rows = eval_rows(read_jsonl(run / "metrics.jsonl")) if (run / "metrics.jsonl").exists() else []
    record = run / BEST_DIR / "best.json"
    if not record.exists():
        return None
    step = json.loads(record.read_text(encoding="utf-8")).get("step")
    if any(r["step"] == step for r in rows):
        return step
    shutil.rmtree(run / BEST_DIR, ignore_errors=True)
    return None


def evals_since_best(rows: list[dict], task: str) -> int:
    """How many evaluations came after the best one (0 when the newest is the best)."""
    evals, best = eval_rows(rows), best_row(rows, task)
    return 0 if best is None else sum(r["step"] > best["step"] for r in evals)


def describe_choice(best: dict, last: dict, task: str, reason: str) -> str:
    """One sentence: which step was kept, its figures, and why training stopped.

    >>> describe_choice({"step": 20, "val_field_accuracy": 0.7, "val_exact": 0.2, "val_schema_valid": 1.0, "val_loss": 0.3},
    ...                 {"step": 30}, "json", "plateau")
    'kept step 20 of 30 (field_accuracy 70.0%, exact 20.0%, schema_valid 100.0% on the validation split; val loss 0.3); stopped: plateau'
    """
    figures = ", ".join(f"{m} {100 * float(best.get(f'val_{m}', 0.0)):.1f}%" for m in TASK_METRICS[task])
    return (f"kept step {best['step']} of {last['step']} ({figures} on the validation split; "
            f"val loss {best.get('val_loss')}); stopped: {reason}")


class TaskMetricCallback(TrainerCallback):
    """Scores the validation split at an interval, keeps the best adapter, stops on a plateau or the budget."""

    def __init__(self, run_dir: str | Path, val: ValidationSet, tokenizer, *, every: int, patience: int,
                 clock: Clock | None = None, max_eval_share: float | None = EVAL_SHARE, log=None):
        self.run = Path(run_dir)
        self.path = self.run / "metrics.jsonl"
        self.val, self.tokenizer = val, tokenizer
        self.every, self.patience = max(1, every), patience
        self.clock = clock or Clock()  # shared with the learning-rate schedule (`schedule.budget_lambda`)
        self.max_eval_share = max_eval_share  # None: score at every interval, whatever it costs
        self.log = log
        self.rows = eval_rows(read_jsonl(self.path)) if self.path.exists() else []
        self.stop_reason: str | None = None
        self.report: Callable[[dict], None] | None = None  # called with each row's figures, for the experiment tracker (set by the runner)
        self.eval_seconds = 0.0  # spent scoring in this session
        held = drop_stale_best(self.run, self.rows)
        best = self.best
        if best is not None and best["step"] != held:
            # The adapter of the best surviving row is gone (a later best replaced it, then was dropped with the steps
            # the run trains again): only the row best/ holds can be kept, so selection goes on from that one.
            self.rows = [r for r in self.rows if r["step"] == held]

    def elapsed(self) -> float:
        """Training seconds spent on this run so far, earlier sessions of a resumed run included."""
        return self.clock.elapsed()

    def on_train_begin(self, args, state, control, **kwargs):
        self.clock.restart()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        over = self.clock.over()
        if model is None or not (step % self.every == 0 or step >= state.max_steps or over):
            return
        if self.max_eval_share is not None and step < state.max_steps and not over and self.rows and \
                self.eval_seconds > self.max_eval_share * (self.elapsed() - self.eval_seconds):
            return
        if step < state.max_steps and not over and self.rows and self.clock.no_room_for(self.clock.reserve_s):
            return  # the budget's last evaluation comes before training could move on from this one
        self.evaluate(model, step, state.epoch or 0.0)
        if over:
            self.stop_reason = f"time budget of {self.clock.budget_s / 60:g} min spent at step {step}"
        elif self.patience > 0 and evals_since_best(self.rows, self.val.task) >= self.patience:
            self.stop_reason = f"plateau: {self.patience} evaluations without beating step {self.best['step']}"
        elif step >= state.max_steps:
            self.stop_reason = f"epoch budget done at step {step}"
        if over or (self.stop_reason and step < state.max_steps):
            control.should_training_stop = True
        if over:
            control.should_save = True  # `--resume` (and the search's next rung) continues from exactly here

    @property
    def best(self) -> dict | None:
        return best_row(self.rows, self.val.task)

    def evaluate(self, model, step: int, epoch: float) -> dict:
        """Score the model now, record the row, and save the adapter when it is the best so far."""
        started = time.time()
        metrics, _ = score_model(model, self.tokenizer, self.val)
        row = {"step": step, "epoch": round(epoch, 4), **{f"val_{k}": v for k, v in metrics.items() if k != "per_field"},
               "val_per_field": metrics.get("per_field"), "val_rows": len(self.val), "val_s": round(time.time() - started, 2),
               "elapsed_s": round(self.elapsed(), 1), "time": round(time.time(), 3)}
        self.eval_seconds += row["val_s"]
        # The next evaluation takes about as long: the budget keeps it. Only ever grown, so the schedule's
        # progress never steps back (and the rate never rises again) after a quicker evaluation.
        self.clock.reserve_s = max(self.clock.reserve_s, row["val_s"])
        previous = self.best
        self.rows.append(row)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.report is not None:
            from ftassist.tracking import scalars

            self.report(scalars({k: v for k, v in row.items() if k.startswith("val_")}))
        if previous is None or selection_key(row, self.val.task) > selection_key(previous, self.val.task):
            with atomic_dir(self.run / BEST_DIR) as tmp:
                save_adapter(model, tmp)
                write_json_atomic(tmp / "best.json", row)
        if self.log is not None:
            shown = ", ".join(f"{m} {100 * float(metrics.get(m) or 0):.1f}%" for m in TASK_METRICS[self.val.task])
            self.log.info("validation at step %d (%d rows, %.0f s): %s, loss %s; best so far: step %d", step,
                          len(self.val), row["val_s"], shown, metrics.get("loss"), (self.best or row)["step"])
        return row
