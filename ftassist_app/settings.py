"""App-wide settings fixed at start-up (never mutated per user), and where files go."""

from __future__ import annotations

from collections.abc import Mapping

import os
from dataclasses import dataclass
from pathlib import Path

from ftassist.errors import UserError

SPACE_DATA = "/data"  # persistent storage on a Hugging Face Space (FTASSIST_SPACE_DATA moves it, for checks)


@dataclass(frozen=True)
class AppSettings:
    """`runs_dir`: root of data folders, training runs and server records; `model`: base model."""

    runs_dir: Path
    model: str
    host: str = "127.0.0.1"
    port: int = 7860
    auth: tuple[str, str] | None = None
    max_file_size: str = "50mb"
    on_space: bool = False
    max_jobs: int = 0  # training jobs at once on the machine (0: from the hardware)
    max_waiting: int = 8  # jobs waiting for a slot, all workspaces together
    max_servers: int = 0  # model servers at once on the machine (0: from the hardware)
    max_rows: int = 20000  # rows one data build may read
    server_idle_minutes: float = 30.0  # a server nobody used for this long is stopped (0: never)
    evidence_rows: int = 8  # test rows the base model is measured on with prompting before advice (0: skip)
    assistant_url: str = ""  # an OpenAI-compatible endpoint that may word replies (ftassist_app.phrasing); "" none
    assistant_model: str = ""  # its model ("" : the first it serves)
    assistant_key: str = ""  # its API key
    teacher_url: str = ""  # an OpenAI-compatible endpoint that labels and writes rows (`ftassist data augment`); "" none
    teacher_model: str = ""  # its model
    teacher_key: str = ""  # its API key (the operator's, never a visitor's)

    def __post_init__(self) -> None:
        negative = [name for name in ("max_jobs", "max_waiting", "max_servers", "max_rows", "server_idle_minutes",
                                              "evidence_rows")
                    if getattr(self, name) < 0]
        if negative:
            raise UserError(f"--{negative[0].replace('_', '-')} must be 0 or more")
        if self.teacher_url and not self.teacher_model:
            raise UserError("--teacher-url needs --teacher-model (or $FTASSIST_TEACHER_MODEL): the model it serves")

    @property
    def remote(self) -> bool:
        """True when visitors come from elsewhere (a Space, or bound beyond loopback): server paths stay hidden."""
        return self.on_space or self.host not in ("127.0.0.1", "localhost", "::1")

    @property
    def workspaces_dir(self) -> Path:
        return self.runs_dir / "workspaces"


def default_runs_dir(env: dict[str, str] | None = None) -> Path:
    """/data/runs on a Space (SPACE_ID set) with writable persistent storage, else ./runs."""
    values: Mapping[str, str] = os.environ if env is None else env
    data = Path(values.get("FTASSIST_SPACE_DATA", SPACE_DATA))
    if values.get("SPACE_ID") and data.is_dir() and os.access(data, os.W_OK):
        return data / "runs"
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
