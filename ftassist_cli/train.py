"""`ftassist train`: fine-tune a LoRA/QLoRA adapter in the foreground (tqdm bar) or as a job.

    ftassist train --data data/ --out runs/first
    ftassist train --config runs/first/config.yaml
    ftassist train --data data/ --out runs/bg --detach      # prints the run folder and returns
"""

from __future__ import annotations

import argparse

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
    parser.add_argument("--print-plan", action="store_true", help="Print the accelerate launch command for N GPUs instead of training (see --num-gpus).")
    parser.add_argument("--num-gpus", type=int, default=0, help="With --print-plan: GPUs for the multi-GPU command.")
    parser.add_argument("--strategy", choices=["ddp", "fsdp", "deepspeed"], default="fsdp", help="With --print-plan: data-parallel strategy.")


def handle(args: argparse.Namespace) -> int:
    cfg = config_from_args(TrainConfig, args)
    if args.print_plan:
        import shlex

        from ftassist.train.distributed import launch_command

        from ftassist.train.distributed import write_launch_config

        write_launch_config(cfg)
        print(shlex.join(launch_command(cfg, num_processes=max(2, args.num_gpus), strategy=args.strategy)))
        return 0
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
        print(f"winner: {found.winner}; its adapter is in {found.out / 'adapter'} (table: {found.out / 'search.md'})")
        return 0
    from ftassist.train.trainer import train

    result = train(cfg, resume=args.resume, progress=True)
    print(result.summary)
    return 0
