"""`ftassist demo`: the whole pipeline on the example task and the default model."""

from __future__ import annotations

import argparse

from ftassist.cli.args import add_config_args, config_from_args
from ftassist.config import DemoConfig


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="Run data -> train -> merge -> serve -> eval on the example task.",
                            description=DemoConfig.__doc__)
    add_config_args(parser, DemoConfig)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ftassist.demo import run_demo

    run_demo(config_from_args(DemoConfig, args))
    return 0
