"""One visitor's workspace: the folder every handler resolves paths through, and who owns it.

A Space is the internet, so nothing a visitor reaches is found by a global search: jobs, data,
uploads, the server record and the conversation live under `<runs>/workspaces/<name>/`, and a
run id, a server or a file outside it does not exist for that visitor.

Who is who:
- a logged-in user (`--auth`, or Hugging Face OAuth on a Space) is their user name;
- an anonymous browser holds a token the app issued (kept in the browser's localStorage), signed
  with the app's secret, so a made-up or copied-from-nowhere token is refused; the token
  survives reloads and app restarts (the secret is kept on disk, readable by the app only);
- anything else (an API call with neither) has no workspace and is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ftassist.advisor import Answers
from ftassist.errors import UserError
from ftassist.files import write_json_atomic
from ftassist_app.session import Session
from ftassist_app.settings import AppSettings
from serving.registry import SERVER_FILE

NO_WORKSPACE = ("no workspace: open the app in a browser, or log in (start the app with --auth USER:PASSWORD "
                "and pass auth= to the client) to call its API")
SECRET_FILE = ".secret"
CONVERSATION_FILE = "conversation.json"
_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Workspace:
    """The folder of one visitor under `settings.runs_dir` (created on first use)."""

    settings: AppSettings
    name: str

    @property
    def root(self) -> Path:
        return (self.settings.runs_dir / "workspaces" / self.name).resolve()

    @property
    def model(self) -> str:
        return self.settings.model

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def uploads_dir(self) -> Path:
        return self.root / "uploads"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def server_file(self) -> Path:
        return self.root / SERVER_FILE

    def run(self, run_id: str | None) -> Path:
        """The folder of this workspace's run `run_id`; UserError when it has no such run."""
        name = Path(run_id or "").name
        if not name:
            raise UserError("no run selected: pick a run in the job list")
        path = self.jobs_dir / name
        if not (path / "status.json").exists():
            raise UserError(f"run {name!r} not found among your runs")
        return path

    def owns(self, path: str | Path | None) -> bool:
        """True when `path` lies inside this workspace."""
        if not path:
            return False
        try:
            Path(path).resolve().relative_to(self.root)
        except ValueError:
            return False
        return True

    def public(self, text: str) -> str:
        """`text` as this visitor may see it (see `public_text`)."""
        return public_text(self.settings, text)

    # --- the conversation, kept on disk so a reload or an app restart finds it again ----------
    def save_session(self, s: Session) -> None:
        s.workspace = self.name
        raw = dataclasses.asdict(s)
        raw["answers"]["constraints"] = sorted(s.answers.constraints)
        write_json_atomic(self.root / CONVERSATION_FILE, raw)

    def load_session(self) -> Session | None:
        path = self.root / CONVERSATION_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            answers = dict(raw.get("answers") or {})
            answers["constraints"] = frozenset(answers.get("constraints") or ())
            raw["answers"] = Answers(**answers)
            known = {k: v for k, v in raw.items() if k in Session.__dataclass_fields__}
            s = Session(**known)
        except (OSError, ValueError, TypeError):
            return None
        return s if s.workspace == self.name else None


def public_text(settings: AppSettings, text: str) -> str:
    """`text` as a remote visitor may see it: paths relative to their workspace, no server paths.

    Locally (the app bound to loopback, not a Space) absolute paths are kept: they are the user's own.
    """
    if not settings.remote or not isinstance(text, str):
        return text
    runs = re.escape(str(settings.runs_dir.resolve()))
    text = re.sub(runs + r"/workspaces/[^/\s`'\"]+/?", "", text)
    text = re.sub(runs + "/?", "", text)
    model = str(settings.model)
    if Path(model).is_absolute():
        text = text.replace(model, Path(model).name)
    return re.sub(re.escape(tempfile.gettempdir()) + r"/[^\s`'\"]*/", "", text)


