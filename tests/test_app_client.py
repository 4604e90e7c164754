"""Drive the running app through its API with gradio_client (the app runs as `python app.py --auth ...`).

Only a few endpoints are public, and each needs a workspace: a login here (an anonymous caller is refused).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftassist.process import free_port

ROOT = Path(__file__).resolve().parent.parent
LOGIN = ("ada", "s3cret-pass")

@pytest.fixture(scope="module")
def app_url(tiny_model, tmp_path_factory):
    """`python app.py` on a free port with the tiny model; yields its URL, stops it afterwards."""
    port = free_port()
    runs = tmp_path_factory.mktemp("app") / "runs"
    log = open(runs.parent / "app.log", "wb")
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--runs-dir", str(runs),
                             "--model", str(tiny_model), "--auth", ":".join(LOGIN)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((runs.parent / "app.log").read_text())
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("app did not start in 120 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_api_is_small_and_refuses_callers_without_a_workspace(app_url):
    from gradio_client import Client

    api = Client(app_url, verbose=False, auth=LOGIN).view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == {"/submit", "/build_data", "/jobs", "/download"}
    # without the login nothing answers at all; with it, a made-up browser token does not name a workspace either
    with pytest.raises(Exception):
        Client(app_url, verbose=False).predict({"text": "yes", "files": []}, "", api_name="/submit")


def text_of(message: dict) -> str:
    """The text of a chatbot message as the API returns it (a list of content parts)."""
    content = message["content"]
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)


def test_chat_turns_are_kept_in_the_user_workspace(app_url):
    from gradio_client import Client

    client = Client(app_url, verbose=False, auth=LOGIN)
    out = client.predict({"text": "No, it knows enough", "files": []}, "", api_name="/submit")
    chat = out[0]
    # the welcome, the first question, the user's answer, the second question
    assert [m["role"] for m in chat[-2:]] == ["user", "assistant"]
    assert "fixed output format" in text_of(chat[-1])
    chat = client.predict({"text": "Yes, a fixed format", "files": []}, "", api_name="/submit")[0]
    assert text_of(chat[-2]) == "Yes, a fixed format"
    assert "style, tone or vocabulary" in text_of(chat[-1])
    # a second client of the same user continues the same conversation (it is the workspace's, kept on disk)
    again = Client(app_url, verbose=False, auth=LOGIN).predict({"text": "No", "files": []}, "", api_name="/submit")[0]
    assert [text_of(m) for m in again[:len(chat)]] == [text_of(m) for m in chat]
    assert text_of(again[-2]) == "No"


def test_user_mistakes_come_back_as_messages(app_url):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(app_url, verbose=False, auth=LOGIN)
    with pytest.raises(AppError, match="no files were attached"):
        client.predict([], False, False, False, False, "", False, "", api_name="/build_data")
    with pytest.raises(AppError, match="no run selected"):
        client.predict("", "", api_name="/download")
    with pytest.raises(AppError, match="not found among your runs"):
        client.predict("../../other/jobs/run-1", "", api_name="/download")
    assert client.predict("", api_name="/jobs")[0]["data"] == []
