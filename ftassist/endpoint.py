"""Talk to one OpenAI-compatible endpoint through the official `openai` client: the one client of the project.

`Endpoint.check_models` fails before any work when the server is down or does not serve a
model; `Endpoint.chat` turns one request into a `Reply`, where a request the server refuses
(a prompt too long, a timeout) becomes a reply with `error` set instead of ending the run;
`Endpoint.complete` returns the server's whole answer (the parity gate reads vLLM's token ids
from it). The eval, the teacher, the parity gate, the GGUF export, the app's phrasing model and
its side-by-side view all talk to servers through it.
"""

from __future__ import annotations

from typing import Any

import os
import time
from dataclasses import dataclass

import openai
from openai import OpenAI

from ftassist.errors import UserError


@dataclass(frozen=True)
class Reply:
    """One completion: its text, why it stopped, its token count and seconds, or the request's error."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None


class Endpoint:
    """A chat-completions endpoint at `base_url`; thread-safe (one httpx pool shared by threads).

    `fix_url`, `fix_key` and `fix_model` name, in error messages, the flags that set the URL, the key and the model.
    """

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 120.0, *,
                 fix_url: str = "--base-url", fix_key: str = "--api-key", fix_model: str = "--model", max_retries: int = 2):
        self.base_url = base_url.rstrip("/")
        self.fix_url, self.fix_key, self.fix_model = fix_url, fix_key, fix_model
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.client = OpenAI(base_url=self.base_url, api_key=key, timeout=timeout, max_retries=max_retries)

    def models(self) -> list[dict] | None:
        """The server's /models entries as it sent them (vLLM adds each one's `root`, the folder it serves);
        None when it has no such route. Raises UserError when the server cannot be reached or refuses the key.
        """
        try:
            page = self.client.with_options(max_retries=0, timeout=30.0).models.list()
        except openai.NotFoundError:
            return None
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise self._unreachable(exc) from exc
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise self._refused(exc) from exc
        return [m.model_dump() for m in page.data]

    def served_models(self) -> list[str] | None:
        """Ids the server lists at /models; None when it has no such route (errors as `models`)."""
        entries = self.models()
        return None if entries is None else [m["id"] for m in entries]

    def complete(self, model: str, messages: list[Any], **create: Any) -> dict:
        """One chat completion as the server returned it, every keyword passed to the client as is.

        Raises UserError when the server is gone, refuses the key or does not serve `model`; a timeout
        raises the client's `openai.APITimeoutError` and any other refusal its `openai.APIStatusError`.
        """
        try:
            return self.client.chat.completions.create(model=model, messages=messages, **create).model_dump()
        except openai.APITimeoutError:
            raise
        except openai.APIConnectionError as exc:
            raise self._unreachable(exc) from exc
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise self._refused(exc) from exc
        except openai.NotFoundError as exc:
            raise self._unknown([model], self._served_or_empty()) from exc

    def check_models(self, names: list[str]) -> list[str] | None:
        """The served ids, after checking every name in `names` is among them; raises UserError."""
        served = self.served_models()
        if served is not None:
            missing = [n for n in names if n not in served]
            if missing:
                raise self._unknown(missing, served)
        return served

    def chat(self, model: str, messages: list[Any], *, temperature: float, max_tokens: int,
             response_format: dict | None = None, sampling: dict | None = None) -> Reply:
        """One chat completion. Raises UserError if the server is gone, the key refused or the model unknown.

        `sampling`: server-specific fields sent as they are (e.g. llama.cpp's repeat_penalty).
        """
        extra: dict = {"response_format": response_format} if response_format else {}
        if sampling:
            extra["extra_body"] = dict(sampling)
        start = time.perf_counter()
        try:
            resp = self.complete(model, messages, temperature=temperature, max_tokens=max_tokens, **extra)
        except openai.APITimeoutError as exc:
            return Reply(text="", latency_s=time.perf_counter() - start, error=f"timed out ({exc})")
        except openai.APIStatusError as exc:
            return Reply(text="", latency_s=time.perf_counter() - start, error=f"HTTP {exc.status_code}: {_message(exc)}")
        latency = time.perf_counter() - start
        choice = resp["choices"][0]
        tokens = (resp.get("usage") or {}).get("completion_tokens") or 0
        return Reply(text=(choice.get("message") or {}).get("content") or "", finish_reason=choice.get("finish_reason"),
                     completion_tokens=tokens, latency_s=latency)

    def _served_or_empty(self) -> list[str]:
        try:
            return self.served_models() or []
        except UserError:
            return []

    def _unreachable(self, exc: Exception) -> UserError:
        return UserError(f"cannot reach the endpoint {self.base_url} ({exc}): start a server with "
                         f"`ftassist serve --model MODEL` or fix {self.fix_url}")

    def _refused(self, exc: openai.APIStatusError) -> UserError:
        return UserError(f"the endpoint {self.base_url} refused the API key ({_message(exc)}): "
                         f"pass the server's key with {self.fix_key}")

    def _unknown(self, missing: list[str], served: list[str]) -> UserError:
        listed = ", ".join(served) if served else "(none listed)"
        return UserError(f"the endpoint {self.base_url} does not serve model(s) {', '.join(missing)}; "
                         f"it serves: {listed}. Pass one of those with {self.fix_model}")


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if body.get("message"):
            return str(body["message"])
    return str(exc)
