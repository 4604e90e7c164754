"""How much of the human-labelled set's gain a handful of labelled rows plus a teacher recovers.

    python bench/augment_gain.py --task disaster_tweets --seed-rows 32 --teacher qwen2.5-coder-1.5b --keep /tmp/aug

On a real task of the bench (`bench/real_tasks.py`), `--seed-rows` labelled rows are drawn (seeded) from train; the
rest of train gives only its inputs, as the unlabelled file. The teacher (a model `bench/models.py` assembles from
PyPI, served here by vLLM through `ftassist.serving`) is measured on held-out seed rows and labels the inputs
(`ftassist data augment`, with `--force` so the figure is reported whatever the teacher's accuracy; the report
says it first). The server is stopped before anything trains. Arms, each `ftassist train` with every default and
the same `--time-budget`, scored on the task's validation split (rows no arm trained on):

(base)       the untuned student.
(seed)       the seed rows alone.
(augmented)  the seed rows + the rows the teacher's labels kept (`ftassist train --data AUGMENT_OUT`).
(full)       every human-labelled train row.

The figure: (augmented - base) / (full - base) of field accuracy, with the teacher's measured accuracy, what was
kept, and the wall time of each part.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def split_seed(train: Path, seed_rows: int, seed: int, folder: Path) -> tuple[Path, Path]:
    """(seed rows JSONL, unlabelled inputs JSONL): `seed_rows` rows drawn from train, the others' inputs only."""
    lines = [line for line in train.read_text(encoding="utf-8").splitlines() if line.strip()]
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    folder.mkdir(parents=True, exist_ok=True)
    seed_file, inputs = folder / "train.jsonl", folder / "inputs.jsonl"
    seed_file.write_text("".join(lines[i] + "\n" for i in order[:seed_rows]), encoding="utf-8")
    texts = [[m for m in json.loads(lines[i])["messages"] if m["role"] == "user"][-1]["content"] for i in order[seed_rows:]]
    inputs.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return seed_file, inputs


def run_teacher(teacher_path: str, seed_data: Path, inputs: Path, out: Path, args) -> dict:
    """Serve the teacher, run `augment` with it, stop it; returns the augment report plus the serving seconds."""
    from ftassist.config import AugmentConfig, ServeConfig
    from ftassist.data.augment import augment
    from ftassist.process import free_port
    from serving.launch import start_server

    started = time.time()
    cfg = ServeConfig(model=teacher_path, port=free_port(), api_key="sk-bench", dtype="float32",
                      max_model_len=args.teacher_context, startup_timeout=900, log_file=str(out.parent / "teacher.log"))
    server = start_server(cfg, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "4"})
    try:
        ready = time.time() - started
        result = augment(AugmentConfig(seed=str(seed_data / "train.jsonl"), unlabelled=str(inputs), out=str(out),
                                       teacher_url=server.base_url, teacher_model=server.base_name,
                                       teacher_api_key="sk-bench", samples=args.samples, shots=args.shots,
                                       concurrency=args.concurrency, max_tokens=args.label_tokens, force=True),
                         progress=lambda m: print(m, flush=True))
    finally:
        server.stop()
    return {**result.report, "server_start_s": round(ready, 1), "teacher_wall_s": round(time.time() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="disaster_tweets", help="A real task of bench/real_tasks.py.")
    parser.add_argument("--seed-rows", type=int, default=32, help="Labelled rows the user has.")
    parser.add_argument("--inputs", type=int, default=0, help="Unlabelled inputs given to the teacher (0: all the rest).")
    parser.add_argument("--teacher", default="qwen2.5-coder-1.5b", help="A model bench/models.py assembles, or a folder.")
    parser.add_argument("--samples", type=int, default=3, help="Labels sampled per input for the vote.")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--label-tokens", type=int, default=128, help="Longest label in tokens.")
    parser.add_argument("--teacher-context", type=int, default=4096)
    parser.add_argument("--time-budget", type=float, default=30.0, help="Minutes each trained arm may train.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--arms", default="base,seed,augmented,full")
    parser.add_argument("--keep", default=None, help="Keep the folders here (default: a temporary folder).")
    args = parser.parse_args()

    from bench.models import MODELS, assemble
    from bench.task_metric import build_data, ftassist_recipe, host_line, score_adapter, task_files
    from ftassist.model import resolve_model

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ftassist-augment-"))
    student = resolve_model(None)  # SmolLM2-135M-Instruct, prepared offline
    teacher = resolve_model(str(assemble(args.teacher)) if args.teacher in MODELS else args.teacher)
    print(f"student {student}; teacher {teacher}; host {host_line()}; task {args.task}; seed rows {args.seed_rows}; "
          f"seed {args.seed}; time budget {args.time_budget:g} min", flush=True)
    files = task_files(args.task, work / args.task)
    seed_file, inputs = split_seed(files["train"], args.seed_rows, args.seed, work / "seed_source")
    if args.inputs:
        kept = inputs.read_text(encoding="utf-8").splitlines()[:args.inputs]
        inputs.write_text("\n".join(kept) + "\n", encoding="utf-8")
    seed_data = build_data({**files, "train": seed_file}, work / "seed_data")
    full_data = build_data(files, work / "full_data")
    report = run_teacher(teacher, seed_data, inputs, work / "augmented", args)
    t = report["teacher"]
    print(f"teacher: {t['field_accuracy']:.1%} of fields on {t['rows']} held-out seed rows; kept {report['kept']} of "
          f"{report['inputs']} inputs ({report['rejected']}); {report['teacher_wall_s']:.0f} s with the server "
          f"({report['server_start_s']:.0f} s to start)", flush=True)
    datas = {"seed": seed_data, "augmented": work / "augmented", "full": full_data}
    figures: dict[str, dict] = {}
    for arm in args.arms.split(","):
        seconds = None
        adapter = None
        if arm != "base":
            seconds, _ = ftassist_recipe(student, datas[arm], work / "runs" / arm, args.time_budget, args.seed)
            adapter = work / "runs" / arm / "adapter"
        score = score_adapter(student, adapter, full_data, {"validation": files["validation"]})["validation"]
        figures[arm] = {**{k: v for k, v in score.items() if k != "sample"}, "train_s": seconds}
        print(f"[{args.task}] {arm}: " + json.dumps(figures[arm]), flush=True)
    minutes = {arm: "" if f["train_s"] is None else f"{f['train_s'] / 60:.1f}" for arm, f in figures.items()}
    rows = [f"| {arm} | {f['schema_valid']:.1%} | {f['field_accuracy']:.1%} | {f['exact']:.1%} | {minutes[arm]} |"
            for arm, f in figures.items()]
    print("\n| arm | schema-valid | fields | whole objects | train min |\n|---|---|---|---|---|\n" + "\n".join(rows))
    if {"base", "augmented", "full"} <= set(figures) and figures["full"]["field_accuracy"] > figures["base"]["field_accuracy"]:
        gain = figures["full"]["field_accuracy"] - figures["base"]["field_accuracy"]
        got = figures["augmented"]["field_accuracy"] - figures["base"]["field_accuracy"]
        print(f"\nThe augmented set recovers {got / gain:.0%} of the full human-labelled set's field-accuracy gain "
              f"({got:+.1%} of {gain:+.1%}); teacher {args.teacher} measured at {t['field_accuracy']:.1%}.")


if __name__ == "__main__":
    from ftassist.process import sigterm_interrupts

    with sigterm_interrupts():  # a killed bench stops the servers it started
        main()
