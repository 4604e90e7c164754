"""Background training jobs identified by their run folder: start, list, follow, cancel, resume.

Nothing is kept in memory between calls: a job is its run folder (config.yaml, status.json,
metrics.jsonl, train.log), so a page reload or an app restart loses nothing.

    run_dir = start_job(TrainConfig(data="data/", out="runs/a"))
    read_status(run_dir).state        # queued / running / completed / failed / cancelled / interrupted
    cancel_job(run_dir)               # SIGTERM to the process group, SIGKILL after `timeout`
    resume_job(run_dir)               # continue an interrupted run from its newest complete checkpoint

Each job runs `python -m ftassist.train.worker RUN_DIR` in its own session (process group),
started from an argv list; `job_command` gives the equivalent foreground command for the UI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from ftassist.config import NextConfig, TrainConfig, load_config, save_config
from ftassist.errors import UserError
from ftassist.process import group_alive, pid_alive, process_started, stop_group
from ftassist.train.status import ACTIVE, JobStatus, StatusWriter, read_status

__all__ = ["start_job", "enqueue_job", "enqueue_next", "start_waiting", "resume_job", "cancel_job", "read_status", "list_jobs", "read_metrics", "follow_job",
           "job_command", "JobStatus"]


NEXT_FILE = "next.yaml"  # a job folder holding it tries `ftassist next`'s levers instead of training (`enqueue_next`)


def worker_argv(run_dir: str | Path, resume: bool = False, search: bool = False) -> list[str]:
    """The argv that runs a job's worker (what `start_job` executes): `accelerate launch` of it when the run's
    config asks for several processes (`distributed.launch_argv`), else the worker itself."""
    if (Path(run_dir) / NEXT_FILE).is_file():
        return [sys.executable, "-m", "ftassist.train.worker", str(run_dir), "--next"]
    cfg = load_config(TrainConfig, Path(run_dir) / "config.yaml", out=str(run_dir))
    if cfg.num_processes > 1:
        if search:
            raise UserError("--search trains one candidate at a time in one process: drop --num-processes")
        from ftassist.train.distributed import launch_argv

        return launch_argv(cfg, resume=resume)
    return [sys.executable, "-m", "ftassist.train.worker", str(run_dir)] + (["--resume"] if resume else []) + (
        ["--search"] if search else [])


def job_command(run_dir: str | Path) -> list[str]:
    """The equivalent foreground command a user can run in a terminal."""
    return ["ftassist", "train", "--config", str(Path(run_dir) / "config.yaml")]


def start_job(cfg: TrainConfig, search: bool = False) -> Path:
    """Validate `cfg`, write RUN_DIR/config.yaml and start training (or `--search`) in its own process group.

    Returns the run folder. Raises ConfigError for a bad config, UserError when a live job
    already uses the folder.
    """
    cfg.validate()
    run = Path(cfg.out).resolve()
    if (run / "status.json").exists() and read_status(run).state in ACTIVE:
        raise UserError(f"{run}: a training job is already running there; cancel it first or pick another --out")
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / "config.yaml")
    return _spawn(run, resume=False, search=search)


def enqueue_job(cfg: TrainConfig, search: bool = False) -> Path:
    """Accept a job that waits for a free training slot: config.yaml and a `waiting` status, no process.

    `start_waiting` starts it later (the app's queue decides when). Returns the run folder.
    """
    cfg.validate()
    return _wait(Path(cfg.out), cfg, "config.yaml", search)


def enqueue_next(cfg: NextConfig, job_dir: str | Path) -> Path:
    """Accept a job that tries `cfg`'s levers (`ftassist.train.levers.run_next_job`) once a training slot is free:
    `job_dir` gets next.yaml and a `waiting` status; the levers' runs go where `cfg.out` says. Returns `job_dir`."""
    cfg.validate()
    return _wait(Path(job_dir), cfg, NEXT_FILE, False)


def _wait(run: Path, cfg: TrainConfig | NextConfig, name: str, search: bool) -> Path:
    run = run.resolve()
    if (run / "status.json").exists():
        raise UserError(f"{run}: the folder already holds a run; pick another --out")
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / name)
    writer = StatusWriter(run, state="waiting", pid=None, pid_started=None, reason="waiting for a free training slot",
                          mergeable=False)
    writer.data["extra"] = {"search": search, "waiting_since": time.time()}
    writer.update()
    return run


