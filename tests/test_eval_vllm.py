"""run_eval against the real vLLM CPU server (tiny random model as "base", a LoRA adapter as "tuned").

The model is random, so its replies are noise: these tests assert what does not depend on the
weights: every arm and file is there, structured outputs really constrain the reply, and the
server's own errors (wrong key, unknown model) reach the user as UserErrors that name the fix.
"""

from __future__ import annotations

import json

import pytest

from ftassist.config import EvalConfig
from ftassist.errors import UserError
from ftassist.evaluation.runner import run_eval
from tests.conftest import EXAMPLE

pytestmark = pytest.mark.vllm


def config(server, tmp_path, **kw) -> EvalConfig:
    values = dict(base_url=server.base_url, api_key=server.api_key, models=[server.base_name, server.adapter_name],
                  data=str(EXAMPLE / "test.jsonl"), out=str(tmp_path / "eval"), limit=4, max_tokens=48, concurrency=4)
    return EvalConfig(**{**values, **kw})


def test_run_eval_on_vllm_with_structured_outputs(vllm_server, tmp_path):
    result = run_eval(config(vllm_server, tmp_path, constrained=True), progress=lambda m: None)
    base, tuned = vllm_server.base_name, vllm_server.adapter_name
    assert [a["name"] for a in result.arms] == [base, tuned, f"{base}+json_schema", f"{tuned}+json_schema"]
    assert all(a["n"] == 4 and a["request_errors"] == 0 and a["speed"]["completion_tokens"] > 0 for a in result.arms)
    assert set(result.report["probe"]["arms"]) == {base, tuned}
    rows = [json.loads(x) for x in (result.out / "replies.jsonl").read_text().splitlines()]
    assert len(rows) == 16
    constrained = [r for r in rows if r["arm"].endswith("+json_schema")]
    # The grammar forces an object; a reply that stopped on its own is complete, schema-valid JSON.
    assert all(r["reply"].lstrip().startswith("{") for r in constrained)
    for r in constrained:
        if r["finish_reason"] == "stop":
            assert r["score"]["strict"] and r["score"]["schema_valid"], r["reply"]
        else:
            assert r["finish_reason"] == "length" and r["completion_tokens"] == 48
    assert len(result.report["constrained_speed"]) == 2
    assert sorted(p.name for p in result.out.iterdir()) == ["failures.png", "rates.png", "replies.jsonl", "report.json", "report.md"]


def test_vllm_unknown_model_and_wrong_key(vllm_server, tmp_path):
    with pytest.raises(UserError, match=rf"does not serve model\(s\) ghost; it serves: .*{vllm_server.base_name}"):
        run_eval(config(vllm_server, tmp_path, models=["ghost"]))
    with pytest.raises(UserError, match="refused the API key"):
        run_eval(config(vllm_server, tmp_path, api_key="wrong-key"))
