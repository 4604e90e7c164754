"""`ftassist demo`: the whole pipeline on the shipped example task: data -> train -> merge -> serve -> eval.

    ftassist demo            # or: make demo

Each stage is the same library call the CLI and the app make; the demo only chains them and
prints the base-vs-tuned table at the end, with where every file went.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ftassist.config import DataConfig, DemoConfig, EvalConfig, MergeConfig, ServeConfig, TrainConfig
from ftassist.errors import UserError
from ftassist_cli.args import add_command, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "demo", DemoConfig, handle, help="Run data -> train -> merge -> serve -> eval on the example task.")


def handle(args: argparse.Namespace) -> int:
    run_demo(config_from_args(DemoConfig, args))
    return 0


@dataclass
class DemoResult:
    out: Path
    table: str
    timings: dict[str, float] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = print) -> DemoResult:
    """Run every stage on the example task; returns the eval table, timings and paths.

    Raises `UserError` when a stage cannot run (missing example files, a taken port, ...).
    """
    from ftassist.data.build import build_dataset
    from ftassist.evaluation.harness import run_eval
    from ftassist.model import resolve_model
    from ftassist.train.trainer import train
    from serving.launch import start_server
    from serving.merge import merge_adapter

    out = Path(cfg.out).resolve()
    example = Path(cfg.example)
    for name in ("train.jsonl", "test.jsonl", "schema.json"):
        if not (example / name).exists():
            raise UserError(f"--example {example}: {name} is missing; run `python {example}/generate.py` to create it")
    timings: dict[str, float] = {}

    def stage(name: str):
        log(f"\n==> {name}")
        return time.perf_counter()

    t = stage("model: resolving the base model")
    base = resolve_model(cfg.model)
    log(f"base model: {base}")
    timings["model"] = time.perf_counter() - t

    t = stage("data: validating and building train/test sets")
    data = build_dataset(DataConfig(
        inputs=[str(example / "train.jsonl")], test_inputs=[str(example / "test.jsonl")],
        schema=str(example / "schema.json"), out=str(out / "data"), model=base,
    ))
    log(data.summary)
    if data.exit_code != 0:
        raise UserError(f"the example data has errors: see {out / 'data' / 'report.md'}")
    timings["data"] = time.perf_counter() - t

    t = stage("train: LoRA on this machine")
    result = train(TrainConfig(
        data=str(out / "data"), out=str(out / "run"), model=base, epochs=cfg.epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate, max_length=512,
    ))
    log(result.summary)
    timings["train"] = time.perf_counter() - t

    t = stage("merge: adapter folded into a full-precision copy of the base")
    merged = merge_adapter(MergeConfig(run_dir=str(out / "run"), out=str(out / "merged")))
    log(f"merged model: {merged}")
    timings["merge"] = time.perf_counter() - t

    t = stage("serve: vLLM with the base model and the adapter side by side")
    serve_cfg = ServeConfig(model=base, adapters={"tuned": str(result.weights_dir)}, served_name="base",
                            port=cfg.port, enforce_eager=True, log_file=str(out / "vllm.log"))
    with start_server(serve_cfg) as server:
        log(f"serving at {server.base_url} (models: base, tuned)")
        timings["serve_start"] = time.perf_counter() - t
        t = stage("eval: JSON compliance of base vs tuned on the held-out test set")
        ev = run_eval(EvalConfig(
            base_url=server.base_url, api_key=server.api_key, models=["base", "tuned"],
            data=str(out / "data" / "test.jsonl"), schema=str(example / "schema.json"),
            out=str(out / "eval"), limit=cfg.limit, max_tokens=160,
        ))
        timings["eval"] = time.perf_counter() - t
    log("\n" + ev.table)
    total = sum(timings.values())
    log("\nstage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + f"; total {total:.0f}")
    paths = {"data": out / "data", "run": out / "run", "merged": merged, "eval": out / "eval"}
    log("written: " + ", ".join(f"{k} -> {v}" for k, v in paths.items()))
    return DemoResult(out=out, table=ev.table, timings=timings, paths=paths)
