"""The run record: `run.json`, what `ftassist train` resolved and how the run ended, with one writer and one reader.

Written by the runner at the start of a run (mergeable false) and again when it ends; read by merge,
verify, export and the cards (through `serving.run_folder.read_run`), the app, the search and the tracker.
Keys this version does not know are kept in `extra` and written back, so an older reader never drops
a newer writer's facts.

    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp())
    >>> write_run_record(run, RunRecord(base_model="/m", model="m", method="lora", dtype="float32", device="cpu",
    ...                             extra={"later": 1}))
    >>> r = read_run_record(run); (r.method, r.mergeable, r.extra)
    ('lora', False, {'later': 1})
    >>> read_run_record(run / "nowhere") is None
    True
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftassist.errors import UserError
from ftassist.files import write_json_atomic

RUN_FILE = "run.json"


@dataclass
class RunRecord:
    """One training run's facts (run.json)."""

    base_model: str  # the base actually loaded: a resolved folder, or the hub id
    model: str  # --model as the user gave it
    method: str  # lora or qlora
    dtype: str  # the precision trained in
    device: str  # cpu or cuda
    plan: dict = field(default_factory=dict)  # `planner.Plan.to_dict()` (updated after a CUDA out-of-memory retry)
    plan_explanation: str = ""
    quantization: dict | None = None  # how the frozen base was held under QLoRA
    versions: dict = field(default_factory=dict)  # python, torch, transformers, peft, trl
    world_size: int = 1
    n_examples: int = 0  # training rows (validation rows excluded)
    longest: int = 0  # tokens of the longest row
    truncated: int = 0  # rows longer than --max-length
    budget: dict = field(default_factory=dict)  # `planner.Budget.to_dict()`
    validation: dict | None = None  # rows, task, source; None when the task metric is off
    validation_note: str = ""  # one sentence: how the run is judged
    data_fingerprint: str | None = None  # the data build's id (None: data not from `ftassist data build`)
    augmented: dict | None = None  # data from `ftassist data augment`: labelled vs augmented rows, the teacher
    tracking: dict | None = None  # `tracking.prepare`: where the run's curves are and the command that opens them
    mergeable: bool = False  # true once the run ended cleanly with an adapter
    failure: str | None = None  # why it is not mergeable (the NaN guard's reason)
    selection: dict | None = None  # the kept step: step, last_step, stopped, metrics, summary
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    train_runtime_s: float | None = None
    steps: int | None = None
    stage: str = "sft"  # sft, dpo or grpo (`ftassist.train.stages`)
    from_run: str | None = None  # the SFT run a dpo/grpo stage started from
    stage_data: dict | None = None  # dpo: its pairs; grpo: its reward and prompts; sft: rows held out for them
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **data}

    @classmethod
    def from_dict(cls, raw: dict) -> "RunRecord":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in raw.items() if k in names}, extra={k: v for k, v in raw.items() if k not in names})


def write_run_record(run_dir: str | Path, record: RunRecord) -> None:
    """Write the record whole (a reader never sees half a file)."""
    write_json_atomic(Path(run_dir) / RUN_FILE, record.to_dict())


def read_run_record(run_dir: str | Path) -> RunRecord | None:
    """The run's record, or None when the folder has none. Raises UserError for a file that is not a record."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return RunRecord.from_dict(raw)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"{path}: not a run record ({exc}); it is written by `ftassist train` — train again "
                        "or restore the file") from exc
