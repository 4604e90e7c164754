"""`ftassist eval`: measure JSON-format compliance of served models and write a report.

    ftassist eval --base-url http://127.0.0.1:8000/v1 --model base --model tuned \
        --model merged=merged@http://127.0.0.1:8001/v1 --constrained \
        --data data/test.jsonl --out evals/tuned

Each `--model` is one arm: NAME on --base-url, or NAME@URL / LABEL=NAME@URL on any other
OpenAI-compatible endpoint (a second server, a hosted model; its key with --api-key-for LABEL=KEY).
The first arm is compared with each other one.
"""

from __future__ import annotations

import argparse

from ftassist_cli.args import add_command, config_from_args
from ftassist.config import EvalConfig

EPILOG = """example: base, the LoRA adapter "tuned" (both on one vLLM server), the merged model on a
second server, and each of them again under structured outputs (--constrained):

  ftassist eval --base-url http://127.0.0.1:8000/v1 --model base --model tuned \\
      --model merged=merged@http://127.0.0.1:8001/v1 --constrained \\
      --data data/test.jsonl --out evals/tuned

a hosted model as one more arm: --model gpt=gpt-4o-mini@https://api.openai.com/v1 --api-key-for gpt=sk-..."""


def register(subparsers) -> None:
    """Add the `eval` subcommand."""
    add_command(subparsers, "eval", EvalConfig, handle, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                help="Measure JSON compliance of served models (strict, extractable, schema-valid, field accuracy).")


def handle(args: argparse.Namespace) -> int:
    """Run the eval, print the results table, the verdicts and where the report went; returns 0."""
    from ftassist.evaluation.harness import run_eval

    result = run_eval(config_from_args(EvalConfig, args))
    for arm in result.arms:
        if arm.get("content"):
            print(arm["content"]["verdict"])
    content = [a for a in result.arms if a.get("content") and not a["constrained"]]
    if content:
        print(f"next step ({content[-1]['name']}): {content[-1]['content']['suggestion']}")
        mistakes = content[-1]["content"].get("mistakes") or {}
        if mistakes.get("kinds"):
            print("wrong fields by kind: " + ", ".join(f"{k} {n}" for k, n in mistakes["kinds"]) + f" ({mistakes['advice']})")
    print(result.table)
    for comparison in result.report["comparisons"]:
        print(comparison["verdict"])
    print(f"report: {result.out / 'report.md'} (report.json, charts and replies.jsonl beside it)")
    return 0
