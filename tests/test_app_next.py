"""The chat's "Find what helps next": `ftassist next`'s levers as a background job of the workspace, its recommendation
said in the chat, and the recommended run made the conversation's run."""

from __future__ import annotations

import json
import shutil
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
    # The reward stages were tried before (a finished lever is read back, not trained again): the DPO lever's folder
    # holds a finished run (a copy of the SFT run, so it can be merged) whose kept step moved whole objects by half the
    # rows, more than two steps of a tiny random model can.
    dpo = sft / "next" / "dpo"
    shutil.copytree(sft, dpo)
    record = json.loads((dpo / "run.json").read_text())
    record["selection"]["metrics"].update(val_exact=baseline["val_exact"] + 0.5,
                                          val_field_accuracy=baseline["val_field_accuracy"] + 0.1)
    (dpo / "run.json").write_text(json.dumps(record))
    finished(sft / "next" / "grpo", figures(baseline["val_exact"], baseline["val_field_accuracy"]), stage="grpo")

    s = Session(stage="train", run_dir=str(sft), reported_state="completed")
    s = run(conversation.respond(s, ws, conversation.NEXT))
    job = Path(s.levers_job)
    assert job.parent == ws.jobs_dir and job != sft and (job / "next.yaml").is_file()
    assert s.run_dir == str(sft) and s.followed == str(job)  # a server of the run tried keeps serving it meanwhile
    assert f"as job `{job.name}`" in s.messages[-1]["content"] and s.quick == []
    # a reloaded page follows the try again, beside the run it tries
    fresh = conversation.reattach(Session(), ws)
    assert (fresh.levers_job, fresh.run_dir) == (str(job), str(sft))

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
    assert "- dpo (--stage dpo from the kept adapter" in said
    # rank and minutes really trained, as runs of their own, on the run's validation rows
    report = json.loads((sft / "next" / "next.json").read_text())
    trained = {t["lever"]: t for t in report["trials"] if t["seconds"]}
    assert set(trained) == {"rank", "minutes"} and all(t["metrics"] is not None for t in trained.values())
    assert json.loads((sft / "next" / "rank" / "adapter" / "adapter_config.json").read_text())["r"] == 32
    # the recommended run is the conversation's run now: merge or serve it
    assert s.run_dir == str(dpo) and s.levers_job is None and s.quick == [conversation.MERGE, conversation.START_SERVER]
    assert "is now this conversation's run" in said
    s = run(conversation.respond(s, ws, conversation.MERGE))
    assert "**Parity check passed**" in s.messages[-1]["content"] and (dpo / "merged" / "config.json").is_file()


def test_a_run_with_nothing_to_measure_by_is_refused_with_the_reason(ws):
    with pytest.raises(UserError, match="no finished training run"):
        run(conversation.respond(Session(stage="train"), ws, conversation.NEXT))
    stage = finished(ws.jobs_dir / "20261206-000000-dpo001", figures(0.5, 0.8), stage="dpo")
    (stage / "status.json").write_text(json.dumps({"state": "completed"}))
    assert not train_step.can_try_next(stage)
    with pytest.raises(UserError, match="is a --stage dpo run: run `ftassist next` on the SFT run it started from"):
        run(conversation.respond(Session(stage="train", run_dir=str(stage)), ws, conversation.NEXT))
    assert list(ws.jobs_dir.iterdir()) == [stage]  # nothing was queued


def test_a_levers_try_on_another_visitors_run_is_refused(ws, tmp_path):
    from ftassist.config import NextConfig
    from ftassist_app.limits import admit_job

    theirs = finished(tmp_path / "elsewhere" / "sft", figures(0.5, 0.8))
    cfg = NextConfig(run_dir=str(theirs), out=str(theirs / "next"))
    with pytest.raises(UserError, match="outside your workspace"):
        admit_job(ws, cfg, job_dir=ws.jobs_dir / "20261206-000000-next01")
    assert not ws.jobs_dir.exists() or not any(ws.jobs_dir.iterdir())
