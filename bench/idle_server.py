"""What an idle server costs the CPU: vLLM's CPU server and llama.cpp's, each after one request.

    python bench/idle_server.py [--seconds 30]

Each server (SmolLM2-135M-Instruct; vLLM in float32 as `ftassist serve` starts it, llama.cpp on the
f16 GGUF of the same model) answers one chat completion, then is left alone; the CPU time of its
whole process group over the next `--seconds` is read from /proc (psutil) and printed as a share of
one core. On 2 cores a server that spins while idle halves any training beside it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402
from openai import OpenAI  # noqa: E402


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in the process group."""
    total = 0.0
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid:
                times = proc.cpu_times()
                total += times.user + times.system
        except (psutil.Error, ProcessLookupError):
            continue
    return total


def idle_share(server, seconds: float) -> float:
    client = OpenAI(base_url=server.base_url, api_key=server.api_key or "EMPTY")
    client.chat.completions.create(model=server.base_name, messages=[{"role": "user", "content": "Hi"}], max_tokens=8)
    time.sleep(3)  # past vLLM's 1 s busy-loop window after a request
    before = group_cpu_seconds(server.pid)
    time.sleep(seconds)
    return (group_cpu_seconds(server.pid) - before) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    from ftassist.config import ServeConfig
    from ftassist.model import resolve_model
    from serving.gguf import convert
    from serving.launch import start_server
    from serving.llamacpp import start_llama_server
    from ftassist.process import free_port

    model = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    rows = []
    with start_server(ServeConfig(model=model, port=free_port(), api_key="k", enforce_eager=True)) as server:
        rows.append(("vLLM (CPU build), float32", idle_share(server, args.seconds)))
    with tempfile.TemporaryDirectory() as tmp:
        gguf = convert(Path(model), Path(tmp) / "model-f16.gguf", "f16")
        with start_llama_server(gguf, name="base", log_path=Path(tmp) / "server.log") as server:
            rows.append(("llama.cpp server (llama-cpp-python), f16", idle_share(server, args.seconds)))
    print(f"| server | CPU while idle ({args.seconds:.0f} s after one request), share of one core |\n|---|---|")
    for name, share in rows:
        print(f"| {name} | {share:.1%} |")
    return 0


if __name__ == "__main__":
    from ftassist.process import sigterm_interrupts

    with sigterm_interrupts():  # a killed bench stops the servers it started
        sys.exit(main())
