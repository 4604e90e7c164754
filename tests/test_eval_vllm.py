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
from ftassist.evaluation.harness import run_eval
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


def test_arms_on_two_endpoint_urls_of_one_server(vllm_server, tmp_path):
    """A plain name, LABEL=NAME@ the same URL (shares its Endpoint), and @ another spelling of it (a second Endpoint)."""
    here = vllm_server.base_url
    there = here.replace("127.0.0.1", "localhost")
    assert there != here
    base, tuned = vllm_server.base_name, vllm_server.adapter_name
    models = [base, f"{tuned}={tuned}@{here}", f"far={tuned}@{there}"]
    result = run_eval(config(vllm_server, tmp_path, models=models, limit=2, constrained=True, forgetting_probe=False),
                      progress=lambda m: None)
    report = json.loads((result.out / "report.json").read_text())
    assert [(a["name"], a["model"], a["endpoint"]) for a in report["arms"]] == [
        (base, base, here), (tuned, tuned, here), ("far", tuned, there),
        (f"{base}+json_schema", base, here), (f"{tuned}+json_schema", tuned, here), ("far+json_schema", tuned, there)]
    assert [(e["url"], e["arms"], e["models"]) for e in report["endpoints"]] == [
        (here, [base, tuned], [base, tuned]), (there, ["far"], [tuned])]
    assert all(base in e["served"] and tuned in e["served"] for e in report["endpoints"])
    assert all(a["n"] == 2 and a["request_errors"] == 0 and a["speed"]["completion_tokens"] > 0 for a in report["arms"])
    assert [c["b"] for c in report["comparisons"]] == [a["name"] for a in report["arms"][1:]]
    assert report["config"]["api_key"] == "***" and vllm_server.api_key not in (result.out / "report.json").read_text()
    assert f"Endpoints: {here} ({base}, {tuned}); {there} (far)" in (result.out / "report.md").read_text()

    with pytest.raises(UserError, match=rf"^the endpoint {there} does not serve model\(s\) ghost; it serves: "):
        run_eval(config(vllm_server, tmp_path, models=[base, f"ghost@{there}"]))
