"""`ftassist push RUN_DIR --repo OWNER/NAME [--what merged|adapter]`: upload to the Hugging Face Hub."""

from __future__ import annotations

import argparse

from ftassist_cli.args import add_command, config_from_args
from ftassist.config import PushConfig


def register(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "push", PushConfig, handle, help="Upload a run's merged model or adapter to the Hugging Face Hub.")


def handle(args: argparse.Namespace) -> int:
    from serving.push import push_run

    url = push_run(config_from_args(PushConfig, args))
    print(f"uploaded to {url}")
    return 0
