"""A Hugging Face Space's build, redone here from scratch (slow: about 4-5 minutes on 2 cores).

A Gradio Space copies requirements.txt alone into its image and runs `pip install -r` on it, then
installs `gradio[oauth]==<sdk_version> "uvicorn>=0.14.0" spaces` itself (as Space build logs
show), copies the repository and runs `python app.py` from its root, with SPACE_ID, SYSTEM=spaces
and (for `hf_oauth: true`) the OAUTH_* variables set. This file does the same for the CPU path:

1. the tracked files (`git ls-files`: what a Space gets) are copied into a temp folder;
2. a fresh venv gets `pip install -r requirements-cpu.txt`, then the Space's own installs;
3. `python app.py` starts from the copy with no arguments (port from GRADIO_SERVER_PORT) twice:
   without persistent storage (FTASSIST_SPACE_DATA, the stand-in for /data, is missing: runs land
   in ./runs of the copy) and with it (an existing folder: runs land in <it>/runs). Each time the
   first page comes up in Chromium and a data build goes through the Data tab;
4. in that venv, starting a model server fails with the "serving needs vLLM" UserError.

requirements.txt (the GPU path, and the Docker image's set on top of vLLM's own image) cannot be installed here: vLLM's CUDA wheels and the CUDA torch
are gigabytes and need a GPU to import. It is resolved instead, beside step 2:
`pip install --dry-run --ignore-installed --report` against PyPI alone (PIP_CONFIG_FILE=/dev/null
and no PIP_FIND_LINKS, so this machine's local wheels, indexes and torch cap are out of it, as on
a Space). pip reads the wheels' metadata only (about 80 s here); the set must hold the pinned
vllm, a CUDA torch (no +cpu) and NVIDIA's CUDA libraries.

Differences from a real Space, each on purpose: the Hugging Face hub is not reachable here, so the
model is the tiny local one (FTASSIST_MODEL) and HF_HUB_OFFLINE=1; the venv's pip runs with
`--retries 0` because download.pytorch.org (requirements-cpu.txt's extra index) does not resolve
here and pip would retry it five times for every package (16 minutes instead of 90 s; the
machine's pip config supplies torch 2.13.0+cpu from a local folder), and with `--no-compile`
(imports compile what they use). Needs PyPI for what pip has not cached.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from ftassist.process import free_port
from tests.processes import stop
from tests.test_space_requirements import front_matter, read_requirements

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
SPACE_ID = "someone/ftassist"
UPLOAD_ROWS = 40
PIP_FAST = ["--retries", "0", "--no-compile", "--progress-bar", "off", "--disable-pip-version-check"]

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-chars:] if path.exists() else f"({path} missing)"


def run_logged(argv: list[str], log: Path, *, timeout: float, **kwargs) -> None:
    """Run `argv` with its output in `log`; fail with the log's tail when it fails or overruns."""
    with open(log, "ab") as out:
        try:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, **kwargs)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(argv[:6])} ... ran past {timeout:.0f} s:\n{tail(log)}")
    assert proc.returncode == 0, f"{' '.join(argv[:6])} ... exited {proc.returncode}:\n{tail(log)}"


def copy_tracked_files(dest: Path) -> int:
    """Copy the repository's tracked files (their working-tree content) into `dest`; returns how many."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    count = 0
    for name in filter(None, listed.decode("utf-8").split("\0")):
        src = ROOT / name
        if not src.is_file():  # deleted in the working tree: the next commit will not have it either
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name)
        count += 1
    return count


@pytest.fixture(scope="module")
def space_copy(tmp_path_factory):
    """(copy of the tracked files, the running GPU resolution, its report path, its log path)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    root = tmp_path_factory.mktemp("space")
    copy = root / "repo"
    assert copy_tracked_files(copy) > 50
    for name in ("app.py", "requirements.txt", "requirements-cpu.txt", "README.md"):
        assert (copy / name).is_file(), f"{name} is not tracked by git, so a Space would not get it"
    report, log = root / "gpu-report.json", root / "gpu-resolve.log"
    env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"} | {"PIP_CONFIG_FILE": os.devnull}
    with open(log, "wb") as out:
        gpu = subprocess.Popen([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                                "--progress-bar", "off", "--disable-pip-version-check", "--report", str(report),
                                "-r", "requirements.txt"], cwd=copy, env=env, stdout=out, stderr=subprocess.STDOUT)
    yield copy, gpu, report, log
    if gpu.poll() is None:
        gpu.kill()
        gpu.wait(timeout=30)


