"""`ftassist demo` end to end with the tiny model: every stage runs and writes its files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ftassist.process import free_port

ROOT = Path(__file__).resolve().parent.parent

@pytest.mark.vllm
@pytest.mark.slow
def test_demo_runs_every_stage(tiny_model, tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "ftassist_cli", "demo", "--model", str(tiny_model), "--out", str(out),
         "--max-steps", "2", "--limit", "4", "--port", str(free_port())],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("==> data", "==> train", "==> merge", "==> serve", "==> eval"):
        assert stage in proc.stdout
    assert "| base |" in proc.stdout and "| tuned |" in proc.stdout
    assert {p.name for p in (out / "data").iterdir()} >= {"train.jsonl", "test.jsonl", "report.json", "report.md"}
    assert (out / "run" / "adapter" / "adapter_model.safetensors").exists()
    assert (out / "merged" / "model.safetensors").exists()
    report = json.loads((out / "eval" / "report.json").read_text())
    arms = {arm["name"]: arm for arm in report["arms"]}
    assert set(arms) == {"base", "tuned"}
    assert all(arm["n"] == 4 for arm in arms.values())


def test_demo_refuses_missing_example(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ftassist_cli", "demo", "--example", str(tmp_path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "train.jsonl is missing" in proc.stderr and "Traceback" not in proc.stderr
