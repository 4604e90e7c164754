"""`ftassist verify RUN_DIR [--base-url URL --api-key K]`: the parity gate; exit 1 when it fails."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("verify", help="Check that merged and served models reply like base + adapter.",
                            description="Greedy probes through base+adapter, the merged model and a vLLM server; "
                                        "fails below 99% token agreement or on a different chat template.")
    parser.add_argument("run_dir", help="Run folder written by `ftassist train`.")
    parser.add_argument("--merged", help="Merged folder (default: RUN_DIR/merged, else merged into a temp folder).")
    parser.add_argument("--base-url", help="A running server to check too, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", help="The server's API key.")
    parser.add_argument("--adapter-name", help="Served name of the run's adapter (default: found by its folder).")
    parser.add_argument("--merged-name", help="Served name of the merged model (default: found by its folder).")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="Tokens generated per probe (default: 32).")
    parser.add_argument("--limit", type=int, default=8, help="Test rows used as probes (default: 8).")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from serving.verify import verify_run

    report = verify_run(args.run_dir, args.merged, base_url=args.base_url, api_key=args.api_key,
                        adapter_name=args.adapter_name, merged_name=args.merged_name,
                        max_new_tokens=args.max_new_tokens, limit=args.limit)
    print(report.markdown())
    print(f"written: {args.run_dir}/verify.json, {args.run_dir}/verify.md")
    return 0 if report.passed else 1
