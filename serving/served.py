"""The parity gate's view of a running OpenAI-compatible vLLM server: which model is which, and greedy replies.

vLLM extensions used: `/v1/models` reports each model's `root` (the folder it serves), and
`return_token_ids` makes a chat completion return the prompt's and the reply's token ids, so the
served chat template is checked token for token against the training tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ftassist.errors import UserError
from serving.parity import trim_at_eos
from serving.run import RunInfo


@dataclass
class ServedTarget:
    base_url: str  # ends in /v1
    api_key: str | None

    @classmethod
    def of(cls, server, base_url: str | None, api_key: str | None) -> "ServedTarget":
        if server is not None:
            return cls(server.base_url, server.api_key)
        return cls((base_url or "").rstrip("/"), api_key)

    def client(self):
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=self.api_key or "EMPTY", timeout=120, max_retries=0)


def served_models(target: ServedTarget) -> list[dict]:
    """The server's /v1/models entries; UserError when it cannot be reached or refuses the key."""
    import openai

    try:
        return [m.model_dump() for m in target.client().models.list().data]
    except openai.AuthenticationError as exc:
        raise UserError(f"{target.base_url} refused the API key: pass the server's key with --api-key") from exc
    except openai.APIConnectionError as exc:
        raise UserError(f"{target.base_url} cannot be reached: start it with `ftassist serve` or fix --base-url") from exc


def _same(a: str | None, b: Path) -> bool:
    if not a:
        return False
    return Path(a).expanduser().resolve() == b.expanduser().resolve()


def find_served(target: ServedTarget, run: RunInfo, merged: Path, *, adapter_name: str | None = None,
                merged_name: str | None = None) -> dict[str, str]:
    """{'merged_vllm': name, 'adapter_vllm': name} for the run's models the server serves.

    Explicit names win; otherwise a model counts when its `root` is the merged folder or the
    run's adapter folder. Raises `UserError` for a name the server does not list, or when it
    serves none of the run's models.
    """
    models = served_models(target)
    names = {m["id"] for m in models}
    found: dict[str, str] = {}
    for path, name, folder in (("merged_vllm", merged_name, merged), ("adapter_vllm", adapter_name, run.adapter_dir)):
        if name:
            if name not in names:
                raise UserError(f"{target.base_url} does not serve {name!r}; it serves {sorted(names)}")
            found[path] = name
            continue
        match = [m["id"] for m in models if _same(m.get("root"), folder)]
        if match:
            found[path] = match[0]
    if not found:
        raise UserError(f"{target.base_url} serves {sorted(names)}, none of them this run's merged folder or adapter: "
                        "name them with --merged-name / --adapter-name")
    return found


def generate_served(target: ServedTarget, name: str, probes: list[list[dict]], prompts: list[list[int]],
                    max_new_tokens: int, eos: set[int], tokenizer) -> tuple[list[list[int]], bool, str]:
    """Greedy replies from served model `name`; returns (token ids per probe, template_ok, detail)."""
    client = target.client()
    outs, template_ok, detail = [], True, ""
    for i, (messages, local) in enumerate(zip(probes, prompts)):
        resp = client.chat.completions.create(
            model=name, messages=messages, max_tokens=max_new_tokens, temperature=0.0, seed=0,
            extra_body={"return_token_ids": True, "skip_special_tokens": False},
        ).model_dump()
        served_prompt = resp.get("prompt_token_ids") or []
        if served_prompt != local and template_ok:
            template_ok = False
            pos = next((k for k, (a, b) in enumerate(zip(served_prompt, local)) if a != b), min(len(served_prompt), len(local)))
            detail = (f"{name} probe {i}: prompt token {pos} differs; trained {tokenizer.decode(local[pos:pos + 8])!r}, "
                      f"served {tokenizer.decode(served_prompt[pos:pos + 8])!r}")
        outs.append(trim_at_eos(resp["choices"][0].get("token_ids") or [], eos))
    return outs, template_ok, detail



def served_replies(target: ServedTarget, name: str, probes: list[list[dict]], max_tokens: int,
                   sampling: dict | None = None) -> list[tuple[str, int | None]]:
    """(reply text, prompt tokens the server counted) per probe, at temperature 0 with `sampling` sent as is."""
    client = target.client()
    out = []
    for messages in probes:
        resp = client.chat.completions.create(model=name, messages=messages, max_tokens=max_tokens, temperature=0.0,
                                              seed=0, extra_body=dict(sampling or {}))
        out.append((resp.choices[0].message.content or "", resp.usage.prompt_tokens if resp.usage else None))
    return out
