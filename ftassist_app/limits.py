"""What one machine gives its visitors: training slots with a queue, server slots, idle servers stopped.

- One training job and one server per workspace.
- Training jobs beyond the machine's slots wait in a queue (first come, first served) and are
  started by `schedule`, which the app runs every few seconds; a visitor sees their position.
- Servers beyond the machine's slots are refused with a message (a server holds its memory
  for as long as it runs, so queueing one would hold a visitor's page for minutes).
- A server nobody used for `server_idle_minutes` is stopped (its requests are counted from
  vLLM's /metrics, so a client calling it directly keeps it alive too).

Slots come from the hardware: one per GPU, else one on a CPU machine (two training processes
on a few cores slow each other far more than twice). `--max-jobs` / `--max-servers` override.

On a GPU machine every job and server is pinned to one GPU (CUDA_VISIBLE_DEVICES): a job goes to
the GPU with the fewest jobs, a server to a GPU without a server, with vLLM's memory share set so
that a job already training there keeps the memory its plan estimated (`ftassist.device`).
"""

from __future__ import annotations

import fcntl
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ftassist.config import NextConfig, ServeConfig, TrainConfig
from ftassist.errors import UserError
from ftassist.train.status import JobStatus
from ftassist_app.settings import AppSettings
from ftassist_app.workspace import Workspace
from serving.registry import SERVER_FILE, ServerRecord, live_server_records, stop_recorded_server, touch_server_record

PENDING = ("waiting", "queued", "running")  # a job that holds (or waits for) a training slot


@dataclass(frozen=True)
class Capacity:
    jobs: int
    servers: int


