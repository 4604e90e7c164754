"""`status.json` of a run folder: who runs it, how far it got, and whether it is still alive.

The training process owns the file and rewrites it atomically: at every state change, after
every optimizer step, and from a heartbeat thread every few seconds. Readers (`read_status`)
never trust a `running` state blindly: a dead pid or a stale heartbeat reads as `interrupted`,
which `ftassist jobs resume` continues from the newest complete checkpoint.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ftassist.files import write_json_atomic
from ftassist.process import pid_alive, process_started

# `waiting`: accepted, waiting for a free training slot (the app's queue); no process yet.
STATES = ("waiting", "queued", "running", "completed", "failed", "cancelled", "interrupted")
ACTIVE = ("queued", "running")
# A heartbeat older than this (seconds) means the process is gone or hung.
STALE_AFTER = 90.0
HEARTBEAT_EVERY = 5.0


@dataclass
class JobStatus:
    """One run's state as read from `status.json` (plus what `read_status` found out)."""

    run_dir: str
    state: str = "queued"
    pid: int | None = None
    pid_started: float | None = None
    heartbeat: float | None = None
    step: int = 0
    total_steps: int | None = None
    reason: str | None = None
    mergeable: bool = False
    started_at: float | None = None
    ended_at: float | None = None
    resumable: bool = False
    gpu: int | None = None  # the GPU the job is pinned to (CUDA_VISIBLE_DEVICES), None when it is not pinned
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def pinned_gpu(env: dict[str, str] | None = None) -> int | None:
    """The one GPU index CUDA_VISIBLE_DEVICES pins this process to; None when unset, empty or a list.

    >>> pinned_gpu({"CUDA_VISIBLE_DEVICES": "1"}), pinned_gpu({"CUDA_VISIBLE_DEVICES": "0,1"}), pinned_gpu({})
    (1, None, None)
    """
    value = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES", "").strip()
    return int(value) if value.isdigit() else None


def status_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "status.json"


def read_status(run_dir: str | Path, stale_after: float = STALE_AFTER) -> JobStatus:
    """Return the run's JobStatus; an active state whose process is dead or silent reads `interrupted`.

    Raises UserError when the folder has no status.json (not a run folder).
    """
    from ftassist.errors import UserError
    from ftassist.train.checkpoints import newest_checkpoint

    path = status_path(run_dir)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UserError(f"{run_dir}: no status.json; pass a run folder written by `ftassist train`") from exc
    known = {k: raw[k] for k in JobStatus.__dataclass_fields__ if k in raw}
    known["run_dir"] = str(run_dir)
    status = JobStatus(**known)
    if status.state in ACTIVE:
        quiet = time.time() - status.heartbeat if status.heartbeat is not None else 0.0
        silent = quiet > stale_after
        starting = status.state == "queued" and not status.pid  # its launcher is spawning it: no pid recorded yet
        if silent or (not starting and not pid_alive(status.pid, status.pid_started)):
            status.reason = "the training process is gone (killed or crashed)" if not silent else (
                f"no heartbeat for {quiet:.0f} s")
            status.state = "interrupted"
    ckpt = newest_checkpoint(Path(run_dir) / "checkpoints")
    status.resumable = status.state in ("interrupted", "failed", "cancelled") and any(
        (Path(run_dir) / name).exists() for name in ("config.yaml", "next.yaml"))  # next.yaml: a levers' try
    status.extra["checkpoint"] = str(ckpt) if ckpt else None
    return status


class StatusWriter:
    """Keeps `status.json` of one run up to date from the training process (thread-safe)."""

    def __init__(self, run_dir: str | Path, **fields):
        self.path = status_path(run_dir)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        pid = os.getpid()
        self.data = JobStatus(run_dir=str(run_dir), pid=pid, pid_started=process_started(pid), gpu=pinned_gpu()).to_dict()
        self.data.pop("resumable")
        self.data.update(fields)

    def update(self, **fields) -> None:
        """Merge `fields` into the status, stamp the heartbeat and rewrite the file."""
        with self._lock:
            self.data.update(fields)
            self.data["heartbeat"] = time.time()
            write_json_atomic(self.path, self.data)

    def start_heartbeat(self, every: float = HEARTBEAT_EVERY) -> None:
        """Rewrite the heartbeat every `every` seconds from a daemon thread until `stop_heartbeat`."""
        def beat() -> None:
            while not self._stop.wait(every):
                self.update()

        self._thread = threading.Thread(target=beat, name="ftassist-heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
