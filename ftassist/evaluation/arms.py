"""The arms of an eval: which model, on which endpoint, under which response format.

A `--model` entry is `NAME` (served at `--base-url`), `NAME@URL` or `LABEL=NAME@URL` (served by
another OpenAI-compatible endpoint, e.g. a second vLLM server with the merged model or a hosted
model being left), or `LABEL=NAME` (at `--base-url`, under another label). The label names the
arm in every table; labels must be unique. With `--constrained` each arm runs a second time as
"LABEL+json_schema" under structured outputs.

    >>> parse_arm("merged=merged@http://127.0.0.1:8001/v1/", "http://127.0.0.1:8000/v1")
    Arm(label='merged', model='merged', url='http://127.0.0.1:8001/v1', response_format=None, own_url=True)

`open_endpoints` gives each arm its `Endpoint` (arms with the same URL and key share one) and
`check_endpoints` checks every endpoint is reachable and serves its models before any completion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ftassist.errors import ConfigError, UserError

if TYPE_CHECKING:  # parsing stays importable without the openai client (EvalConfig.validate uses it)
    from ftassist.endpoint import Endpoint

CONSTRAINED_SUFFIX = "+json_schema"
_URL = re.compile(r"^https?://[^\s/]+")
_EXAMPLE = "e.g. --model merged=merged@http://127.0.0.1:8001/v1"


@dataclass(frozen=True)
class Arm:
    """One thing evaluated: `model` served at `url`, shown as `label`, optionally under a `response_format`."""

    label: str
    model: str
    url: str
    response_format: dict | None = None
    own_url: bool = False  # True when the entry named its URL (NAME@URL), False when it uses --base-url

    @property
    def name(self) -> str:
        """The arm's name in tables and files: the label, plus "+json_schema" when constrained."""
        return self.label + CONSTRAINED_SUFFIX if self.response_format else self.label


def parse_arm(spec: str, base_url: str) -> Arm:
    """The arm for one `--model` entry; `base_url` serves entries without `@URL`.

    Raises ValueError with a message that names the entry and the fix.

    >>> parse_arm("tuned", "http://127.0.0.1:8000/v1")
    Arm(label='tuned', model='tuned', url='http://127.0.0.1:8000/v1', response_format=None, own_url=False)
    >>> parse_arm("gpt=gpt-4o-mini@https://api.openai.com/v1", "").label
    'gpt'
    """
    text = spec.strip()
    if not text:
        raise ValueError(f"--model {spec!r} is empty: name a served model, {_EXAMPLE}")
    head, at, url = text.partition("@")
    if at and not _URL.match(url):
        raise ValueError(f"--model {spec!r}: the URL after @ must start with http:// or https://, {_EXAMPLE}")
    label, eq, model = head.partition("=")
    if not eq:
        label = model = head
    if not label or not model:
        raise ValueError(f"--model {spec!r}: write NAME, NAME@URL or LABEL=NAME@URL with a non-empty "
                         f"{'label' if not label else 'model name'}, {_EXAMPLE}")
    if not at and _URL.match(model):
        raise ValueError(f"--model {spec!r}: the model name is a URL; write LABEL=NAME@URL, {_EXAMPLE}")
    if re.search(r"\s|\|", label + model):
        raise ValueError(f"--model {spec!r}: the label and model name cannot contain spaces or '|'")
    if label.endswith(CONSTRAINED_SUFFIX):
        raise ValueError(f"--model {spec!r}: the label cannot end with {CONSTRAINED_SUFFIX} "
                         "(that suffix names the constrained arms)")
    if at:
        return Arm(label, model, url.rstrip("/"), own_url=True)
    return Arm(label, model, base_url.rstrip("/"))


