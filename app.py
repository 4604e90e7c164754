"""ftassist's Gradio app (also the Hugging Face Space entry point).

    python app.py                              # http://127.0.0.1:7860
    python app.py --host 0.0.0.0 --auth ada:secret --runs-dir runs/

On a Space, data and runs go to /data when persistent storage is attached, and FTASSIST_AUTH
(USER:PASSWORD) turns on the login (or Hugging Face OAuth, `hf_oauth: true`). Each visitor works in
their own workspace; one training job and one server per workspace, the machine's slots shared
through a queue. Sharing through gradio.live stays off.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ftassist.config import DEFAULT_MODEL
from ftassist.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python app.py", description="ftassist's chat-first fine-tuning app.")
    p.add_argument("--host", default=None, help="Address to bind (default 127.0.0.1; 0.0.0.0 on a Space).")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)), help="Port (default 7860).")
    p.add_argument("--runs-dir", default=None, help="Folder for data, runs and server records (default /data/runs on a Space, else ./runs).")
    p.add_argument("--model", default=os.environ.get("FTASSIST_MODEL") or DEFAULT_MODEL,
                   help="Base model: a local folder or hub id (default $FTASSIST_MODEL, a Space variable, else SmolLM2-135M-Instruct).")
    p.add_argument("--auth", default=os.environ.get("FTASSIST_AUTH"), help="USER:PASSWORD to require a login (or $FTASSIST_AUTH).")
    p.add_argument("--max-file-size", default="50mb", help="Largest upload accepted (default 50mb).")
    p.add_argument("--max-rows", type=int, default=20000, help="Most rows one data build may read (default 20000).")
    p.add_argument("--assistant-url", default="",
                   help="An OpenAI-compatible endpoint (any served model) that may word the assistant's replies; "
                        "the rules still decide everything (default: none).")
    p.add_argument("--assistant-model", default="", help="The model at --assistant-url (default: the first it serves).")
    p.add_argument("--assistant-key", default=os.environ.get("FTASSIST_ASSISTANT_KEY", ""),
                   help="API key of --assistant-url (default: $FTASSIST_ASSISTANT_KEY).")
    p.add_argument("--teacher-url", default=os.environ.get("FTASSIST_TEACHER_URL", ""),
                   help="An OpenAI-compatible endpoint of a bigger model that labels and writes rows when a visitor's "
                        "data set is small (`ftassist data augment`; default $FTASSIST_TEACHER_URL, else none).")
    p.add_argument("--teacher-model", default=os.environ.get("FTASSIST_TEACHER_MODEL", ""),
                   help="The model at --teacher-url (default $FTASSIST_TEACHER_MODEL).")
    p.add_argument("--teacher-key", default=os.environ.get("FTASSIST_TEACHER_KEY", ""),
                   help="API key of --teacher-url (default: $FTASSIST_TEACHER_KEY; a Space secret).")
    p.add_argument("--evidence-rows", type=int, default=8,
                   help="Test rows the base model is measured on with prompting, before any advice (0: skip; default 8).")
    p.add_argument("--max-jobs", type=int, default=0, help="Training jobs at once, all visitors (default: one per GPU, 1 on CPU).")
    p.add_argument("--max-waiting", type=int, default=8, help="Jobs that may wait in the queue (default 8).")
    p.add_argument("--max-servers", type=int, default=0, help="Model servers at once, all visitors (default: one per GPU, 1 on CPU).")
    p.add_argument("--server-idle-minutes", type=float, default=30.0,
                   help="Stop a server nobody used for this long (default 30; 0: never).")
    return p


def settings_from_args(argv: list[str] | None = None):
    from ftassist_app.settings import AppSettings, default_runs_dir, parse_auth

    args = build_parser().parse_args(argv)
    on_space = bool(os.environ.get("SPACE_ID"))
    return AppSettings(
        runs_dir=Path(args.runs_dir) if args.runs_dir else default_runs_dir(),
        model=args.model, host=args.host or ("0.0.0.0" if on_space else "127.0.0.1"), port=args.port,
        auth=parse_auth(args.auth), max_file_size=args.max_file_size, on_space=on_space, max_rows=args.max_rows,
        evidence_rows=args.evidence_rows, assistant_url=args.assistant_url, assistant_model=args.assistant_model,
        assistant_key=args.assistant_key, teacher_url=args.teacher_url, teacher_model=args.teacher_model,
        teacher_key=args.teacher_key, max_jobs=args.max_jobs, max_waiting=args.max_waiting, max_servers=args.max_servers,
        server_idle_minutes=args.server_idle_minutes,
    )


def main(argv: list[str] | None = None) -> int:
    try:
        settings = settings_from_args(argv)
    except UserError as exc:
        print(f"app.py: error: {exc}", file=sys.stderr)
        return 2
    from ftassist_app.ui import build_app, launch_app

    launch_app(build_app(settings), settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
