"""Entry point of a background training job: `python -m ftassist.train.worker RUN_DIR [--resume]`.

`ftassist.train.jobs.start_job` writes RUN_DIR/config.yaml (or `enqueue_next` RUN_DIR/next.yaml, `--next`: the
levers of `ftassist next`) and starts this module in its own
process group with stdout/stderr appended to RUN_DIR/train.log; it runs `train()` from the
config and exits 0 (completed), 1 (failed), 143 (cancelled by SIGTERM) or 130 (interrupted).
The equivalent foreground command is `ftassist train --config RUN_DIR/config.yaml`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftassist.train.worker")
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    parser.add_argument("--search", action="store_true", help="run `ftassist train --search` on the config")
    parser.add_argument("--next", action="store_true", help="try the levers of RUN_DIR/next.yaml (`ftassist next`)")
    args = parser.parse_args(argv)

    from ftassist.config import TrainConfig, load_config
    from ftassist.errors import UserError
    from ftassist.train.trainer import JobCancelled, train

    handler = logging.StreamHandler(sys.stderr)  # stderr is train.log
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("ftassist").addHandler(handler)
    logging.getLogger("ftassist").setLevel(logging.INFO)
    import datasets

    datasets.disable_progress_bars()  # this process's stderr is train.log: keep it to log lines
    run = Path(args.run_dir)
    try:
        if args.next:
            from ftassist.config import NextConfig
            from ftassist.train.jobs import NEXT_FILE
            from ftassist.train.levers import run_next_job

            print(run_next_job(load_config(NextConfig, run / NEXT_FILE), run), file=sys.stderr)
            return 0
        cfg = load_config(TrainConfig, run / "config.yaml", out=str(run))
        if args.search:
            from ftassist.train.search import run_search_job

            print(run_search_job(cfg), file=sys.stderr)
            return 0
        result = train(cfg, resume=args.resume, progress=False, log_file=False)
    except JobCancelled:
        print("cancelled", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        return 130
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(result.summary, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
