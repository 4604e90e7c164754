"""GGUF export of a trained run, verified: agreement with the adapter and the JSON eval per quantisation.

    python bench/gguf_export.py RUN_DIR [--out DIR] [--quant f16 --quant q8_0 --quant q4_k_m]

RUN_DIR is a run of `ftassist train` (e.g. the ftassist arm that `bench/task_metric.py --keep DIR`
leaves). Prints the export's table (greedy token agreement of llama.cpp with base + adapter in
transformers, the OpenAI-compatible server against llama.cpp in process, with and without the
server's default repeat_penalty, and the eval's content and format figures on the test split per
file) and the wall time of each stage, measured in this one run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ftassist.config import ExportConfig  # noqa: E402
from serving.export import export_gguf  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--out", default="")
    parser.add_argument("--quant", action="append", dest="quants")
    parser.add_argument("--eval-limit", type=int, default=0)
    args = parser.parse_args()
    stages: list[tuple[str, float]] = []
    last = [time.perf_counter()]

    def progress(msg: str) -> None:
        now = time.perf_counter()
        stages.append((msg, now - last[0]))
        last[0] = now
        print(f"[{now - start:7.1f} s] {msg}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    report = export_gguf(ExportConfig(run_dir=args.run_dir, out=args.out, quants=args.quants or ["f16", "q8_0", "q4_k_m"],
                                      eval_limit=args.eval_limit), progress=progress)
    total = time.perf_counter() - start
    print(report.markdown())
    print("| stage (started at) | seconds until the next |\n|---|---|")
    for (msg, _), (_, took) in zip(stages, stages[1:] + [("end", time.perf_counter() - last[0])]):
        print(f"| {msg.removeprefix('export: ')} | {took:.1f} |")
    print(f"\ntotal {total:.0f} s; agreement gate on {report.gate}: {'PASSED' if report.passed else 'FAILED'}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    from ftassist.process import sigterm_interrupts

    with sigterm_interrupts():  # a killed bench stops the servers it started
        sys.exit(main())
