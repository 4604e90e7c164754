"""Benchmark: validate 100,000 chat examples with tokenisation; prints rows/s.

    .venv/bin/python bench/data_validation.py [--rows 100000]

Uses the default model's tokenizer (resolve_model(None)) and the same path as `ftassist data
build`: JSONL file -> load_records -> validate_records (all checks, token lengths in batches).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from ftassist.data.checks import load_tokenizer, validate_records
from ftassist.data.findings import count_by_check
from ftassist.data.records import load_records

WORDS = ("order parcel refund invoice login password screen battery charger delivery account update broken late "
         "thanks please urgent help again week yesterday price discount coupon email address phone app").split()


def make_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        user = f"Ticket {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))
        reply = json.dumps({"category": rng.choice(["billing", "technical", "shipping"]), "id": i,
                            "summary": " ".join(rng.choice(WORDS) for _ in range(8))})
        rows.append({"messages": [{"role": "system", "content": "You triage support tickets; reply with JSON."},
                                  {"role": "user", "content": user}, {"role": "assistant", "content": reply}]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    tok = load_tokenizer(None)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in make_rows(args.rows)))
        start = time.perf_counter()
        loaded = load_records([path])
        t_load = time.perf_counter()
        findings, lengths = validate_records(loaded.examples, tokenizer=tok, max_length=1024)
        end = time.perf_counter()
    print(f"rows: {args.rows}, load {t_load - start:.1f} s, validate+tokenise {end - t_load:.1f} s, total {end - start:.1f} s")
    print(f"findings: {count_by_check(findings)}; tokens median {sorted(lengths.known())[len(lengths.known()) // 2]}")
    print(f"{args.rows / (end - start):,.0f} rows/s")


if __name__ == "__main__":
    main()
