"""`ftassist verify RUN_DIR [--base-url URL --api-key K]`: the parity gate; exit 1 when it fails."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from ftassist_cli.args import add_config_args
    from ftassist.config import VerifyConfig

    parser = sub.add_parser("verify", help="Check that merged and served models reply like base + adapter.",
                            description=VerifyConfig.__doc__)
    add_config_args(parser, VerifyConfig)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ftassist_cli.args import config_from_args
    from ftassist.config import VerifyConfig
    from serving.verify import verify_run

    cfg = config_from_args(VerifyConfig, args)
    report = verify_run(cfg.run_dir, cfg.merged, base_url=cfg.base_url, api_key=cfg.api_key,
                        adapter_name=cfg.adapter_name, merged_name=cfg.merged_name,
                        max_new_tokens=cfg.max_new_tokens, limit=cfg.limit)
    print(report.markdown())
    print(f"written: {cfg.run_dir}/verify.json, {cfg.run_dir}/verify.md")
    return 0 if report.passed else 1
