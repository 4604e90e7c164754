"""`--model` entries as arms (NAME, NAME@URL, LABEL=NAME@URL), their exact errors, and endpoint sharing."""

from __future__ import annotations

import pytest

from ftassist.config import EvalConfig
from ftassist.errors import ConfigError
from ftassist.evaluation.arms import Arm, arm_problems, open_endpoints, parse_arm, plan_arms

BASE = "http://127.0.0.1:8000/v1"
OTHER = "http://127.0.0.1:8001/v1"


@pytest.mark.parametrize("spec, expected", [
    ("base", Arm("base", "base", BASE)),
    ("  tuned ", Arm("tuned", "tuned", BASE)),
    ("ref=base", Arm("ref", "base", BASE)),
    (f"merged@{OTHER}", Arm("merged", "merged", OTHER, own_url=True)),
    (f"merged=merged@{OTHER}/", Arm("merged", "merged", OTHER, own_url=True)),
    ("gpt=gpt-4o-mini@https://api.openai.com/v1", Arm("gpt", "gpt-4o-mini", "https://api.openai.com/v1", own_url=True)),
    ("hub=HuggingFaceTB/SmolLM2-135M-Instruct@http://localhost:9000/v1",
     Arm("hub", "HuggingFaceTB/SmolLM2-135M-Instruct", "http://localhost:9000/v1", own_url=True)),
])
def test_parse_arm(spec, expected):
    assert parse_arm(spec, BASE + "/") == expected


@pytest.mark.parametrize("spec, message", [
    ("", "--model '' is empty: name a served model, e.g. --model merged=merged@http://127.0.0.1:8001/v1"),
    ("merged@127.0.0.1:8001/v1", "--model 'merged@127.0.0.1:8001/v1': the URL after @ must start with http:// or "
                                 "https://, e.g. --model merged=merged@http://127.0.0.1:8001/v1"),
    ("merged@", "--model 'merged@': the URL after @ must start with http:// or https://, "
                "e.g. --model merged=merged@http://127.0.0.1:8001/v1"),
    (f"=merged@{OTHER}", f"--model '=merged@{OTHER}': write NAME, NAME@URL or LABEL=NAME@URL with a non-empty label, "
                         "e.g. --model merged=merged@http://127.0.0.1:8001/v1"),
    (f"m=@{OTHER}", f"--model 'm=@{OTHER}': write NAME, NAME@URL or LABEL=NAME@URL with a non-empty model name, "
                    "e.g. --model merged=merged@http://127.0.0.1:8001/v1"),
    ("my model", "--model 'my model': the label and model name cannot contain spaces or '|'"),
    ("a|b=base", "--model 'a|b=base': the label and model name cannot contain spaces or '|'"),
    (f"merged={OTHER}", f"--model 'merged={OTHER}': the model name is a URL; write LABEL=NAME@URL, "
                        "e.g. --model merged=merged@http://127.0.0.1:8001/v1"),
    ("x+json_schema=base", "--model 'x+json_schema=base': the label cannot end with +json_schema "
                           "(that suffix names the constrained arms)"),
])
def test_parse_arm_errors(spec, message):
    with pytest.raises(ValueError) as info:
        parse_arm(spec, BASE)
    assert str(info.value) == message


def test_duplicate_labels_and_unknown_key_labels():
    problems = arm_problems(["base", "tuned", f"tuned@{OTHER}", f"base=base@{OTHER}"], BASE, {"gpt": "k", "tuned": "k"})
    assert problems == [
        "--model label 'base' is used 2 times: give each arm its own label with LABEL=NAME or LABEL=NAME@URL, "
        "e.g. base-2=base@http://127.0.0.1:8001/v1",
        "--model label 'tuned' is used 2 times: give each arm its own label with LABEL=NAME or LABEL=NAME@URL, "
        "e.g. tuned-2=tuned@http://127.0.0.1:8001/v1",
        "--api-key-for gpt: no --model has that label; labels: base, tuned, tuned, base",
    ]
    # The same model on two endpoints is fine once the labels differ.
    assert arm_problems(["tuned", f"tuned-remote=tuned@{OTHER}"], BASE, {"tuned-remote": "k"}) == []