def arm_problems(models: list[str], base_url: str, api_keys: dict[str, str]) -> list[str]:
    """Every problem with the `--model` entries and `--api-key-for` labels (empty when all is well)."""
    problems, arms = [], []
    for spec in models:
        try:
            arms.append(parse_arm(spec, base_url))
        except ValueError as exc:
            problems.append(str(exc))
    if not base_url:
        bare = [a.label for a in arms if not a.own_url]
        if bare:
            problems.append(f"--base-url is missing and --model {', '.join(bare)} name(s) no URL: pass --base-url "
                            "URL (e.g. http://127.0.0.1:8000/v1) or write each model as NAME@URL")
    elif not _URL.match(base_url):
        problems.append(f"--base-url {base_url!r} must start with http:// or https://, e.g. http://127.0.0.1:8000/v1")
    labels = [a.label for a in arms]
    for label in dict.fromkeys(x for x in labels if labels.count(x) > 1):
        problems.append(f"--model label {label!r} is used {labels.count(label)} times: give each arm its own "
                        f"label with LABEL=NAME or LABEL=NAME@URL, e.g. {label}-2={label}@http://127.0.0.1:8001/v1")
    unknown = [k for k in api_keys if k not in labels]
    if unknown and arms:
        problems.append(f"--api-key-for {', '.join(unknown)}: no --model has that label; labels: {', '.join(labels)}")
    return problems


def plan_arms(models: list[str], base_url: str, constrained: bool, schema: dict | None) -> list[Arm]:
    """The models as arms, then (with `constrained`) each again under json_schema structured outputs.

    Raises ConfigError listing every bad entry (see `arm_problems`).
    """
    problems = arm_problems(models, base_url, {})
    if problems:
        raise ConfigError(problems)
    arms = [parse_arm(m, base_url) for m in models]
    if constrained and schema is not None:
        sent = {k: v for k, v in schema.items() if k != "$schema"}
        fmt = {"type": "json_schema", "json_schema": {"name": "reply", "schema": sent}}
        arms += [Arm(a.label, a.model, a.url, fmt, a.own_url) for a in arms]
    return arms


def open_endpoints(arms: list[Arm], api_key: str | None, api_keys: dict[str, str], timeout: float) -> dict[str, Endpoint]:
    """{arm label: Endpoint}; arms with the same URL and key share one Endpoint (one connection pool).

    An arm's key is `api_keys[label]`, else `api_key`, else $OPENAI_API_KEY (see `Endpoint`).
    """
    from ftassist.endpoint import Endpoint

    shared: dict[tuple[str, str | None], Endpoint] = {}
    out: dict[str, Endpoint] = {}
    for arm in arms:
        key = api_keys.get(arm.label) or api_key
        if (arm.url, key) not in shared:
            own = arm.own_url or arm.label in api_keys
            fix_url = f"the URL after @ in --model {arm.label}=...@URL" if arm.own_url else "--base-url"
            fix_key = f"--api-key-for {arm.label}=KEY (or --api-key)" if own else "--api-key"
            shared[(arm.url, key)] = Endpoint(arm.url, key, timeout, fix_url=fix_url, fix_key=fix_key)
        out[arm.label] = shared[(arm.url, key)]
    return out


def check_endpoints(arms: list[Arm], endpoints: dict[str, Endpoint]) -> list[dict]:
    """Check every endpoint is reachable, takes its key and serves its arms' models, before any completion.

    Returns one {"url", "arms", "models", "served"} per endpoint ("served": the ids its /models
    lists, None when it has no such route). Raises UserError naming every failing endpoint.
    """
    groups: dict[int, tuple[Endpoint, list[Arm]]] = {}
    for arm in arms:
        groups.setdefault(id(endpoints[arm.label]), (endpoints[arm.label], []))[1].append(arm)
    found, errors = [], []
    for endpoint, members in groups.values():
        models = list(dict.fromkeys(a.model for a in members))
        try:
            served = endpoint.check_models(models)
        except UserError as exc:
            errors.append(exc)
            continue
        found.append({"url": endpoint.base_url, "arms": list(dict.fromkeys(a.label for a in members)),
                      "models": models, "served": served})
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise UserError("; ".join(str(e) for e in errors))
    return found
