"""Serving throughput: HF `generate` against the vLLM CPU server, same prompts, fp32, 128-token replies.

    python bench/serve_throughput.py            # several minutes; other CPU users skew the figures

Prints output tokens/s and TTFT p50/p95 for HF generate (one at a time; one static batch of 32)
and for vLLM at concurrency 1, 8 and 32 (plus 16 streams of ~1,400-token prompts, and both again with
vLLM's own CPU KV-cache block size of 128 against ftassist's 32), the ratios, the compute limit (2·N FLOPs per token at
the measured fp32 matmul rate), and cold start (process start to first token) with an empty
and a warm compile cache and with --enforce-eager, plus vLLM's own core binding for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ftassist.config import ServeConfig  # noqa: E402
from ftassist.model import resolve_model  # noqa: E402
from serving.launch import start_server  # noqa: E402
from ftassist.process import free_port  # noqa: E402

REPLY = 128


def test_rows() -> list[dict]:
    return [json.loads(line) for line in (ROOT / "examples/support_tickets/test.jsonl").read_text().splitlines()]


def prompts(n: int, tag: str = "") -> list[list[dict]]:
    """n test-set chats without their replies; a `tag` marks each user message as new so vLLM's prefix
    cache can reuse the shared system prompt (as in real traffic) but never a whole earlier round."""
    rows = test_rows()
    out = []
    for i in range(n):
        msgs = [dict(m) for m in rows[i % len(rows)]["messages"] if m["role"] != "assistant"]
        if tag:
            msgs[-1]["content"] = f"[{tag}-{i}] {msgs[-1]['content']}"
        out.append(msgs)
    return out


def long_prompts(n: int, tag: str, chars: int = 5000) -> list[list[dict]]:
    """n distinct ~1,400-token prompts (the test tickets run together), starting differently so
    vLLM's prefix cache can't share them."""
    text = " ".join(r["messages"][-2]["content"] for r in test_rows())[:chars]
    return [[{"role": "user", "content": f"[{tag}-{i}] Summarise: {text}"}] for i in range(n)]


def matmul_gflops(dtype_name: str, size: int = 2048, reps: int = 5) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size**3 * reps / (time.perf_counter() - start) / 1e9


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def bench_hf(model_dir: str, msgs: list[list[dict]], singles: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    kw = dict(do_sample=False, max_new_tokens=REPLY, min_new_tokens=REPLY, pad_token_id=tok.pad_token_id)
    out: dict = {"params": sum(p.numel() for p in model.parameters())}
    ttfts, tokens, elapsed = [], 0, 0.0
    with torch.inference_mode():
        warm = tok.apply_chat_template(msgs[-1], add_generation_prompt=True, return_tensors="pt", return_dict=True)
        model.generate(**warm, **kw)  # untimed, like the servers' warm-up round
        for m in msgs[:singles]:
            ids = tok.apply_chat_template(m, add_generation_prompt=True, return_tensors="pt", return_dict=True)
            t0 = time.perf_counter()
            model.generate(**ids, do_sample=False, max_new_tokens=1, pad_token_id=tok.pad_token_id)
            ttfts.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            gen = model.generate(**ids, **kw)
            elapsed += time.perf_counter() - t0
            tokens += gen.shape[1] - ids["input_ids"].shape[1]
        out["hf_single"] = {"tok_s": tokens / elapsed, "ttft_p50": pct(ttfts, 0.5), "ttft_p95": pct(ttfts, 0.95)}
        batch = tok.apply_chat_template(msgs[:32], add_generation_prompt=True, return_tensors="pt", return_dict=True,
                                        padding=True)
        model.generate(**batch, **kw)  # untimed warm-up of the batch shapes
        t0 = time.perf_counter()
        gen = model.generate(**batch, **kw)
        seconds = time.perf_counter() - t0
        out["hf_batch32"] = {"tok_s": 32 * (gen.shape[1] - batch["input_ids"].shape[1]) / seconds,
                             "ttft_p50": seconds, "ttft_p95": seconds}  # a static batch returns everything at the end
    return out


async def one_stream(client, msgs: list[dict]) -> tuple[float, int]:
    t0 = time.perf_counter()
    ttft, n = None, 0
    stream = await client.chat.completions.create(model="base", messages=msgs, max_tokens=REPLY, temperature=0, stream=True,
                                                  stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    async for chunk in stream:
        if ttft is None and chunk.choices and chunk.choices[0].delta.content:
            ttft = time.perf_counter() - t0
        if chunk.usage:
            n = chunk.usage.completion_tokens
    return ttft or float("nan"), n


async def bench_concurrency(server, msgs: list[list[dict]], concurrency: int, requests: int) -> dict:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=600)
    queue = list(msgs[:requests])
    results: list[tuple[float, int]] = []

    async def worker():
        while queue:
            results.append(await one_stream(client, queue.pop()))

    t0 = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    seconds = time.perf_counter() - t0
    await client.close()
    ttfts = [r[0] for r in results]
    return {"tok_s": sum(r[1] for r in results) / seconds, "ttft_p50": pct(ttfts, 0.5), "ttft_p95": pct(ttfts, 0.95)}


def measure(server, make, concurrency: int, requests: int, label: str) -> dict:
    """One untimed round (oneDNN builds its kernels per new batch shape on first use; a running server
    meets each shape once), then the timed round, each with prompts of their own."""
    asyncio.run(bench_concurrency(server, make(requests, f"{label}-warmup"), concurrency, requests))
    return asyncio.run(bench_concurrency(server, make(requests, label), concurrency, requests))


def first_token_seconds(server, t_start: float) -> float:
    from openai import OpenAI

    client = OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
    for chunk in client.chat.completions.create(model="base", messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                                stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            break
    return time.perf_counter() - t_start


def start(model: str, *, eager: bool, cache: str, default_binding: bool = False, block_size: int | None = None):
    env = {**os.environ, "VLLM_CACHE_ROOT": cache}
    if default_binding:  # vLLM's own choice: keep one core for the scheduler
        env.update(VLLM_CPU_OMP_THREADS_BIND="auto", VLLM_CPU_NUM_OF_RESERVED_CPU="1")
    cfg = ServeConfig(model=model, port=free_port(), api_key="bench", dtype="float32", max_model_len=2048,
                      enforce_eager=eager, startup_timeout=900, block_size=block_size)
    t0 = time.perf_counter()
    server = start_server(cfg, env=env)
    return server, first_token_seconds(server, t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--singles", type=int, default=4, help="HF requests timed one at a time.")
    parser.add_argument("--out", default=None, help="Write the figures as JSON here.")
    args = parser.parse_args()
    model = resolve_model(None)
    msgs = prompts(32, "hf")
    res: dict = {"loadavg_start": Path("/proc/loadavg").read_text().split()[:3], "cores": len(os.sched_getaffinity(0))}
    res["matmul_gflops"] = {d: matmul_gflops(d) for d in ("float32", "bfloat16")}
    res.update(bench_hf(model, msgs, args.singles))
    cache = tempfile.mkdtemp(prefix="vllm-cache-")
    cold = {}
    server, cold["compiled, empty compile cache"] = start(model, eager=False, cache=cache)
    server.stop()
    server, cold["compiled, warm compile cache"] = start(model, eager=False, cache=cache)
    try:
        for c, n in ((1, 4), (8, 16), (32, 32)):
            res[f"vllm_c{c}"] = measure(server, prompts, c, n, f"vllm_c{c}")
        res["vllm_long_c16"] = measure(server, long_prompts, 16, 16, "vllm_long_c16")
    finally:
        server.stop()
    # ftassist's CPU block size (32) against vLLM's own CPU default (128), same compiled server otherwise.
    server, _ = start(model, eager=False, cache=cache, block_size=128)
    try:
        res["vllm_block128_c32"] = measure(server, prompts, 32, 32, "vllm_block128_c32")
        res["vllm_block128_long_c16"] = measure(server, long_prompts, 16, 16, "vllm_block128_long_c16")
    finally:
        server.stop()
    for label, default_binding in (("eager", False), ("eager_vllm_default_binding", True)):
        server, cold[label] = start(model, eager=True, cache=cache, default_binding=default_binding)
        try:
            for c, n in ((1, 4), (32, 32)):
                res[f"{label}_c{c}"] = measure(server, prompts, c, n, f"{label}_c{c}")
        finally:
            server.stop()
    res["cold_start_s"] = cold
    res["compute_limit_tok_s"] = res["matmul_gflops"]["float32"] * 1e9 / (2 * res["params"])
    res["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    print_table(res)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))


def print_table(res: dict) -> None:
    print(f"cores {res['cores']}, load average {res['loadavg_start']} -> {res['loadavg_end']}")
    print(f"matmul GFLOP/s: {json.dumps({k: round(v, 1) for k, v in res['matmul_gflops'].items()})}; "
          f"params {res['params'] / 1e6:.1f}M; compute limit {res['compute_limit_tok_s']:.0f} tok/s (2·N FLOPs/token)")
    print(f"{'setup':34} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p95':>9} {'x HF single':>11} {'x HF batch':>10} {'% limit':>8}")
    single, batch = res["hf_single"]["tok_s"], res["hf_batch32"]["tok_s"]
    for key, row in res.items():
        if isinstance(row, dict) and "tok_s" in row:
            print(f"{key:34} {row['tok_s']:8.1f} {row['ttft_p50']:9.3f} {row['ttft_p95']:9.3f} {row['tok_s'] / single:11.2f} "
                  f"{row['tok_s'] / batch:10.2f} {100 * row['tok_s'] / res['compute_limit_tok_s']:7.1f}%")
    c32 = res["vllm_c32"]["tok_s"]
    print(f"goals at concurrency 32: {c32 / single:.2f}x one at a time (goal 5x), {c32 / batch:.2f}x the static batch (goal 2x)")
    for label, seconds in res["cold_start_s"].items():
        print(f"cold start (process start -> first token), {label}: {seconds:.1f} s")


if __name__ == "__main__":
    from ftassist.process import sigterm_interrupts

    with sigterm_interrupts():  # a killed bench stops the servers it started
        main()
