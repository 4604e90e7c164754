"""Beyond SFT: does a reward stage beat more SFT? Measured on the bench's tasks, against SFT given the same minutes.

    python bench/reward_stage.py --tasks disaster_tweets --splits validation,test
    python bench/reward_stage.py --tasks wnut_entities --stages dpo --stage-budget 10 --seeds 1,2,3

For each task (`bench/task_metric.py`'s: the human-written `wnut_entities` and `disaster_tweets`, or the
synthetic example tasks), per seed, side by side in one run:

(sft)   `ftassist train --reward-size 0.25`, every other setting its default (`--time-budget` minutes): a quarter of
        the training rows held out of SFT for the stages.
(dpo)   `ftassist train --stage dpo --from <sft>` with every default: pairs from the SFT adapter's wrong replies to
        the held-out rows, trl's DPO against the SFT adapter.
(grpo)  `ftassist train --stage grpo --from <sft>` with every default: the eval's scorer as the reward, on the
        held-out prompts the SFT adapter answers wrong.
(more)  the control a stage must beat: `ftassist train` on every training row (none held out) with a time budget of
        the minutes SFT and the longest stage took together, i.e. SFT given the stage's extra minutes (it may stop
        earlier when its validation plateaus; its wall time is reported).

Each adapter is scored on the chosen splits (never trained on) with the eval's scorer, greedy, in transformers,
and asked the forgetting probe's general questions (`ftassist.evaluation.probe`). The report states the host,
each arm's mean (min-max over seeds), each stage's wall time, and for each stage the verdict against `more`: the
goal is +8 points of whole objects over SFT given the same minutes, or the whole-object errors SFT leaves halved,
with no loss of schema validity and no probe lost.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.task_metric import METRICS, build_data, first_rows, host_line, score_adapter, spread, task_files  # noqa: E402
from ftassist.errors import UserError  # noqa: E402

ARMS = {"sft": "SFT, a quarter of the rows held out (--reward-size 0.25)", "dpo": "+ DPO (--stage dpo --from sft)",
        "grpo": "+ GRPO (--stage grpo --from sft)", "more": "SFT on every row, given the stage's minutes too"}


def run_stage(model_path: str, data: Path, out: Path, stage: str, time_budget: float, seed: int, sft: Path | None = None,
              reward_size: float = 0.0) -> tuple[float, dict]:
    """Train one arm with ftassist's defaults; returns (wall seconds, run.json)."""
    from ftassist.config import TrainConfig
    from ftassist.train.trainer import train

    started = time.time()
    extra = {"stage": stage, "from_run": str(sft)} if stage in ("dpo", "grpo") else {"reward_size": reward_size}
    train(TrainConfig(data=str(data), out=str(out), model=model_path, time_budget=time_budget, seed=seed, **extra),
          progress=False)
    return time.time() - started, json.loads((out / "run.json").read_text(encoding="utf-8"))


