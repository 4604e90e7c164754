"""Child processes the tests start (the app, mostly): stop them politely, then firmly."""

from __future__ import annotations

import subprocess


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, and SIGKILL when `proc` is still there after `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def find_server(runs) -> tuple:
    """(record path, record) of the newest live server recorded anywhere under `runs`, or None."""
    from pathlib import Path

    from serving.registry import SERVER_FILE, live_server_records

    found = live_server_records(Path(runs).glob(f"**/{SERVER_FILE}"))
    return found[0] if found else None
