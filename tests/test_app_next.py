"""The chat's "Find what helps next": `ftassist next`'s levers as a background job of the workspace, its recommendation
said in the chat, and the recommended run made the conversation's run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ftassist.config import TrainConfig
from ftassist.errors import UserError
from ftassist.train.trainer import train
from ftassist_app import conversation, train_step
from ftassist_app.session import Session
from ftassist_app.settings import AppSettings
from ftassist_app.workspace import workspace_for
from tests.test_app_handlers import run
from tests.test_next_step import figures, finished


@pytest.fixture()
def ws(tmp_path, tiny_model):
    return workspace_for(AppSettings(runs_dir=tmp_path / "runs", model=str(tiny_model)), username="ada")


def test_the_levers_run_as_a_job_and_the_chat_recommends_what_moved_the_metric(ws, tiny_model, small_data):
    sft = ws.jobs_dir / "20261206-000000-sft001"
    train(TrainConfig(data=str(small_data), out=str(sft), model=str(tiny_model), max_steps=2, eval_steps=2, batch_size=2,
                      grad_accum=1, max_length=256, report_to="none"), progress=False)
    assert train_step.can_try_next(sft)
    baseline = json.loads((sft / "run.json").read_text())["selection"]["metrics"]
    # The reward stages were tried before (a finished lever is read back, not trained again); DPO moved whole objects
    # by half the rows, more than two steps of a tiny random model can.
    finished(sft / "next" / "dpo", figures(baseline["val_exact"] + 0.5, baseline["val_field_accuracy"] + 0.1), stage="dpo")
    finished(sft / "next" / "grpo", figures(baseline["val_exact"], baseline["val_field_accuracy"]), stage="grpo")

    s = Session(stage="train", run_dir=str(sft), reported_state="completed")
    s = run(conversation.respond(s, ws, conversation.NEXT))
    job = Path(s.run_dir)
    assert job.parent == ws.jobs_dir and job != sft and (job / "next.yaml").is_file()
    assert f"as job `{job.name}`" in s.messages[-1]["content"] and s.quick == []

    deadline, status = time.time() + 300, None
    while time.time() < deadline:
        s, status, _ = conversation.poll(s, ws)
        if status.state not in train_step.ACTIVE:
            break
        time.sleep(2)
    assert status is not None and status.state == "completed", (job / "train.log").read_text()[-3000:]
    assert status.reason == "recommended: dpo"
    said = s.messages[-1]["content"]
    assert "# The next step, measured" in said and "**Recommended: dpo**" in said and "moved whole objects by +50.0" in said
    assert "- dpo (--stage dpo from the kept adapter" in said and "read from its finished run" not in said
    # rank and minutes really trained, as runs of their own, on the run's validation rows
    report = json.loads((sft / "next" / "next.json").read_text())
    trained = {t["lever"]: t for t in report["trials"] if t["seconds"]}
    assert set(trained) == {"rank", "minutes"} and all(t["metrics"] is not None for t in trained.values())
    assert json.loads((sft / "next" / "rank" / "adapter" / "adapter_config.json").read_text())["r"] == 32
    # the recommended run is the conversation's run now: merge or serve it
    assert s.run_dir == str(sft / "next" / "dpo") and s.quick == [conversation.MERGE, conversation.START_SERVER]
    assert "is now this conversation's run" in said


def test_a_run_with_nothing_to_measure_by_is_refused_with_the_reason(ws):
    with pytest.raises(UserError, match="no finished training run"):
        run(conversation.respond(Session(stage="train"), ws, conversation.NEXT))
    stage = finished(ws.jobs_dir / "20261206-000000-dpo001", figures(0.5, 0.8), stage="dpo")
    (stage / "status.json").write_text(json.dumps({"state": "completed"}))
    assert not train_step.can_try_next(stage)
    with pytest.raises(UserError, match="is a --stage dpo run: run `ftassist next` on the SFT run it started from"):
        run(conversation.respond(Session(stage="train", run_dir=str(stage)), ws, conversation.NEXT))
    assert list(ws.jobs_dir.iterdir()) == [stage]  # nothing was queued
