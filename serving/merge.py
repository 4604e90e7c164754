"""Fold a run's LoRA adapter into a full-precision copy of its base model: a folder vLLM serves as is (a full
fine-tuning run's model is saved again in the asked precision, with the same card and checks).

    ftassist merge runs/first --out runs/first/merged

Where and in which precision is `ftassist.device.merge_placement`'s decision (`--dtype auto`): on a CPU float32, the
precision the parity gate passes in; on a GPU the precision the run trained in (float16 on GPUs without bfloat16),
placed with `device_map="auto"`, so layers that do not fit the card go through the CPU instead of failing. A QLoRA
run's adapter is merged into the dequantized NF4 base it trained on (`RunInfo.load_model`), never into the original
weights it never saw. Loaded from safetensors, without remote code; the result holds safetensors weights, the
*training* tokenizer and chat template, the generation config and a model card. It is written atomically.
"""

from __future__ import annotations

from pathlib import Path

from ftassist.config import MergeConfig
from ftassist.errors import UserError
from ftassist.files import atomic_dir, write_text_atomic
from serving.card import model_card
from serving.run_folder import read_run

UNSAFE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def merge_adapter(cfg: MergeConfig) -> Path:
    """Merge RUN_DIR's adapter into its base and save to cfg.out; returns the output folder.

    Raises `ConfigError`/`UserError` for a missing or incomplete run folder, a run marked not
    mergeable, or a base model that cannot be found.
    """
    import torch
    from transformers import AutoTokenizer

    from ftassist.model import resolve_model

    cfg.validate()
    run = read_run(cfg.run_dir, for_merge=True)
    out = Path(cfg.out).expanduser()
    if out.resolve() in (run.run_dir.resolve(), run.weights_dir.resolve()):
        raise UserError(f"--out {out} would overwrite the run itself: name a new folder, e.g. {run.run_dir}/merged")
    base = str(run.weights_dir) if run.full else resolve_model(run.base_ref)
    placement = merge_place(run, base, cfg.dtype)
    dtype = getattr(torch, placement.dtype)
    # A full run's model is saved again in that precision, with the same card and checks.
    model = run.load_model(dtype, device_map=placement.device_map if placement.device_map != "cpu" else None)
    # The training tokenizer carries the chat template the adapter learned; the base's may differ.
    tokenizer = AutoTokenizer.from_pretrained(run.weights_dir)
    gen = model.generation_config
    if tokenizer.eos_token_id is not None and gen.eos_token_id is None:
        gen.eos_token_id = tokenizer.eos_token_id
    if gen.pad_token_id is None and tokenizer.pad_token_id is not None:
        gen.pad_token_id = tokenizer.pad_token_id
    model.config.dtype = dtype
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_text_atomic(tmp / "README.md", model_card(run, base, placement.dtype))
        unsafe = [p.name for p in tmp.iterdir() if p.suffix in UNSAFE_SUFFIXES]
        if unsafe:  # a pickle in a served folder is code execution; never ship one
            raise UserError(f"merge produced non-safetensors files {unsafe}; nothing was written")
    return out


def merge_place(run, base: str, asked: str = "auto"):
    """`ftassist.device.merge_placement` for this run on this machine: its training precision, its base's size."""
    from transformers import AutoConfig

    from ftassist.device import detect_device, merge_placement
    from ftassist.train.planner import ModelShape

    trained = run.record.dtype if run.record is not None else "float32"
    device = detect_device()
    size = 0
    if device.cuda:  # the size only matters where the card's memory is the limit
        shape = ModelShape.from_config(AutoConfig.from_pretrained(base))
        size = shape.params * (4 if trained == "float32" else 2)
    return merge_placement(device, trained, size, asked=asked)