def test_base_url_needed_only_by_models_without_url():
    assert arm_problems([f"base@{BASE}", f"merged@{OTHER}"], "", {}) == []
    assert arm_problems(["base", "tuned", f"merged@{OTHER}"], "", {}) == [
        "--base-url is missing and --model base, tuned name(s) no URL: pass --base-url URL "
        "(e.g. http://127.0.0.1:8000/v1) or write each model as NAME@URL"]
    assert arm_problems(["base"], "127.0.0.1:8000/v1", {}) == [
        "--base-url '127.0.0.1:8000/v1' must start with http:// or https://, e.g. http://127.0.0.1:8000/v1"]


def test_eval_config_lists_every_problem_together():
    cfg = EvalConfig(models=["base", "base", "m@host:1/v1"], api_keys={"x": "k"}, samples=0)
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    assert info.value.problems == [
        "--model 'm@host:1/v1': the URL after @ must start with http:// or https://, "
        "e.g. --model merged=merged@http://127.0.0.1:8001/v1",
        "--base-url is missing and --model base, base name(s) no URL: pass --base-url URL "
        "(e.g. http://127.0.0.1:8000/v1) or write each model as NAME@URL",
        "--model label 'base' is used 2 times: give each arm its own label with LABEL=NAME or LABEL=NAME@URL, "
        "e.g. base-2=base@http://127.0.0.1:8001/v1",
        "--api-key-for x: no --model has that label; labels: base, base",
        "--data is missing: pass a test.jsonl from `ftassist data build`",
        "--out is missing: name a folder for the report",
        "--samples and --concurrency must be >= 1, --max-tokens >= 0 (0: from the references)",
    ]
    with pytest.raises(ConfigError) as info:
        EvalConfig(data="d", out="o").validate()
    assert info.value.problems == ["--model is missing: name at least one served model",
                                   "--base-url is missing, e.g. --base-url http://127.0.0.1:8000/v1"]
    EvalConfig(models=[f"base@{BASE}"], data="d", out="o").validate()  # no --base-url needed


def test_plan_arms_constrained_and_endpoint_sharing():
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}
    arms = plan_arms(["base", f"merged=merged@{OTHER}"], BASE, True, schema)
    assert [(a.name, a.model, a.url) for a in arms] == [
        ("base", "base", BASE), ("merged", "merged", OTHER),
        ("base+json_schema", "base", BASE), ("merged+json_schema", "merged", OTHER)]
    assert arms[2].response_format == {"type": "json_schema", "json_schema": {"name": "reply", "schema": {"type": "object"}}}
    with pytest.raises(ConfigError, match="label 'base' is used 2 times"):
        plan_arms(["base", "base"], BASE, False, None)

    arms = plan_arms(["base", "tuned", f"t2=tuned@{BASE}", f"far=tuned@{OTHER}", f"paid=tuned@{OTHER}"], BASE, False, None)
    endpoints = open_endpoints(arms, "sk-local", {"paid": "sk-paid"}, 30.0)
    # Same URL and key: one Endpoint (one connection pool); another URL or key: another one.
    assert endpoints["base"] is endpoints["tuned"] is endpoints["t2"]
    assert endpoints["far"] is not endpoints["base"] and endpoints["paid"] is not endpoints["far"]
    assert (endpoints["far"].base_url, endpoints["far"].client.api_key) == (OTHER, "sk-local")
    assert endpoints["paid"].client.api_key == "sk-paid"
    assert (endpoints["base"].fix_url, endpoints["base"].fix_key) == ("--base-url", "--api-key")
    assert (endpoints["paid"].fix_url, endpoints["paid"].fix_key) == (
        "the URL after @ in --model paid=...@URL", "--api-key-for paid=KEY (or --api-key)")
