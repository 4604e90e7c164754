"""Process-group helpers for the long-running children ftassist starts in their own session
(training workers, vLLM servers): signal a whole group, and ask whether it still has members.

    >>> import os, signal
    >>> group_alive(os.getpgrp())
    True
    >>> signal_group(2**22 + 12345, signal.SIGTERM)  # a group that does not exist: nothing happens
"""

from __future__ import annotations

import os


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
