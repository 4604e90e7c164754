"""End to end in real Chromium: advisor -> upload -> train -> serve -> compare -> eval, with the tiny model.

Needs Debian's chromium (`apt-get install -y chromium`) and vLLM; screenshots of every step go to
test-output/screenshots/ (the README shows some of them).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
EXAMPLE = ROOT / "examples" / "support_tickets"

pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app(tiny_model, tmp_path_factory):
    """The app (`python app.py`) on a free port; stops it and any server it started afterwards."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    port = free_port()
    runs = tmp_path_factory.mktemp("browser") / "runs"
    log_path = runs.parent / "app.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--runs-dir", str(runs),
                             "--model", str(tiny_model)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, log_path.read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}/", runs, log_path
    from ftassist_app.serve_step import find_server, stop_serving

    while (found := find_server(runs)) is not None:
        stop_serving(found[0])
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture()
def page(app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        yield page
        browser.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def quick(page, label: str, timeout: float = 60_000) -> None:
    page.locator("button.quick", has_text=label).first.click(timeout=timeout)


def chat_has(page, text: str, timeout: float = 60_000) -> None:
    page.locator("#chat").get_by_text(text).last.wait_for(timeout=timeout)


def test_whole_conversation_in_a_browser(app, page, tmp_path):
    url, runs, log_path = app
    page.goto(url)
    chat_has(page, "facts it does not know")
    shot(page, "01-advisor")
    for label in ("No, it knows enough", "Yes, a fixed format", "No", "200-1000", "Data must stay private"):
        quick(page, label)
    chat_has(page, "Recommendation: fine-tuning")
    shot(page, "02-recommendation")

    # upload a small file with two duplicate rows through the chat box
    lines = (EXAMPLE / "train.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    upload = tmp_path / "tickets.jsonl"
    upload.write_text("\n".join(lines + lines[:2]) + "\n", encoding="utf-8")
    page.locator("#chat-input input[type=file]").set_input_files(str(upload))
    page.locator("#chat-input").get_by_role("button", name="Submit").or_(
        page.locator("#chat-input button.submit-button")).first.click(timeout=30_000)
    chat_has(page, "Data checked", timeout=120_000)
    page.locator("button.quick", has_text="Drop 2 duplicates").wait_for(timeout=30_000)
    shot(page, "03-data-findings")
    quick(page, "Drop 2 duplicates")
    chat_has(page, "--drop-duplicates", timeout=120_000)

    quick(page, "Continue to training")
    chat_has(page, "Proposed training", timeout=120_000)
    shot(page, "04-training-plan")
    quick(page, "Quick test run")
    page.locator("#progress").get_by_text("loss").wait_for(timeout=180_000)
    shot(page, "05-training-progress")
    chat_has(page, "Training finished", timeout=600_000)
    shot(page, "06-training-done")

    # a reload loses nothing: the job is still listed on the Train tab
    page.reload()
    chat_has(page, "facts it does not know")
    page.get_by_role("tab", name="Train").click()
    page.locator("#jobs").get_by_text("completed").filter(visible=True).first.wait_for(timeout=30_000)
    shot(page, "07-train-tab")
    page.get_by_role("tab", name="Assistant").click()

    # serve from the Serve tab (real vLLM, ~40-60 s), then compare and evaluate in the chat
    page.get_by_role("tab", name="Serve").click()
    page.get_by_role("button", name="Start server").click()
    page.get_by_text("Server ready").filter(visible=True).first.wait_for(timeout=420_000)
    shot(page, "08-serve")
    page.get_by_role("tab", name="Compare").click()
    page.get_by_role("button", name="Ask both").click()
    page.get_by_text("total").filter(visible=True).first.wait_for(timeout=180_000)
    page.get_by_text("tuned").filter(visible=True).first.wait_for(timeout=10_000)
    shot(page, "09-compare")
    page.get_by_role("tab", name="Evaluate").click()
    page.get_by_label("Examples (0: all of the test split)").fill("4")
    page.get_by_role("button", name="Run JSON-compliance eval").click()
    page.locator("table").filter(visible=True).first.wait_for(timeout=300_000)
    shot(page, "10-evaluate")
