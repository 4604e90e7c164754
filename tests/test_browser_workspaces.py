"""Two visitors and a stranger, in real Chromium and over plain HTTP, on the app run as a Space runs it.

Visitor A builds data and starts a long training job; visitor B (another browser context, so
another localStorage) must not see A's job, data or files in any tab, gets its own job queued
behind A's (one training slot) with its position shown, and a second job refused with a message.
A's server (a live process recorded like vLLM's) is A's only: B's Serve and Compare tabs do not
reach it and B's start is refused (the machine's one server slot). B's browser and an anonymous
client get 403/404 for A's files by every path they could learn; the API refuses the stranger;
an upload over the size cap gets 413. A reload, and then an app restart, bring A's own conversation and job back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from ftassist.process import free_port
from tests.processes import stop

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
EXAMPLE = ROOT / "examples" / "support_tickets"
A_KEY = "ft-visitor-a-secret-key"

pytestmark = pytest.mark.browser

def start_app(port: int, runs: Path, model: Path, log_path: Path) -> subprocess.Popen:
    """`python app.py` as on a Space (SPACE_ID set: paths hidden from visitors), bound to loopback for the test."""
    log = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port), "--runs-dir", str(runs),
                             "--model", str(model), "--max-jobs", "1", "--max-waiting", "4", "--max-file-size", "200kb"], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "SPACE_ID": "someone/ftassist"})
    log.close()
    deadline = time.time() + 180
    while time.time() < deadline:
        assert proc.poll() is None, log_path.read_text()
        try:
            if requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200:  # the page, not only the port
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"the app did not start in 180 s: {log_path.read_text()[-2000:]}")


def reload(page, tries: int = 3) -> None:
    """`page.reload()`, again when Chromium aborted it (net::ERR_ABORTED: the page's own script navigated or
    reconnected meanwhile, seen once in CI right after an app restart); any other error is raised at once."""
    from playwright.sync_api import Error

    for attempt in range(tries):
        try:
            page.reload()
            return
        except Error as exc:
            if "ERR_ABORTED" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(1)


def chat_has(page, text: str, timeout: float = 60_000) -> None:
    page.locator("#chat").get_by_text(text).last.wait_for(timeout=timeout)


def build_data(page, upload: Path) -> str:
    page.get_by_role("tab", name="Data").click()
    page.locator("#data-files input[type=file]").set_input_files(str(upload))
    page.get_by_role("button", name="Check and build").click()
    page.get_by_text("Data checked").filter(visible=True).first.wait_for(timeout=180_000)
    return page.locator("body").inner_text()


def start_training(page, reward_size: str = "0") -> None:
    page.get_by_role("tab", name="Train").click()
    page.get_by_label("Max steps (-1: use epochs)").fill("20000")
    page.locator("#reward-size input").fill(reward_size)
    page.get_by_role("button", name="Start training").click()


def test_two_visitors_and_a_stranger(tiny_model, tmp_path):
    from gradio_client import Client
    from playwright.sync_api import sync_playwright

    from ftassist.train.jobs import cancel_job, list_jobs
    from ftassist.process import process_started
    from serving.registry import ServerRecord, write_server_record

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    port, runs = free_port(), tmp_path / "runs"
    url = f"http://127.0.0.1:{port}/"
    log_path = tmp_path / "app.log"
    lines = (EXAMPLE / "train.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    upload_a, upload_b = tmp_path / "a" / "tickets_a.jsonl", tmp_path / "b" / "tickets_b.jsonl"
    for path in (upload_a, upload_b):
        path.parent.mkdir()
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def workspace_jobs() -> dict[str, list]:
        root = runs / "workspaces"
        return {ws.name: list_jobs(ws / "jobs") for ws in root.iterdir() if ws.is_dir()} if root.is_dir() else {}

    proc = start_app(port, runs, tiny_model, log_path)
    sleeper = None
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            ctx_a, ctx_b = browser.new_context(), browser.new_context()
            a, b = ctx_a.new_page(), ctx_b.new_page()

            # --- A: data and a long job -------------------------------------------------------
            a.goto(url)
            chat_has(a, "facts it does not know")
            report = build_data(a, upload_a)
            assert str(runs.resolve()) not in report and str(tmp_path) not in report  # no server paths shown
            assert "ftassist data build uploads/tickets_a.jsonl --out data" in report
            start_training(a)
            a.get_by_role("tab", name="Assistant").click()
            chat_has(a, "Training started as job", timeout=120_000)
            (ws_a, jobs_a), = workspace_jobs().items()
            run_a = Path(jobs_a[0].run_dir)
            assert str(runs.resolve()) not in a.locator("#chat").inner_text()

            # A's server (a live process recorded like vLLM's; the one server slot of this machine)
            sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(900)"], start_new_session=True)
            write_server_record(runs / "workspaces" / ws_a / "server.json", ServerRecord(
                base_url="http://127.0.0.1:9/v1", api_key=A_KEY, models=["base", "tuned"], pid=sleeper.pid,
                pid_started=process_started(sleeper.pid), command="ftassist serve", run_dir=str(run_a)))
            a.get_by_role("tab", name="Serve").click()
            a.get_by_role("button", name="Start server").click()  # reuses A's own record
            a.get_by_text(A_KEY).filter(visible=True).first.wait_for(timeout=30_000)

            # --- B: sees nothing of A's, in any tab -------------------------------------------
            b.goto(url)
            chat_has(b, "facts it does not know")
            b.get_by_role("tab", name="Train").click()
            b.get_by_role("button", name="Refresh").click()
            time.sleep(2)
            assert run_a.name not in b.locator("body").inner_text()
            pick = b.locator("#run-pick input")
            pick.fill(run_a.name)
            pick.press("Enter")
            b.locator("#run-status").get_by_text("not found among your runs").wait_for(timeout=30_000)
            b.get_by_role("button", name="Download adapter + reports").click()
            b.get_by_text("not found among your runs").filter(visible=True).first.wait_for(timeout=30_000)
            for tab in ("Compare", "Evaluate", "Serve"):
                b.get_by_role("tab", name=tab).click()
            b.get_by_role("button", name="Stop server").click()
            b.get_by_text("No server is running.").filter(visible=True).first.wait_for(timeout=30_000)
            b.get_by_role("button", name="Start server").click()  # the one slot is A's: refused, A's key unseen
            b.get_by_text("in use by other visitors").filter(visible=True).first.wait_for(timeout=30_000)
            b.get_by_role("tab", name="Compare").click()
            b.get_by_role("button", name="Ask both").click()
            b.get_by_text("No server is running").filter(visible=True).first.wait_for(timeout=30_000)
            assert A_KEY not in b.locator("body").inner_text() and A_KEY not in b.content()
            assert sleeper.poll() is None, "B's clicks stopped A's server"
            b.get_by_role("tab", name="Assistant").click()
            assert "Welcome back" not in b.locator("#chat").inner_text()
            assert run_a.name not in b.locator("#chat").inner_text() + b.locator("#jobs").inner_text()

            # --- B's own job waits for the one slot; a second one is refused --------------------
            build_data(b, upload_b)
            start_training(b, reward_size="8")  # rows held out of SFT for a reward stage after it
            b.get_by_role("tab", name="Assistant").click()
            chat_has(b, "waiting for a training slot: position 1 of 1", timeout=120_000)
            b.locator("#progress").get_by_text("waiting for a training slot").wait_for(timeout=30_000)
            start_training(b)
            b.get_by_text("one training job per workspace").filter(visible=True).first.wait_for(timeout=60_000)
            jobs = workspace_jobs()
            assert len(jobs) == 2 and [len(v) for v in jobs.values()] == [1, 1]
            ws_b = next(name for name in jobs if name != ws_a)
            assert jobs[ws_b][0].state == "waiting"
            import yaml

            assert yaml.safe_load((Path(jobs[ws_b][0].run_dir) / "config.yaml").read_text())["reward_size"] == 8

            # --- a stranger over HTTP: A's files by every path it could learn --------------------
            ws_dir = runs / "workspaces" / ws_a
            targets = [ws_dir / "uploads" / upload_a.name, ws_dir / "data" / "train.jsonl", ws_dir / "conversation.json",
                       run_a / "config.yaml", runs / ".secret"]
            for target in targets:
                assert target.exists(), target
                for path in (str(target.resolve()), os.path.relpath(target, ROOT), f"../{target.name}"):
                    r = requests.get(f"{url}gradio_api/file={path}", timeout=30)
                    assert r.status_code in (403, 404), (path, r.status_code)
                    r = b.request.get(f"{url}gradio_api/file={path}")  # B's own browser session
                    assert r.status in (403, 404), (path, r.status)
            big = tmp_path / "big.jsonl"
            big.write_text("\n".join(lines * 40) + "\n", encoding="utf-8")
            assert big.stat().st_size > 200_000
            with big.open("rb") as fh:
                r = requests.post(f"{url}gradio_api/upload", files={"files": fh}, timeout=60)
            assert r.status_code == 413, (r.status_code, r.text[:300])
            stranger = Client(url, verbose=False)
            with pytest.raises(Exception, match="no workspace"):
                stranger.predict("", api_name="/jobs")
            with pytest.raises(Exception, match="no workspace"):
                stranger.predict(f"{'a' * 24}.{'0' * 32}", api_name="/jobs")
            with pytest.raises(Exception, match="no workspace"):
                stranger.predict({"text": "yes", "files": []}, "", api_name="/submit")

            # --- A after a reload, then after an app restart: their own conversation and job -------
            reload(a)
            chat_has(a, "Training started as job")
            a.get_by_role("tab", name="Train").click()
            a.locator("#jobs").get_by_text(run_a.name).filter(visible=True).first.wait_for(timeout=30_000)
            stop(proc)
            proc = start_app(port, runs, tiny_model, log_path)
            reload(a)
            chat_has(a, "Training started as job", timeout=120_000)
            a.get_by_role("tab", name="Train").click()
            a.locator("#jobs").get_by_text(run_a.name).filter(visible=True).first.wait_for(timeout=30_000)
            assert run_a.name not in a.locator("#jobs").inner_text().replace(run_a.name, "", 1)
            reload(b)
            b.get_by_role("tab", name="Train").click()
            b.get_by_role("button", name="Refresh").click()
            time.sleep(2)
            assert run_a.name not in b.locator("#jobs").inner_text()
            browser.close()
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()
        for statuses in workspace_jobs().values():
            for st in statuses:
                cancel_job(st.run_dir)
        stop(proc)
