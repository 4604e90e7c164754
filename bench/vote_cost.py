"""What the serving option `"vote": K` costs and buys: greedy against per-field majorities of K sampled replies.

    python bench/vote_cost.py --run RUN_DIR --split DATA/val.jsonl [--votes 3,5] [--limit 100]

The run's adapter is served as "tuned" by ftassist's vLLM server (fp32 on a CPU, the VoteReplies middleware loaded as
always). Each row of the split is sent once per arm, `--concurrency` at a time: greedy (temperature 0), then each K
of `--votes` at `--temperature` through `extra_body={"vote": K}` (one vLLM request with n=K, the vote taken in the
server); every arm also under `json_schema` structured outputs. Printed per arm: schema-valid, fields and whole
objects (the eval's scorer), completion tokens, the wall seconds for all rows, p50/p95 request latency, and wall time
as a multiple of greedy's, every arm with the prompts already in vLLM's prefix cache (one untimed greedy pass first;
its time is printed as the cold-cache figure). Choose a split the run did not train on (its validation or test rows).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def ask(client, messages: list[dict], k: int, temperature: float, schema: dict | None, max_tokens: int) -> tuple[str, float, int]:
    """(reply, seconds, completion tokens) of one request; k=1 is greedy, k>1 a vote of k sampled replies."""
    kwargs: dict = {"model": "tuned", "messages": messages, "max_tokens": max_tokens}
    if k > 1:
        kwargs.update(temperature=temperature, extra_body={"vote": k})
    else:
        kwargs["temperature"] = 0.0
    if schema is not None:
        kwargs["response_format"] = {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
    started = time.perf_counter()
    out = client.chat.completions.create(**kwargs)
    return out.choices[0].message.content or "", time.perf_counter() - started, out.usage.completion_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="A finished ftassist run folder (its adapter is served).")
    parser.add_argument("--split", required=True, help="JSONL rows in messages format the run did not train on.")
    parser.add_argument("--schema", default=None, help="JSON Schema of the reply (default: the run's data schema.json).")
    parser.add_argument("--votes", default="3,5", help="Vote sizes K to measure, comma-separated.")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--limit", type=int, default=100, help="Rows of the split (0: all).")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()

    from openai import OpenAI

    from bench.task_metric import host_line
    from ftassist.evaluation.metrics import make_validator, score_reply
    from ftassist.evaluation.testset import load_examples
    from ftassist.model import resolve_model
    from ftassist.train.validation import summarize_scores
    from ftassist_app.serve_step import serve_config
    from serving.launch import start_server
    from serving.run_folder import read_run

    run = Path(args.run)
    examples, _ = load_examples(args.split, args.limit)
    data = Path(read_run(run).train.get("data") or "")
    schema = json.loads(Path(args.schema or data / "schema.json").read_text(encoding="utf-8"))
    validator = make_validator(schema)
    base = resolve_model(read_run(run).base_ref)
    cfg = serve_config(base, str(run), run)
    print(f"run {run}; {len(examples)} rows of {args.split}; host {host_line()}; concurrency {args.concurrency}; "
          f"temperature {args.temperature:g} for votes", flush=True)
    server = start_server(cfg)
    figures = []
    try:
        client = OpenAI(base_url=server.base_url, api_key=cfg.api_key or "EMPTY", timeout=600)
        votes = [int(v) for v in args.votes.split(",") if v.strip()]
        # Every row once, greedy, before anything is timed: the arms send the same prompts, so without this the first
        # arm alone pays their prefill and the later ones find them in vLLM's prefix cache (it made greedy look 2.5x
        # slower than greedy under json_schema). Its wall time is printed as the cold-cache figure.
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            list(pool.map(lambda e: ask(client, e.prompt, 1, 0.0, None, args.max_tokens), examples))
        print(f"greedy with the prompts not yet cached (not counted below): {time.perf_counter() - started:.1f} s",
              flush=True)
        # Warm-up, not counted: vLLM compiles for each new batch shape on first sight (it cost the first timed arm
        # ~60 s here), so every arm's batch shapes are seen once on the first rows before anything is timed.
        for k in [1] + votes:
            for constrained in (False, True):
                with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                    list(pool.map(lambda e: ask(client, e.prompt, k, args.temperature, schema if constrained else None,
                                                args.max_tokens), examples[:args.concurrency]))
        for constrained in (False, True):
            for k in [1] + votes:
                started = time.perf_counter()
                with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                    results = list(pool.map(lambda e: ask(client, e.prompt, k, args.temperature,
                                                          schema if constrained else None, args.max_tokens), examples))
                wall = time.perf_counter() - started
                scores = [score_reply(reply, e.reference, validator) for (reply, _, _), e in zip(results, examples)]
                seconds = sorted(s for _, s, _ in results)
                arm = ("greedy" if k == 1 else f"vote {k}") + (" + json_schema" if constrained else "")
                figures.append({"arm": arm, **summarize_scores(scores, "json"), "wall_s": wall,
                                "p50_s": statistics.median(seconds), "p95_s": seconds[int(0.95 * (len(seconds) - 1))],
                                "tokens": sum(t for _, _, t in results)})
                print(json.dumps({k2: v for k2, v in figures[-1].items() if k2 != "per_field"}), flush=True)
    finally:
        server.stop()
    greedy = {f["arm"].replace("greedy", ""): f["wall_s"] for f in figures if f["arm"].startswith("greedy")}
    print("\n| arm | schema-valid | fields | whole objects | completion tokens | wall s | p50 s | p95 s | wall vs greedy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for f in figures:
        ref = greedy[" + json_schema" if "json_schema" in f["arm"] else ""]
        print(f"| {f['arm']} | {f['schema_valid']:.1%} | {f['field_accuracy']:.1%} | {f['exact']:.1%} | {f['tokens']} | "
              f"{f['wall_s']:.1f} | {f['p50_s']:.2f} | {f['p95_s']:.2f} | {f['wall_s'] / ref:.2f}x |")


if __name__ == "__main__":
    from ftassist.process import sigterm_interrupts

    with sigterm_interrupts():  # a killed bench stops the servers it started
        main()
