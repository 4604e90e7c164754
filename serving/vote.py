"""ASGI middleware loaded into vLLM's server: `"vote": K` on a chat completion returns the per-field majority of K
sampled JSON replies (self-consistency) as one reply.

    client.chat.completions.create(model="tuned", messages=msgs, temperature=0.7,
                                   response_format={"type": "json_schema", ...}, extra_body={"vote": 5})

The request goes on to vLLM as one request with `n: K` (the K samples share the prompt's prefill and run in one
batch), and the K replies come back as one choice holding the vote (`ftassist.evaluation.vote`: each field takes the
value most replies gave it; the keys are the schema's properties under `json_schema`, else every key a reply used).
`ftassist_vote` in the response says K, the agreement (the smallest share of the K replies behind a field's value)
and the replies themselves; `usage` counts all K completions, which is what it costs. A vote of sampled replies
needs sampling: temperature defaults to 0.7 and 0 is refused, as are `stream` and `n` (the vote is one reply).
Requests without `vote` pass through untouched.
"""

from __future__ import annotations

import json
from typing import Any

from ftassist.evaluation.extraction import parse_reply
from ftassist.evaluation.vote import vote_agreement
from serving.guard import error_body, read_body, replaying, send_error

FIELD = "vote"
MAX_VOTES = 16
DEFAULT_TEMPERATURE = 0.7
PATHS = frozenset({"/v1/chat/completions"})
OTHER_PATHS = frozenset({"/v1/completions", "/v1/responses"})  # "vote" there is refused, never silently dropped


def vote_request(body: dict) -> tuple[dict | None, str | None]:
    """(the body vLLM gets, None), or (None, why it is refused) for a body asking for a vote.

    >>> vote_request({"messages": [], "vote": 3})
    ({'messages': [], 'n': 3, 'temperature': 0.7}, None)
    >>> vote_request({"messages": [], "vote": 3, "stream": True})[1]
    'vote: a vote is one reply made from all K, so it cannot stream; drop "stream" or "vote"'
    """
    k = body.get(FIELD)
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= MAX_VOTES:
        return None, f"vote: {k!r} must be a whole number of replies from 2 to {MAX_VOTES}"
    if body.get("stream"):
        return None, 'vote: a vote is one reply made from all K, so it cannot stream; drop "stream" or "vote"'
    if body.get("n") not in (None, 1):
        return None, 'vote: the vote is one reply; drop "n" (the K samples are the vote\'s own)'
    if body.get("temperature") == 0:
        return None, "vote: temperature 0 gives K copies of one reply; use a temperature above 0 (default 0.7)"
    sent = {key: value for key, value in body.items() if key != FIELD}
    sent["n"] = k
    sent.setdefault("temperature", DEFAULT_TEMPERATURE)
    return sent, None


def schema_keys(body: dict) -> list[str] | None:
    """The properties of a `json_schema` response format, in order; None without one."""
    fmt = body.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") if isinstance(fmt, dict) else None
    props = schema.get("properties") if isinstance(schema, dict) else None
    return list(props) if isinstance(props, dict) and props else None


def voted_response(response: dict, k: int, keys: list[str] | None) -> dict:
    """vLLM's K-choice response folded into one choice holding the vote (the first reply when none is JSON).

    >>> r = {"choices": [{"index": i, "message": {"role": "assistant", "content": c}, "finish_reason": "stop"}
    ...                  for i, c in enumerate(['{"a": 1}', '{"a": 1}', '{"a": 2}'])]}
    >>> out = voted_response(r, 3, ["a"])
    >>> out["choices"][0]["message"]["content"], out["ftassist_vote"]["agreement"]
    ('{"a": 1}', 0.667)
    """
    choices = sorted(response.get("choices") or [], key=lambda c: c.get("index", 0))
    texts = [(c.get("message") or {}).get("content") or "" for c in choices]
    if keys is None:
        keys = list(dict.fromkeys(key for t in texts for p in [parse_reply(t, expect=dict)]
                                  if p.found and isinstance(p.value, dict) for key in p.value))
    voted, agreement = vote_agreement(texts, keys)
    first: dict[str, Any] = dict(choices[0]) if choices else {"index": 0, "message": {"role": "assistant", "content": ""}}
    if voted is not None:
        first["message"] = {**(first.get("message") or {}), "content": json.dumps(voted, ensure_ascii=False)}
        cut = any(c.get("finish_reason") == "length" for c in choices)
        first["finish_reason"] = "length" if cut else "stop"  # a reply cut short among the K is said, not hidden
        first["logprobs"] = None  # the voted text is no reply's own tokens
    first["index"] = 0
    return {**response, "choices": [first], "ftassist_vote": {"k": k, "voted": voted is not None,
                                                               "agreement": round(agreement, 3), "replies": texts}}


def fold(payload: bytes, k: int, keys: list[str] | None) -> bytes:
    """vLLM's K-choice response body as the voted one; the body as it came when it is not the JSON vLLM answers."""
    try:
        return json.dumps(voted_response(json.loads(payload), k, keys)).encode()
    except (ValueError, TypeError, AttributeError):
        return payload


class VoteReplies:
    """Fold `"vote": K` chat completions into one voted reply (see the module's docstring)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        if scope["type"] != "http" or scope.get("method") != "POST" or path not in PATHS | OTHER_PATHS:
            return await self.app(scope, receive, send)
        body = await read_body(receive)
        if body is None:  # the client left before sending its body
            return
        parsed = None
        if b'"vote"' in body:  # only a body that may ask for a vote is parsed here; vLLM parses the rest itself
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None  # not JSON: vLLM answers it itself
        k = parsed.get(FIELD) if isinstance(parsed, dict) else None
        if k is not None and path in OTHER_PATHS:
            return await send_error(send, 400, error_body(f"vote: only /v1/chat/completions votes, not {path}",
                                                          "BadRequestError", 400, FIELD))
        if k is not None:
            sent, problem = vote_request(parsed)  # type: ignore[arg-type]
            if problem:
                return await send_error(send, 400, error_body(problem, "BadRequestError", 400, FIELD))
            body = json.dumps(sent).encode()
            scope = {**scope, "headers": [(n, v) for n, v in scope.get("headers", []) if n.lower() != b"content-length"]
                     + [(b"content-length", str(len(body)).encode())]}
        replay = replaying(body, receive)
        if k is None:
            return await self.app(scope, replay, send)
        start: dict = {}
        out: list[bytes] = []

        async def collect(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                out.append(message.get("body", b""))
                if not message.get("more_body", False):
                    await finish()

        async def finish():
            payload = b"".join(out)
            if start.get("status") == 200:
                payload = fold(payload, k, schema_keys(parsed))
            headers = [(n, v) for n, v in start.get("headers", []) if n.lower() != b"content-length"]
            await send({**start, "headers": headers + [(b"content-length", str(len(payload)).encode())]})
            await send({"type": "http.response.body", "body": payload, "more_body": False})

        await self.app(scope, replay, collect)
