"""The errors ftassist raises for the user's mistakes, each with a message that names the fix.

The CLI turns them into one line on stderr and exit code 2; the app turns them into `gr.Error`.
"""

from __future__ import annotations


class UserError(Exception):
    """Input that cannot be used: a missing file, a bad flag value, an unreadable format."""

    exit_code = 2


class ConfigError(UserError):
    """One or more problems with a config; all of them are listed, not just the first."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))
