"""Experiment tracking: every run reports its loss, task metric and eval to a tracker, Trackio by default.

Trackio is local-first (a SQLite file per project, a Gradio dashboard): a run in `runs/first` logs to
`runs/trackio/` as run "first" of project "ftassist", and

    TRACKIO_DIR=runs/trackio trackio show --project ftassist

opens it in a browser. `--report-to tensorboard|wandb|mlflow` passes through to transformers'
integrations instead (the loss and the task metric; the eval goes to Trackio only). A TRACKIO_DIR
already set in the environment wins. Trackio reads TRACKIO_DIR once, when it is first imported, into a
module global that several of its modules copy: a process that imported it earlier (a notebook, a test
session, a second `train()` call) has every loaded copy pointed at this run's folder, so a run never logs
into another run's folder. `run.json` records the folder used.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path

PROJECT = "ftassist"
PACKAGES = {"trackio": "trackio", "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def tracker_missing(report_to: str) -> str | None:
    """A problem line when the chosen tracker's package is not installed, else None."""
    package = PACKAGES.get(report_to)
    if package and importlib.util.find_spec(package) is None:
        return f"--report-to {report_to}: the {package} package is not installed (pip install {package}), or pass --report-to none"
    return None


_SET_HERE: list[str] = []  # the TRACKIO_DIR values prepare() set, which are not the user's choice


def tracking_dir(run_dir: str | Path) -> Path:
    """Where Trackio keeps this run's project: the user's $TRACKIO_DIR, else `trackio/` beside the run folder."""
    chosen = os.environ.get("TRACKIO_DIR")
    if chosen and chosen not in _SET_HERE:
        return Path(chosen)
    return Path(run_dir).resolve().parent / "trackio"


def prepare(run_dir: str | Path, report_to: str) -> dict:
    """Point Trackio at this run's folder (before it is imported) and say where the run is tracked."""
    if report_to != "trackio":
        return {"report_to": report_to}
    chosen = os.environ.get("TRACKIO_DIR")
    wanted = tracking_dir(run_dir)
    if not chosen or chosen in _SET_HERE:  # the user's own TRACKIO_DIR stays theirs for every later run too
        os.environ["TRACKIO_DIR"] = str(wanted)
        _SET_HERE.append(str(wanted))
    if "trackio" in sys.modules:
        _repoint(wanted)
    import trackio.utils

    used = Path(trackio.utils.TRACKIO_DIR)
    return {"report_to": "trackio", "dir": str(used), "project": PROJECT, "run": Path(run_dir).name,
            "open": f"TRACKIO_DIR={used} trackio show --project {PROJECT}"}


FOLDERS = {"TRACKIO_DIR": "", "MEDIA_DIR": "media", "ARTIFACTS_DIR": "artifacts"}  # trackio.utils' globals


def _repoint(folder: Path) -> None:
    """Point an already imported Trackio at `folder`: each of its modules holds its own copy of the folders."""
    for name, module in list(sys.modules.items()):
        if name == "trackio" or name.startswith("trackio."):
            for attr, sub in FOLDERS.items():
                if isinstance(getattr(module, attr, None), Path):
                    setattr(module, attr, folder / sub if sub else folder)


def scalars(row: dict, prefix: str = "") -> dict[str, float]:
    """The numeric entries of a metrics row, for a tracker (nested and text values left out).

    >>> scalars({"step": 3, "val_exact": 0.5, "val_per_field": {"a": 1.0}, "note": "x", "ok": True}, "eval/")
    {'eval/val_exact': 0.5}
    """
    return {f"{prefix}{k}": float(v) for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


_LOG_CHILD = "import json, sys; from ftassist.tracking import _log; a = json.load(sys.stdin); _log(a['project'], a['run'], a['values'])"


def _log(project: str, run: str, values: dict[str, float]) -> None:
    import trackio

    with contextlib.redirect_stdout(sys.stderr):  # trackio announces itself on stdout
        trackio.init(project=project, name=run, resume="allow")
        trackio.log(values)
        trackio.finish()


def log_eval(run_dir: str | Path, arms: list[dict]) -> bool:
    """Add an eval's content and format figures to the run's Trackio run; False when the run does not use Trackio."""
    import json

    from ftassist.errors import UserError
    from ftassist.train.record import read_run_record

    try:
        record = read_run_record(run_dir)
    except UserError:
        return False
    tracking = (record.tracking if record else None) or {}
    if tracking.get("report_to") != "trackio":
        return False
    values: dict[str, float] = {}
    for arm in arms:
        for group in ("means", "rates"):
            for name, entry in (arm.get(group) or {}).items():
                values[f"eval/{arm['name']}/{name}"] = float(entry["value"])
    # Trackio binds its folder when first imported, and the app's one process serves many visitors: the figures
    # go through a child process pointed at this run's folder, so they never land in another run's (or visitor's)
    # folder, and this process's environment is left as it was (its later training jobs inherit it).
    import subprocess

    try:
        subprocess.run([sys.executable, "-c", _LOG_CHILD], input=json.dumps(
            {"project": tracking["project"], "run": tracking["run"], "values": values}), text=True,
            env={**os.environ, "TRACKIO_DIR": tracking["dir"]}, check=True, capture_output=True, timeout=120)
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or "").strip().splitlines()[-1:] or [f"exit status {exc.returncode}"]
        raise UserError(f"Trackio could not log to {tracking['dir']}: {last[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise UserError(f"Trackio did not finish logging to {tracking['dir']} within 120 s") from exc
    return True
