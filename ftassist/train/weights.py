"""What a run trained and where it lies: a LoRA adapter in RUN/adapter/, or, for `--method full`, the whole
fine-tuned model in RUN/model/ (config.json and model.safetensors, in float32). Either folder also holds the
tokenizer and the chat template the prompts were rendered with, so merge, verify, serve and export read both alike.

>>> weights_folder_name("full"), weights_folder_name("lora"), weights_folder_name("qlora")
('model', 'adapter', 'adapter')
"""

from __future__ import annotations

from pathlib import Path

ADAPTER_DIR, FULL_DIR = "adapter", "model"
# The files that make a folder one or the other (a full model over ~5 GB is sharded behind an index).
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
FULL_FILE_SETS = (("model.safetensors", "config.json"), ("model.safetensors.index.json", "config.json"))


def weights_folder_name(method: str) -> str:
    """The run subfolder a run trained with `method` leaves its weights in."""
    return FULL_DIR if method == "full" else ADAPTER_DIR


def holds_adapter(folder: Path) -> bool:
    """True when `folder` holds a peft adapter's weights and config."""
    return all((folder / f).is_file() for f in ADAPTER_FILES)


def holds_full_model(folder: Path) -> bool:
    """True when `folder` holds a whole model's config and weights (one file or an index of shards)."""
    return any(all((folder / f).is_file() for f in files) for files in FULL_FILE_SETS)


def trained_weights(run: Path) -> Path | None:
    """RUN/adapter or RUN/model, whichever holds finished weights (the adapter when both somehow do), else None."""
    if holds_adapter(run / ADAPTER_DIR):
        return run / ADAPTER_DIR
    if holds_full_model(run / FULL_DIR):
        return run / FULL_DIR
    return None
