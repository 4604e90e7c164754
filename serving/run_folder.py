"""What merge and verify read from a training run folder, checked once with messages that name the fix.

A run folder written by `ftassist train` holds:
    adapter/       the peft adapter, the tokenizer and the chat template used in training
                   (model/ instead, the whole model, for a `--method full` run: `ftassist.train.weights`)
    config.yaml    the TrainConfig (`model` is the base, `data` the data folder)
    run.json       the run record (`ftassist.train.record`): the base model resolved, mergeable or why not
    eval/report.json   optional evaluation figures
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ftassist.errors import ConfigError, UserError
from ftassist.evaluation.report import EvalReport, read_report
from ftassist.train.record import RunRecord, read_run_record
from ftassist.train.weights import FULL_DIR, trained_weights


@dataclass
class RunInfo:
    """The parts of a run folder that merge and verify use."""

    run_dir: Path
    weights_dir: Path  # adapter/ (a LoRA run) or model/ (full fine-tuning); the training tokenizer either way
    train: dict  # config.yaml as written by training
    record: RunRecord | None = None  # run.json (None when absent)

    @property
    def full(self) -> bool:
        """True for a full fine-tuning run: weights_dir is the whole model, there is no adapter to merge or serve."""
        return self.weights_dir.name == FULL_DIR

    def load_model(self, dtype, *, merged: bool = True, device_map: str | None = None):
        """The trained model in `dtype` (a torch dtype), eval mode: the full run's model, or the base with the adapter
        (folded in when `merged`, else a PeftModel). `device_map` ("auto" on a GPU, see `ftassist.device`) places it.

        A QLoRA run's adapter learned on the NF4-quantized base, not the original weights: the base is loaded 4-bit
        with the run's own settings and dequantized, so the adapter is merged into (and checked against) the base it
        was trained and selected on. UserError when the base cannot be loaded from safetensors."""
        from transformers import AutoModelForCausalLM

        from ftassist.model import resolve_model

        source = self.weights_dir if self.full else resolve_model(self.base_ref)
        kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True, "trust_remote_code": False}
        if device_map:
            kwargs["device_map"] = device_map
        quantized = self.quantization
        if quantized:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type=quantized.get("quant_type", "nf4"),
                bnb_4bit_use_double_quant=bool(quantized.get("double_quant", True)), bnb_4bit_compute_dtype=dtype)
            kwargs.setdefault("device_map", {"": "cpu"})
        model: Any
        try:
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except OSError as exc:
            raise UserError(f"model {source} cannot be loaded from safetensors ({exc}); convert it to safetensors first") from exc
        if quantized:
            model = model.dequantize(dtype=dtype)  # the NF4 values training saw, as plain linear layers
        if not self.full:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, self.weights_dir, is_trainable=False)
            if merged:
                model = model.merge_and_unload()
        return model.eval()

    @property
    def quantization(self) -> dict | None:
        """run.json's 4-bit settings when the run trained QLoRA (None otherwise)."""
        q = self.record.quantization if self.record is not None else None
        return q if isinstance(q, dict) and q.get("bits") == 4 else None

    @property
    def base_ref(self) -> str:
        """The base model: run.json's resolved path when it still exists, else config.yaml's `model`."""
        resolved = self.record.base_model if self.record else None
        if resolved and Path(resolved).is_dir():
            return str(resolved)
        return str(self.train.get("model") or "")

    @property
    def data_dir(self) -> Path | None:
        data = self.train.get("data")
        if not data:
            return None
        path = Path(data)
        return path if path.is_absolute() or path.exists() else (self.run_dir / path)

    @property
    def test_path(self) -> Path | None:
        """The data folder's test.jsonl when it exists."""
        data = self.data_dir
        return data / "test.jsonl" if data and (data / "test.jsonl").exists() else None

    def eval_report(self) -> EvalReport | None:
        """The eval's report when the run was evaluated into RUN_DIR/eval (`ftassist eval --out RUN_DIR/eval`)."""
        return read_report(self.run_dir / "eval")


def read_run(run_dir: str | Path, *, for_merge: bool = True) -> RunInfo:
    """Read and check a run folder; returns RunInfo.

    Raises `ConfigError` listing everything missing, and `UserError` for a run marked not
    mergeable (training failed) when `for_merge`.
    """
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder; pass the folder written by `ftassist train` (it holds adapter/ and config.yaml)")
    problems = []
    weights = trained_weights(run_dir)
    if weights is None:
        problems.append(f"{run_dir}: adapter/adapter_config.json is missing (a full fine-tuning run has model/config.json "
                        "instead); the run has not finished (check `ftassist jobs status`) or the folder is not a training run")
    train: dict = {}
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.exists():
        problems.append(f"{run_dir}: config.yaml is missing; it records the base model, so the run cannot be merged or verified")
    else:
        try:
            train = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            problems.append(f"{cfg_path}: not valid YAML ({exc})")
    record = None
    try:
        record = read_run_record(run_dir)
    except UserError as exc:
        problems.append(str(exc))
    if problems:
        raise ConfigError(problems)
    if for_merge and record is not None and not record.mergeable:
        reason = record.failure or "training did not finish cleanly"
        raise UserError(f"{run_dir}: the run is marked not mergeable ({reason}); fix the cause and train again, "
                        "or resume it with `ftassist jobs resume`")
    assert weights is not None  # a missing one is a problem above
    info = RunInfo(run_dir=run_dir, weights_dir=weights, train=train, record=record)
    if not info.base_ref:
        raise UserError(f"{cfg_path}: no `model` field; the base model of this run is unknown")
    return info
