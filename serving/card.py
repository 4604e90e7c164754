"""The model card (README.md) written beside a merged model, through huggingface_hub's ModelCard:
base, data (and its version), method, and the eval's figures as Hub model-index results."""

from __future__ import annotations

from pathlib import Path

from ftassist.data.fingerprint import read_fingerprint
from ftassist.evaluation.report import EvalReport, pct
from ftassist.markdown import table
from serving.run_folder import RunInfo


def count_lines(path: Path) -> int | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return None


def card_arm(report: EvalReport) -> dict | None:
    """The arm of an eval report that is this model: `tuned`, else `merged`, else the last unconstrained one."""
    arms = [a for a in report.get("arms", []) if not a.get("constrained")]
    by_name = {a["name"]: a for a in arms}
    return by_name.get("tuned") or by_name.get("merged") or (arms[-1] if arms else None)


def headline(arm: dict, task: str) -> list[tuple[str, dict]]:
    """(metric, {"value", "low", "high"}) of an arm summary, in the eval's headline order."""
    from ftassist.evaluation.summary import HEADLINE

    return [(m, arm[g][m]) for g, m in HEADLINE[task] if m in arm.get(g, {})]


def eval_results(report: EvalReport, model_name: str) -> list:
    """The eval of the model as huggingface_hub EvalResults (the Hub's model-index)."""
    from huggingface_hub import EvalResult

    arm = card_arm(report)
    if arm is None:
        return []
    data = report.get("data", {})
    name = Path(str(data.get("path", "test.jsonl"))).name
    return [EvalResult(task_type="text-generation", dataset_type="json", dataset_name=name, dataset_split="test",
                       metric_type=m, metric_name=LABEL.get(m, m), metric_value=round(float(v["value"]), 4))
            for m, v in headline(arm, data.get("task", "json"))]


LABEL = {"field_accuracy": "field accuracy", "exact": "whole object right", "schema_valid": "schema-valid",
         "strict": "strict JSON", "extractable": "JSON extractable", "exact_match": "exact match", "rougeL": "ROUGE-L"}


def _hub_id(name: str | None) -> str | None:
    """`name` when it reads as a Hub repo id (owner/name), None for a local path."""
    if not name or name.startswith((".", "/", "~")) or Path(name).exists() or name.count("/") != 1:
        return None
    return name


def model_card(run: RunInfo, base: str, dtype: str) -> str:
    """README.md of the merged model, written with huggingface_hub: metadata (base model, library, tags,
    the data set version, the eval as model-index results) and prose (training, data, evaluation, use)."""
    from huggingface_hub import ModelCard, ModelCardData

    t = run.train
    report = run.eval_report()
    results = eval_results(report, run.run_dir.name) if report else []
    meta = ModelCardData(library_name="transformers", base_model=_hub_id(t.get("model")),
                         tags=["ftassist", "full-fine-tuning"] if run.full else ["ftassist", "lora", "merged"],
                         model_name=run.run_dir.name if results else None, eval_results=results or None)
    how = (f"every weight of `{run.run_dir}` was fine-tuned (no adapter) and is saved here in {dtype} (safetensors only)."
           if run.full else f"the adapter of `{run.run_dir}` was merged into the {dtype} base weights (safetensors only).")
    lines = [
        f"# {run.run_dir.name} ({'fine-tuned' if run.full else 'merged'})", "",
        f"Fine-tuned from `{t.get('model', base)}` (loaded from `{base}`) with ftassist; {how}", "",
        "## Training", "",
        "- method: full fine-tuning (every weight)" if run.full else
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
        version = (read_fingerprint(data) or {}).get("id")
        lines += ["", "## Data", "", f"- folder `{t.get('data')}`" + (f": {sizes}" if sizes else "")
                  + (f" (data set version `{version}`)" if version else "")]
    if report:
        task = report.get("data", {}).get("task", "json")
        arms = report.get("arms", [])
        metrics = [m for m, _ in headline(arms[0], task)] if arms else []
        lines += ["", "## Evaluation", "", f"On `{report.get('data', {}).get('path', 'the test split')}` "
                  f"({report.get('data', {}).get('examples', '?')} examples), 95% intervals:", "",
                  *table(["arm", *[LABEL.get(m, m) for m in metrics]],
                         [[a["name"], *[pct(v) for _, v in headline(a, task)]] for a in arms])]
    lines += ["", "## Use", "", "```bash", "ftassist serve --model THIS_FOLDER", "```", ""]
    return str(ModelCard(f"---\n{meta.to_yaml()}\n---\n\n" + "\n".join(lines)))
