"""Training as several processes: `accelerate launch` runs the same config once per rank.

The run folder's config.yaml is the single source of truth: every rank runs
`python -m ftassist.train.worker RUN_DIR`, only rank 0 writes status, metrics and the adapter.
`ftassist train --num-processes N` (and a background job with it) runs `launch_argv(cfg)`;
`--print-plan` prints the same command for a terminal.

    >>> from ftassist.config import TrainConfig
    >>> " ".join(launch_command(TrainConfig(data="d", out="runs/a"), num_processes=4, strategy="deepspeed")[:9])
    'accelerate launch --num_processes 4 --num_machines 1 --use_deepspeed --zero_stage 2'

Strategies: `ddp` (a full copy per GPU: fastest when the model fits; on a machine without CUDA the
ranks are CPU processes over gloo), `fsdp` (FSDP full shard, transformer-layer wrapping, the way
peft documents LoRA + FSDP), `deepspeed` (ZeRO stage 2: shards optimizer state and gradients; needs
the `deepspeed` package). FSDP and DeepSpeed need GPUs: accelerate's FSDP plugin refuses to start
without an accelerator ("There are currently no available devices found, must be one of 'XPU',
'CUDA', 'MLU', 'NPU', 'MUSA', or 'HPU'", accelerate 1.15), so `check_strategy` says so before launching.

Across processes the time budget does not stop training and the learning rate follows the steps
only: each rank would read its own clock, and ranks whose rates differ train different weights.
"""

from __future__ import annotations

from pathlib import Path

from ftassist.config import TrainConfig
from ftassist.device import PROFILES, Device, mixed_precision, train_dtype

STRATEGIES = ("ddp", "fsdp", "deepspeed")


def strategy_flags(strategy: str, *, checkpointing: bool = False) -> list[str]:
    """accelerate flags for one strategy; ValueError for an unknown one."""
    if strategy == "ddp":
        return []
    if strategy == "fsdp":
        return ["--use_fsdp", "--fsdp_version", "1", "--fsdp_sharding_strategy", "FULL_SHARD",
                "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP", "--fsdp_use_orig_params", "true",
                "--fsdp_state_dict_type", "SHARDED_STATE_DICT", "--fsdp_cpu_ram_efficient_loading", "true",
                "--fsdp_sync_module_states", "true",
                "--fsdp_activation_checkpointing", "true" if checkpointing else "false"]
    if strategy == "deepspeed":
        return ["--use_deepspeed", "--zero_stage", "2"]
    raise ValueError(f"strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")


def launch_command(cfg: TrainConfig, *, num_processes: int, strategy: str = "fsdp", cpu: bool = False,
                   port: int | None = None, resume: bool = False, device: Device | None = None) -> list[str]:
    """The argv of `accelerate launch ... -m ftassist.train.worker RUN_DIR` for `cfg`.

    `device` (default: an A100-like GPU unless `cpu`) decides the mixed precision of `--dtype auto`: bf16 where the
    GPU has it, fp16 on a T4 or V100, the same precision every rank's plan trains in.
    Write the config first (`save_config(cfg, RUN_DIR/config.yaml)`); `write_launch_config` does it.
    """
    argv = ["accelerate", "launch", "--num_processes", str(num_processes), "--num_machines", "1"]
    argv += strategy_flags(strategy, checkpointing=cfg.gradient_checkpointing == "on")
    if num_processes > 1 and strategy == "ddp":
        # torch-elastic launcher; on a machine without CUDA the ranks train on CPU over gloo
        # (accelerate's `--cpu` flag would start a single process).
        argv += ["--multi_gpu"]
    elif cpu:
        argv += ["--cpu"]
    if not cpu:
        gpu = device if device is not None and device.cuda else PROFILES["A100"]
        dtype = train_dtype(gpu) if cfg.dtype == "auto" else cfg.dtype
        argv += ["--mixed_precision", mixed_precision(dtype)]
    if port:
        argv += ["--main_process_port", str(port)]
    return argv + ["-m", "ftassist.train.worker", str(Path(cfg.out))] + (["--resume"] if resume else [])


def check_strategy(strategy: str, *, cuda: bool | None = None) -> None:
    """Raise UserError when `strategy` cannot run on this machine, naming why and what runs instead."""
    from ftassist.errors import UserError

    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if strategy in ("fsdp", "deepspeed") and not cuda:
        raise UserError(f"--strategy {strategy} needs GPUs: accelerate refuses to start "
                        f"{'FSDP' if strategy == 'fsdp' else 'DeepSpeed'} without an accelerator; "
                        "on this machine use --strategy ddp (CPU processes over gloo)")
    if strategy == "deepspeed":
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise UserError("--strategy deepspeed needs the deepspeed package: pip install deepspeed "
                            "(or use --strategy ddp or fsdp)")


def launch_argv(cfg: TrainConfig, *, resume: bool = False) -> list[str]:
    """What runs `cfg` as `cfg.num_processes` ranks here: accelerate's launcher from this Python, a free port.

    Raises UserError when the strategy cannot run on this machine (`check_strategy`)."""
    import sys

    import torch

    from ftassist.process import free_port

    from ftassist.device import detect_device

    cuda = torch.cuda.is_available()
    check_strategy(cfg.strategy, cuda=cuda)
    argv = launch_command(cfg, num_processes=cfg.num_processes, strategy=cfg.strategy, cpu=not cuda,
                          port=free_port(), resume=resume, device=detect_device() if cuda else None)
    return [sys.executable, "-m", "accelerate.commands.launch", *argv[2:]]


def write_launch_config(cfg: TrainConfig) -> Path:
    """Save cfg to RUN_DIR/config.yaml (what every rank reads) and return its path."""
    from ftassist.config import save_config

    cfg.validate()
    path = Path(cfg.out) / "config.yaml"
    save_config(cfg, path)
    return path


def release_process_group() -> None:
    """Destroy this rank's process group, if `accelerate launch` made one; a no-op in a single process.

    A gloo rank that exits with its group alive can abort at interpreter shutdown ("terminate called
    without an active exception", SIGABRT): its worker threads still hold work that needs the GIL. The
    launcher then reports the run failed although every rank had finished and the adapter was written."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
