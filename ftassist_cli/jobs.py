"""`ftassist jobs`: list, follow, cancel, resume and inspect background training jobs.

    ftassist jobs list --root runs/
    ftassist jobs follow runs/bg
    ftassist jobs cancel runs/bg
    ftassist jobs resume runs/bg
    ftassist jobs status runs/bg          # JSON
"""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser("jobs", help="Manage background training jobs.", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    p = sub.add_parser("list", help="One line per run folder under --root.")
    p.add_argument("--root", default="runs", help="Folder holding run folders (default: runs).")
    p.set_defaults(handler=cmd_list)
    for name, handler, text in (("follow", cmd_follow, "Print metrics as they are logged until the job ends."),
                                ("cancel", cmd_cancel, "Stop the job (SIGTERM, then SIGKILL) and mark it cancelled."),
                                ("resume", cmd_resume, "Continue an interrupted job from its newest complete checkpoint."),
                                ("status", cmd_status, "Print the job's status as JSON.")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run_dir", help="Run folder written by `ftassist train`.")
        if name == "cancel":
            p.add_argument("--timeout", type=float, default=30.0, help="Seconds to wait before SIGKILL.")
        if name == "resume":
            p.add_argument("--follow", action="store_true", help="Follow the resumed job until it ends.")
        p.set_defaults(handler=handler)


def cmd_list(args) -> int:
    from ftassist.train.jobs import list_jobs

    jobs = list_jobs(args.root)
    if not jobs:
        print(f"no runs under {args.root}")
    for s in jobs:
        total = s.total_steps or "?"
        print(f"{s.state:<12} {s.step:>5}/{total:<5} {s.run_dir}" + (f"  ({s.reason})" if s.reason else ""))
    return 0


def cmd_follow(args) -> int:
    from ftassist.train.jobs import follow_job
    from ftassist.train.status import JobStatus

    for item in follow_job(args.run_dir):
        if isinstance(item, JobStatus):
            print(f"{item.state}" + (f": {item.reason}" if item.reason else ""))
            return 0 if item.state == "completed" else 1
        print(f"step {item['step']}: loss {item['loss']} grad_norm {item['grad_norm']} "
              f"tokens/s {item['tokens_per_s']} eta {item['eta_s']} s", flush=True)
    return 1


def cmd_cancel(args) -> int:
    from ftassist.train.jobs import cancel_job

    status = cancel_job(args.run_dir, timeout=args.timeout)
    print(status.state)
    return 0


def cmd_resume(args) -> int:
    from ftassist.train.jobs import resume_job

    run_dir = resume_job(args.run_dir)
    print(run_dir)
    if args.follow:
        args.run_dir = str(run_dir)
        return cmd_follow(args)
    return 0


def cmd_status(args) -> int:
    from ftassist.train.jobs import read_metrics, read_status

    status = read_status(args.run_dir).to_dict()
    rows = read_metrics(args.run_dir)
    status["last_metrics"] = rows[-1] if rows else None
    print(json.dumps(status, indent=2))
    return 0
