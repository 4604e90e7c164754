"""`ftassist eval`: measure JSON-format compliance of served models and write a report.

    ftassist eval --base-url http://127.0.0.1:8000/v1 --model base --model tuned \
        --data data/test.jsonl --out evals/tuned --constrained
"""

from __future__ import annotations

import argparse

from ftassist.cli.args import add_config_args, config_from_args
from ftassist.config import EvalConfig


def register(subparsers) -> None:
    """Add the `eval` subcommand."""
    parser = subparsers.add_parser(
        "eval", help="Measure JSON compliance of served models (strict, extractable, schema-valid, field accuracy).",
        description=EvalConfig.__doc__)
    add_config_args(parser, EvalConfig)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the eval, print the results table, the verdicts and where the report went; returns 0."""
    from ftassist.evaluation.runner import run_eval

    result = run_eval(config_from_args(EvalConfig, args))
    print(result.table)
    for comparison in result.report["comparisons"]:
        print(comparison["verdict"])
    print(f"report: {result.out / 'report.md'} (report.json, charts and replies.jsonl beside it)")
    return 0
