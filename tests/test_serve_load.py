"""The real server under load: concurrent streams without errors, and recovery after abandoned requests."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

pytestmark = pytest.mark.vllm

PROMPT = [{"role": "user", "content": "My InkJet 300 printer stopped working after the update."}]


async def stream_until(client: AsyncOpenAI, model: str, deadline: float) -> tuple[int, int, list[str]]:
    """Stream chats back to back until `deadline`; returns (completed, chunks, errors)."""
    done = chunks = 0
    errors: list[str] = []
    while time.monotonic() < deadline:
        try:
            stream = await client.chat.completions.create(model=model, messages=PROMPT, max_tokens=32, stream=True,
                                                          temperature=0.7)
            async for chunk in stream:
                chunks += bool(chunk.choices and chunk.choices[0].delta.content)
            done += 1
        except openai.OpenAIError as exc:  # collected, so the test reports every failure
            errors.append(f"{type(exc).__name__}: {exc}")
    return done, chunks, errors


def test_16_concurrent_streams_without_errors(vllm_server):
    async def main():
        client = AsyncOpenAI(base_url=vllm_server.base_url, api_key=vllm_server.api_key, max_retries=0, timeout=60)
        deadline = time.monotonic() + 20
        results = await asyncio.gather(*[stream_until(client, ("base", "tuned")[i % 2], deadline) for i in range(16)])
        await client.close()
        return results

    results = asyncio.run(main())
    errors = [e for _, _, errs in results for e in errs]
    assert errors == []
    assert all(done >= 1 for done, _, _ in results)  # every stream was served, none starved
    assert sum(chunks for _, chunks, _ in results) > 16


def test_abandoned_requests_do_not_wedge_the_server(vllm_server):
    impatient = OpenAI(base_url=vllm_server.base_url, api_key=vllm_server.api_key, max_retries=0, timeout=0.05)
    for _ in range(16):
        with pytest.raises(openai.APITimeoutError):
            # ignore_eos: the tiny random model may sample its end token at once, and a reply that
            # short can beat the 50 ms client timeout; 400 forced tokens cannot.
            impatient.chat.completions.create(model="tuned", messages=PROMPT, max_tokens=400, temperature=0.7,
                                              extra_body={"ignore_eos": True})
    client = OpenAI(base_url=vllm_server.base_url, api_key=vllm_server.api_key, max_retries=0, timeout=5)
    start = time.monotonic()
    resp = client.chat.completions.create(model="tuned", messages=PROMPT, max_tokens=8, temperature=0)
    assert resp.choices[0].message.content is not None
    assert time.monotonic() - start < 5
