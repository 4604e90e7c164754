"""Beyond SFT: what a reward stage (DPO on the model's own mistakes, GRPO with the scorer) adds to the SFT adapter.

    python bench/reward_stage.py                                     # support_tickets, SFT then DPO and GRPO
    python bench/reward_stage.py --tasks purchase_orders --stages dpo --stage-budget 20

For each example task (`examples/<task>`; its test rows are never trained on), side by side in one run:

(sft)   `ftassist train --reward-size 0.25`, every other setting its default (validation split carved, task
        metric, `--time-budget`): a quarter of the training rows held out of SFT for the stages.
(dpo)   `ftassist train --stage dpo --from <sft>` with every default: pairs from the SFT adapter's wrong replies
        to the held-out rows, trl's DPO against the SFT adapter, the task metric on the SFT run's validation split.
(grpo)  `ftassist train --stage grpo --from <sft>` with every default: the eval's scorer as the reward, on the
        held-out rows' prompts.

Each adapter is scored on the test split with the eval's scorer (greedy, transformers) and asked the
forgetting probe's general questions (`ftassist.evaluation.probe`); the report states every arm, the
wall time of each stage (DPO's includes building its pairs) and whether the goal is met: at least
+10 points of field accuracy, or half the remaining whole-object errors gone, with no loss of schema
validity and no probe lost.
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

from bench.task_metric import PER_FIELD, build_data, line, score_adapter  # noqa: E402


def run_stage(model_path: str, data: Path, out: Path, stage: str, time_budget: float, sft: Path | None,
              reward_size: float = 0.0) -> tuple[float, dict]:
    """Train one arm with ftassist's defaults (SFT: and `reward_size` rows held out for the stages); returns
    (wall seconds, run.json)."""
    from ftassist.config import TrainConfig
    from ftassist.train.trainer import train

    started = time.time()
    extra = {"stage": stage, "from_run": str(sft)} if stage != "sft" else {"reward_size": reward_size}
    train(TrainConfig(data=str(data), out=str(out), model=model_path, time_budget=time_budget, **extra), progress=False)
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


def verdict(sft: dict, stage: dict, sft_probes: list[str], stage_probes: list[str]) -> str:
    """The goal, stated: +10 points of fields or half the whole-object errors gone, schema validity and probes kept."""
    gain = 100 * (stage["field_accuracy"] - sft["field_accuracy"])
    errors_before, errors_after = 1 - sft["exact"], 1 - stage["exact"]
    halved = errors_before > 0 and errors_after <= errors_before / 2
    kept = stage["schema_valid"] >= sft["schema_valid"] and set(sft_probes) <= set(stage_probes)
    met = (gain >= 10 or halved) and kept
    return (f"fields {gain:+.1f} points, whole-object errors {100 * errors_before:.1f}% -> {100 * errors_after:.1f}%"
            f"{' (halved)' if halved else ''}, schema-valid {100 * sft['schema_valid']:.1f}% -> "
            f"{100 * stage['schema_valid']:.1f}%, probes {len(sft_probes)} -> {len(stage_probes)}: goal "
            f"{'MET' if met else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Model folder (default: SmolLM2-135M-Instruct, prepared offline).")
    parser.add_argument("--tasks", default="support_tickets")
    parser.add_argument("--stages", default="dpo,grpo", help="Reward stages after SFT: any of dpo, grpo.")
    parser.add_argument("--time-budget", type=float, default=30.0, help="SFT's --time-budget in minutes.")
    parser.add_argument("--stage-budget", type=float, default=15.0, help="Each reward stage's --time-budget in minutes.")
    parser.add_argument("--reward-size", type=float, default=0.25, help="SFT's --reward-size: training rows held out of "
                                                                         "SFT for the stages (0: none; they train on SFT's rows).")
    parser.add_argument("--sft", default=None, help="Start from this finished SFT run of the task instead of training "
                                                    "one (the stages train on the data it trained on).")
    parser.add_argument("--keep", default=None, help="Keep the run folders here (default: a temporary folder).")
    args = parser.parse_args()

    import torch

    from ftassist.model import resolve_model

    model_path = resolve_model(args.model)
    print(f"model {model_path}; {torch.get_num_threads()} torch threads; load average {os.getloadavg()[0]:.1f}", flush=True)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ftassist-bench-"))
    for task in args.tasks.split(","):
        root = work / task
        if not args.sft:
            shutil.rmtree(root, ignore_errors=True)
        if args.sft:  # the data that run trained on (its validation rows are held out of the stages too)
            import yaml

            data = Path(yaml.safe_load((Path(args.sft) / "config.yaml").read_text(encoding="utf-8"))["data"])
        else:
            data = build_data(task, root / "data")
        table = ["| arm | strict | schema-valid | field accuracy | whole object | wall time |", "|---|---|---|---|---|---|"]
        PER_FIELD.clear()
        notes: list[str] = []
        sft_dir = Path(args.sft) if args.sft else root / "sft"
        seconds = None
        if not args.sft:
            seconds, _ = run_stage(model_path, data, sft_dir, "sft", args.time_budget, None, args.reward_size)
        sft_m = score_adapter(model_path, sft_dir / "adapter", data)
        sft_probes = probe_passes(model_path, sft_dir / "adapter")
        held = (sft_dir / "reward_rows.jsonl").is_file()
        table.append(line(f"SFT (ftassist train{', rows held out for the stages' if held else ', defaults'})", sft_m, seconds))
        print(f"[{task}] sft: {seconds} s, {sft_m}, probes {sft_probes}", flush=True)
        for stage in args.stages.split(","):
            seconds, info = run_stage(model_path, data, root / stage, stage, args.stage_budget, sft_dir)
            m = score_adapter(model_path, root / stage / "adapter", data)
            probes = probe_passes(model_path, root / stage / "adapter")
            table.append(line(f"+ {stage.upper()} (--stage {stage} --from sft, defaults)", m, seconds))
            print(f"[{task}] {stage}: {seconds:.0f} s, {m}, probes {probes}", flush=True)
            notes.append(f"{stage}: {verdict(sft_m, m, sft_probes, probes)}")
            notes.append(f"  steps {info['steps']}, kept: {(info.get('selection') or {}).get('summary', 'the last step')}")
            notes.append(f"  stage data: {json.dumps(info.get('stage_data'))}")
        n_test = len((data / "test.jsonl").read_text(encoding="utf-8").splitlines())
        print(f"\n## {task} (test split, {n_test} rows no arm trained on)\n", flush=True)
        print("\n".join(table + ["", "Per field (test split):", *PER_FIELD, "", *notes, ""]), flush=True)
    print(f"\nload average now {os.getloadavg()[0]:.1f}; runs in {work}")


if __name__ == "__main__":
    main()
