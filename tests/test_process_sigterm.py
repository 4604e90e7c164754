"""A process that started a server-like child and is itself terminated stops that child (`sigterm_interrupts`),
as the CLI and the serving benches rely on; without it the child outlives its parent."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading

from ftassist.process import group_alive, signal_group, sigterm_interrupts

CHILD = textwrap.dedent("""
    import subprocess, sys, time
    from ftassist.process import sigterm_interrupts, stop_group

    def run():
        child = subprocess.Popen(["sleep", "600"], start_new_session=True, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        print(child.pid, flush=True)
        try:
            time.sleep(120)
        finally:
            stop_group(child.pid, 5, reap=child.poll)
            print("stopped", flush=True)

    if sys.argv[1] == "guarded":
        with sigterm_interrupts():
            run()
    else:
        run()
""")


def terminated(mode: str) -> tuple[int, int, str, str]:
    """Start the parent in `mode`, SIGTERM it once its child runs; (its exit code, the child's pid, its stdout and
    stderr)."""
    parent = subprocess.Popen([sys.executable, "-c", CHILD, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    pid = int(parent.stdout.readline())
    parent.send_signal(signal.SIGTERM)
    out, err = parent.communicate(timeout=30)
    return parent.returncode, pid, out, err


def test_a_terminated_parent_stops_the_group_it_started():
    code, pid, out, err = terminated("guarded")
    assert "stopped" in out
    assert code == 1 and "Terminated" in err  # the interrupt SIGTERM raised ended it, after its finally ran
    assert not group_alive(pid)


def test_without_it_the_child_outlives_its_terminated_parent():
    code, pid, out, _ = terminated("plain")
    try:
        assert code == -signal.SIGTERM and "stopped" not in out
        assert group_alive(pid)
    finally:
        signal_group(pid, signal.SIGKILL)


def test_the_previous_handler_comes_back_and_a_thread_changes_nothing():
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_interrupts():
        assert signal.getsignal(signal.SIGTERM) is not before
        seen = []
        worker = threading.Thread(target=lambda: seen.append(_enter_in_thread()))
        worker.start()
        worker.join()
        assert seen == ["entered"]
    assert signal.getsignal(signal.SIGTERM) is before


def _enter_in_thread() -> str:
    with sigterm_interrupts():  # signal.signal would raise ValueError outside the main thread
        return "entered"
