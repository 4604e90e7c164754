"""What running the shared prompt prefix once saves in the reward stages: DPO and GRPO steps with and without it.

    python bench/stage_prefix.py --from RUN --data DATA --steps 6

From a finished SFT run (`ftassist train --reward-size ...`, e.g. one `bench/reward_stage.py --keep` left), each stage
trains `--steps` steps twice, one after the other in this process: `--share-prefix` (the default: the tokens every
row of a batch starts with run once; DPO's rows share the system prompt, each GRPO micro-batch is one prompt's group
of replies) and `--no-share-prefix`. Same seed, same pairs or prompts, same host. The report gives each arm's median
step time (steps 2 onwards; step 1 warms up), the ratio, and the first step's loss both ways (they should agree to
rounding). GRPO's step includes sampling its group's replies, which sharing does not touch; its steps whose group
agreed (skipped, no forward or backward) are left out of the median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.task_metric import host_line  # noqa: E402


def step_times(run: Path) -> tuple[list[float], float | None]:
    """(seconds of each trained step after the first, the first step's loss) from the run's metrics.jsonl."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    steps = [r for r in rows if "loss" in r and "val_rows" not in r]
    # A GRPO step whose group agreed is skipped (no forward or backward): not a step this measures.
    times = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(steps, steps[1:])
             if b["step"] == a["step"] + 1 and b.get("skipped_groups") != 1.0]
    return times, (steps[0]["loss"] if steps else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="from_run", required=True, help="The finished SFT run the stages start from.")
    parser.add_argument("--data", required=True, help="The data folder that run trained on.")
    parser.add_argument("--stages", default="dpo,grpo")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--keep", default=None, help="Keep the run folders here (default: a temporary folder).")
    args = parser.parse_args()

    from ftassist.config import TrainConfig
    from ftassist.train.trainer import train

    print(f"host {host_line()}; load average {os.getloadavg()[0]:.1f}; {args.steps} steps per arm", flush=True)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ftassist-bench-"))
    table = ["| stage | shared prefix | median s/step (min-max) | first loss |", "|---|---|---|---|"]
    for stage in args.stages.split(","):
        medians = {}
        for share in (True, False):
            out = work / f"{stage}-{'shared' if share else 'plain'}"
            train(TrainConfig(data=args.data, out=str(out), stage=stage, from_run=args.from_run, max_steps=args.steps,
                              eval_steps=args.steps, time_budget=0, share_prefix=share, seed=1, report_to="none"),
                  progress=False)
            times, loss = step_times(out)
            if not times:
                raise SystemExit(f"error: {stage}: no step of {out} could be timed (every group agreed, or too few "
                                 f"steps): raise --steps")
            medians[share] = statistics.median(times)
            row = (f"| {stage} | {'yes' if share else 'no'} | {medians[share]:.2f} ({min(times):.2f}-{max(times):.2f}) | "
                   f"{loss} |")
            table.append(row)
            print(row, flush=True)
        table.append(f"| {stage} | ratio | {medians[False] / medians[True]:.2f}x faster shared | |")
    print("\n" + "\n".join(table))
    print(f"\nload average now {os.getloadavg()[0]:.1f}; runs in {work}")


if __name__ == "__main__":
    main()