def workspace_for(settings: AppSettings, token: str | None = None, username: str | None = None) -> Workspace:
    """The caller's workspace: the logged-in user's, else the one a valid browser token names.

    Raises UserError (NO_WORKSPACE) for a caller with neither, or with a token this app did not issue.
    """
    if username:
        return _made(Workspace(settings, "user-" + _safe(username)))
    ident = verify_token(settings, token)
    if ident is None:
        raise UserError(NO_WORKSPACE)
    return _made(Workspace(settings, "browser-" + ident))


def _made(ws: Workspace) -> Workspace:
    ws.root.mkdir(parents=True, exist_ok=True)
    return ws


def _safe(username: str) -> str:
    """A folder name for a user name (distinct names stay distinct: a hash is added when anything was replaced)."""
    cleaned = _NAME.sub("_", username.strip())[:64] or "_"
    if cleaned != username:
        cleaned += "-" + hashlib.sha256(username.encode()).hexdigest()[:8]
    return cleaned


# --- browser tokens -----------------------------------------------------------------------------
def app_secret(settings: AppSettings) -> bytes:
    """The app's signing secret, made once and kept in `<runs>/.secret` (mode 600; never served)."""
    path = settings.runs_dir / SECRET_FILE
    with contextlib.suppress(OSError, ValueError):  # none yet (or unreadable): make one
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    fd, tmp = tempfile.mkstemp(dir=settings.runs_dir, prefix=".secret-")
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(value)
    os.chmod(tmp, 0o600)
    try:
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # first writer wins when two processes start at once
    finally:
        os.unlink(tmp)
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


def issue_token(settings: AppSettings) -> str:
    """A new anonymous workspace token: a random id and its signature."""
    ident = secrets.token_hex(12)
    return f"{ident}.{_sign(settings, ident)}"


def verify_token(settings: AppSettings, token: object) -> str | None:
    """The workspace id a token names when this app signed it, else None."""
    if not isinstance(token, str) or token.count(".") != 1:
        return None
    ident, sig = token.split(".")
    if not re.fullmatch(r"[0-9a-f]{24}", ident):
        return None
    return ident if hmac.compare_digest(sig, _sign(settings, ident)) else None


def _sign(settings: AppSettings, ident: str) -> str:
    return hmac.new(app_secret(settings), ident.encode(), hashlib.sha256).hexdigest()[:32]


def run_archive(ws: Workspace, run_id: str) -> str:
    """A zip of one of the workspace's runs for download: adapter (the kept step), run.json, config,
    metrics, eval reports; written to the temp folder, from where gradio sends it as the handler's output."""
    import zipfile

    from ftassist.train.weights import trained_weights

    run = ws.run(run_id)
    weights = trained_weights(run)  # adapter/, or model/ for a full fine-tuning run
    if weights is None:
        raise UserError(f"run {run.name} has no adapter yet: wait until training completes")
    parts = [p for p in [weights, run / "run.json", run / "config.yaml", run / "metrics.jsonl", run / "search.md",
                         run / "eval"] if p.exists()]
    dst = Path(tempfile.mkdtemp(prefix="ftassist-download-")) / f"{run.name}.zip"
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zf:
        for part in parts:
            files = [part] if part.is_file() else sorted(f for f in part.rglob("*") if f.is_file())
            for f in files:
                zf.write(f, f"{run.name}/{f.relative_to(run)}")
    return str(dst)


def viewable_copy(path: str | Path) -> str:
    """A copy of one of the workspace's images in the temp folder, which gradio moves to its cache.

    Gradio refuses to send outputs from outside the working and temp folders (a Space's /data), and
    the runs folder is not served by path: the page gets this copy as the handler's own output.
    """
    src = Path(path)
    stamp = hashlib.sha256(f"{src.resolve()}:{src.stat().st_mtime_ns}".encode()).hexdigest()[:16]
    dst = Path(tempfile.gettempdir()) / "ftassist-images" / stamp / src.name
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return str(dst)
