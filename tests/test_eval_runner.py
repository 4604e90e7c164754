"""run_eval and `ftassist eval` end to end against a real local HTTP server with canned replies.

The server is a stdlib `http.server` on 127.0.0.1 speaking the OpenAI wire format; the
`openai` client, threads, scoring and every written file are the real ones. This tests the
plumbing and the exact numbers; tests/test_eval_vllm.py runs the same against real vLLM.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import ThreadingHTTPServer

import pytest

from ftassist_cli import main
from ftassist.config import EvalConfig
from ftassist.errors import ConfigError, UserError
from ftassist.evaluation.harness import run_eval
from ftassist.evaluation.testset import load_examples
from ftassist.schema import infer_schema
from tests.conftest import EXAMPLE
from tests.fake_http import JsonHandler

N = 8
PROBE_ANSWERS = {"17 + 25": "42", "capital of France": "Paris",
                 "Summarize": "The library moved to a new building in May after its roof leaked.",
                 "break into": "Sorry, I can't help with that."}


def canned(model: str, user: str, refs: dict[str, str], index: dict[str, int], constrained: bool) -> str:
    if user not in refs:  # a probe prompt
        answer = next(a for k, a in PROBE_ANSWERS.items() if k in user)
        return answer if model == "base" else '{"category": "other"}'
    ref = refs[user]
    if model == "tuned" or constrained:
        return ref
    return ref if index[user] % 2 else f"JSON:\n{ref}\n\nOutput: done"  # base: filler on even rows


class FakeOpenAI(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, key: str | None = None):
        self.key = key  # when set, every request must carry "Authorization: Bearer <key>"
        examples, _ = load_examples(EXAMPLE / "test.jsonl")
        self.refs = {e.prompt[-1]["content"]: e.reference_text for e in examples}
        self.index = {e.prompt[-1]["content"]: i for i, e in enumerate(examples)}
        self.requests: list[dict] = []
        self.noisy = False  # when set, every third "tuned" reply to a prompt gets its first field wrong
        self.asked: dict[str, int] = {}
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(JsonHandler):
    server: FakeOpenAI
    _send = JsonHandler.send_json

    def _refused(self) -> bool:
        if self.server.key and self.headers.get("Authorization") != f"Bearer {self.server.key}":
            self._send(401, {"error": {"message": "Unauthorized", "type": "Unauthorized", "param": None, "code": 401}})
            return True
        return False

    def do_GET(self):
        if self._refused():
            return
        if self.path == "/v1/models":
            return self._send(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in ("base", "tuned")]})
        self._send(404, {"error": {"message": "not found", "type": "NotFoundError", "param": None, "code": 404}})

    def do_POST(self):
        if self._refused():
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        if body["model"] not in ("base", "tuned"):
            return self._send(404, {"error": {"message": f"The model `{body['model']}` does not exist.",
                                              "type": "NotFoundError", "param": None, "code": 404}})
        user = body["messages"][-1]["content"]
        text = canned(body["model"], user, self.server.refs, self.server.index, "response_format" in body)
        if self.server.noisy and body["model"] == "tuned" and user in self.server.refs:
            with self.server.lock:
                seen = self.server.asked[user] = self.server.asked.get(user, 0) + 1
            if seen % 3 == 2:
                value = json.loads(text)
                value[next(iter(value))] = "WRONG"
                text = json.dumps(value)
        self._send(200, {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": text}}],
                         "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}})


def serve(key: str | None = None):
    server = FakeOpenAI(key)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture()
def fake_server():
    yield from serve()


@pytest.fixture()
def second_server():
    """Another endpoint, one that wants the key "sk-second"."""
    yield from serve("sk-second")


def url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def config(server, tmp_path, **kw) -> EvalConfig:
    values = dict(base_url=url(server), models=["base", "tuned"],
                  data=str(EXAMPLE / "test.jsonl"), out=str(tmp_path / "evals" / "a"), limit=N, concurrency=3)
    return EvalConfig(**{**values, **kw})


def test_run_eval_exact_numbers_files_and_history(fake_server, tmp_path):
    result = run_eval(config(fake_server, tmp_path, constrained=True), progress=lambda m: None)
    assert [a["name"] for a in result.arms] == ["base", "tuned", "base+json_schema", "tuned+json_schema"]
    base, tuned = result.arms[0], result.arms[1]
    assert (base["rates"]["strict"]["successes"], base["rates"]["extractable"]["successes"],
            base["rates"]["schema_valid"]["successes"], base["n"]) == (4, 8, 8, 8)
    assert base["failures"]["filler_before"] == 4 and base["failures"]["filler_after"] == 4
    assert base["means"]["field_accuracy"]["value"] == 1.0
    assert all(a["rates"]["strict"]["value"] == 1.0 for a in result.arms[1:])
    assert base["speed"]["completion_tokens"] == 8 * 20 and tuned["speed"]["requests"] == 8

    # The request sent: the prompt without the reference, greedy, max_tokens, the schema for constrained arms.
    sent = [r for r in fake_server.requests if r["model"] == "tuned" and "response_format" in r]
    assert len(sent) == N
    # max_tokens from the references: the longest of the N rows' replies in UTF-8 bytes, + 32, floored at 64.
    longest = max(len(json.loads(line)["messages"][-1]["content"].encode()) for line in
                  (EXAMPLE / "test.jsonl").read_text().splitlines()[:N])
    assert sent[0]["temperature"] == 0.0 and sent[0]["max_tokens"] == max(64, longest + 32)
    assert any(n.startswith(f"max_tokens {max(64, longest + 32)} came from the test set") for n in result.report["notes"])
    probes = [r for r in fake_server.requests if len(r["messages"]) == 1]
    assert len(probes) == 8 and {r["max_tokens"] for r in probes} == {128}  # 4 probes x 2 unconstrained arms
    assert [m["role"] for m in sent[0]["messages"]] == ["system", "user"]
    fmt = sent[0]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "reply"
    assert "$schema" not in fmt["json_schema"]["schema"] and fmt["json_schema"]["schema"]["required"][0] == "category"

    # The paired test is on content (the whole object right): base's replies carry filler around right values, so
    # no arm differs from it there, although base is only 50% strict.
    comparisons = result.report["comparisons"]
    assert [(c["b"], c["metric"], c["only_a"], c["only_b"], c["p_value"]) for c in comparisons] == [
        ("tuned", "exact", 0, 0, 1.0), ("base+json_schema", "exact", 0, 0, 1.0), ("tuned+json_schema", "exact", 0, 0, 1.0)]
    assert "not significant" in comparisons[0]["verdict"]
    assert base["content"]["verdict"].startswith("base: the content is right: 100% of fields")

    probe = result.report["probe"]
    assert probe["totals"] == {"base": 4, "tuned": 0}
    assert set(probe["arms"]) == {"base", "tuned"}  # constrained arms are not probed

    assert result.report["schema"]["source"] == f"{EXAMPLE / 'schema.json'} (found beside the test set)"
    out = tmp_path / "evals" / "a"
    assert result.out == out
    assert sorted(p.name for p in out.iterdir()) == ["failures.png", "rates.png", "replies.jsonl", "report.json", "report.md"]
    assert json.loads((out / "report.json").read_text())["table"] == result.table
    assert len((out / "replies.jsonl").read_text().splitlines()) == 4 * N
    assert result.table.splitlines()[2].startswith("| base | 100.0% (100.0-100.0) | 100.0% (67.6-100.0) | 100.0% (67.6-100.0) "
                                                   "| 50.0% (21.5-78.5) | 100.0% (67.6-100.0) |")
    assert result.table.splitlines()[2].endswith(f"| {N} | {url(fake_server)} |")
    assert result.report["endpoints"] == [{"url": url(fake_server), "arms": ["base", "tuned"], "models": ["base", "tuned"],
                                           "served": ["base", "tuned"]}]
    assert [w["row"] for w in result.report["worst"]] == [1, 3, 5, 7]
    history = tmp_path / "evals" / "history.jsonl"
    assert len(history.read_text().splitlines()) == 1

    again = run_eval(config(fake_server, tmp_path, out=str(tmp_path / "evals" / "b"), forgetting_probe=False),
                     progress=lambda m: None)
    assert again.report["probe"] is None
    lines = [json.loads(x) for x in history.read_text().splitlines()]
    assert [x["out"] for x in lines] == [str(out), str(tmp_path / "evals" / "b")]
    assert again.report["history"]["table"].count("| yes |") == 4 + 2


def test_inferred_schema_is_reported(fake_server, tmp_path):
    data = tmp_path / "data" / "test.jsonl"
    data.parent.mkdir()
    data.write_text((EXAMPLE / "test.jsonl").read_text())
    result = run_eval(config(fake_server, tmp_path, data=str(data), models=["tuned"], forgetting_probe=False),
                      progress=lambda m: None)
    assert result.report["schema"]["source"] == "inferred from the references"
    examples, _ = load_examples(data, limit=N)
    assert result.report["schema"]["schema"] == infer_schema([e.reference for e in examples])
    assert result.report["schema"]["schema"]["required"] == ["category", "priority", "sentiment", "order_id", "amount", "products"]
    assert "Inferred from the test references" in (result.out / "report.md").read_text()


def test_sampled_mode_measures_stability(fake_server, tmp_path):
    result = run_eval(config(fake_server, tmp_path, models=["base"], samples=3, temperature=0.7, forgetting_probe=False),
                      progress=lambda m: None)
    arm = result.arms[0]
    assert arm["samples"] == 3 and arm["stability"]["value"] == 1.0
    assert arm["all_samples"]["exact"]["n"] == 3 * N and arm["speed"]["requests"] == 3 * N
    assert all(r["temperature"] == 0.7 for r in fake_server.requests)


def test_the_vote_arm_takes_each_field_from_the_majority_of_samples(fake_server, tmp_path):
    """One sample in three has its first field wrong: the plain arm's samples are 2/3 exact, the voted arm is right on
    every example; its comparison with base is reported and its cost is said."""
    fake_server.noisy = True
    result = run_eval(config(fake_server, tmp_path, models=["tuned"], samples=3, temperature=0.7, vote=True,
                             forgetting_probe=False), progress=lambda m: None)
    plain, voted = result.arms
    assert voted["name"] == "tuned + vote of 3" and voted["samples"] == 1
    assert plain["all_samples"]["exact"]["value"] == pytest.approx(2 / 3)
    assert voted["rates"]["exact"]["value"] == 1.0 and voted["means"]["field_accuracy"]["value"] == 1.0
    assert len(fake_server.requests) == 3 * N  # the vote asks for nothing more than the samples
    assert any("cost 3 completions per example" in n for n in result.report["notes"])
    assert [c["b"] for c in result.report["comparisons"]] == ["tuned + vote of 3"]
    with pytest.raises(ConfigError, match="--vote needs --samples 3 or more"):
        EvalConfig(data="t.jsonl", out="o", models=["m"], base_url="http://x/v1", vote=True, samples=2,
                   temperature=0.7).validate()


def test_unknown_model_lists_served_models(fake_server, tmp_path):
    with pytest.raises(UserError, match=r"does not serve model\(s\) nope; it serves: base, tuned"):
        run_eval(config(fake_server, tmp_path, models=["base", "nope"]))
    assert fake_server.requests == []  # checked before any completion


def test_unreachable_endpoint_names_url_and_serve(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = EvalConfig(base_url=f"http://127.0.0.1:{port}/v1", models=["m"], data=str(EXAMPLE / "test.jsonl"),
                     out=str(tmp_path / "o"))
    with pytest.raises(UserError, match=rf"cannot reach the endpoint http://127.0.0.1:{port}/v1 .*`ftassist serve"):
        run_eval(cfg)


def test_bad_schema_and_data_fail_before_requests(fake_server, tmp_path):
    bad = tmp_path / "schema.json"
    bad.write_text('{"type": 5}')
    with pytest.raises(UserError, match="not a valid JSON Schema"):
        run_eval(config(fake_server, tmp_path, schema=str(bad)))
    with pytest.raises(UserError, match="cannot read it"):
        run_eval(config(fake_server, tmp_path, data=str(tmp_path / "missing.jsonl")))
    assert fake_server.requests == []


def test_cli_eval(fake_server, tmp_path, capsys):
    port = fake_server.server_address[1]
    argv = ["eval", "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "base", "--model", "tuned",
            "--data", str(EXAMPLE / "test.jsonl"), "--out", str(tmp_path / "cli"), "--limit", "4", "--no-forgetting-probe"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| arm | field accuracy % (95% CI) | whole object right % (95% CI) |" in out
    assert "| tuned | 100.0% (100.0-100.0) | 100.0% (51.0-100.0) |" in out
    assert out.startswith("base: the content is right") and "next step (tuned):" in out  # the verdict comes first
    assert "not significant" in out
    assert f"report: {tmp_path / 'cli' / 'report.md'}" in out
    assert main(argv[:5] + ["--model", "ghost"] + argv[7:]) == 2
    assert "does not serve model(s) ghost; it serves: base, tuned" in capsys.readouterr().err


def test_arms_on_two_endpoints_with_their_own_keys(fake_server, second_server, tmp_path):
    remote = url(second_server)
    cfg = config(fake_server, tmp_path, models=["base", "tuned", f"remote=tuned@{remote}/"], api_keys={"remote": "sk-second"},
                 constrained=True)
    result = run_eval(cfg, progress=lambda m: None)
    names = ["base", "tuned", "remote", "base+json_schema", "tuned+json_schema", "remote+json_schema"]
    assert [a["name"] for a in result.arms] == names
    here = url(fake_server)
    assert [(a["model"], a["endpoint"]) for a in result.arms] == [("base", here), ("tuned", here), ("tuned", remote)] * 2
    assert result.report["endpoints"] == [
        {"url": here, "arms": ["base", "tuned"], "models": ["base", "tuned"], "served": ["base", "tuned"]},
        {"url": remote, "arms": ["remote"], "models": ["tuned"], "served": ["base", "tuned"]}]
    # Each endpoint got only its own arms' requests: remote's N plain + N constrained + 4 probe prompts.
    assert [r["model"] for r in second_server.requests] == ["tuned"] * (2 * N + 4)
    assert sum("response_format" in r for r in second_server.requests) == N
    assert len(fake_server.requests) == 4 * N + 2 * 4
    assert [c["b"] for c in result.report["comparisons"]] == names[1:]
    assert result.report["constrained_speed"][2]["arm"] == "remote"
    assert result.report["config"]["api_keys"] == {"remote": "***"}
    assert "sk-second" not in (result.out / "report.json").read_text()
    assert result.table.splitlines()[4].startswith("| remote | 100.0% (100.0-100.0) | 100.0% (67.6-100.0) |")
    assert result.table.splitlines()[4].endswith(f"| {remote} |")
    md = (result.out / "report.md").read_text()
    assert f"Endpoints: {here} (base, tuned); {remote} (remote), temperature 0.0" in md
    history = [json.loads(x) for x in (tmp_path / "evals" / "history.jsonl").read_text().splitlines()]
    assert [(a["name"], a["endpoint"]) for a in history[0]["arms"]][2] == ("remote", remote)


def test_every_endpoint_checked_before_any_completion(fake_server, second_server, tmp_path):
    remote = url(second_server)
    keys = {"ghost": "sk-second"}
    with pytest.raises(UserError, match=rf"^the endpoint {remote} does not serve model\(s\) ghost; it serves: base, tuned"):
        run_eval(config(fake_server, tmp_path, models=["base", f"ghost@{remote}"], api_keys=keys))
    # Without its own key the second endpoint gets --api-key (none here) and refuses; the fix names the arm.
    with pytest.raises(UserError, match=rf"the endpoint {remote} refused the API key .* --api-key-for remote=KEY"):
        run_eval(config(fake_server, tmp_path, models=["base", f"remote=tuned@{remote}"]))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    with pytest.raises(UserError) as info:  # both failures are reported together
        run_eval(config(fake_server, tmp_path, models=["nope", f"far=tuned@{dead}"]))
    assert str(info.value).startswith(f"the endpoint {url(fake_server)} does not serve model(s) nope")
    assert f"; cannot reach the endpoint {dead} " in str(info.value)
    assert "fix the URL after @ in --model far=...@URL" in str(info.value)
    assert fake_server.requests == [] and second_server.requests == []


def test_base_url_optional_when_every_model_names_its_url(fake_server, second_server, tmp_path):
    cfg = config(fake_server, tmp_path, base_url="", models=[f"base@{url(fake_server)}", f"t2=tuned@{url(second_server)}"],
                 api_key="sk-second", forgetting_probe=False)
    result = run_eval(cfg, progress=lambda m: None)  # --api-key reaches the NAME@URL endpoints; the open one ignores it
    assert [(a["name"], a["endpoint"]) for a in result.arms] == [("base", url(fake_server)), ("t2", url(second_server))]
    assert len(second_server.requests) == N


def test_cli_eval_with_a_second_endpoint(fake_server, second_server, tmp_path, capsys):
    remote = url(second_server)
    argv = ["eval", "--base-url", url(fake_server), "--model", "base", "--model", f"far=tuned@{remote}",
            "--api-key-for", "far=sk-second", "--data", str(EXAMPLE / "test.jsonl"), "--out", str(tmp_path / "cli"),
            "--limit", "4", "--no-forgetting-probe"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"| far | 100.0% (100.0-100.0) | {'100.0% (51.0-100.0) | ' * 4}4 | {remote} |" in out
    assert main(argv[:5] + ["--model", "base"] + argv[5:]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "--model label 'base' is used 2 times: give each arm its own label with LABEL=NAME or LABEL=NAME@URL, "
        "e.g. base-2=base@http://127.0.0.1:8001/v1")