def capacity(settings: AppSettings) -> Capacity:
    """Training and server slots of this machine (settings override the hardware's count)."""
    import torch

    auto = max(1, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    return Capacity(settings.max_jobs or auto, settings.max_servers or auto)


def all_jobs(settings: AppSettings) -> list[JobStatus]:
    """Every job of every workspace."""
    from ftassist.train.jobs import list_jobs

    root = settings.workspaces_dir
    if not root.is_dir():
        return []
    return [st for ws in sorted(root.iterdir()) for st in list_jobs(ws / "jobs")]


def pending_job(ws: Workspace) -> JobStatus | None:
    """This workspace's job that is waiting, starting or running, if any."""
    from ftassist.train.jobs import list_jobs

    return next((st for st in list_jobs(ws.jobs_dir) if st.state in PENDING), None)


def busy_slots(settings: AppSettings) -> int:
    """Training slots in use: jobs starting or running, all workspaces."""
    return sum(st.state in ("queued", "running") for st in all_jobs(settings))


def waiting_jobs(settings: AppSettings) -> list[JobStatus]:
    """The queue, first come first."""
    waiting = [st for st in all_jobs(settings) if st.state == "waiting"]
    return sorted(waiting, key=lambda st: (st.extra.get("waiting_since") or 0, st.run_dir))


def queue_position(settings: AppSettings, run_dir: str | Path) -> tuple[int, int] | None:
    """(position, length) of a waiting job in the queue (1 = next), or None when it is not waiting."""
    queue = [Path(st.run_dir).resolve() for st in waiting_jobs(settings)]
    run = Path(run_dir).resolve()
    return (queue.index(run) + 1, len(queue)) if run in queue else None


def admit_job(ws: Workspace, cfg: TrainConfig | NextConfig, search: bool = False, job_dir: Path | None = None) -> Path:
    """Accept the workspace's job: it starts now when a slot is free, else waits in the queue. A NextConfig is the
    levers' try of `ftassist next` on one of the workspace's runs, as a job in `job_dir`.

    Raises UserError when the workspace already has a job, or the queue is full.
    """
    from ftassist.train.jobs import enqueue_job, enqueue_next

    if isinstance(cfg, NextConfig):
        folders, enqueue = [job_dir, cfg.run_dir, cfg.out], lambda: enqueue_next(cfg, job_dir or "")
    else:
        folders, enqueue = [cfg.out], lambda: enqueue_job(cfg, search=search)
    if not all(f and ws.owns(f) for f in folders):
        raise UserError("a run folder outside your workspace cannot be used")
    mine = pending_job(ws)
    if mine is not None:
        raise UserError(f"your job {Path(mine.run_dir).name} is still {mine.state}: one training job per workspace. "
                        "Cancel it, or wait until it ends")
    with _schedule_lock(ws.settings):
        queued = waiting_jobs(ws.settings)
        if len(queued) >= ws.settings.max_waiting:
            raise UserError(f"the training queue is full ({len(queued)} jobs are waiting for this machine); try again later")
        run = enqueue()
    schedule(ws.settings)
    return run


def admit_resume(ws: Workspace, run: Path) -> Path:
    """Resume the workspace's run now, if no other job of theirs is pending and a training slot is free."""
    from ftassist.train.jobs import resume_job

    if not ws.owns(run):
        raise UserError("that run is not one of yours")
    mine = pending_job(ws)
    if mine is not None and Path(mine.run_dir).resolve() != run.resolve():
        raise UserError(f"your job {Path(mine.run_dir).name} is still {mine.state}: one training job per workspace")
    with _schedule_lock(ws.settings):
        busy = busy_slots(ws.settings)
        queued = waiting_jobs(ws.settings)
        if busy >= capacity(ws.settings).jobs or queued:
            raise UserError(f"every training slot of this machine is busy ({busy} running, {len(queued)} waiting): "
                            "resume again when the queue is empty")
        return resume_job(run)


def schedule(settings: AppSettings) -> list[Path]:
    """Start waiting jobs while training slots are free; returns the runs started."""
    from ftassist.train.jobs import start_waiting

    from ftassist.device import detect_devices, pick_gpu

    started = []
    with _schedule_lock(settings):
        free = capacity(settings).jobs - busy_slots(settings)
        waiting = waiting_jobs(settings)[:max(0, free)]
        devices = detect_devices() if waiting else []
        jobs = jobs_per_gpu(settings)
        for st in waiting:
            gpu = pick_gpu(devices, jobs)
            started.append(start_waiting(st.run_dir, gpu=gpu))
            if gpu is not None:
                jobs[gpu] = jobs.get(gpu, 0) + 1
    return started


def jobs_per_gpu(settings: AppSettings) -> dict[int, int]:
    """GPU index -> jobs starting or running pinned to it."""
    found: dict[int, int] = {}
    for st in all_jobs(settings):
        if st.state in ("queued", "running") and st.gpu is not None:
            found[st.gpu] = found.get(st.gpu, 0) + 1
    return found


def job_bytes_per_gpu(settings: AppSettings) -> dict[int, int]:
    """GPU index -> the memory its running jobs' plans estimated (run.json; a job still loading counts as its
    `plan` is written, before that as 0)."""
    from ftassist.device import GiB
    from ftassist.train.record import read_run_record

    found: dict[int, int] = {}
    for st in all_jobs(settings):
        if st.state in ("queued", "running") and st.gpu is not None:
            try:
                record = read_run_record(st.run_dir)
            except UserError:  # a damaged run.json of someone's job: its plan is unknown, as while it loads
                record = None
            gib = float((record.plan if record is not None else {}).get("estimate_gib") or 0.0)
            found[st.gpu] = found.get(st.gpu, 0) + int(gib * GiB)
    return found


def place_server(settings: AppSettings, cfg: ServeConfig) -> ServeConfig:
    """`cfg` pinned to the GPU `ftassist.device.place_server` picks, with its vLLM memory share; `cfg` unchanged on a
    machine without GPUs. UserError when the server does not fit beside the training there."""
    import dataclasses

    from ftassist.device import detect_devices
    from ftassist.device import place_server as place

    devices = detect_devices()
    if not devices:
        return cfg
    servers: dict[int, int] = {}
    for _, record in live_servers(settings):
        if record.gpu is not None:
            servers[record.gpu] = servers.get(record.gpu, 0) + 1
    try:
        gpu, share = place(devices, servers, job_bytes_per_gpu(settings), model_bytes=weights_bytes(cfg.model))
    except ValueError as exc:
        raise UserError(f"the model server cannot start now: {exc}") from exc
    return dataclasses.replace(cfg, gpu=gpu, gpu_memory_utilization=share)


def weights_bytes(model: str) -> int:
    """Bytes of a model folder's weight files (0 for a hub id: its size is not known before it is downloaded)."""
    folder = Path(model)
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) if folder.is_dir() else 0


