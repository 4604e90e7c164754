"""The chat's augment step against the planted teacher: offered only when the data is small and a teacher is set,
the teacher's measured accuracy comes first, the kept rows become a data folder the next quick reply trains on,
and a teacher below the floor labels nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ftassist.errors import UserError
from ftassist_app import conversation
from ftassist_app.settings import AppSettings
from ftassist_app.workspace import workspace_for
from tests.test_app_handlers import run as last
from tests.test_data_augment import NO_CITY, TYPICAL, UNLABELLED, KEPT, start, write_data


def built(tmp_path, tiny_model, teacher=None):
    settings = AppSettings(runs_dir=tmp_path / "runs", model=str(tiny_model), evidence_rows=0)
    if teacher is not None:
        settings = dataclasses.replace(settings, teacher_url=f"http://127.0.0.1:{teacher.server_address[1]}/v1",
                                       teacher_model="big")
    ws = workspace_for(settings, username="ada")
    data = write_data(tmp_path / "files")
    s = last(conversation.respond(conversation.new_session(), ws, files=[str(data / n) for n in
                                                                         ("train.jsonl", "test.jsonl", "schema.json")]))
    assert s.data_ready, s.messages[-3:]
    return s, ws, data


def test_small_data_and_a_teacher_offer_more_rows_that_the_next_reply_trains_on(tmp_path, tiny_model):
    teacher = start()
    try:
        s, ws, data = built(tmp_path, tiny_model, teacher)
        assert conversation.AUGMENT in s.quick and "can make more" in s.messages[-1]["content"]
        shown = [(len(state.messages), state.messages[-1]["content"])  # the chat as each yield left it
                 for state in conversation.respond(s, ws, conversation.AUGMENT)]  # the teacher writes inputs in the rows' style
        progress = [text for n, text in shown if n == shown[0][0] and "Now: " in text]  # one message, updated in place
        assert "Now: measuring the teacher on" in [text for text in progress if "Now: starting" not in text][0], shown
        assert any("Now: the teacher writes" in text for text in progress) and any("Now: labelling" in text for text in progress)
        report = s.messages[-1]["content"]
        assert report.index("The teacher first") < report.index("kept 2") and "ftassist train --data" not in report
        assert s.quick == [s.augmented["choice"], conversation.CONTINUE_TRAIN]
        assert s.augmented["choice"].endswith("+ 2 augmented")
        folder = s.augmented["dir"]
        assert folder.startswith(str(ws.root / "augmented") + "/")  # a new folder per augment, in the workspace
        rows = (Path(folder) / "train.jsonl").read_text()
        assert TYPICAL in rows and NO_CITY in rows
        s = last(conversation.respond(s, ws, s.augmented["choice"]))
        assert s.stage == "train" and s.data_dir == folder
        assert folder in s.messages[-1]["content"]  # the proposed command trains on it
        # with a file of unlabelled inputs, the teacher labels those instead of writing
        (tmp_path / "inputs.txt").write_text("\n".join(UNLABELLED) + "\n")
        s, ws, _ = built(tmp_path / "again", tiny_model, teacher)
        s = last(conversation.respond(s, ws, conversation.AUGMENT, files=[str(tmp_path / "inputs.txt")]))
        assert KEPT in (Path(s.augmented["dir"]) / "augmented.jsonl").read_text() and "kept 1" in s.messages[-1]["content"]
        assert (ws.uploads_dir / "unlabelled" / "inputs.txt").is_file()  # apart from the data's own uploads
        with pytest.raises(UserError, match="drop one file of unlabelled inputs"):
            last(conversation.respond(s, ws, conversation.AUGMENT, files=[str(data / "schema.json")]))
    finally:
        teacher.shutdown()


def test_a_teacher_below_the_floor_labels_nothing_and_no_teacher_means_no_offer(tmp_path, tiny_model):
    teacher = start(wrong_on_seed=True)
    try:
        s, ws, _ = built(tmp_path, tiny_model, teacher)
        s = last(conversation.respond(s, ws, conversation.AUGMENT))
        assert "**Refused**" in s.messages[-1]["content"] and "nothing was labelled" in s.messages[-1]["content"]
        assert s.quick == [conversation.CONTINUE_TRAIN] and s.augmented is None
        assert not list((ws.root / "augmented").glob("*/train.jsonl"))
    finally:
        teacher.shutdown()
    s, ws, _ = built(tmp_path / "plain", tiny_model)
    assert conversation.AUGMENT not in s.quick
    with pytest.raises(UserError, match="needs a small JSON data set and a teacher"):
        last(conversation.respond(s, ws, conversation.AUGMENT))
    with pytest.raises(UserError, match="--teacher-url needs --teacher-model"):
        AppSettings(runs_dir=tmp_path, model="m", teacher_url="http://127.0.0.1:9/v1")


def test_a_stream_closed_early_stops_the_work_at_its_next_phase_and_errors_reach_the_chat(monkeypatch):
    """Gradio closes a turn's generator when the visitor leaves: the teacher's work must not run on to the end."""
    import threading
    import time

    from ftassist_app import augment_step

    phases: list[str] = []

    def slow_run(cfg, progress):
        for n in range(50):
            progress(f"augment: phase {n}")
            phases.append(f"phase {n}")
            time.sleep(0.05)
        return None, "done"

    monkeypatch.setattr(augment_step, "run", slow_run)
    steps = augment_step.stream(None)
    assert next(steps).startswith("phase 0 (")
    workers = [t for t in threading.enumerate() if t.name == "augment"]
    assert len(workers) == 1  # at work: 50 phases take 2.5 s
    steps.close()
    workers[0].join(timeout=10)
    assert not workers[0].is_alive()
    assert 1 <= len(phases) < 50  # it stopped at a phase boundary, not after all 50

    def failing_run(cfg, progress):
        progress("augment: measuring the teacher")
        raise UserError("the teacher model (big) did not answer")

    monkeypatch.setattr(augment_step, "run", failing_run)
    with pytest.raises(UserError, match="did not answer"):
        list(augment_step.stream(None))
