"""The `ftassist` command line: one subcommand per stage, each built from its typed config.

    ftassist data build examples/support_tickets/train.jsonl --out data/
    ftassist train --data data/ --out runs/first
    ftassist demo

Each stage's subcommands live in a module of this package with `register(subparsers)`.
A user's mistake ends with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ftassist.errors import ConfigError, UserError
from ftassist.process import Terminated, sigterm_interrupts

# Modules of this package that add subcommands; each has register(subparsers).
COMMAND_MODULES = ("data", "train", "jobs", "merge", "export", "push", "serve", "verify", "evaluate", "nextstep", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftassist", description="Fine-tune a model to follow your format, and prove it.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"ftassist_cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"ftassist_cli.{name}":
                continue  # stage not built in this checkout
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with sigterm_interrupts():  # a server or job the command started is stopped on SIGTERM as on Ctrl-C
            code = args.handler(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"ftassist {args.command}: error: {problem}", file=sys.stderr)
        return exc.exit_code
    except UserError as exc:
        print(f"ftassist {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print(f"ftassist {args.command}: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"ftassist {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
