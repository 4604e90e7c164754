"""App-wide settings fixed at start-up (never mutated per user), and where files go."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ftassist.errors import UserError

SPACE_DATA = Path("/data")  # persistent storage on a Hugging Face Space


@dataclass(frozen=True)
class AppSettings:
    """`runs_dir`: root of data folders, training runs and server records; `model`: base model."""

    runs_dir: Path
    model: str
    host: str = "127.0.0.1"
    port: int = 7860
    auth: tuple[str, str] | None = None
    max_file_size: str = "50mb"

    @property
    def jobs_dir(self) -> Path:
        return self.runs_dir / "jobs"

    def session_dir(self, session_id: str) -> Path:
        return self.runs_dir / "sessions" / session_id


def default_runs_dir(env: dict[str, str] | None = None) -> Path:
    """/data/runs on a Space (SPACE_ID set) with writable persistent storage, else ./runs."""
    env = os.environ if env is None else env
    if env.get("SPACE_ID") and SPACE_DATA.is_dir() and os.access(SPACE_DATA, os.W_OK):
        return SPACE_DATA / "runs"
    return Path("runs")


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """'user:pass' -> ('user', 'pass'); None or '' -> None; UserError for anything else.

    >>> parse_auth("ada:s3cret")
    ('ada', 's3cret')
    """
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise UserError("--auth must look like USER:PASSWORD (or set FTASSIST_AUTH=USER:PASSWORD)")
    return user, password