def waiting_sentence(settings: AppSettings, run_dir: str | Path | None) -> str | None:
    """'waiting for a training slot: position 2 of 3 …' for a waiting job, else None (also without a run)."""
    where = queue_position(settings, run_dir) if run_dir else None
    if where is None:
        return None
    slots = capacity(settings).jobs
    return (f"waiting for a training slot: position {where[0]} of {where[1]} "
            f"(this machine trains {slots} job{'s' if slots != 1 else ''} at a time; it starts by itself)")


class _schedule_lock:
    """One scheduler at a time, across threads and processes (a file lock under the runs folder)."""

    _thread_lock = threading.Lock()

    def __init__(self, settings: AppSettings):
        self.path = settings.runs_dir / ".schedule.lock"

    def __enter__(self):
        self._thread_lock.acquire()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()
        self._thread_lock.release()


# --- servers ---------------------------------------------------------------------------------------
def live_servers(settings: AppSettings) -> list[tuple[Path, ServerRecord]]:
    """(record path, record) of every running server of every workspace, newest first."""
    root = settings.workspaces_dir
    return live_server_records(root.glob(f"*/{SERVER_FILE}")) if root.is_dir() else []


def admit_server(ws: Workspace) -> None:
    """Raise UserError when every server slot is taken by other workspaces (the caller's own is replaced)."""
    others = [p for p, _ in live_servers(ws.settings) if p.resolve() != ws.server_file.resolve()]
    slots = capacity(ws.settings).servers
    if len(others) >= slots:
        idle = ws.settings.server_idle_minutes
        after = f"; idle servers stop after {idle:g} min" if idle else ""
        raise UserError(f"every model server slot of this machine ({slots}) is in use by other visitors: "
                        f"try again in a few minutes{after}")


def served_requests(info: ServerRecord) -> float | None:
    """Requests the server has answered so far, from vLLM's Prometheus /metrics (None when unreadable)."""
    import requests

    url = info.base_url.rstrip("/")
    url = url[:-3] if url.endswith("/v1") else url
    try:
        text = requests.get(f"{url}/metrics", timeout=3).text
    except requests.RequestException:
        return None
    counts = [float(v) for v in re.findall(r"^vllm:request_success_total\{[^}]*\}\s+([0-9.eE+-]+)", text, re.M)]
    return sum(counts) if counts else None


def stop_idle_servers(settings: AppSettings, now: float | None = None) -> list[Path]:
    """Stop servers unused for `server_idle_minutes`; returns their records."""
    if not settings.server_idle_minutes:
        return []
    now = time.time() if now is None else now
    stopped = []
    for path, info in live_servers(settings):
        seen = served_requests(info)
        if seen is not None and seen != info.requests_seen:
            touch_server_record(path, seen)
            continue
        last = max(info.last_used or 0, info.started_at)
        if now - last > 60 * settings.server_idle_minutes:
            stop_recorded_server(path)
            stopped.append(path)
    return stopped


def run_housekeeping(settings: AppSettings, every: float = 3.0) -> threading.Thread:
    """Start the daemon thread that starts queued jobs and stops idle servers every `every` s."""
    def loop() -> None:
        while True:
            try:
                schedule(settings)
                stop_idle_servers(settings)
            except Exception as exc:  # a bad record must not end the loop for everyone
                print(f"ftassist: housekeeping: {exc}", flush=True)
            time.sleep(every)

    thread = threading.Thread(target=loop, name="ftassist-housekeeping", daemon=True)
    thread.start()
    return thread
