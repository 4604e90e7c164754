"""ASGI middleware that makes vLLM's API key cover every route, loaded with `--middleware`.

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


UNAUTHORIZED = json.dumps({"error": {"message": "Missing or wrong API key: send 'Authorization: Bearer KEY'.",
                                     "type": "authentication_error", "param": None, "code": 401}}).encode()


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
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": UNAUTHORIZED})