def start_waiting(run_dir: str | Path, *, gpu: int | None = None) -> Path:
    """Start a `waiting` job's process (training, or the search it was accepted as), pinned to GPU `gpu` when given."""
    run = Path(run_dir).resolve()
    status = read_status(run)
    if status.state != "waiting":
        raise UserError(f"{run}: the job is {status.state}, not waiting; nothing to start")
    return _spawn(run, resume=False, search=bool(status.extra.get("search")), gpu=gpu)


def resume_job(run_dir: str | Path) -> Path:
    """Restart an interrupted, cancelled or failed job from its newest complete checkpoint.

    Returns the run folder. Raises UserError when the job is still running, already completed,
    or the folder has no config.yaml.
    """
    run = Path(run_dir).resolve()
    status = read_status(run)
    if status.state in ACTIVE:
        raise UserError(f"{run}: the job is still {status.state} (pid {status.pid}); nothing to resume")
    if status.state == "completed":
        raise UserError(f"{run}: the job already completed; start a new run to train further")
    if (run / NEXT_FILE).is_file():  # the levers' try starts again, reading the levers already finished
        return _spawn(run, resume=False)
    if not (run / "config.yaml").exists():
        raise UserError(f"{run}: config.yaml is missing, so the run cannot be resumed")
    return _spawn(run, resume=True)


def _spawn(run: Path, resume: bool, search: bool = False, gpu: int | None = None) -> Path:
    """Start the worker in its own process group; `gpu` pins it to that GPU (CUDA_VISIBLE_DEVICES), which its status
    records (the worker's own writer reads it back from its environment)."""
    from ftassist.device import visible_devices_env

    argv = worker_argv(run, resume, search)  # refuses a strategy this machine cannot run before anything is written
    pinned = {"gpu": gpu} if gpu is not None else {}
    StatusWriter(run, state="queued", pid=None, reason=None, mergeable=False, **pinned).update()
    log = open(run / "train.log", "ab")
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=os.getcwd(),
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **visible_devices_env(gpu)})
    finally:
        log.close()
    # The worker rewrites the whole status itself; recording the pid now lets cancel reach it while it starts up.
    writer = StatusWriter(run, state="queued", reason=None, mergeable=False, **pinned)
    writer.data.update(pid=proc.pid, pid_started=_started(proc.pid))
    writer.update()
    # Reap the child when it ends so it never lingers as a zombie of this process.
    threading.Thread(target=proc.wait, name=f"ftassist-reap-{proc.pid}", daemon=True).start()
    return run


def _started(pid: int) -> float | None:
    return process_started(pid)


def cancel_job(run_dir: str | Path, timeout: float = 30.0) -> JobStatus:
    """Stop a job: SIGTERM to its process group, SIGKILL to whatever is left after `timeout` s.

    Returns the final JobStatus (state `cancelled` unless the job had already ended).
    """
    run = Path(run_dir)
    status = read_status(run)
    if status.state == "waiting":
        StatusWriter(run, **{k: v for k, v in status.to_dict().items() if k not in ("resumable", "run_dir")}).update(
            state="cancelled", reason="cancelled by the user before it started", ended_at=time.time())
        return read_status(run)
    if status.state not in ACTIVE:
        return status
    pgid = status.pid
    if pgid and pid_alive(status.pid, status.pid_started):
        stop_group(pgid, timeout)
        # Give this process's reaper thread (see _spawn) a moment to collect the exit status.
        deadline = time.time() + 5
        while group_alive(pgid) and time.time() < deadline:
            time.sleep(0.05)
    final = read_status(run)
    if final.state in ACTIVE or final.state == "interrupted":
        writer = StatusWriter(run)
        writer.data.update({k: v for k, v in final.to_dict().items() if k not in ("resumable", "run_dir")})
        writer.update(state="cancelled", reason="cancelled by the user", ended_at=time.time())
        final = read_status(run)
    return final


def list_jobs(root: str | Path) -> list[JobStatus]:
    """Status of every run folder directly under `root` (newest first); [] when there is none."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [read_status(p) for p in root.iterdir() if (p / "status.json").exists()]
    return sorted(found, key=lambda s: s.started_at or s.heartbeat or 0, reverse=True)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The logged rows of metrics.jsonl (a half-written last line is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def follow_job(run_dir: str | Path, poll: float = 1.0) -> Iterator[dict | JobStatus]:
    """Yield each new metrics row as it is written, then the final JobStatus when the job ends."""
    seen = 0
    while True:
        rows = read_metrics(run_dir)
        yield from rows[seen:]
        seen = max(seen, len(rows))
        status = read_status(run_dir)
        if status.state not in ACTIVE:
            rows = read_metrics(run_dir)
            yield from rows[seen:]
            yield status
            return
        time.sleep(poll)


