"""Processes and process groups of the long-running children ftassist starts in their own session
(training workers, vLLM and llama.cpp servers): is a recorded process still the same one, signal a
whole group, ask whether it still has members, and stop it (`stop_group`, the one stop loop); and a
free port for one to listen on (`free_port`); and `sigterm_interrupts`, under which a process that started such a
child stops it when it is itself terminated.

    >>> import os, signal
    >>> group_alive(os.getpgrp())
    True
    >>> signal_group(2**22 + 12345, signal.SIGTERM)  # a group that does not exist: nothing happens
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator


def pid_alive(pid: int | None, started: float | None = None) -> bool:
    """True when `pid` runs (not a zombie) and, if `started` is given, is the same process."""
    if not pid:
        return False
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        # pids are reused: the creation time tells our process from a newcomer
        return started is None or abs(proc.create_time() - started) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def process_started(pid: int) -> float | None:
    """The creation time of `pid` (what `pid_alive` compares), or None when it is gone."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


def signal_group(pgid: int, sig: int) -> None:
    """Send `sig` to every process of group `pgid`; returns None, also when the group is already gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def group_alive(pgid: int) -> bool:
    """True while process group `pgid` has any member, zombies included (so a parent must reap its
    child for the group to empty); True too when the group exists but belongs to another user."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_running(pgid: int) -> bool:
    """True while any process of group `pgid` is left that is not a zombie (a zombie's parent may not reap it soon)."""
    import psutil

    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return False


def stop_group(pgid: int, grace: float, *, running: Callable[[], bool] | None = None,
               reap: Callable[[], object] | None = None, poll: float = 0.2) -> bool:
    """SIGTERM to group `pgid`, SIGKILL to whatever is left after `grace` s; True when it stopped within the grace.

    `running` says whether it is still up (default: any non-zombie member); `reap` is called at each poll
    (a parent's `Popen.poll`, so its child can leave the group). Waits up to 10 s more after a SIGKILL.
    """
    def up() -> bool:
        if reap is not None:
            reap()
        return running() if running is not None else group_running(pgid)

    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while up():
        if time.monotonic() >= deadline:
            signal_group(pgid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while up() and time.monotonic() < deadline:
                time.sleep(poll / 2)
            return False
        time.sleep(poll)
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on `host` a moment ago (a server's, or the rendezvous of training ranks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an interrupt so that cleanup runs; a command ends with 143 (128 + SIGTERM) for it."""


def _raise_interrupt(signum, frame) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Inside, SIGTERM (`kill`, a service manager, a timeout) raises `Terminated` (a KeyboardInterrupt) in the main
    thread, as Ctrl-C does, so `finally` blocks and context managers run: a server or worker this process started is stopped instead
    of outliving it. The previous handler is restored on the way out. Outside the main thread (where Python cannot
    set handlers) it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
