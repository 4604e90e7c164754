"""How long `ftassist eval` takes against one vLLM CPU server, today's settings and the faster ones side by side.

    python bench/eval_speed.py --data TEST.jsonl --schema schema.json --adapter tuned=A1 --adapter plain=A2
                               [--model MODEL] [--settings before,after] [--limit 0]

One vLLM server per setting (ftassist's serving: fp32 on a CPU, the adapters beside the base), then `ftassist eval`
as a user runs it: base and each adapter, each also under `json_schema` structured outputs, and the forgetting probe.
With two adapters that is the 6 arms of #30 (base, tuned, plain; each also constrained).

- before: the settings of 2026-12-06 06:38: vLLM's own CPU LoRA ops (FTASSIST_LORA_OPS=0), max_tokens 256,
  8 requests in flight. (The probe's four prompts go together, capped at 128 tokens, in every setting, as the eval
  now sends them: the 06:38 eval sent them one by one with the task's max_tokens.)
- after: today's defaults: serving.lora_ops in the server, max_tokens from the references, 32 in flight.
- after8, after16: the same with 8 or 16 in flight (what a wider batch is worth on this CPU; on 2026-12-06 the
  setting called "after" had 8 in flight, and "after32" was today's "after").

Printed per setting: each arm's wall seconds, completion tokens and tokens/s from the eval's own report, its field
accuracy (so a faster setting that changed replies shows), the eval's whole wall time and the server's start.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETTINGS = {"before": {"lora_ops": "0", "max_tokens": 256, "concurrency": 8},
            "after8": {"lora_ops": "1", "max_tokens": 0, "concurrency": 8},
            "after16": {"lora_ops": "1", "max_tokens": 0, "concurrency": 16},
            "after": {"lora_ops": "1", "max_tokens": 0, "concurrency": 32}}


def run_setting(name: str, model: str, adapters: dict[str, str], args: argparse.Namespace) -> tuple[list[dict], float, float]:
    """(the eval's arm summaries, the eval's wall seconds, the server's start seconds) for one setting."""
    import secrets

    from ftassist.config import EvalConfig, ServeConfig
    from ftassist.evaluation.harness import run_eval
    from ftassist.process import free_port
    from serving.launch import start_server
    from serving.lora_ops import ENV

    setting = SETTINGS[name]
    os.environ[ENV] = setting["lora_ops"]  # the server's processes inherit it (serving.launch.vllm_env)
    out = Path(tempfile.mkdtemp(prefix=f"ftassist-eval-speed-{name}-"))
    cfg = ServeConfig(model=model, adapters=adapters, port=free_port(), api_key="ft-" + secrets.token_urlsafe(12),
                      enforce_eager=True, log_file=str(out / "server.log"))
    started = time.perf_counter()
    server = start_server(cfg)
    ready = time.perf_counter() - started
    try:
        started = time.perf_counter()
        result = run_eval(EvalConfig(base_url=server.base_url, models=["base", *adapters], data=args.data,
                                     schema=args.schema, out=str(out / "eval"), api_key=cfg.api_key,
                                     concurrency=setting["concurrency"], max_tokens=setting["max_tokens"],
                                     constrained=True, limit=args.limit),
                          progress=lambda m: print(f"[{name}] {m}", flush=True))
        whole = time.perf_counter() - started
    finally:
        server.stop()
    log = (out / "server.log").read_text(errors="replace")
    print(f"[{name}] server log {out / 'server.log'}: ftassist LoRA ops "
          f"{'installed' if 'ftassist LoRA ops installed' in log else 'NOT installed'}", flush=True)
    return result.arms, whole, ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="Test rows, JSONL in messages format.")
    parser.add_argument("--schema", required=True, help="The task's schema.json.")
    parser.add_argument("--adapter", action="append", required=True, help="NAME=PATH of a LoRA adapter (repeatable).")
    parser.add_argument("--model", default=None, help="Base model (default: ftassist's default model).")
    parser.add_argument("--settings", default="before,after", help=f"Any of {', '.join(SETTINGS)}, in this order.")
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()

    from bench.task_metric import host_line
    from ftassist.model import resolve_model

    model = resolve_model(args.model)
    adapters = dict(a.split("=", 1) for a in args.adapter)
    print(f"model {model}; adapters {adapters}; data {args.data}; host {host_line()}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    totals = {}
    for name in args.settings.split(","):
        arms, whole, ready = run_setting(name, model, adapters, args)
        totals[name] = whole
        print(f"\n### {name}: {SETTINGS[name]}\n\n| arm | rows | completion tokens | wall s | tokens/s | fields | whole objects |"
              "\n|---|---|---|---|---|---|---|")
        for arm in arms:
            speed = arm["speed"]
            print(f"| {arm['name']} | {arm.get('n', '')} | {speed['completion_tokens']} | {speed['wall_s']:.1f} | "
                  f"{speed['tokens_per_s']:.1f} | {100 * arm['means']['field_accuracy']['value']:.1f}% | "
                  f"{100 * arm['rates']['exact']['value']:.1f}% |")
        print(f"\nthe whole eval ({len(arms)} arms and the forgetting probe): {whole:.0f} s; the server started in {ready:.0f} s",
              flush=True)
    if len(totals) >= 2:
        (a, ta), *rest = totals.items()
        print("\n" + "; ".join(f"{a} {ta:.0f} s / {b} {tb:.0f} s: {ta / tb:.2f}x" for b, tb in rest)
              + f"; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    from ftassist.process import sigterm_interrupts

    with sigterm_interrupts():  # a killed bench stops the servers it started
        main()
