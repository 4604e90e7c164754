"""End to end in real Chromium, all through the chat: the task in free text -> a CSV whose columns are mapped in the
dropdowns -> preview, evidence and findings -> fix -> train -> merge and parity -> serve -> compare -> eval.

Then a reload finds the job and the live server again (Train, Serve, Compare, Evaluate tabs), and
the chat stops the server. Runs with the tiny model.

Needs Debian's chromium (`apt-get install -y chromium`) and vLLM; screenshots of every step go to
test-output/screenshots/. The README and docs/app.md show copies of some of them, kept in docs/screenshots/
under the same names (tests/test_docs.py checks that each one shown is a shot this test takes): to refresh
them, copy the new files over those.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftassist.process import free_port
from tests.processes import find_server, stop

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
EXAMPLE = ROOT / "examples" / "support_tickets"

pytestmark = pytest.mark.browser

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
    from serving.registry import stop_recorded_server

    while (found := find_server(runs)) is not None:
        stop_recorded_server(found[0])
    stop(proc)
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
    """Wait for `text` in the chat; on a timeout, a screenshot and the chat's last words say what it showed instead."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.locator("#chat").get_by_text(text).last.wait_for(timeout=timeout)
    except PlaywrightTimeout:
        shot(page, "failure")
        quick_labels = page.locator("button.quick").all_inner_texts()
        raise AssertionError(f"the chat never showed {text!r}; quick replies {quick_labels}; it ends with:\n"
                             + page.locator("#chat").inner_text()[-2500:]) from None


