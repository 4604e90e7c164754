"""The server record: what reaches a running server (`server.json`), with one writer and one reader.

A server started in its own process group outlives the page (or the terminal) that started it. Its
record — pid, base URL, API key, model names, the run it serves, when it was last used — lets the
app find it again after a reload or a restart, stop it, and stop it when idle; `ftassist serve
--record FILE` writes the same record, so a server started from the command line is found and
stopped the same way. A record whose process is gone (or whose pid now belongs to another process)
reads as None.

    >>> import os, tempfile
    >>> from ftassist.process import process_started
    >>> path = Path(tempfile.mkdtemp()) / SERVER_FILE
    >>> write_server_record(path, ServerRecord("http://127.0.0.1:8000/v1", "k", ["base", "tuned"], os.getpid(),
    ...                                 process_started(os.getpid())))
    >>> read_server_record(path).tuned, read_server_record(path).last_used is None
    ('tuned', True)
    >>> touch_server_record(path, requests_seen=3.0); read_server_record(path).requests_seen
    3.0
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ftassist.files import write_json_atomic
from ftassist.process import pid_alive, stop_group

SERVER_FILE = "server.json"


# The name the app serves a run's trained model under (beside "base" when it is an adapter).
TUNED_NAME = "tuned"

@dataclass
class ServerRecord:
    """A running server as stored in server.json."""

    base_url: str  # ends in /v1
    api_key: str | None
    models: list[str]  # the base model's name first, then the adapters'
    pid: int  # the group leader: the whole group is stopped
    pid_started: float | None = None  # tells the recorded process from a later one with the same pid
    log_path: str = ""
    command: str = ""  # the `ftassist serve` line that starts the same server
    run_dir: str | None = None  # the run whose adapter is served as "tuned"
    started_at: float = field(default_factory=time.time)
    last_used: float | None = None  # the app's idle check: when it was last used
    requests_seen: float | None = None  # and how many requests the server had answered then
    gpu: int | None = None  # the GPU it is pinned to (ServeConfig.gpu), None on a CPU or when not pinned

    @property
    def tuned(self) -> str | None:
        """The trained model's served name: the adapter beside the base, or a fully fine-tuned model served alone."""
        if len(self.models) > 1:
            return self.models[1]
        return self.models[0] if self.models == [TUNED_NAME] else None

    @classmethod
    def of(cls, server, *, command: str = "", run_dir: str | None = None, gpu: int | None = None) -> "ServerRecord":
        """The record of a `ServerProcess` this process started."""
        from ftassist.process import process_started

        return cls(base_url=server.base_url, api_key=server.api_key, models=server.model_names, pid=server.pid,
                   pid_started=process_started(server.pid), log_path=str(server.log_path), command=command,
                   run_dir=run_dir, gpu=gpu)


def write_server_record(path: str | Path, record: ServerRecord) -> None:
    """Write `record` to `path` whole (a reader never sees half a file)."""
    write_json_atomic(Path(path), dataclasses.asdict(record))


def _load(path: str | Path) -> ServerRecord | None:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        names = {f.name for f in dataclasses.fields(ServerRecord)}
        return ServerRecord(**{k: v for k, v in raw.items() if k in names})
    except (OSError, ValueError, TypeError):
        return None


def read_server_record(path: str | Path) -> ServerRecord | None:
    """The server recorded in `path` if its process still runs, else None (also for a missing or broken file)."""
    record = _load(path)
    return record if record is not None and pid_alive(record.pid, record.pid_started) else None


def touch_server_record(path: str | Path, requests_seen: float | None = None) -> None:
    """Record that the server was used now (and, when given, the request count it reported)."""
    record = _load(path)
    if record is None:
        return
    record.last_used = time.time()
    if requests_seen is not None:
        record.requests_seen = requests_seen
    write_server_record(path, record)


def live_server_records(paths) -> list[tuple[Path, ServerRecord]]:
    """(path, record) of every path whose server still runs, newest first."""
    found = [(Path(p), r) for p in paths if (r := read_server_record(p)) is not None]
    return sorted(found, key=lambda item: item[1].started_at, reverse=True)


def stop_recorded_server(path: str | Path, grace: float = 20.0) -> None:
    """Stop the recorded server's whole process group (SIGTERM, SIGKILL after `grace` s) and remove its record."""
    record = read_server_record(path)
    if record is not None:
        stop_group(record.pid, grace, running=lambda: pid_alive(record.pid, record.pid_started), poll=0.3)
    Path(path).unlink(missing_ok=True)
