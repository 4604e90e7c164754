"""What the Dockerfile and docs/scaling.md (scaling out, linked from the README) run is accepted by our own parsers."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import app
from ftassist_cli import build_parser
from ftassist_cli.args import config_from_args
from ftassist.config import ServeConfig
from serving.launch import build_vllm_argv

ROOT = Path(__file__).resolve().parent.parent


def test_dockerfile_default_command_is_the_app():
    text = (ROOT / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    assert cmd[:2] == ["python3", "app.py"]
    settings = app.settings_from_args(cmd[2:])
    assert (settings.host, settings.port, str(settings.runs_dir)) == ("0.0.0.0", 7860, "/data/runs")
    for path in re.findall(r"^COPY (\S+) ", text, re.M):
        assert (ROOT / path).exists(), f"Dockerfile copies {path}, which the repository lacks"


def test_dockerfile_installs_the_pinned_set():
    """The image is the pinned vLLM's own image plus requirements.txt (whose pip resolution against PyPI
    tests/test_space_build.py checks), and the project on top without a second resolution."""
    from tests.test_space_requirements import read_requirements

    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)$", text, re.M).group(1)
    pins, _ = read_requirements("requirements.txt")
    vllm_pin = next(s.version for s in pins["vllm"].specifier if s.operator == "==")
    assert base == f"vllm/vllm-openai:v{vllm_pin}", f"the image builds on {base}, requirements.txt pins vllm=={vllm_pin}"
    installs = [l for l in text.splitlines() if l.startswith("RUN ") and "pip install" in l]
    assert len(installs) == 2 and installs[0].endswith("-r requirements.txt"), installs
    assert installs[1].endswith("--no-deps -e ."), f"the project's install re-resolves its dependencies: {installs[1]}"
    copied = re.findall(r"^COPY (\S+) ", text, re.M)
    assert copied.index("requirements.txt") < copied.index("pyproject.toml")


def test_dockerfile_serve_command_parses():
    text = (ROOT / "Dockerfile").read_text()
    line = next(l for l in text.splitlines() if "ftassist serve --model" in l)
    argv = shlex.split(line.split("ftassist serve", 1)[1].replace("\\", "").replace('"$KEY"', "k"))
    args = build_parser().parse_args(["serve", *argv])
    cfg = config_from_args(ServeConfig, args)
    assert (cfg.host, cfg.port, cfg.api_key) == ("0.0.0.0", 8000, "k")


def readme_commands() -> list[str]:
    """The `ftassist serve` lines of docs/scaling.md (the README's "Scaling out" page)."""
    text = (ROOT / "docs" / "scaling.md").read_text()
    return [l.strip() for l in text.splitlines() if l.strip().startswith("ftassist serve")]


def test_scaling_out_flags_reach_vllm(tmp_path):
    commands = readme_commands()
    assert len(commands) >= 2
    for line in commands:
        args = build_parser().parse_args(shlex.split(line)[1:])
        cfg = config_from_args(ServeConfig, args)
        argv = build_vllm_argv(cfg, python="python")
        for extra in cfg.extra_args:
            assert extra in argv, f"{extra} from docs/scaling.md is not passed to vLLM"
    joined = " ".join(commands)
    assert "--tensor-parallel-size" in joined and "--pipeline-parallel-size" in joined


def imported_packages(folder: str) -> dict[str, set[str]]:
    """Top-level package of every import (function-level ones too) in each file under `folder`."""
    import ast

    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_imports_run_one_way():
    """ftassist <- serving <- the front ends (ftassist_cli, ftassist_app): no file of a lower layer
    imports a higher one, even inside a function, and only the app imports gradio."""
    higher = {"ftassist": {"serving", "ftassist_cli", "ftassist_app", "gradio"},
              "serving": {"ftassist_cli", "ftassist_app", "gradio"},
              "ftassist_cli": {"ftassist_app", "gradio"}}
    wrong = [f"{path} imports {sorted(names & banned)}"
             for folder, banned in higher.items()
             for path, names in imported_packages(folder).items() if names & banned]
    assert wrong == []
    assert "serving" in set().union(*imported_packages("ftassist_cli").values())  # the scan sees real imports