@pytest.fixture(scope="module")
def space_venv(space_copy):
    """The venv's python after `pip install -r requirements-cpu.txt` and the Space's own installs (removed after)."""
    copy = space_copy[0]
    python_version = front_matter()["python_version"].strip('"')
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == python_version, (
        f"the Space runs Python {python_version} (README python_version); run the tests with it")
    venv, log = copy.parent / "venv", copy.parent / "pip-install.log"
    run_logged([sys.executable, "-m", "venv", str(venv)], log, timeout=120)
    python = venv / "bin" / "python"
    started = time.monotonic()
    run_logged([str(python), "-m", "pip", "install", *PIP_FAST, "-r", "requirements-cpu.txt"], log, timeout=900, cwd=copy)
    sdk = front_matter()["sdk_version"]
    run_logged([str(python), "-m", "pip", "install", *PIP_FAST, f"gradio[oauth]=={sdk}", "uvicorn>=0.14.0", "spaces"],
               log, timeout=300, cwd=copy)
    print(f"requirements-cpu.txt installed in {time.monotonic() - started:.0f} s")
    yield python
    # 1.5 GB in ~37,000 files: deleting them took 85-135 s of disk time here, so it runs on in the
    # background (a process of its own that ends by itself) instead of holding up the suite.
    subprocess.Popen(["nice", "-n", "19", "rm", "-rf", str(venv)], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def space_env(venv_python: Path, port: int, storage: Path, model: Path, tmp: Path) -> dict[str, str]:
    """The environment a Space gives `python app.py` (with `hf_oauth: true`), for this machine."""
    keep = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
            and not k.startswith(("GRADIO_", "FTASSIST_", "OAUTH_", "PYTEST_", "SPACE"))}
    return keep | {
        "PATH": f"{venv_python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "SPACE_ID": SPACE_ID, "SYSTEM": "spaces", "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_SERVER_PORT": str(port), "GRADIO_TEMP_DIR": str(tmp / "gradio"),
        "FTASSIST_MODEL": str(model), "FTASSIST_SPACE_DATA": str(storage), "HF_HUB_OFFLINE": "1",
        "OAUTH_CLIENT_ID": "ftassist-test", "OAUTH_CLIENT_SECRET": "not-a-secret",
        "OAUTH_SCOPES": "openid profile", "OPENID_PROVIDER_URL": "https://huggingface.co",
    }