def test_whole_conversation_in_a_browser(app, page, tmp_path):
    from ftassist.process import pid_alive

    url, runs, log_path = app
    page.goto(url)
    chat_has(page, "Tell me in your own words")
    shot(page, "01-welcome")
    # the first message is the task in the user's own words, not an answer to a form
    box = page.locator("#chat-input textarea")
    box.fill("I want my model to triage support tickets into a JSON object with category, priority and sentiment; "
             "I have about 40 labelled examples in a CSV.")
    box.press("Enter")
    chat_has(page, "What I understood")
    chat_has(page, "a JSON object with category, priority and sentiment")
    text = page.locator("#chat").inner_text()
    assert "yes or no" not in text and "Examples: about 40." in text, text[-2000:]
    for label in ("No", "Data must stay private"):  # only what is still unknown: style, then constraints
        quick(page, label)
    chat_has(page, "Recommendation: prompting first")  # 40 examples and a simple format: honest, until measured
    shot(page, "02-recommendation")

    # a CSV whose prompt column can only be guessed (`notes` stands left of it), with two duplicate rows
    import csv
    import json as _json

    rows = [_json.loads(line)["messages"] for line in (EXAMPLE / "train.jsonl").read_text(encoding="utf-8").splitlines()[:40]]
    upload = tmp_path / "tickets.csv"
    with upload.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["notes", "msg", "gold"])
        for i, m in enumerate(rows + rows[:2]):
            writer.writerow([f"agent note {i % 7}", m[1]["content"], m[2]["content"]])
    page.locator("#chat-input input[type=file]").set_input_files(str(upload))
    page.locator("#chat-input").get_by_role("button", name="Submit").or_(
        page.locator("#chat-input button.submit-button")).first.click(timeout=30_000)
    chat_has(page, "is a table with the columns", timeout=120_000)
    chat_has(page, "its values are JSON")
    page.locator("#mapping-panel").first.wait_for(timeout=30_000)
    shot(page, "03-column-mapping")
    page.locator("#map-instruction input").click()
    page.get_by_role("option", name="msg", exact=True).click()
    page.locator("#map-use").click()
    chat_has(page, "Use this mapping: instruction=msg, output=gold", timeout=60_000)
    chat_has(page, "Data checked", timeout=120_000)
    chat_has(page, "Preview: the first 2 training examples", timeout=60_000)
    chat_has(page, "Measured on", timeout=180_000)  # the base model prompted, and under structured outputs
    chat_has(page, "Recommendation: fine-tuning")  # the figures overrule the rule of thumb
    page.locator("button.quick", has_text="Drop 2 duplicates").wait_for(timeout=60_000)
    text = page.locator("#chat").inner_text()
    assert re.search(r"tickets\.csv\s+\d+\s+duplicate", text), text[-3000:]  # findings name the file and its line
    assert "prompting + structured outputs:" in text and "Your files hold 42 examples, as you said." in text, text[-3000:]
    shot(page, "04-data-findings")
    quick(page, "Drop 2 duplicates")
    chat_has(page, "--drop-duplicates", timeout=120_000)
    chat_has(page, "--map instruction=msg", timeout=60_000)

    quick(page, "Continue to training")
    chat_has(page, "Proposed training", timeout=120_000)
    shot(page, "05-training-plan")
    quick(page, "Quick test run")
    page.locator("#progress").get_by_text("loss").wait_for(timeout=180_000)
    shot(page, "06-training-progress")
    chat_has(page, "Training finished", timeout=600_000)
    shot(page, "07-training-done")
    quick(page, "Merge and check parity")
    chat_has(page, "Parity check passed", timeout=300_000)
    shot(page, "08-merge-parity")

    # serve, compare and evaluate through the chat's own quick replies (real vLLM, ~40-60 s to start)
    chat = page.locator("#chat")
    quick(page, "Start the server")
    chat_has(page, "Starting vLLM")
    shot(page, "09-serve-starting")
    chat_has(page, "Server ready", timeout=420_000)
    found = find_server(runs)
    assert found is not None, "the chat says the server is ready but none is recorded under the runs folder"
    server = found[1]
    assert server.models == ["base", "tuned"] and server.api_key
    text = chat.inner_text()
    for needle in (f"Server ready at {server.base_url}", "models: base, tuned", f"API key: {server.api_key}",
                   f"curl {server.base_url}/chat/completions", f"Authorization: Bearer {server.api_key}",
                   "from openai import OpenAI", f"OpenAI(base_url='{server.base_url}', api_key='{server.api_key}')",
                   "ftassist serve"):
        assert needle in text, (needle, text[-3000:])
    page.locator("button.quick", has_text="Compare on a test example").wait_for(timeout=30_000)
    shot(page, "10-serve")

    quick(page, "Compare on a test example")
    chat_has(page, "Prompt:")
    page.locator("button.quick", has_text="Run the JSON eval").wait_for(timeout=180_000)  # back when both are done
    text = chat.inner_text()
    for model in ("base", "tuned"):
        assert re.search(rf"{model} — first token [\d.]+ s · total [\d.]+ s", text), (model, text[-3000:])
    shot(page, "11-compare")

    quick(page, "Run the JSON eval")
    chat_has(page, "Running the JSON-compliance eval")
    page.locator("button.quick", has_text="Stop the server").wait_for(timeout=300_000)
    said = chat.inner_text()
    assert "That did not work" not in said, said[-3000:]
    chat_has(page, "Is the content right?")
    chat_has(page, "Next step")
    chat_has(page, "Field by field (tuned)")
    chat_has(page, "Did it forget?")
    assert "tuned+json_schema" in chat.inner_text()  # the constrained arm ran
    chat.locator("table").last.wait_for(timeout=10_000)
    assert "That did not work" not in chat.inner_text()
    chat.locator("img[src*='rates']").last.wait_for(timeout=30_000)
    shot(page, "12-evaluate")

    # a reload loses nothing: the job is listed on the Train tab and the live server is found again
    page.reload()
    chat_has(page, "Did it forget?")  # the conversation came back with the page
    page.get_by_role("tab", name="Train").click()
    page.locator("#jobs").get_by_text("completed").filter(visible=True).first.wait_for(timeout=30_000)
    shot(page, "13-reload-train-tab")
    page.get_by_role("tab", name="Serve").click()
    page.get_by_role("button", name="Start server").click()  # the run's live server is reused, not doubled
    page.get_by_text("Server ready").filter(visible=True).first.wait_for(timeout=60_000)
    again = find_server(runs)
    assert again is not None and (again[0], again[1].pid, again[1].api_key) == (found[0], server.pid, server.api_key), \
        "the Serve tab started a second server for the same run"
    page.get_by_role("tab", name="Compare").click()
    page.get_by_role("button", name="Ask both").click()
    page.get_by_text("total").filter(visible=True).first.wait_for(timeout=180_000)
    shot(page, "14-compare-tab")
    page.get_by_role("tab", name="Evaluate").click()
    page.get_by_label("Examples (0: all of the test split)").fill("2")
    page.get_by_role("button", name="Run JSON-compliance eval").click()
    page.locator("table").filter(visible=True).first.wait_for(timeout=300_000)

    # and the chat stops the server it started: no vLLM process is left behind
    page.get_by_role("tab", name="Assistant").click()
    quick(page, "Stop the server")
    chat_has(page, "Server stopped.", timeout=60_000)
    shot(page, "15-server-stopped")
    assert find_server(runs) is None
    assert not pid_alive(server.pid, server.pid_started), f"vLLM (pid {server.pid}) still runs"