def probe_passes(model_path: str, adapter: Path) -> list[str]:
    """The forgetting probes the adapter still passes (greedy, transformers)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftassist.evaluation.probe import PROBES, check_probe, probe_messages
    from ftassist.train.validation import generate_replies

    tok = AutoTokenizer.from_pretrained(adapter)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32), adapter).eval()
    with torch.no_grad():
        replies = generate_replies(model, tok, [probe_messages(p) for p in PROBES], 96)
    return [p.id for p, r in zip(PROBES, replies) if check_probe(p.id, r)]


def verdict(control: dict, stage: dict) -> str:
    """The goal against SFT given the same minutes: +8 points of whole objects, or half its whole-object errors gone,
    with schema validity and the probes kept. `control` and `stage` hold one split's mean figures and probe counts.

    >>> verdict({"exact": 0.5, "schema_valid": 1.0, "probes": 2}, {"exact": 0.6, "schema_valid": 1.0, "probes": 2})
    'whole objects +10.0 points (50.0% -> 60.0%), errors 50.0% -> 40.0%, schema-valid 100.0% -> 100.0%, probes 2 -> 2: goal MET'
    >>> verdict({"exact": 0.5, "schema_valid": 1.0, "probes": 2}, {"exact": 0.7, "schema_valid": 0.99, "probes": 2})[-12:]
    'goal NOT met'
    """
    gain = 100 * (stage["exact"] - control["exact"])
    before, after = 1 - control["exact"], 1 - stage["exact"]
    halved = before > 0 and after <= before / 2
    kept = stage["schema_valid"] >= control["schema_valid"] and stage["probes"] >= control["probes"]
    met = (gain >= 8 or halved) and kept
    return (f"whole objects {gain:+.1f} points ({100 * control['exact']:.1f}% -> {100 * stage['exact']:.1f}%), errors "
            f"{100 * before:.1f}% -> {100 * after:.1f}%{' (halved)' if halved else ''}, schema-valid "
            f"{100 * control['schema_valid']:.1f}% -> {100 * stage['schema_valid']:.1f}%, probes {control['probes']:g} -> "
            f"{stage['probes']:g}: goal {'MET' if met else 'NOT met'}")


def mean(runs: list[dict], key: str) -> float:
    return sum(r[key] for r in runs) / len(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Model folder or .gguf file (default: SmolLM2-135M-Instruct, prepared offline).")
    parser.add_argument("--tasks", default="disaster_tweets")
    parser.add_argument("--stages", default="dpo,grpo", help="Reward stages after SFT: any of dpo, grpo.")
    parser.add_argument("--splits", default="validation", help="Splits scored (comma-separated): validation to pick, test "
                                                               "once per reported change.")
    parser.add_argument("--seeds", default="1", help="Comma-separated training seeds; every arm runs once per seed.")
    parser.add_argument("--time-budget", type=float, default=30.0, help="SFT's --time-budget in minutes.")
    parser.add_argument("--stage-budget", type=float, default=15.0,
                        help="Each reward stage's --time-budget in minutes.")
    parser.add_argument("--reward-size", type=float, default=0.25, help="SFT's --reward-size: training rows held out of "
                                                                         "SFT for the stages.")
    parser.add_argument("--score-rows", type=int, default=0,
                        help="Score only the first N rows of each split (0: all): a quick check of the pipeline, not a figure.")
    parser.add_argument("--keep", default=None, help="Keep the run folders here (default: a temporary folder).")
    args = parser.parse_args()

    from ftassist.model import resolve_model

    stages = args.stages.split(",")
    unknown = [s for s in stages if s not in ("dpo", "grpo")]
    if unknown:
        raise SystemExit(f"error: unknown stage(s) {', '.join(unknown)}: use dpo and/or grpo")
    model_path = resolve_model(args.model)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"model {model_path}; host {host_line()}; load average {os.getloadavg()[0]:.1f}; splits {args.splits}; "
          f"seeds {seeds}; SFT {args.time_budget:g} min, each stage {args.stage_budget:g} min", flush=True)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ftassist-bench-"))
    for task in args.tasks.split(","):
        root = work / task
        shutil.rmtree(root, ignore_errors=True)
        files = task_files(task, root)
        data = build_data(files, root / "data")
        splits = {name: first_rows(files[name], args.score_rows, root / "scored") for name in args.splits.split(",")}
        results: dict[str, dict[str, list[dict]]] = {name: {} for name in splits}
        notes: list[str] = []

        def record(arm: str, seed: int, out: Path, seconds: float, info: dict) -> None:
            probes = probe_passes(model_path, out / "adapter")
            for split, figures in score_adapter(model_path, out / "adapter", data, splits).items():
                results[split].setdefault(arm, []).append(figures | {"seconds": seconds, "probes": len(probes), "seed": seed})
                print(f"[{task}] {arm} seed {seed} {split}: {seconds / 60:.1f} min, probes {probes}, "
                      + json.dumps({k: v for k, v in figures.items() if k != "sample"}), flush=True)
            kept = (info.get("selection") or {}).get("summary", "the last step")
            notes.append(f"{arm} seed {seed}: {seconds / 60:.1f} min, {info.get('steps')} steps, kept: {kept}"
                         + (f"; stage data {json.dumps(info['stage_data'])}" if info.get("stage_data") else ""))

        for seed in seeds:
            sft = root / f"sft-seed{seed}"
            seconds, info = run_stage(model_path, data, sft, "sft", args.time_budget, seed, reward_size=args.reward_size)
            record("sft", seed, sft, seconds, info)
            sft_seconds, longest = seconds, 0.0
            for stage in stages:
                out = root / f"{stage}-seed{seed}"
                try:
                    seconds, info = run_stage(model_path, data, out, stage, args.stage_budget, seed, sft=sft)
                except UserError as exc:  # e.g. the SFT adapter made no mistake to learn from: said, not fatal
                    notes.append(f"{stage} seed {seed}: did not train: {exc}")
                    print(f"[{task}] {stage} seed {seed}: did not train: {exc}", flush=True)
                    continue
                record(stage, seed, out, seconds, info)
                longest = max(longest, seconds)
            # The control's budget: the minutes SFT plus the longest stage took (a stage's wall time includes finding
            # the SFT adapter's mistakes, outside its --time-budget), so no stage had more time than more SFT.
            out = root / f"more-seed{seed}"
            seconds, info = run_stage(model_path, data, out, "sft", (sft_seconds + longest) / 60, seed)
            record("more", seed, out, seconds, info)
        for split, arms in results.items():
            print(f"\n## {task} ({split} split, {arms['sft'][0]['n']} rows no arm trained on; seeds "
                  f"{', '.join(map(str, seeds))}; mean (min-max))\n", flush=True)
            table = ["| arm | strict | schema-valid | field accuracy | whole object | probes passed | minutes |",
                     "|---|---|---|---|---|---|---|"]
            for arm, runs in arms.items():
                cells = [spread([r[k] for r in runs]) for k in METRICS]
                minutes = spread([r["seconds"] for r in runs], 1 / 60, " min")
                table.append(f"| {ARMS[arm]} | {' | '.join(cells)} | {spread([r['probes'] for r in runs], 1, '')} | {minutes} |")
            control = {k: mean(arms["more"], k) for k in ("exact", "schema_valid", "probes")}
            table.append("")
            for stage in (s for s in stages if s in arms):
                figures = {k: mean(arms[stage], k) for k in ("exact", "schema_valid", "probes")}
                total = mean(arms["sft"], "seconds") + mean(arms[stage], "seconds")
                table.append(f"{stage} against SFT given the same minutes (SFT + {stage} {total / 60:.1f} min, control "
                             f"{mean(arms['more'], 'seconds') / 60:.1f} min): {verdict(control, figures)}")
            per_field = [f"  {ARMS[arm]}: " + ", ".join(f"{k} {spread([r['per_field'][k] for r in runs])}"
                                                         for k in runs[0]["per_field"]) for arm, runs in arms.items()]
            print("\n".join(table + ["", f"Per field ({split} split):", *per_field, ""]), flush=True)
        print("\n".join(notes), flush=True)
    print(f"\nload average now {os.getloadavg()[0]:.1f}; runs in {work}")


if __name__ == "__main__":
    main()
