"""Fold a run's LoRA adapter into a full-precision copy of its base model: a folder vLLM serves as is (a full
fine-tuning run's model is saved again in the asked precision, with the same card and checks).

    ftassist merge runs/first --out runs/first/merged

The base is always loaded in full precision (cfg.dtype, never 4-bit, even after QLoRA), from
safetensors and without remote code; the result holds safetensors weights, the *training*
tokenizer and chat template, the generation config and a model card. It is written atomically.
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
    dtype = getattr(torch, cfg.dtype)
    model = run.load_model(dtype)  # a full run's model is saved again in cfg.dtype, with the same card and checks
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
        write_text_atomic(tmp / "README.md", model_card(run, base, cfg.dtype))
        unsafe = [p.name for p in tmp.iterdir() if p.suffix in UNSAFE_SUFFIXES]
        if unsafe:  # a pickle in a served folder is code execution; never ship one
            raise UserError(f"merge produced non-safetensors files {unsafe}; nothing was written")
    return out
