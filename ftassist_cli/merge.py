"""`ftassist merge RUN_DIR --out DIR`: fold a run's adapter into a full-precision, servable model folder."""

from __future__ import annotations

import argparse

from ftassist_cli.args import add_command, config_from_args
from ftassist.config import MergeConfig


def register(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "merge", MergeConfig, handle, help="Merge a trained adapter into its base model (safetensors).")


def handle(args: argparse.Namespace) -> int:
    from serving.merge import merge_adapter

    out = merge_adapter(config_from_args(MergeConfig, args))
    print(f"merged model written to {out}")
    print(f"serve it: ftassist serve --model {out}")
    return 0
