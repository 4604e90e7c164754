"""Per-user conversation state, kept in `gr.State` (one copy per browser tab).

It is also saved in the visitor's workspace after every turn (`Workspace.save_session`), so a
reload or an app restart finds the transcript again; jobs and the server are found on disk.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from ftassist.advisor import Answers

STAGES = ("decide", "data", "train", "serve")


@dataclass
class Session:
    """One user's place in the conversation.

    `messages` are chat messages ({"role", "content"}; content is text or {"path": image});
    `quick` the quick-reply labels offered now; the other fields record what was built where.
    """

    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    workspace: str = ""
    stage: str = "decide"
    answers: Answers = field(default_factory=Answers)
    messages: list[dict[str, Any]] = field(default_factory=list)
    quick: list[str] = field(default_factory=list)
    data_inputs: list[str] = field(default_factory=list)
    data_fixes: dict[str, bool] = field(default_factory=dict)
    data_dir: str | None = None
    data_ready: bool = False
    fix_options: dict[str, str] = field(default_factory=dict)
    train_overrides: dict[str, Any] = field(default_factory=dict)
    run_dir: str | None = None
    reported_state: str | None = None
    task_fields: list[str] = field(default_factory=list)  # output fields the user named in their own words
    evidence: dict | None = None  # ftassist.evidence.Evidence.to_dict() of the current data set
    column_map: dict[str, str] | None = None  # the table mapping the user confirmed (None: not asked or not needed)
    mapping_request: dict | None = None  # {"path", "columns", "mapping", "reason"} while a mapping is on show
    augment_offered: bool = False  # the data is small and a teacher is set: "Make more rows" is on offer
    augmented: dict | None = None  # {"dir", "choice"}: the augmented data folder and the quick reply that trains on it
    levers_job: str | None = None  # the job trying `ftassist next`'s levers on run_dir, while it is followed

    @property
    def followed(self) -> str | None:
        """The job the progress panel follows (and cancel / resume act on): the levers' try while one runs, else run_dir."""
        return self.levers_job or self.run_dir

    def say(self, text: str) -> None:
        self.messages.append({"role": "assistant", "content": text})

    def show_image(self, path: str) -> None:
        self.messages.append({"role": "assistant", "content": {"path": str(path)}})

    def show_file(self, path: str) -> None:
        """A file of the workspace offered in the chat (the UI sends a copy; a download link for non-images)."""
        self.show_image(path)

    def user(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})
