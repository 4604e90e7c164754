"""Background jobs for real: kill -9 then resume gives the same adapter; cancel leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from ftassist.config import TrainConfig
from ftassist.errors import UserError
from ftassist.train.jobs import cancel_job, list_jobs, read_metrics, read_status, resume_job, start_job
from ftassist.train.trainer import train
from tests.tiny import build_tiny_llama

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wider_model(tmp_path_factory) -> Path:
    """A tiny Llama a bit wider than the default fixture so a step takes long enough to kill mid-run."""
    return build_tiny_llama(tmp_path_factory.mktemp("wide") / "model", hidden=256, layers=4)


def cfg_for(data: Path, out: Path, model: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), model=str(model), max_steps=12, save_steps=3, batch_size=4,
                grad_accum=1, learning_rate=1e-3, lora_dropout=0.1, seed=3,
                eval_steps=5)  # an explicit interval: the automatic one skips a score when scoring grows costly
    return TrainConfig(**{**base, **kw})


def wait_for(pred, timeout: float, poll: float = 0.02):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"condition not met within {timeout} s")


def group_alive(pgid: int) -> bool:
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return False


def test_kill_9_then_resume_ends_with_the_same_adapter_as_an_uninterrupted_run(wider_model, small_data, tmp_path):
    reference = train(cfg_for(small_data, tmp_path / "ref", wider_model), progress=False)

    run = start_job(cfg_for(small_data, tmp_path / "job", wider_model))
    status = wait_for(lambda: (s := read_status(run)).state == "running" and s.step >= 5 and s, timeout=120)
    assert status.step < 12, "the job finished before it could be killed"
    os.kill(status.pid, signal.SIGKILL)
    wait_for(lambda: read_status(run).state == "interrupted", timeout=10)
    killed = read_status(run)
    assert killed.resumable and killed.extra["checkpoint"].endswith(("checkpoint-3", "checkpoint-6"))

    resume_job(run)
    final = wait_for(lambda: (s := read_status(run)).state not in ("queued", "running") and s, timeout=180, poll=0.2)
    assert final.state == "completed", (run / "train.log").read_text()[-2000:]
    rows = read_metrics(run)
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 13))
    # The validation split is scored at the same steps as in the uninterrupted run, with the same figures, and the
    # same step is kept: rows after the resumed checkpoint were dropped and scored again.
    ref_rows = [r for r in read_metrics(reference.run_dir) if "val_rows" in r]
    got_rows = [r for r in rows if "val_rows" in r]
    assert [r["step"] for r in got_rows] == [r["step"] for r in ref_rows] == [5, 10, 12]
    assert [r["val_loss"] for r in got_rows] == [r["val_loss"] for r in ref_rows]
    assert json.loads((run / "run.json").read_text())["selection"]["step"] == reference.selection["step"]

    ref = load_file(reference.weights_dir / "adapter_model.safetensors")
    got = load_file(run / "adapter" / "adapter_model.safetensors")
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(got[key], ref[key]), f"{key} differs after kill -9 and resume"
    assert [j.run_dir for j in list_jobs(tmp_path)] and {j.state for j in list_jobs(tmp_path)} == {"completed"}


def test_cancel_stops_the_whole_process_group_within_30_s(wider_model, small_data, tmp_path):
    run = start_job(cfg_for(small_data, tmp_path / "job", wider_model, max_steps=2000, save_steps=1000))
    with pytest.raises(UserError, match="already running"):
        start_job(cfg_for(small_data, tmp_path / "job", wider_model))
    status = wait_for(lambda: (s := read_status(run)).state == "running" and s.step >= 1 and s, timeout=120)
    started = time.time()
    final = cancel_job(run, timeout=30)
    assert time.time() - started < 30
    assert final.state == "cancelled" and final.resumable
    assert not group_alive(status.pid)
    with pytest.raises(ProcessLookupError):
        os.killpg(status.pid, 0)
    assert "cancelled" in (run / "train.log").read_text()


def test_two_processes_killed_and_resumed_end_with_the_adapter_of_an_uninterrupted_two_process_run(
        wider_model, small_data, tmp_path, capsys):
    """`--num-processes 2` (DDP, CPU ranks over gloo) for real: the foreground command trains the reference; the
    same config as a background job is killed with SIGKILL (the launcher and both ranks), resumed, and ends on
    the very same adapter. Several ranks train the epoch budget without validation or a clock (the plan says so)."""
    from ftassist_cli import main

    two = dict(num_processes=2, batch_size=2)
    ref_cfg = cfg_for(small_data, tmp_path / "ref", wider_model, **two)
    argv = ["train", "--data", ref_cfg.data, "--out", ref_cfg.out, "--model", ref_cfg.model, "--num-processes", "2"]
    argv += [a for k in ("max_steps", "save_steps", "batch_size", "grad_accum", "learning_rate", "lora_dropout", "seed",
                         "eval_steps") for a in (f"--{k.replace('_', '-')}", str(getattr(ref_cfg, k)))]
    assert main(argv) == 0
    assert "training as 2 processes (ddp)" in capsys.readouterr().err
    reference = Path(ref_cfg.out)
    info = json.loads((reference / "run.json").read_text())
    assert info["world_size"] == 2 and info["mergeable"] is True and info["selection"] is None
    assert "multi-process run trains its epoch budget and keeps the last step" in info["validation_note"]
    assert "wall-clock" not in info["budget"]["explanation"]

    run = start_job(cfg_for(small_data, tmp_path / "job", wider_model, **two))
    status = wait_for(lambda: (s := read_status(run)).state == "running" and s.step >= 4 and s, timeout=180)
    assert status.step < 12, "the job finished before it could be killed"
    group = os.getpgid(status.pid)  # the launcher's session: it and both ranks
    os.killpg(group, signal.SIGKILL)
    wait_for(lambda: not group_alive(group), timeout=30)
    wait_for(lambda: read_status(run).state == "interrupted", timeout=10)
    assert read_status(run).resumable

    resume_job(run)
    final = wait_for(lambda: (s := read_status(run)).state not in ("queued", "running") and s, timeout=300, poll=0.2)
    assert final.state == "completed", (run / "train.log").read_text()[-3000:]
    rows = read_metrics(run)
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 13))
    assert [r["lr"] for r in rows if "loss" in r] == [r["lr"] for r in read_metrics(reference) if "loss" in r]
    ref = load_file(reference / "adapter" / "adapter_model.safetensors")
    got = load_file(run / "adapter" / "adapter_model.safetensors")
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(got[key], ref[key]), f"{key} differs after kill -9 and resume under DDP"


def test_fsdp_and_deepspeed_are_refused_on_a_machine_without_gpus_with_the_reason(small_data, tmp_path, capsys):
    from ftassist_cli import main

    for strategy in ("fsdp", "deepspeed"):
        code = main(["train", "--data", str(small_data), "--out", str(tmp_path / strategy), "--num-processes", "2",
                     "--strategy", strategy])
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"ftassist train: error: --strategy {strategy} needs GPUs: accelerate refuses to start "
                       f"{'FSDP' if strategy == 'fsdp' else 'DeepSpeed'} without an accelerator; on this machine use "
                       "--strategy ddp (CPU processes over gloo)"]
        with pytest.raises(UserError, match=f"--strategy {strategy} needs GPUs"):
            start_job(cfg_for(small_data, tmp_path / f"job-{strategy}", tmp_path, num_processes=2, strategy=strategy))
        assert not (tmp_path / f"job-{strategy}" / "status.json").exists()  # nothing half-started


def test_a_dpo_stage_killed_with_sigkill_resumes_to_the_adapter_of_an_uninterrupted_one(wider_model, small_data, tmp_path):
    """The reward stages run through the same job machinery: a DPO stage job killed after a checkpoint resumes,
    reads its pairs back instead of generating them again, and ends on the uninterrupted stage's adapter."""
    # No validation here (the SFT kill test covers its rows across a resume): the pairs and the steps are the point.
    sft = train(cfg_for(small_data, tmp_path / "sft", wider_model, max_steps=3, task_metric=False), progress=False)
    stage = dict(stage="dpo", from_run=str(sft.run_dir), dpo_samples=0, batch_size=2, learning_rate=1e-4,
                 task_metric=False)
    reference = train(cfg_for(small_data, tmp_path / "ref", wider_model, **stage), progress=False)

    run = start_job(cfg_for(small_data, tmp_path / "job", wider_model, **stage))
    status = wait_for(lambda: (s := read_status(run)).state == "running" and s.step >= 4 and s, timeout=180)
    assert status.step < 12, "the job finished before it could be killed"
    pairs = (run / "pairs.jsonl").read_bytes()
    written = (run / "pairs.jsonl").stat().st_mtime_ns
    os.kill(status.pid, signal.SIGKILL)
    wait_for(lambda: read_status(run).state == "interrupted", timeout=10)
    assert read_status(run).resumable

    resume_job(run)
    final = wait_for(lambda: (s := read_status(run)).state not in ("queued", "running") and s, timeout=240, poll=0.2)
    assert final.state == "completed", (run / "train.log").read_text()[-3000:]
    assert (run / "pairs.jsonl").read_bytes() == pairs == (reference.run_dir / "pairs.jsonl").read_bytes()
    assert (run / "pairs.jsonl").stat().st_mtime_ns == written  # read back, not generated again
    rows = read_metrics(run)
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 13))
    assert [r["rewards_margins"] for r in rows if "loss" in r] == [r["rewards_margins"] for r in read_metrics(reference.run_dir) if "loss" in r]
    ref = load_file(reference.weights_dir / "adapter_model.safetensors")
    got = load_file(run / "adapter" / "adapter_model.safetensors")
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(got[key], ref[key]), f"{key} differs after kill -9 and resume of the DPO stage"


def test_a_job_being_spawned_reads_queued_until_its_launcher_goes_silent(tmp_path):
    """Between the launcher's first `queued` status (no pid yet) and the pid it records once the process exists,
    a reader (the app's poll) must see the job starting, not `interrupted`; a launcher that died there is silent."""
    from ftassist.train.status import STALE_AFTER, StatusWriter

    writer = StatusWriter(tmp_path, state="queued", pid=None, reason=None, mergeable=False)
    writer.update()
    assert read_status(tmp_path).state == "queued"
    writer.data["heartbeat"] = time.time() - STALE_AFTER - 1  # what a launcher that died before Popen leaves
    (tmp_path / "status.json").write_text(json.dumps(writer.data))
    gone = read_status(tmp_path)
    assert gone.state == "interrupted" and "no heartbeat" in gone.reason
    # A running job whose recorded process is gone reads interrupted at once, as before.
    StatusWriter(tmp_path, state="running", pid=2 ** 22 + 7, pid_started=1.0).update()
    dead = read_status(tmp_path)
    assert dead.state == "interrupted" and "gone" in dead.reason
