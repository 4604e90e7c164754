"""The parity gate's view of a running OpenAI-compatible vLLM server: which model is which, and greedy replies.

vLLM extensions used: `/v1/models` reports each model's `root` (the folder it serves), and
`return_token_ids` makes a chat completion return the prompt's and the reply's token ids, so the
served chat template is checked token for token against the training tokenizer.
"""

from __future__ import annotations

from pathlib import Path

from ftassist.endpoint import Endpoint
from ftassist.errors import UserError
from serving.parity import trim_at_eos
from serving.run import RunInfo


def endpoint(server, base_url: str | None = None, api_key: str | None = None) -> Endpoint:
    """The `Endpoint` of a server this process started, else of `base_url`; no retries (the gate counts every reply)."""
    if server is not None:
        return Endpoint(server.base_url, server.api_key, max_retries=0)
    return Endpoint(base_url or "", api_key, max_retries=0)


def _same(a: str | None, b: Path) -> bool:
    if not a:
        return False
    return Path(a).expanduser().resolve() == b.expanduser().resolve()


def find_served(target: Endpoint, run: RunInfo, merged: Path, *, adapter_name: str | None = None,
                merged_name: str | None = None) -> dict[str, str]:
    """{'merged_vllm': name, 'adapter_vllm': name} for the run's models the server serves.

    Explicit names win; otherwise a model counts when its `root` is the merged folder or the
    run's adapter folder. Raises `UserError` for a name the server does not list, or when it
    serves none of the run's models.
    """
    models = target.models() or []
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


def generate_served(target: Endpoint, name: str, probes: list[list[dict]], prompts: list[list[int]],
                    max_new_tokens: int, eos: set[int], tokenizer) -> tuple[list[list[int]], bool, str]:
    """Greedy replies from served model `name`; returns (token ids per probe, template_ok, detail)."""
    outs, template_ok, detail = [], True, ""
    for i, (messages, local) in enumerate(zip(probes, prompts)):
        resp = target.complete(name, messages, max_tokens=max_new_tokens, temperature=0.0, seed=0,
                               extra_body={"return_token_ids": True, "skip_special_tokens": False})
        served_prompt = resp.get("prompt_token_ids") or []
        if served_prompt != local and template_ok:
            template_ok = False
            pos = next((k for k, (a, b) in enumerate(zip(served_prompt, local)) if a != b), min(len(served_prompt), len(local)))
            detail = (f"{name} probe {i}: prompt token {pos} differs; trained {tokenizer.decode(local[pos:pos + 8])!r}, "
                      f"served {tokenizer.decode(served_prompt[pos:pos + 8])!r}")
        outs.append(trim_at_eos(resp["choices"][0].get("token_ids") or [], eos))
    return outs, template_ok, detail



def served_replies(target: Endpoint, name: str, probes: list[list[dict]], max_tokens: int,
                   sampling: dict | None = None) -> list[tuple[str, int | None]]:
    """(reply text, prompt tokens the server counted) per probe, at temperature 0 with `sampling` sent as is."""
    out = []
    for messages in probes:
        resp = target.complete(name, messages, max_tokens=max_tokens, temperature=0.0, seed=0, extra_body=dict(sampling or {}))
        out.append((resp["choices"][0]["message"]["content"] or "", (resp.get("usage") or {}).get("prompt_tokens")))
    return out
