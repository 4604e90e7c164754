"""Experiment tracking: a tiny training run and an eval land in a real local Trackio project, read back by Trackio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ftassist.config import TrainConfig
from ftassist.errors import ConfigError
from ftassist.tracking import PROJECT, log_eval, tracker_missing
from ftassist.train.record import RunRecord, write_run_record
from ftassist.train.trainer import train

READ = """
import json, sys
from trackio.sqlite_storage import SQLiteStorage
print(json.dumps([{k: v for k, v in row.items() if isinstance(v, (int, float, str))}
                  for row in SQLiteStorage.get_logs(sys.argv[1], sys.argv[2])]))
"""


def read_back(folder: Path, run: str) -> list[dict]:
    """The run's logged rows, as Trackio's own storage returns them (a fresh process, TRACKIO_DIR=folder)."""
    done = subprocess.run([sys.executable, "-c", READ, PROJECT, run], capture_output=True, text=True, check=True,
                          env={"TRACKIO_DIR": str(folder), "PATH": "/usr/bin:/bin"})
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def tracked_run(tiny_model, tmp_path_factory):
    from tests.conftest import write_small_data

    root = tmp_path_factory.mktemp("tracked")
    data = write_small_data(root / "data")
    run = root / "runs" / "first"
    cfg = TrainConfig(data=str(data), out=str(run), model=str(tiny_model), max_steps=8, save_steps=4, batch_size=4,
                      grad_accum=1, learning_rate=2e-3, seed=7, eval_steps=4, time_budget=0)
    train(cfg, progress=False)
    return run, json.loads((run / "run.json").read_text())["tracking"]


def test_training_logs_loss_and_the_task_metric(tracked_run):
    run, tracking = tracked_run
    assert tracking["report_to"] == "trackio" and tracking["run"] == "first" and tracking["project"] == PROJECT
    assert "trackio show --project ftassist" in tracking["open"]
    rows = read_back(Path(tracking["dir"]), "first")
    losses = [r for r in rows if "train/loss" in r]
    assert len(losses) == 8 and all(r["train/loss"] > 0 for r in losses)
    val = [r for r in rows if "train/val_field_accuracy" in r]
    # the task metric at steps 4 and 8, the same figures metrics.jsonl holds
    written = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "val_loss" in line]
    assert [r["train/global_step"] for r in val] == [w["step"] for w in written] == [4, 8]
    assert [r["train/val_field_accuracy"] for r in val] == pytest.approx([w["val_field_accuracy"] for w in written])
    assert all("train/val_schema_valid" in r and "train/val_loss" in r for r in val)


def test_an_eval_in_the_run_folder_lands_in_the_same_run(tracked_run):
    run, tracking = tracked_run
    arms = [{"name": "tuned", "means": {"field_accuracy": {"value": 0.75}}, "rates": {"exact": {"value": 0.5}}}]
    assert log_eval(run, arms) is True
    rows = read_back(Path(tracking["dir"]), "first")
    assert any(r.get("eval/tuned/field_accuracy") == 0.75 and r.get("eval/tuned/exact") == 0.5 for r in rows)


def test_an_eval_of_another_visitors_run_lands_in_their_folder_only(tracked_run, tmp_path, monkeypatch):
    """The app's one process evaluates many visitors' runs, with trackio imported for an earlier one."""
    import os

    import trackio  # noqa: F401 - bound to some earlier folder in this process

    run, tracking = tracked_run
    other = tmp_path / "visitor-b" / "runs" / "second"
    other.mkdir(parents=True)
    theirs = {**tracking, "dir": str(tmp_path / "visitor-b" / "runs" / "trackio"), "run": "second"}
    write_run_record(other, RunRecord(base_model="m", model="m", method="lora", dtype="float32", device="cpu", tracking=theirs))
    env_before = os.environ.get("TRACKIO_DIR")
    arms = [{"name": "tuned", "means": {"field_accuracy": {"value": 0.25}}, "rates": {}}]
    assert log_eval(other, arms) is True
    assert [r["eval/tuned/field_accuracy"] for r in read_back(Path(theirs["dir"]), "second")] == [0.25]
    assert read_back(Path(tracking["dir"]), "second") == []  # nothing in the first visitor's folder
    assert os.environ.get("TRACKIO_DIR") == env_before  # later jobs of this process inherit nothing new


def test_runs_without_trackio_are_left_alone(tmp_path):
    write_run_record(tmp_path, RunRecord(base_model="m", model="m", method="lora", dtype="float32", device="cpu",
                                     tracking={"report_to": "none"}))
    assert log_eval(tmp_path, [{"name": "x", "means": {}, "rates": {}}]) is False
    assert log_eval(tmp_path / "missing", []) is False


def test_a_tracker_that_is_not_installed_is_refused_with_the_fix():
    assert tracker_missing("trackio") is None and tracker_missing("none") is None
    with pytest.raises(ConfigError, match="pip install wandb"):
        TrainConfig(data="d", out="o", report_to="wandb").validate()
    with pytest.raises(ConfigError, match="report_to 'neptune' is not one of"):
        TrainConfig(data="d", out="o", report_to="neptune")


def test_a_second_run_in_the_same_process_tracks_into_its_own_folder(tmp_path, monkeypatch):
    """Trackio binds its folder at import; each run of a process that already imported it is pointed at its own."""
    import sys

    import trackio.run
    import trackio.sqlite_storage
    import trackio.utils

    from ftassist.tracking import FOLDERS, prepare

    monkeypatch.delenv("TRACKIO_DIR", raising=False)
    for name, module in list(sys.modules.items()):  # every copy left as this session found it
        for attr in FOLDERS:
            if name.startswith("trackio") and isinstance(getattr(module, attr, None), Path):
                monkeypatch.setattr(module, attr, getattr(module, attr))
    first = prepare(tmp_path / "a" / "runs" / "one", "trackio")
    second = prepare(tmp_path / "b" / "runs" / "two", "trackio")
    assert first["dir"] == str(tmp_path / "a" / "runs" / "trackio")
    assert second["dir"] == str(tmp_path / "b" / "runs" / "trackio") and second["run"] == "two"
    assert trackio.sqlite_storage.TRACKIO_DIR == trackio.utils.TRACKIO_DIR == tmp_path / "b" / "runs" / "trackio"
    assert trackio.run.MEDIA_DIR == tmp_path / "b" / "runs" / "trackio" / "media"
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "mine"))  # the user's own choice wins, run after run
    assert prepare(tmp_path / "c" / "runs" / "three", "trackio")["dir"] == str(tmp_path / "mine")
    assert prepare(tmp_path / "d" / "runs" / "four", "trackio")["dir"] == str(tmp_path / "mine")
    assert trackio.utils.TRACKIO_DIR == tmp_path / "mine"
