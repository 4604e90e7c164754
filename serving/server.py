"""A running OpenAI-compatible server process (vLLM, or llama.cpp for a GGUF): where it answers, how to
wait for it, how to stop it cleanly.

`ServerProcess.stop()` sends SIGTERM to the server's whole process group (API server, engine core,
workers), waits, then SIGKILLs whatever is left, so no process outlives it.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from ftassist.errors import UserError
from ftassist.process import group_alive, stop_group


def log_tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file ('' when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64_000))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class ServerProcess:
    """A server started by `serving.launch.start_server` (vLLM) or `serving.llamacpp.start_llama_server`;
    a context manager that stops it on exit."""

    process: subprocess.Popen
    base_url: str  # ends in /v1
    api_key: str | None
    log_path: Path
    base_name: str = "base"
    adapter_names: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    engine: str = "vLLM"
    health_path: str | None = "/health"  # None: the server has none, /v1/models alone says it is ready

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def root_url(self) -> str:
        """The base URL without /v1 (where /health, /tokenize and /openapi.json live)."""
        return self.base_url.removesuffix("/v1")

    @property
    def adapter_name(self) -> str | None:
        """The first adapter's served name (None when only the base is served)."""
        return self.adapter_names[0] if self.adapter_names else None

    @property
    def model_names(self) -> list[str]:
        return [self.base_name, *self.adapter_names]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = 20.0) -> int | None:
        """Stop the server and every process of its group; returns the server's exit code."""
        pgid = self.process.pid  # start_new_session made it the group leader
        if not group_alive(pgid):
            return self.process.poll()
        stop_group(pgid, grace, running=lambda: group_alive(pgid), reap=self.process.poll)  # reaped, the group can empty
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return None

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_ready(server: ServerProcess, timeout: float, poll: float = 0.5) -> float:
    """Wait until /health (when the server has one) answers 200 and /v1/models lists the served names.

    Returns the seconds taken.

    Raises `UserError` with the log's tail when the process exits or `timeout` passes.
    """
    start = time.monotonic()
    while True:
        code = server.process.poll()
        if code is not None:
            raise UserError(
                f"{server.engine} exited with code {code} before it was ready; the end of its log ({server.log_path}):\n"
                + log_tail(server.log_path)
            )
        if time.monotonic() - start > timeout:
            raise UserError(
                f"{server.engine} was not ready after {timeout:.0f} s (raise --startup-timeout"
                + (", or add --enforce-eager for a faster start" if server.engine == "vLLM" else "")
                + f"); the end of its log ({server.log_path}):\n" + log_tail(server.log_path)
            )
        try:
            if server.health_path is None or requests.get(f"{server.root_url}{server.health_path}", timeout=2).status_code == 200:
                models = requests.get(f"{server.base_url}/models", headers=server.headers(), timeout=5)
                if models.status_code == 200:
                    names = {m["id"] for m in models.json().get("data", [])}
                    missing = set(server.model_names) - names
                    if missing:
                        raise UserError(f"{server.engine} is up but does not list {sorted(missing)}; see {server.log_path}")
                    return time.monotonic() - start
        except requests.RequestException:
            pass
        time.sleep(poll)
