"""Drive the running app through its API with gradio_client (the app runs as `python app.py`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tiny_model, tmp_path_factory):
    """`python app.py` on a free port with the tiny model; yields its URL, stops it afterwards."""
    port = free_port()
    runs = tmp_path_factory.mktemp("app") / "runs"
    log = open(runs.parent / "app.log", "wb")
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--runs-dir", str(runs),
                             "--model", str(tiny_model)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
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


def test_api_lists_the_stage_endpoints(app_url):
    from gradio_client import Client

    api = Client(app_url, verbose=False).view_api(return_format="dict", print_info=False)
    names = set(api["named_endpoints"])
    assert {"/submit", "/quick", "/build_data", "/plan", "/jobs", "/compare", "/evaluate", "/serve", "/stop_server"} <= names


def text_of(message: dict) -> str:
    """The text of a chatbot message as the API returns it (a list of content parts)."""
    content = message["content"]
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)


def test_chat_turns_keep_per_client_state(app_url):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    out = client.predict({"text": "No, it knows enough", "files": []}, api_name="/submit")
    chat = out[0]
    # the welcome, the first question, the user's answer, the second question
    assert [m["role"] for m in chat[-2:]] == ["user", "assistant"]
    assert "fixed output format" in text_of(chat[-1])
    # /quick sends a quick-reply label (the button's value)
    chat = client.predict("Yes, a fixed format", api_name="/quick")
    assert text_of(chat[-2]) == "Yes, a fixed format"
    assert "style, tone or vocabulary" in text_of(chat[-1])
    # a second client starts its own conversation
    other = Client(app_url, verbose=False).predict({"text": "yes", "files": []}, api_name="/submit")
    assert "fixed output format" in text_of(other[0][-1]) and len(other[0]) == 4


def test_user_mistakes_come_back_as_messages(app_url):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(app_url, verbose=False)
    with pytest.raises(AppError, match="no files were attached"):
        client.predict([], False, False, False, False, api_name="/build_data")
    with pytest.raises(AppError, match="no usable data yet"):
        client.predict(16, 2e-4, 2, -1, 1024, api_name="/plan")
    with pytest.raises(AppError, match="No server is running"):
        client.predict("hello", api_name="/compare")
