"""The chat's augment step: when a visitor's data set is small and the operator set a teacher (`--teacher-url`),
the teacher labels the visitor's unlabelled inputs or writes new ones, measured first on the visitor's own rows
(`ftassist.data.augment` decides and checks everything; this only wires it to the workspace)."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Callable, Generator

from ftassist.config import AugmentConfig
from ftassist.data.augment import AugmentResult, augment, render, rows_to_write
from ftassist.errors import UserError
from ftassist_app.settings import AppSettings

UNLABELLED_SUFFIXES = (".txt", ".jsonl")
TICK_S = 2.0  # the chat's progress line is refreshed at least this often while the teacher works


def offer(settings: AppSettings, train_rows: int) -> str | None:
    """The sentence offering more rows, or None (no teacher set, or enough rows)."""
    if not settings.teacher_url or not rows_to_write(train_rows):
        return None
    return (f"Your data holds {train_rows} training rows; fine-tuning does better with a few hundred. A bigger model "
            f"(**{settings.teacher_model}**) can make more: send the message *Make more rows* with a text file of your "
            f"unlabelled inputs attached (one per line; the first {rows_to_write(train_rows)} are labelled), or press "
            f"**Make more rows** and the teacher writes {rows_to_write(train_rows)} inputs in your rows' style. It is measured on your own labelled rows first, and only labels it agrees with itself "
            "on, that pass your schema and resemble none of your rows are kept.")


def count_rows(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def augment_config(settings: AppSettings, data_dir: Path, out: Path, unlabelled: list[str]) -> AugmentConfig:
    """The augment run for the workspace's data: its train rows as the seed, at most one unlabelled file."""
    usable = [f for f in unlabelled if Path(f).suffix.lower() in UNLABELLED_SUFFIXES]
    if len(usable) != len(unlabelled) or len(usable) > 1:
        raise UserError("drop one file of unlabelled inputs with Make more rows: a .txt (one input per line) or a "
                        ".jsonl with a `text` field")
    seed = data_dir / "train.jsonl"
    wanted = rows_to_write(count_rows(seed))  # the operator's teacher is paid per request: one offer's worth, no more
    return AugmentConfig(seed=str(seed), unlabelled=usable[0] if usable else None, max_inputs=wanted,
                         write=0 if usable else wanted, out=str(out),
                         teacher_url=settings.teacher_url, teacher_model=settings.teacher_model,
                         teacher_api_key=settings.teacher_key or None)


class Abandoned(Exception):
    """The chat stopped following an augment (the visitor left, or Gradio cancelled the turn)."""


def stream(cfg: AugmentConfig) -> Generator[str, None, tuple[AugmentResult | None, str]]:
    """`run` in a thread: yields what the teacher is doing and for how long, at least every TICK_S seconds (the chat
    shows it, instead of minutes of silence); returns `run`'s value, or raises what it raised. Closed early, it
    stops the work at its next phase (no more of the operator's teacher requests than the phase under way)."""
    lines: queue.Queue[str | None] = queue.Queue()
    outcome: dict = {}
    stop = threading.Event()

    def report(line: str) -> None:
        if stop.is_set():
            raise Abandoned(line)
        lines.put(line)

    def work() -> None:
        try:
            outcome["value"] = run(cfg, progress=report)
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            outcome["error"] = exc
        finally:
            lines.put(None)

    thread = threading.Thread(target=work, name="augment", daemon=True)
    started, doing = time.monotonic(), "starting"
    thread.start()
    try:
        while True:
            try:
                line = lines.get(timeout=TICK_S)
            except queue.Empty:
                line = doing  # no news: the same line, a longer time
            if line is None:
                break
            doing = line.removeprefix("augment: ")
            yield f"{doing} ({time.monotonic() - started:.0f} s)"
    finally:
        stop.set()  # closed early (GeneratorExit): the thread ends at its next phase
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def run(cfg: AugmentConfig, progress: Callable[[str], None] = lambda _: None) -> tuple[AugmentResult | None, str]:
    """(result, the report to show); (None, the report and why) when the teacher was below the accuracy floor."""
    try:
        result = augment(cfg, progress=progress)
    except UserError as exc:
        report = Path(cfg.out) / "augment.md"
        if "--accuracy-floor" in str(exc) and report.is_file():
            return None, (report.read_text(encoding="utf-8") + "\nIts labels would teach mistakes, so nothing was "
                          "labelled: train on your own rows, or ask for a stronger teacher.")
        if "teacher endpoint" in str(exc):  # names the operator's URL and CLI flags: not the visitor's to fix
            raise UserError(f"the teacher model ({cfg.teacher_model}) did not answer or refused the request; try again "
                            "later, or go on training on your own rows") from exc
        raise
    return result, render(result.report, command=False)


def train_choice(result: AugmentResult) -> str:
    """The quick reply that trains on the augmented folder."""
    tr = result.report["train"]
    return f"Train on {tr['seed_rows']} of your rows + {tr['augmented_rows']} augmented"
