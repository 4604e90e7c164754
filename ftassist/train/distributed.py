"""The `accelerate launch` command that runs the same training on several GPUs (or CPU processes).

The run folder's config.yaml is the single source of truth: every rank runs
`python -m ftassist.train.worker RUN_DIR`, only rank 0 writes status, metrics and the adapter.

    >>> from ftassist.config import TrainConfig
    >>> " ".join(launch_command(TrainConfig(data="d", out="runs/a"), num_processes=4, strategy="deepspeed")[:9])
    'accelerate launch --num_processes 4 --num_machines 1 --use_deepspeed --zero_stage 2'

Strategies: `ddp` (a full copy per GPU: fastest when the model fits), `fsdp` (FSDP full shard,
transformer-layer wrapping, the way peft documents LoRA + FSDP), `deepspeed` (ZeRO stage 2:
shards optimizer state and gradients; needs the `deepspeed` package). `cpu=True` (with `ddp`)
runs the ranks as CPU processes over gloo - how the tests check the command without GPUs.
"""

from __future__ import annotations

from pathlib import Path

from ftassist.config import TrainConfig

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
                   port: int | None = None) -> list[str]:
    """The argv of `accelerate launch ... -m ftassist.train.worker RUN_DIR` for `cfg`.

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
    if not cpu and cfg.dtype in ("auto", "bfloat16"):
        argv += ["--mixed_precision", "bf16"]
    if port:
        argv += ["--main_process_port", str(port)]
    return argv + ["-m", "ftassist.train.worker", str(Path(cfg.out))]


def write_launch_config(cfg: TrainConfig) -> Path:
    """Save cfg to RUN_DIR/config.yaml (what every rank reads) and return its path."""
    from ftassist.config import save_config

    cfg.validate()
    path = Path(cfg.out) / "config.yaml"
    save_config(cfg, path)
    return path
