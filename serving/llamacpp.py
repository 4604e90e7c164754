"""llama.cpp's OpenAI-compatible server (llama-cpp-python's `llama_cpp.server`) on one GGUF file.

    with start_llama_server(Path("runs/a/gguf/model-f16.gguf"), name="tuned", log_path=log) as server:
        print(server.base_url)        # http://127.0.0.1:PORT/v1, key in server.api_key

The chat template is the one embedded in the file (llama-cpp-python renders it with Jinja when it
is not one of its named formats), so what is checked is what a llama.cpp user gets.
"""

from __future__ import annotations

from typing import Any

import os
import secrets
import subprocess
import sys
from pathlib import Path

from ftassist.errors import UserError
from ftassist.process import free_port
from serving.server import ServerProcess, wait_ready


# llama-cpp-python's ServerSettings (pydantic settings) reads its api_key from $API_KEY. The key travels
# there, not in argv: argv is readable by every local user, and argparse takes a key that starts with
# '-' (one token_urlsafe in 64) for a flag and exits with "expected one argument".
KEY_ENV = "API_KEY"


def llama_server_argv(gguf_file: Path, *, name: str, port: int, n_ctx: int = 2048,
                      threads: int | None = None) -> list[str]:
    """The server's argv (pure); the API key goes in its environment (`llama_server_env`).

    >>> llama_server_argv(Path("m.gguf"), name="tuned", port=8001, threads=2)[3:9]
    ['--model', 'm.gguf', '--model_alias', 'tuned', '--host', '127.0.0.1']
    """
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_file), "--model_alias", name,
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
            "--seed", "0", "--verbose", "False"]
    if threads:
        argv += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    return argv


def llama_server_env(api_key: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: `base` (default: this process's) with the API key in $API_KEY.

    >>> llama_server_env("-starts-with-a-dash", base={"PATH": "/bin"})
    {'PATH': '/bin', 'API_KEY': '-starts-with-a-dash'}
    """
    return {**(os.environ if base is None else base), KEY_ENV: api_key}


def start_llama_server(gguf_file: Path, *, name: str, log_path: Path, n_ctx: int = 2048, timeout: float = 180.0,
                       threads: int | None = None, api_key: str | None = None) -> ServerProcess:
    """Start the server on loopback with `api_key` (default: a fresh one) and wait until it lists `name`."""
    try:
        import llama_cpp.server  # noqa: F401 - the [server] extra's import is what fails when it is missing
    except ImportError as exc:
        raise UserError(f"llama-cpp-python[server] is not installed ({exc}): run `make setup`") from exc
    port, key = free_port(), api_key or secrets.token_urlsafe(16)
    threads = threads or len(os.sched_getaffinity(0))
    argv = llama_server_argv(gguf_file, name=name, port=port, n_ctx=n_ctx, threads=threads)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=llama_server_env(key), start_new_session=True)
    server = ServerProcess(process=process, base_url=f"http://127.0.0.1:{port}/v1", api_key=key, log_path=log_path,
                           base_name=name, argv=argv, engine="llama.cpp", health_path=None)
    try:
        wait_ready(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


GREEDY: dict[str, Any] = {"temp": 0.0, "top_k": 1, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0}
# What the server must be sent to decode like transformers' greedy search: its default repeat_penalty is 1.1.
SERVER_GREEDY = {"repeat_penalty": 1.0}


def llama_generate(gguf_file: Path, prompts: list[list[int]], max_new_tokens: int, eos: set[int], *, n_ctx: int = 2048,
                   threads: int | None = None) -> tuple[list[list[int]], list[str]]:
    """Greedy reply token ids (up to and including eos) and texts, from llama.cpp in this process."""
    from llama_cpp import Llama

    threads = threads or len(os.sched_getaffinity(0))
    llm = Llama(model_path=str(gguf_file), n_ctx=n_ctx, seed=0, verbose=False, n_threads=threads, n_threads_batch=threads)
    tokens, texts = [], []
    try:
        for ids in prompts:
            out: list[int] = []
            for tok in llm.generate(ids, reset=True, **GREEDY):
                out.append(tok)
                if tok in eos or len(out) >= max_new_tokens:
                    break
            tokens.append(out)
            texts.append(llm.detokenize([t for t in out if t not in eos]).decode("utf-8", errors="ignore"))
    finally:
        llm.close()
    return tokens, texts
