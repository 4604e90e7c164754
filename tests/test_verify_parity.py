"""The parity gate: pure agreement maths, then end to end with the tiny model, a real adapter and vLLM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serving.parity import Mismatch, agreement, first_divergence, likely_causes, probe_set
from serving.verify import verify_run
from tests.test_merge_model import make_run

OTHER_TEMPLATE = ("<|im_start|>system\nAlways answer in JSON.<|im_end|>\n{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                  "{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_agreement_counts_tokens_before_the_first_divergence():
    assert agreement([[1, 2, 3, 4]], [[1, 2, 3, 4]]) == (1.0, [None])
    assert agreement([[1, 2, 3, 4], [5, 6]], [[1, 9, 3, 4], [5, 6]]) == (3 / 6, [1, None])
    assert first_divergence([1, 2], [1, 2, 3]) == 2
    assert agreement([], []) == (1.0, [])


def test_probe_set_drops_the_reference_reply(small_data):
    probes = probe_set(small_data / "test.jsonl", limit=3)
    assert len(probes) == 3 + 4
    assert all(p[-1]["role"] == "user" for p in probes)
    assert probes[0][0]["role"] == "system"


def test_causes_name_template_and_near_ties():
    ties = [Mismatch("adapter_vllm", 0, 5, "a", "b", "ctx", margin=0.001)]
    causes = likely_causes({"merged_hf": 1.0, "adapter_vllm": 0.9}, ties, template_ok=False, threshold=0.99)
    assert causes[0].startswith("the served chat template differs")
    assert any("near-tie" in c for c in causes)
    assert likely_causes({"merged_hf": 1.0}, [], template_ok=None, threshold=0.99) == []
    big = [Mismatch("merged_hf", 0, 1, "a", "b", "", margin=3.0)]
    assert "merged weights do not reproduce" in likely_causes({"merged_hf": 0.5}, big, None, 0.99)[0]


def test_verify_without_a_server(tmp_path, tiny_model, tiny_adapter, small_data):
    run = make_run(tmp_path, tiny_model, tiny_adapter, small_data, mergeable=True)
    report = verify_run(run, limit=2, max_new_tokens=12)
    assert report.agreement == {"merged_hf": 1.0} and report.passed and report.template_ok is None
    assert report.probes == 6
    saved = json.loads((run / "verify.json").read_text())
    assert saved["passed"] is True and saved["agreement"] == {"merged_hf": 1.0}
    assert (run / "verify.md").read_text().startswith("# Parity check: PASSED")


@pytest.mark.vllm
def test_verify_through_the_server_is_exact_in_fp32(tmp_path, tiny_model, tiny_adapter, small_data, vllm_server):
    run = make_run(tmp_path, tiny_model, tiny_adapter, small_data, link=True, mergeable=True)
    report = verify_run(run, server=vllm_server, limit=4, max_new_tokens=24)
    assert report.served == {"adapter_vllm": "tuned"}  # found by the folder the server serves
    assert report.agreement == {"merged_hf": 1.0, "adapter_vllm": 1.0}
    assert report.template_ok is True and report.passed and report.mismatches == []


@pytest.mark.vllm
def test_verify_fails_on_a_different_served_template(tmp_path, tiny_model, tiny_adapter, small_data, vllm_server, capsys):
    from ftassist_cli import main

    run = make_run(tmp_path, tiny_model, tiny_adapter, small_data, template=OTHER_TEMPLATE, mergeable=True)
    code = main(["verify", str(run), "--base-url", vllm_server.base_url, "--api-key", vllm_server.api_key,
                 "--adapter-name", "tuned", "--limit", "2", "--max-new-tokens", "8"])
    out = capsys.readouterr().out
    assert code == 1
    assert "# Parity check: FAILED" in out and "Served chat template: DIFFERENT" in out
    saved = json.loads((run / "verify.json").read_text())
    assert saved["template_ok"] is False and saved["causes"][0].startswith("the served chat template differs")


def group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid` (read from /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.vllm
def test_serve_cli_serves_the_merged_model_and_stops_cleanly(tmp_path, tiny_model, tiny_adapter, small_data):
    from ftassist_cli import main
    from ftassist.process import free_port
    from serving.registry import read_server_record

    run = make_run(tmp_path, tiny_model, tiny_adapter, small_data, mergeable=True)
    assert main(["merge", str(run), "--out", str(run / "merged")]) == 0
    port = free_port()
    cmd = [sys.executable, "-m", "ftassist_cli", "serve", "--model", str(run / "merged"), "--port", str(port), "--api-key", "k-1",
           "--dtype", "float32", "--max-model-len", "512", "--enforce-eager", "--log-file", str(tmp_path / "vllm.log"),
           "--record", str(run / "server.json")]
    cli = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = cli.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        text = "".join(lines)
        assert f"vLLM is ready at http://127.0.0.1:{port}/v1" in text and "models: base" in text
        assert "Authorization: Bearer k-1" in text and "from openai import OpenAI" in text
        server_pid = int(re.search(r"\(pid (\d+),", text).group(1))
        record = read_server_record(run / "server.json")  # the registry the app reads finds the CLI's server
        assert record is not None and record.pid == server_pid and record.api_key == "k-1"
        assert record.base_url == f"http://127.0.0.1:{port}/v1" and record.models == ["base"]
        report = verify_run(run, run / "merged", base_url=f"http://127.0.0.1:{port}/v1", api_key="k-1", limit=2,
                            max_new_tokens=16)
        assert report.served == {"merged_vllm": "base"}
        assert report.agreement["merged_vllm"] == 1.0 and report.template_ok is True and report.passed
    finally:
        cli.send_signal(signal.SIGTERM)
        rest, _ = cli.communicate(timeout=60)
    assert cli.returncode == 0, rest
    assert "stopped" in rest
    assert group_members(server_pid) == []  # API server, engine core and workers are all gone
    assert not (run / "server.json").exists()
