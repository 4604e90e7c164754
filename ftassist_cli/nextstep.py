"""`ftassist next RUN_DIR`: try what could improve a finished run, on its validation split, and recommend what moved."""

from __future__ import annotations

import argparse

from ftassist_cli.args import add_command, config_from_args
from ftassist.config import NextConfig

EPILOG = """example: every lever that fits an hour, a bigger model among them

  ftassist next runs/first --budget 60 --larger-model ~/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf

only the reward stages, 20 minutes:  ftassist next runs/first --lever dpo --lever grpo --budget 20"""


def register(subparsers) -> None:
    """Add the `next` subcommand."""
    add_command(subparsers, "next", NextConfig, handle, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                help="Try the levers that could improve a finished run (reward stage, more minutes, rank, a larger "
                     "model) on its validation split and recommend the one that moved the task metric.")


def handle(args: argparse.Namespace) -> int:
    """Run the levers that fit the budget, print the figures and the recommendation; returns 0."""
    from pathlib import Path

    from ftassist.train.levers import next_step

    cfg = config_from_args(NextConfig, args)
    choice, _ = next_step(cfg)
    print("\n".join(choice.lines))
    print(f"written: {Path(cfg.out or Path(cfg.run_dir) / 'next') / 'next.md'} (and next.json)")
    return 0
