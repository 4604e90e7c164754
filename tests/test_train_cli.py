"""`ftassist train` / `ftassist jobs` from the command line, and the accelerate launch command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from ftassist_cli import main
from ftassist.config import TrainConfig
from ftassist.process import free_port
from ftassist.train.distributed import launch_command, write_launch_config


def test_train_in_the_foreground_then_inspect_it(tiny_model, small_data, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--data", str(small_data), "--out", str(run), "--model", str(tiny_model),
                 "--max-steps", "2", "--batch-size", "2", "--grad-accum", "1", "--save-steps", "2"])
    out = capsys.readouterr().out
    assert code == 0 and "trained 2 steps" in out and (run / "adapter" / "adapter_model.safetensors").exists()
    assert main(["jobs", "status", str(run)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "completed" and status["last_metrics"]["step"] == 2
    assert main(["jobs", "list", "--root", str(tmp_path)]) == 0
    assert "completed" in capsys.readouterr().out


def test_bad_flags_end_with_one_line_and_exit_2(small_data, tmp_path, capsys):
    code = main(["train", "--data", str(small_data), "--out", str(tmp_path / "r"), "--lora-r", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "--lora-r 0 must be positive" in err and "Traceback" not in err
    assert main(["jobs", "status", str(tmp_path)]) == 2
    assert "no status.json" in capsys.readouterr().err


def test_launch_command_per_strategy(tmp_path):
    cfg = TrainConfig(data="d", out=str(tmp_path / "run"))
    fsdp = launch_command(cfg, num_processes=4, strategy="fsdp")
    assert fsdp[:6] == ["accelerate", "launch", "--num_processes", "4", "--num_machines", "1"]
    assert "--use_fsdp" in fsdp and fsdp[-3:] == ["-m", "ftassist.train.worker", str(tmp_path / "run")]
    assert "--zero_stage" in launch_command(cfg, num_processes=2, strategy="deepspeed")
    assert "--multi_gpu" in launch_command(cfg, num_processes=2, strategy="ddp")
    with pytest.raises(ValueError, match="strategy"):
        launch_command(cfg, num_processes=2, strategy="tp")


@pytest.mark.slow
def test_two_cpu_processes_train_through_accelerate_launch(tiny_model, small_data, tmp_path):
    accelerate = shutil.which("accelerate") or os.path.join(os.path.dirname(sys.executable), "accelerate")
    cfg = TrainConfig(data=str(small_data), out=str(tmp_path / "run"), model=str(tiny_model), max_steps=3,
                      batch_size=2, grad_accum=1, save_steps=3)
    write_launch_config(cfg)
    argv = launch_command(cfg, num_processes=2, strategy="ddp", cpu=True, port=free_port())
    proc = subprocess.run([accelerate] + argv[1:], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["world_size"] == 2 and info["mergeable"] is True
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "completed"
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()


_RANK_CHILD = """
import sys
import torch.distributed as dist
from ftassist.config import TrainConfig
from ftassist.process import free_port
from ftassist.errors import UserError
from ftassist.train.trainer import train
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
cfg = TrainConfig(data=sys.argv[2], out=sys.argv[3], model=sys.argv[4], max_steps=1, batch_size=2, save_steps=1)
train(cfg, progress=False)
print("after success:", dist.is_initialized())
dist.init_process_group("gloo", init_method="file://" + sys.argv[1] + "2", rank=0, world_size=1)
try:
    train(TrainConfig(**{**cfg.__dict__, "out": sys.argv[3] + "-bad", "data": sys.argv[2] + "-missing"}), progress=False)
    print("the missing data was trained on")
except UserError:
    print("after failure:", dist.is_initialized())
"""


def test_a_rank_releases_its_process_group_when_training_ends(tiny_model, small_data, tmp_path):
    """Each rank destroys its gloo process group when `train` returns or fails: a rank that exited with it alive
    could abort at interpreter shutdown ("terminate called without an active exception"), and the launcher then
    failed a run whose adapter was written (seen in CI on `--num-processes 2`)."""
    proc = subprocess.run([sys.executable, "-c", _RANK_CHILD, str(tmp_path / "store"), str(small_data),
                           str(tmp_path / "run"), str(tiny_model)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "FTASSIST_BF16_PROBE": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "after success: False" in proc.stdout and "after failure: False" in proc.stdout, proc.stdout
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()
