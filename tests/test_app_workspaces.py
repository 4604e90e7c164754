"""Workspaces and limits, handler level: who a caller is, what they can reach, what the machine admits.

Jobs here are real job folders; "a job running elsewhere" is a status.json whose pid is a live
`sleep` in its own process group (what the reader checks), so no training runs unless a test
says so.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from ftassist.config import DataConfig, TrainConfig
from ftassist.errors import UserError
from ftassist.files import write_json_atomic
from ftassist.process import pid_alive, process_started
from ftassist.train.status import read_status
from ftassist_app import conversation, limits, train_step
from serving import registry
from serving.registry import ServerRecord, write_server_record
from ftassist_app.settings import AppSettings
from ftassist_app.workspace import (NO_WORKSPACE, issue_token, public_text, run_archive, verify_token, workspace_for)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "support_tickets"


@pytest.fixture()
def app(tmp_path, tiny_model) -> AppSettings:
    return AppSettings(runs_dir=tmp_path / "runs", model=str(tiny_model), max_jobs=1, max_waiting=2, max_servers=1)


@pytest.fixture()
def sleeper():
    """Live processes in their own groups, killed afterwards."""
    procs = []

    def start() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def running_job(ws, proc, name="run-busy") -> Path:
    """A job folder of `ws` whose status says running under `proc` (alive, heartbeat fresh)."""
    run = ws.jobs_dir / name
    run.mkdir(parents=True)
    write_json_atomic(run / "status.json", {"state": "running", "pid": proc.pid, "pid_started": process_started(proc.pid),
                                            "heartbeat": time.time(), "step": 1, "total_steps": 9})
    return run


def job_config(ws, data: Path) -> TrainConfig:
    return TrainConfig(data=str(data), out=str(train_step.new_run_dir(ws.jobs_dir)), model=ws.model, max_steps=1,
                       max_length=128)


def test_tokens_name_workspaces_and_forgeries_are_refused(app, tmp_path):
    token = issue_token(app)
    ws = workspace_for(app, token)
    assert ws.name.startswith("browser-") and ws.root.is_dir() and ws.root.parent == (app.runs_dir / "workspaces").resolve()
    assert workspace_for(app, token).root == ws.root  # the same token, the same workspace (a reload)
    ident, sig = token.split(".")
    for forged in ("", None, ident, f"{ident}.{'0' * 32}", f"{'a' * 24}.{sig}", "../../etc.x", {"token": token}):
        assert verify_token(app, forged) is None
        with pytest.raises(UserError, match="no workspace"):
            workspace_for(app, forged)
    # another app (another secret) does not accept this app's tokens
    other = AppSettings(runs_dir=tmp_path / "other", model=app.model)
    assert verify_token(other, token) is None
    # the secret survives a restart (same runs folder) and is readable by the app only
    assert verify_token(AppSettings(runs_dir=app.runs_dir, model=app.model), token) == ident
    assert (app.runs_dir / ".secret").stat().st_mode & 0o077 == 0
    assert "log in" in NO_WORKSPACE


def test_user_names_map_to_distinct_safe_folders(app):
    a, b, c = (workspace_for(app, username=u) for u in ("ada", "../ada", "Ada Lovelace"))
    assert len({a.root, b.root, c.root}) == 3
    for ws in (a, b, c):
        assert ws.root.parent == (app.runs_dir / "workspaces").resolve()
    assert a.name == "user-ada"


def test_runs_resolve_only_inside_the_workspace(app, sleeper):
    a, b = workspace_for(app, username="a"), workspace_for(app, username="b")
    run = running_job(a, sleeper())
    assert a.run(run.name) == run and a.run(str(run)) == run
    for attempt in (run.name, str(run), f"../../user-a/jobs/{run.name}", ""):
        with pytest.raises(UserError):
            b.run(attempt)
    assert a.owns(run) and not b.owns(run) and not b.owns(a.root / ".." / b.name / ".." / a.name)
    # B's page reattaches to nothing of A's, even handed A's run in its session
    s = conversation.new_session()
    s.run_dir, s.data_dir = str(run), str(a.data_dir)
    s = conversation.reattach(s, b)
    assert s.run_dir is None and s.data_dir is None
    assert conversation.poll(s, b) == (s, None, [])
    assert list(train_step.jobs_table(b.jobs_dir)["run"]) == []
    assert list(train_step.jobs_table(a.jobs_dir)["run"]) == [run.name]


def test_conversation_is_saved_per_workspace(app):
    a, b = workspace_for(app, username="a"), workspace_for(app, username="b")
    s = conversation.new_session()
    s.user("hello from a")
    s.answers = dataclasses.replace(s.answers, new_facts=False, constraints=frozenset({"private"}))
    a.save_session(s)
    back = a.load_session()
    assert back.messages == s.messages and back.answers == s.answers and back.workspace == a.name
    assert b.load_session() is None
    # a file copied from another workspace is not taken as this one's conversation
    (b.root / "conversation.json").write_text((a.root / "conversation.json").read_text())
    assert b.load_session() is None


def test_paths_are_hidden_from_remote_visitors_only(app):
    remote = AppSettings(runs_dir=app.runs_dir, model=app.model, on_space=True)
    ws = workspace_for(remote, username="ada")
    text = (f"ftassist data build {ws.uploads_dir}/a.csv --out {ws.data_dir} --model {app.model}; "
            f"see {remote.runs_dir.resolve()}/jobs")
    shown = public_text(remote, text)
    assert shown == f"ftassist data build uploads/a.csv --out data --model {Path(app.model).name}; see jobs"
    assert str(remote.runs_dir.resolve()) not in shown
    assert public_text(app, text) == text  # on the user's own machine (loopback) the paths are theirs
    assert AppSettings(runs_dir=app.runs_dir, model=app.model, host="0.0.0.0").remote


def test_one_job_per_workspace_a_queue_with_positions_and_a_cap(app, sleeper, small_data):
    other, a, b, c = (workspace_for(app, username=u) for u in ("other", "a", "b", "c"))
    busy = sleeper()
    running_job(other, busy)  # the machine's one slot is taken
    run_a = train_step.start_training(a, job_config(a, small_data))
    assert read_status(run_a).state == "waiting"
    assert limits.queue_position(app, run_a) == (1, 1)
    run_b = train_step.start_training(b, job_config(b, small_data))
    assert limits.queue_position(app, run_b) == (2, 2)
    assert "position 2 of 2" in limits.waiting_sentence(app, run_b)
    with pytest.raises(UserError, match="one training job per workspace"):
        train_step.start_training(a, job_config(a, small_data))
    with pytest.raises(UserError, match="queue is full"):
        train_step.start_training(c, job_config(c, small_data))
    with pytest.raises(UserError, match="outside your workspace"):
        train_step.start_training(c, job_config(a, small_data))
    # the chat says where the job stands
    s = conversation.new_session()
    s.data_dir, s.data_ready = str(small_data), True
    with pytest.raises(UserError, match="still waiting"):
        list(conversation.start_job_in_chat(s, a, job_config(a, small_data)))
    # cancelling a waiting job takes it out of the queue; B moves up
    train_step.cancel_training(run_a)
    assert read_status(run_a).state == "cancelled"
    assert limits.queue_position(app, run_b) == (1, 1)
    assert limits.schedule(app) == []  # still no free slot
    # the slot frees: the next scheduler pass starts B's job (then we stop it)
    busy.kill()
    busy.wait()
    assert limits.schedule(app) == [run_b.resolve()]
    started = read_status(run_b)  # queued or running: the worker marks itself running once it has imported
    assert started.state != "waiting" and pid_alive(started.pid, started.pid_started)  # B's worker was started
    assert limits.queue_position(app, run_b) is None
    from ftassist.train.jobs import cancel_job

    # cancelled at once, long before its one step could complete; the worker is gone
    assert cancel_job(run_b).state == "cancelled"
    assert not pid_alive(started.pid, started.pid_started)


def test_resume_waits_for_a_free_slot(app, sleeper, small_data):
    other, a = workspace_for(app, username="other"), workspace_for(app, username="a")
    running_job(other, sleeper())
    stopped = a.jobs_dir / "run-stopped"
    stopped.mkdir(parents=True)
    (stopped / "config.yaml").write_text("data: x\n")
    write_json_atomic(stopped / "status.json", {"state": "interrupted", "pid": None, "step": 2})
    with pytest.raises(UserError, match="every training slot of this machine is busy"):
        train_step.resume_training(a, stopped)
    with pytest.raises(UserError, match="not one of yours"):
        train_step.resume_training(other, stopped)


def fake_server(ws, proc, started_at: float | None = None, run_dir: str | None = None) -> ServerRecord:
    info = ServerRecord(base_url="http://127.0.0.1:9/v1", api_key="ft-secret", models=["base", "tuned"], pid=proc.pid,
                      pid_started=process_started(proc.pid), command="ftassist serve", run_dir=run_dir)
    if started_at is not None:
        info.started_at = started_at
    write_server_record(ws.server_file, info)
    return info


def test_servers_are_per_workspace_and_capped(app, sleeper):
    a, b = workspace_for(app, username="a"), workspace_for(app, username="b")
    fake_server(a, sleeper())
    assert conversation.current_server(conversation.new_session(), a) is not None
    assert conversation.current_server(conversation.new_session(), b) is None  # B never sees A's server
    run = b.jobs_dir / "run-done"
    (run / "adapter").mkdir(parents=True)
    s = conversation.new_session()
    s.run_dir, s.stage = str(run), "train"
    s = list(conversation.start_server_in_chat(s, b))[-1]
    assert "every model server slot of this machine (1) is in use by other visitors" in s.messages[-1]["content"]
    assert not any("Starting vLLM" in str(m["content"]) for m in s.messages)
    limits.admit_server(a)  # A's own server would be replaced, not counted against A


def test_idle_servers_stop_and_used_ones_stay(app, sleeper):
    a, b = workspace_for(app, username="a"), workspace_for(app, username="b")
    idle_proc, used_proc = sleeper(), sleeper()
    fake_server(a, idle_proc, started_at=time.time() - 3600)
    fake_server(b, used_proc, started_at=time.time() - 3600)
    registry.touch_server_record(b.server_file)  # B used theirs just now
    assert json.loads(b.server_file.read_text())["last_used"] > time.time() - 60
    assert registry.read_server_record(b.server_file) is not None  # the extra fields keep the record readable
    assert limits.served_requests(registry.read_server_record(a.server_file)) is None  # nothing listens on port 9
    stopped = limits.stop_idle_servers(app)
    assert stopped == [a.server_file]
    assert idle_proc.wait(timeout=30) is not None and not a.server_file.exists()
    assert used_proc.poll() is None and b.server_file.exists()
    assert limits.stop_idle_servers(AppSettings(runs_dir=app.runs_dir, model=app.model, server_idle_minutes=0)) == []


def test_row_cap_refuses_big_inputs_before_any_work(app, tmp_path):
    from ftassist.data.build import build_dataset

    out = tmp_path / "data"
    cfg = DataConfig(inputs=[str(EXAMPLE / "train.jsonl")], out=str(out), model=app.model, max_rows=50)
    with pytest.raises(UserError, match="400 rows, more than the 50 this build accepts"):
        build_dataset(cfg)
    assert not (out / "train.jsonl").exists()
    with pytest.raises(Exception, match="max-rows"):
        DataConfig(inputs=["a"], out="b", max_rows=-1).validate()


def test_downloads_are_the_workspace_own_runs(app):
    a, b = workspace_for(app, username="a"), workspace_for(app, username="b")
    run = a.jobs_dir / "run-done"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"")  # the archive wants a whole adapter
    (run / "run.json").write_text("{}")
    write_json_atomic(run / "status.json", {"state": "completed"})
    path = Path(run_archive(a, run.name))
    names = zipfile.ZipFile(path).namelist()
    assert "run-done/adapter/adapter_config.json" in names and "run-done/run.json" in names
    assert not a.owns(path)  # a copy outside the runs folder: what gradio sends is the handler's output
    with pytest.raises(UserError, match="not found among your runs"):
        run_archive(b, run.name)


def test_jobs_and_servers_are_pinned_to_gpus(app, sleeper, small_data, monkeypatch):
    """Two L4s injected (the device list is the only thing faked; the worker is real): waiting jobs start pinned
    to different GPUs, the worker itself sees its pin (its own status writer reads CUDA_VISIBLE_DEVICES back), and a
    server goes to a GPU without a server, with vLLM's share leaving the job there the memory its plan estimated."""
    from ftassist import device
    from ftassist.device import GiB, PROFILES
    from ftassist.train.jobs import cancel_job

    monkeypatch.setattr(device, "detect_devices", lambda: [PROFILES["L4"], PROFILES["L4"]])
    two = dataclasses.replace(app, max_jobs=2, max_servers=2)
    a, b, c = (workspace_for(two, username=u) for u in ("a", "b", "c"))
    blockers = [sleeper(), sleeper()]  # both slots taken while the two jobs are accepted
    for i, proc in enumerate(blockers):
        running_job(c, proc, name=f"run-busy{i}")
    runs = [train_step.start_training(ws, job_config(ws, small_data)) for ws in (a, b)]
    assert [read_status(r).state for r in runs] == ["waiting", "waiting"]
    for proc in blockers:
        proc.kill()
        proc.wait()
    try:
        assert sorted(limits.schedule(two)) == sorted(r.resolve() for r in runs)
        assert sorted(read_status(r).gpu for r in runs) == [0, 1]
        assert limits.jobs_per_gpu(two) == {0: 1, 1: 1}
        deadline = time.time() + 120  # the workers import torch, then rewrite their status themselves
        while time.time() < deadline and any(read_status(r).state in ("queued", "waiting") for r in runs):
            time.sleep(0.5)
        states = [read_status(r) for r in runs]
        assert all(s.state in ("running", "completed") for s in states), [(s.state, s.reason) for s in states]
        assert sorted(s.gpu for s in states) == [0, 1]  # written by the workers from their own environment
    finally:
        for r in runs:
            cancel_job(r)
    # A server beside an 8 GiB job: the GPU without a server, the share that leaves the job its memory.
    on0 = running_job(a, sleeper(), name="run-gpu0")
    status = json.loads((on0 / "status.json").read_text())
    write_json_atomic(on0 / "status.json", status | {"gpu": 0})
    write_json_atomic(on0 / "run.json", {"base_model": "m", "model": "m", "method": "lora", "dtype": "bfloat16",
                                         "device": "cuda", "plan": {"estimate_gib": 8.0}})
    assert limits.job_bytes_per_gpu(two) == {0: 8 * GiB}
    cfg = limits.place_server(two, conversation.serve_step.serve_config(two.model, None, b.root))
    assert (cfg.gpu, cfg.gpu_memory_utilization) == (1, 0.9)  # GPU 1 is free of jobs
    info = ServerRecord(base_url="http://127.0.0.1:9/v1", api_key="k", models=["base"], pid=sleeper().pid, gpu=1)
    info.pid_started = process_started(info.pid)
    write_server_record(b.server_file, info)
    cfg = limits.place_server(two, conversation.serve_step.serve_config(two.model, None, c.root))
    assert (cfg.gpu, cfg.gpu_memory_utilization) == (0, 0.54)  # beside the 8 GiB job on the 22 GiB L4
    write_json_atomic(on0 / "run.json", json.loads((on0 / "run.json").read_text()) | {"plan": {"estimate_gib": 20.0}})
    with pytest.raises(UserError, match="does not fit beside a 20.0 GiB training job on the NVIDIA L4"):
        limits.place_server(two, conversation.serve_step.serve_config(two.model, None, c.root))
