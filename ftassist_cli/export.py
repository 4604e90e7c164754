"""`ftassist export RUN_DIR --format gguf [--quant f16|q8_0|q4_k_m]`: GGUF + Modelfile, verified; exit 1 when f16 fails."""

from __future__ import annotations

import argparse
import sys

from ftassist_cli.args import add_command, config_from_args
from ftassist.config import ExportConfig


def register(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "export", ExportConfig, handle, help="Write GGUF files and an Ollama Modelfile, verified with llama.cpp.")


def handle(args: argparse.Namespace) -> int:
    from serving.export import export_gguf

    report = export_gguf(config_from_args(ExportConfig, args), progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(report.markdown())
    print(f"written: {report.out}/export.json, {report.out}/export.md, {report.out}/Modelfile")
    return 0 if report.passed or not report.verified else 1