def wait_listening(proc: subprocess.Popen, port: int, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"python app.py exited {proc.returncode}:\n{tail(log)}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"python app.py did not listen on {port} within {timeout:.0f} s:\n{tail(log)}")


def build_data_in_browser(url: str, upload: Path, shot: Path) -> str:
    """Open the first page, build `upload` through the Data tab; returns the Data tab's text."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        try:
            page.goto(url)
            page.locator("#chat").get_by_text("facts it does not know").last.wait_for(timeout=120_000)
            # hf_oauth: true gives the Space OAUTH_CLIENT_ID, and with it the page has a login button.
            page.get_by_text("Sign in with Hugging Face").first.wait_for(timeout=30_000)
            page.get_by_role("tab", name="Data").click()
            panel = page.get_by_role("tabpanel").filter(visible=True)
            panel.locator("input[type=file]").set_input_files(str(upload))
            panel.get_by_role("button", name="Check and build").click()
            panel.get_by_text("Data checked").first.wait_for(timeout=180_000)
            return panel.inner_text()
        finally:
            page.screenshot(path=str(shot), full_page=True)
            browser.close()


@pytest.mark.parametrize("storage_attached", [False, True], ids=["no-storage", "persistent-storage"])
def test_cpu_space_starts_and_builds_data(space_copy, space_venv, tiny_model, storage_attached, tmp_path):
    copy = space_copy[0]
    storage = tmp_path / "data"  # stands in for the Space's /data
    if storage_attached:
        storage.mkdir()
    shutil.rmtree(copy / "runs", ignore_errors=True)  # what the other case left there
    expected = storage / "runs" if storage_attached else copy / "runs"
    upload = tmp_path / "tickets.jsonl"
    lines = (ROOT / "examples" / "support_tickets" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    upload.write_text("\n".join(lines[:UPLOAD_ROWS]) + "\n", encoding="utf-8")

    port, log = free_port(), tmp_path / "app.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(space_venv), "app.py"], cwd=copy, stdout=out, stderr=subprocess.STDOUT,
                                env=space_env(space_venv, port, storage, tiny_model, tmp_path))
    try:
        wait_listening(proc, port, log)
        print(f"app listening after {time.monotonic() - started:.0f} s")
        try:
            text = build_data_in_browser(f"http://127.0.0.1:{port}/", upload, tmp_path / "data-tab.png")
        except Exception as exc:  # a Playwright timeout says nothing about why: add the app's log
            raise AssertionError(f"{exc}\nscreenshot: {tmp_path / 'data-tab.png'}\napp log:\n{tail(log)}") from exc
    finally:
        stop(proc)

    rows = re.search(r"Data checked:\s*(\d+) train / (\d+) test", text)
    assert rows and int(rows[1]) + int(rows[2]) == UPLOAD_ROWS, text
    built = list(expected.glob("workspaces/*/data/train.jsonl"))
    assert len(built) == 1, f"no built data under {expected}: {sorted(p.name for p in expected.parent.iterdir())}"
    assert len(built[0].read_text(encoding="utf-8").splitlines()) == int(rows[1])
    if storage_attached:
        assert not (copy / "runs").exists(), "with persistent storage nothing may go to ./runs (lost on restart)"
    else:
        assert not storage.exists(), "without persistent storage the app must not create the storage folder"


def test_cpu_space_says_serving_needs_vllm(space_copy, space_venv, tiny_model):
    code = ("from ftassist.config import ServeConfig\nfrom ftassist.errors import UserError\n"
            "from serving.launch import start_server\n"
            f"try:\n    start_server(ServeConfig(model={str(tiny_model)!r}))\n"
            "except UserError as exc:\n    print('UserError:', exc)\nelse:\n    raise SystemExit('a server started')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run([str(space_venv), "-c", code], cwd=space_copy[0], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "UserError: serving needs vLLM" in out.stdout and "no `vllm` module" in out.stdout, out.stdout


def test_gpu_requirements_resolve_with_vllm_and_cuda_torch(space_copy):
    _, gpu, report, log = space_copy
    try:
        gpu.wait(timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pip's resolution of requirements.txt ran past 5 minutes:\n{tail(log)}")
    assert gpu.returncode == 0, f"requirements.txt does not resolve on PyPI:\n{tail(log)}"
    installs = json.loads(report.read_text(encoding="utf-8"))["install"]
    versions = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}
    pinned, _ = read_requirements("requirements.txt")
    for name, req in pinned.items():
        assert name in versions, f"{name} is in requirements.txt but not in pip's resolution"
        assert req.specifier.contains(versions[name], prereleases=True), (name, str(req.specifier), versions[name])
    assert "vllm" in versions
    assert "+cpu" not in versions["torch"], f"torch {versions['torch']} is a CPU build: the GPU Space needs CUDA"
    assert [n for n in versions if n.startswith("nvidia-cuda-runtime")], "no CUDA runtime in the GPU resolution"
    assert versions["gradio"] == front_matter()["sdk_version"]
