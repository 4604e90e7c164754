"""`ftassist train`: fine-tune a LoRA/QLoRA adapter in the foreground (tqdm bar) or as a job.

    ftassist train --data data/ --out runs/first
    ftassist train --config runs/first/config.yaml
    ftassist train --data data/ --out runs/bg --detach      # prints the run folder and returns
"""

from __future__ import annotations

import argparse
import os
import sys

from ftassist_cli.args import add_command, config_from_args
from ftassist.config import TrainConfig

HIDDEN = ("debug_nan_at_step",)


def register(subparsers) -> None:
    parser = add_command(subparsers, "train", TrainConfig, handle, skip=HIDDEN, description=__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         help="Fine-tune a model on a built data folder (LoRA / QLoRA).")
    parser.add_argument("--detach", action="store_true", help="Run as a background job; follow it with `ftassist jobs follow RUN_DIR`.")
    parser.add_argument("--resume", action="store_true", help="Continue the run in --out from its newest complete checkpoint.")
    parser.add_argument("--search", action="store_true", help="Try a few configurations (learning rate, LoRA rank and "
                        "targets) by successive halving within --time-budget, keep the best by the task metric, and "
                        "write OUT/search.md with what was tried.")
    parser.add_argument("--print-plan", action="store_true", help="Print the `accelerate launch` command that trains "
                        "this config as --num-processes ranks (2 when it is 1) with --strategy, instead of training.")


def handle(args: argparse.Namespace) -> int:
    cfg = config_from_args(TrainConfig, args)
    if args.search and cfg.stage != "sft":
        from ftassist.errors import ConfigError

        raise ConfigError([f"--search tries SFT configurations; --stage {cfg.stage} starts from the run it found: run "
                           f"`ftassist train --search` first, then --stage {cfg.stage} --from its --out"])
    if args.print_plan:
        import shlex

        from ftassist.train.distributed import launch_command

        from ftassist.train.distributed import write_launch_config

        write_launch_config(cfg)
        print(shlex.join(launch_command(cfg, num_processes=max(2, cfg.num_processes), strategy=cfg.strategy)))
        return 0
    if cfg.num_processes > 1 and "WORLD_SIZE" not in os.environ and not args.detach:
        return train_launched(cfg, resume=args.resume, search=args.search)
    if args.detach:
        from ftassist.train.jobs import resume_job, start_job

        if args.resume:
            from ftassist.config import save_config

            save_config(cfg, f"{cfg.out}/config.yaml")
            run_dir = resume_job(cfg.out)
        else:
            run_dir = start_job(cfg)
        print(run_dir)
        return 0
    if args.search:
        if args.detach or args.resume:
            from ftassist.errors import ConfigError

            raise ConfigError(["--search runs in the foreground and from scratch: drop --detach / --resume"])
        from ftassist.train.search import search

        found = search(cfg, progress=True)
        print(found.table)
        from ftassist.train.weights import trained_weights

        print(f"winner: {found.winner}; its weights are in {trained_weights(found.out)} (table: {found.out / 'search.md'})")
        return 0
    from ftassist.train.trainer import train

    result = train(cfg, resume=args.resume, progress=True)
    print(result.summary)
    return 0


def train_launched(cfg: TrainConfig, *, resume: bool, search: bool) -> int:
    """`--num-processes N` in the foreground: `accelerate launch` of the worker, its output on this terminal."""
    import subprocess

    from ftassist.errors import ConfigError, UserError
    from ftassist.train.distributed import launch_argv, write_launch_config

    if search:
        raise ConfigError(["--search trains one candidate at a time in one process: drop --num-processes"])
    write_launch_config(cfg)
    argv = launch_argv(cfg, resume=resume)
    print(f"training as {cfg.num_processes} processes ({cfg.strategy}): {' '.join(argv[2:])}", file=sys.stderr, flush=True)
    # Its own process group, stopped whole (launcher and ranks) when this command is interrupted or terminated.
    launcher = subprocess.Popen(argv, start_new_session=True)
    try:
        code = launcher.wait()
    except KeyboardInterrupt:
        from ftassist.process import stop_group

        stop_group(launcher.pid, 30, reap=launcher.poll)
        raise
    if code != 0:
        raise UserError(f"training as {cfg.num_processes} processes failed (exit {code}); the ranks' output is above, "
                        f"and `ftassist train --out {cfg.out} --resume --num-processes {cfg.num_processes}` continues "
                        "from the newest checkpoint")
    from ftassist.train.weights import weights_folder_name

    print(f"{weights_folder_name(cfg.method)}: {cfg.out}/{weights_folder_name(cfg.method)}")
    return 0
