"""`ftassist verify RUN_DIR [--base-url URL --api-key K]`: the parity gate; exit 1 when it fails."""

from __future__ import annotations

import argparse

from ftassist.config import VerifyConfig
from ftassist_cli.args import add_command, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "verify", VerifyConfig, handle, help="Check that merged and served models reply like base + adapter.")


def handle(args: argparse.Namespace) -> int:
    from serving.verify import verify_run

    cfg = config_from_args(VerifyConfig, args)
    report = verify_run(cfg.run_dir, cfg.merged, base_url=cfg.base_url, api_key=cfg.api_key,
                        adapter_name=cfg.adapter_name, merged_name=cfg.merged_name,
                        max_new_tokens=cfg.max_new_tokens, limit=cfg.limit)
    print(report.markdown())
    print(f"written: {cfg.run_dir}/verify.json, {cfg.run_dir}/verify.md")
    return 0 if report.passed else 1
