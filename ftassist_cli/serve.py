"""`ftassist serve --model PATH_OR_ID [--adapter NAME=PATH]...`: vLLM's OpenAI-compatible server until Ctrl-C."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ftassist_cli.args import add_command, config_from_args
from ftassist.config import ServeConfig


def register(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "serve", ServeConfig, handle, help="Serve a model (and adapters) through vLLM's OpenAI-compatible API.")


def usage_text(server) -> str:
    """What a user needs to call the server: URL, model names, a curl and a Python snippet."""
    from ftassist.snippets import curl_snippet, python_snippet

    model = server.adapter_name or server.base_name
    return "\n".join([
        f"vLLM is ready at {server.base_url} (pid {server.pid}, log {server.log_path})",
        f"models: {', '.join(server.model_names)}",
        "", curl_snippet(server.base_url, model, server.api_key),
        "", python_snippet(server.base_url, model, server.api_key),
        "Press Ctrl-C to stop.",
    ])


def handle(args: argparse.Namespace) -> int:
    from serving.launch import start_server

    cfg = config_from_args(ServeConfig, args)
    print(f"starting vLLM for {cfg.model} on {cfg.host}:{cfg.port} ...", flush=True)
    # SIGTERM (a service manager, `kill`) stops as cleanly as Ctrl-C (`main` runs every command under
    # `sigterm_interrupts`), even during start-up: start_server stops the half-started server on any exception.
    try:
        server = start_server(cfg)
    except KeyboardInterrupt:
        print("interrupted during start-up; vLLM stopped", flush=True)
        return 130
    with server:
        if cfg.record:
            from ftassist.snippets import cli_command
            from serving.registry import ServerRecord, write_server_record

            write_server_record(cfg.record, ServerRecord.of(server, command=cli_command("serve", cfg)))
        print(usage_text(server), flush=True)
        try:
            while server.alive():
                time.sleep(1.0)
            print(f"vLLM exited with code {server.process.returncode}; see {server.log_path}", flush=True)
            return 1
        except KeyboardInterrupt:
            print("stopping vLLM ...", flush=True)
        finally:
            if cfg.record:
                Path(cfg.record).unlink(missing_ok=True)
    print("stopped", flush=True)
    return 0
