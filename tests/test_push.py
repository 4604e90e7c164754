"""`ftassist push`: every way it cannot upload is one line and exit 2 (the Hub is not reachable from here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def push(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    return subprocess.run([sys.executable, "-m", "ftassist_cli", "push", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**clean, "PYTHONPATH": str(ROOT), **env}, timeout=120)


def test_refusals_name_the_problem_and_the_fix(tmp_path, tiny_adapter):
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    for f in tiny_adapter.iterdir():
        (run / "adapter" / f.name).write_bytes(f.read_bytes())
    home = str(tmp_path / "hf")  # no token stored here
    cases = [
        (push(str(run), "--repo", "no-owner", HF_HOME=home), "--repo 'no-owner': write OWNER/NAME"),
        (push(str(run), "--repo", "ada/x", HF_HOME=home), f"{run}/merged: no merged model there; ftassist merge {run}"),
        (push(str(run), "--repo", "ada/x", "--what", "adapter", HF_HOME=home), "no Hugging Face token: run `hf auth login`"),
        (push(str(run), "--repo", "ada/x", "--what", "adapter", HF_HOME=home, HF_TOKEN="hf_test",
              HF_ENDPOINT="http://127.0.0.1:9"), "cannot reach the Hugging Face Hub at http://127.0.0.1:9"),
    ]
    for done, message in cases:
        assert done.returncode == 2, (message, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
