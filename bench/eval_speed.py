"""How long `ftassist eval` takes against one vLLM CPU server: wall seconds per arm and in all.

    python bench/eval_speed.py --run RUN_DIR --data TEST.jsonl [--concurrency 8] [--limit 0]

The run's adapter is served as "tuned" beside "base" (ftassist's serving, fp32 on a CPU); `ftassist eval` then runs
base and tuned, each also under `json_schema` structured outputs (`--constrained`), and the forgetting probe, as a
user would. Printed: each arm's wall seconds, completion tokens and tokens/s from the eval's own report, the eval's
whole wall time (the probe included), and the server's start. The quality figures the eval prints are of this one
adapter and are not what this bench reports.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="A finished ftassist run folder (its adapter is served).")
    parser.add_argument("--data", required=True, help="Test rows, JSONL in messages format.")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()

    from bench.task_metric import host_line
    from ftassist.config import EvalConfig
    from ftassist.evaluation.harness import run_eval
    from ftassist.model import resolve_model
    from ftassist_app.serve_step import serve_config
    from serving.launch import start_server
    from serving.run_folder import read_run

    run = Path(args.run)
    cfg = serve_config(resolve_model(read_run(run).base_ref), str(run), run)
    data = Path(read_run(run).train.get("data") or "")
    print(f"run {run}; data {args.data}; host {host_line()}; concurrency {args.concurrency}", flush=True)
    started = time.perf_counter()
    server = start_server(cfg)
    ready = time.perf_counter() - started
    try:
        out = Path(tempfile.mkdtemp(prefix="ftassist-eval-speed-"))
        started = time.perf_counter()
        result = run_eval(EvalConfig(base_url=server.base_url, models=["base", "tuned"], data=args.data,
                                     schema=str(data / "schema.json"), out=str(out), api_key=cfg.api_key,
                                     concurrency=args.concurrency, constrained=True, limit=args.limit),
                          progress=lambda m: print(m, flush=True))
        whole = time.perf_counter() - started
    finally:
        server.stop()
    print("\n| arm | rows | completion tokens | wall s | tokens/s |\n|---|---|---|---|---|")
    for arm in result.arms:
        speed = arm["speed"]
        print(f"| {arm['name']} | {arm.get('n', '')} | {speed['completion_tokens']} | {speed['wall_s']:.1f} | "
              f"{speed['tokens_per_s']:.1f} |")
    print(f"\nthe whole eval (every arm and the forgetting probe): {whole:.0f} s; the server started in {ready:.0f} s")


if __name__ == "__main__":
    main()
