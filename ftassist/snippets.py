"""Copy-ready text for users: the CLI command equivalent to a config, and client snippets for a server.

The app shows these beside every action so that what was clicked can be repeated in a script.

    >>> from ftassist.config import TrainConfig
    >>> cli_command("train", TrainConfig(data="data/", out="runs/a", max_steps=20))
    'ftassist train --data data/ --out runs/a --max-steps 20'
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from typing import Any

# Subcommand words for each config class name.
_SUBCOMMANDS = {"DataConfig": "data build", "TrainConfig": "train", "MergeConfig": "merge",
                "ServeConfig": "serve", "EvalConfig": "eval"}


def cli_command(subcommand: str | None, cfg: Any) -> str:
    """The `ftassist ...` command line that builds the same config (only non-default fields).

    Flags follow `ftassist_cli.args`: `field_name` -> `--field-name` (or the field's `flag`),
    booleans as `--x` / `--no-x`, lists and dicts as repeated flags, positionals first.
    """
    words = ["ftassist", *(subcommand or _SUBCOMMANDS[type(cfg).__name__]).split()]
    flags: list[str] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
        if f.name == "lora_alpha" and value == 2 * getattr(cfg, "lora_r", 0):
            continue  # derived default
        if value == default or value is None:
            continue
        if f.metadata.get("positional"):
            words += [str(v) for v in (value if isinstance(value, list) else [value])]
            continue
        flag = "--" + f.metadata.get("flag", f.name).replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            for item in value:
                flags += [flag, str(item)]
        elif isinstance(value, dict):
            for key, item in value.items():
                flags += [flag, f"{key}={item}"]
        else:
            flags += [flag, str(value)]
    return shlex.join(words + flags)


def curl_snippet(base_url: str, model: str, api_key: str | None, prompt: str = "Hello!") -> str:
    """A curl call to `/chat/completions` of an OpenAI-compatible `base_url` (ending in /v1)."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 128})
    lines = [f"curl {base_url.rstrip('/')}/chat/completions \\", '  -H "Content-Type: application/json" \\']
    if api_key:
        lines.append(f'  -H "Authorization: Bearer {api_key}" \\')
    lines.append(f"  -d {shlex.quote(body)}")
    return "\n".join(lines)


def python_snippet(base_url: str, model: str, api_key: str | None, prompt: str = "Hello!") -> str:
    """The same call with the `openai` Python client, streaming the reply."""
    return (
        "from openai import OpenAI\n\n"
        f"client = OpenAI(base_url={base_url!r}, api_key={(api_key or 'EMPTY')!r})\n"
        "stream = client.chat.completions.create(\n"
        f"    model={model!r},\n"
        f"    messages=[{{\"role\": \"user\", \"content\": {prompt!r}}}],\n"
        "    max_tokens=128,\n"
        "    stream=True,\n"
        ")\n"
        "for chunk in stream:\n"
        "    print(chunk.choices[0].delta.content or \"\", end=\"\", flush=True)\n"
    )
