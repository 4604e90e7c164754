"""The model card (README.md) written beside a merged model: base, data, method, evaluation figures."""

from __future__ import annotations

from pathlib import Path

from serving.run import RunInfo


def count_lines(path: Path) -> int | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return None


def flat_figures(obj: object, prefix: str = "", depth: int = 3) -> list[tuple[str, float]]:
    """Numeric leaves of a nested report as (dotted.key, value), at most `depth` levels deep.

    >>> flat_figures({"a": {"b": 0.5, "c": "x"}, "n": 3})
    [('a.b', 0.5), ('n', 3)]
    """
    out: list[tuple[str, float]] = []
    if isinstance(obj, bool):
        return out
    if isinstance(obj, (int, float)):
        return [(prefix, obj)]
    if isinstance(obj, dict) and depth > 0:
        for key, value in obj.items():
            out += flat_figures(value, f"{prefix}.{key}" if prefix else str(key), depth - 1)
    return out


def model_card(run: RunInfo, base: str, dtype: str) -> str:
    """Markdown for README.md of the merged model."""
    t = run.train
    lines = [
        "---", "library_name: transformers", f"base_model: {t.get('model', base)}", "tags: [ftassist, lora, merged]", "---",
        "", f"# {run.run_dir.name} (merged)", "",
        f"Fine-tuned from `{t.get('model', base)}` (loaded from `{base}`) with ftassist; the adapter of "
        f"`{run.run_dir}` was merged into the {dtype} base weights (safetensors only).", "",
        "## Training", "",
        f"- method: {t.get('method', '?')}, LoRA r={t.get('lora_r', '?')}, alpha={t.get('lora_alpha', '?')}, "
        f"dropout={t.get('lora_dropout', '?')}, target_modules={t.get('target_modules', '?')}",
        f"- learning rate {t.get('learning_rate', '?')}, "
        + (f"max_steps {t['max_steps']}" if (t.get("max_steps") or -1) > 0 else f"epochs {t.get('epochs', '?')}")
        + f", max_length {t.get('max_length', '?')}, seed {t.get('seed', '?')}",
    ]
    if t.get("method") == "qlora":
        lines.append("- trained on a 4-bit (NF4) base; merged into the full-precision base, so replies can differ "
                     "slightly from the 4-bit training model (`ftassist verify` measures it)")
    data = run.data_dir
    if data:
        sizes = ", ".join(f"{name} {n} examples" for name in ("train", "test")
                          if (n := count_lines(data / f"{name}.jsonl")) is not None)
        lines += ["", "## Data", "", f"- folder `{t.get('data')}`" + (f": {sizes}" if sizes else "")]
    report = run.eval_report()
    if report:
        lines += ["", "## Evaluation", "", "| figure | value |", "|---|---|"]
        lines += [f"| {key} | {value:.4g} |" for key, value in flat_figures(report)[:40]]
    lines += ["", "## Use", "", "```bash", "ftassist serve --model THIS_FOLDER", "```", ""]
    return "\n".join(lines)
