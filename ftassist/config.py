"""Typed configs, one per stage, shared by the CLI, YAML files, the Gradio app and Python callers.

Every field carries help text in its metadata; `ftassist_cli` builds its flags from these
fields, `load_config` builds the same objects from a YAML file, and `validate()` collects every
cross-field problem at once and raises them together as one `ConfigError`.

    >>> cfg = TrainConfig(data="data/", out="runs/a", lora_r=8)
    >>> cfg.lora_alpha
    16
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ftassist.errors import ConfigError

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with help text (and a default factory for lists and dicts)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})  # type: ignore[misc]
    return field(default=default, metadata={"help": help, **kw})


class Checked:
    """Mixin: at construction, coerce YAML's strings where safe and check every field's type and choices.

    Every problem is reported at once (`ConfigError`), naming the field and what it accepts, so a
    YAML file, the app, the CLI and Python callers get the same checks:

    >>> TrainConfig(data="d", out="o", learning_rate="2e-4").learning_rate   # YAML reads 2e-4 as a string
    0.0002
    >>> TrainConfig(data="d", out="o", method="qlor", lora_r="eight")
    Traceback (most recent call last):
    ...
    ftassist.errors.ConfigError: method 'qlor' is not one of auto, lora, qlora, full; lora_r 'eight' is not an integer (e.g. 16)
    """

    def __post_init__(self) -> None:
        problems = []
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            ok, coerced, why = _coerce(value, hints[f.name])
            if not ok:
                problems.append(f"{f.name} {value!r} is not {why}")
                continue
            choices = f.metadata.get("choices")
            if choices and coerced not in choices:
                problems.append(f"{f.name} {coerced!r} is not one of {', '.join(choices)}")
                continue
            setattr(self, f.name, coerced)
        _raise(problems)


_EXAMPLES = {int: "an integer (e.g. 16)", float: "a number (e.g. 3 or 2e-4)", bool: "true or false", str: "a string"}


def _coerce(value: Any, tp: Any) -> tuple[bool, Any, str]:
    """(ok, value coerced to `tp`, what `tp` accepts): ints and floats from numeric strings, bools from true/false."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return True, None, ""
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0]) if len(inner) == 1 else (True, value, "")
    origin = typing.get_origin(tp) or tp
    if origin is list:
        return (True, list(value), "") if isinstance(value, (list, tuple)) else (False, value, "a list")
    if origin is dict:
        return (True, dict(value), "") if isinstance(value, dict) else (False, value, "a mapping of NAME: VALUE")
    if origin is bool:
        if isinstance(value, bool):
            return True, value, ""
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "on", "off"):
            return True, value.strip().lower() in ("true", "yes", "on"), ""
        return False, value, _EXAMPLES[bool]
    if origin in (int, float):
        if isinstance(value, bool):
            return False, value, _EXAMPLES[origin]
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                return False, value, _EXAMPLES[origin]
        if isinstance(value, (int, float)):
            if origin is int:
                return (True, int(value), "") if float(value).is_integer() else (False, value, _EXAMPLES[int])
            return True, float(value), ""
        return False, value, _EXAMPLES[origin]
    if origin is str:
        return (True, value, "") if isinstance(value, str) else (False, value, _EXAMPLES[str])
    return True, value, ""


@dataclass
class DataConfig(Checked):
    """How `ftassist data build` turns the user's files into train/test chat sets."""

    inputs: list[str] = _f([], "Input files (CSV/TSV, JSON, JSONL, Parquet, XLSX, TXT/MD, PDF, DOCX).", positional=True)
    out: str = _f("", "Output folder: train.jsonl, test.jsonl, report.json, report.md.")
    schema: str | None = _f(None, "JSON Schema file the assistant replies must match (inferred from the data when omitted).")
    test_size: float = _f(0.1, "Fraction of examples held out for the test split (0 < F < 1), or a count when >= 1.")
    test_inputs: list[str] = _f([], "Files that form the test split as they are (no random split).")
    seed: int = _f(42, "Seed for the split.")
    system_prompt: str | None = _f(None, "System prompt added to every example that has none.")
    column_map: dict[str, str] = _f({}, "Column mapping, e.g. instruction=col_a output=col_b (flag: --map KEY=COL).", flag="map")
    model: str | None = _f(None, "Model whose tokenizer and chat template measure token lengths (default: the default model).")
    max_length: int = _f(1024, "Token budget of one training example; longer ones are reported.")
    max_rows: int = _f(0, "Refuse inputs with more rows than this, before any work (0: no cap; the app sets one).")
    drop_duplicates: bool = _f(False, "Drop exact duplicate examples (keep the first).")
    drop_overlength: bool = _f(False, "Drop examples longer than --max-length tokens.")
    drop_invalid: bool = _f(False, "Drop examples with errors instead of failing.")
    mask_pii: bool = _f(False, "Replace personal data (emails, phones, cards, IBANs, ids) with placeholders.")
    teacher_url: str | None = _f(None, "OpenAI-compatible endpoint of a teacher model that writes question/answer pairs from "
                                       "document passages, e.g. http://127.0.0.1:8000/v1 (default: templates, no model).")
    teacher_model: str | None = _f(None, "Model name the teacher endpoint serves (required with --teacher-url).")
    teacher_api_key: str | None = _f(None, "API key for the teacher endpoint (default: $OPENAI_API_KEY or 'EMPTY').")
    pairs_per_passage: int = _f(2, "Question/answer pairs the teacher writes per passage (templates make one).")
    teacher_concurrency: int = _f(4, "Teacher requests in flight at once.")
    teacher_timeout: float = _f(120.0, "Seconds allowed for one teacher request.")
    teacher_max_tokens: int = _f(1024, "Longest teacher reply in tokens; under json_schema it also caps the characters of each "
                                       "pair (question + answer) at this number divided by --pairs-per-passage.")
    teacher_response_format: str = _f("auto", "json_schema (structured outputs), none (JSON asked for in the prompt), or auto "
                                              "(json_schema, falling back to none when the endpoint rejects it).",
                                      choices=["auto", "json_schema", "none"])

    def validate(self) -> None:
        problems = []
        if self.teacher_url:
            if not self.teacher_url.startswith(("http://", "https://")):
                problems.append(f"--teacher-url {self.teacher_url} must start with http:// or https://, e.g. http://127.0.0.1:8000/v1")
            if not self.teacher_model:
                problems.append("--teacher-url needs --teacher-model: name the model the endpoint serves")
        else:
            given = [flag for flag, on in (("--teacher-model", self.teacher_model), ("--teacher-api-key", self.teacher_api_key),
                                           ("--pairs-per-passage", self.pairs_per_passage != 2)) if on]
            if given:
                problems.append(f"{', '.join(given)} only apply with --teacher-url: add the teacher endpoint or drop them "
                                "(templates make one pair per passage)")
        if self.max_rows < 0:
            problems.append(f"--max-rows {self.max_rows} must be 0 (no cap) or a positive number of rows")
        if not 1 <= self.pairs_per_passage <= 20:
            problems.append(f"--pairs-per-passage {self.pairs_per_passage} is out of range: use 1 to 20")
        if self.teacher_concurrency < 1 or self.teacher_timeout <= 0 or self.teacher_max_tokens < 16:
            problems.append("--teacher-concurrency must be >= 1, --teacher-timeout > 0 and --teacher-max-tokens >= 16")
        if not self.inputs:
            problems.append("no input files: pass one or more files, e.g. `ftassist data build data.csv --out data/`")
        if not self.out:
            problems.append("--out is missing: name the output folder, e.g. --out data/")
        if not (0 < self.test_size < 1 or (self.test_size >= 1 and float(self.test_size).is_integer())):
            problems.append(f"--test-size {self.test_size} is invalid: use a fraction between 0 and 1 or a whole count")
        if self.max_length < 16:
            problems.append(f"--max-length {self.max_length} is too small: use at least 16 tokens")
        _raise(problems)


def _trained_full(run: Path) -> bool:
    """True when `run`'s trained weights are a whole model (a `--method full` run), not an adapter."""
    from ftassist.train.weights import FULL_DIR, trained_weights

    found = trained_weights(run)
    return found is not None and found.name == FULL_DIR


@dataclass
class TrainConfig(Checked):
    """How `ftassist train` fine-tunes a model with LoRA or QLoRA on a built data folder."""

    data: str = _f("", "Data folder from `ftassist data build` (train.jsonl, optional test.jsonl).")
    out: str = _f("", "Run folder: adapter, tokenizer, config.yaml, metrics.jsonl, status.json.")
    model: str = _f(DEFAULT_MODEL, "Base model: a local folder, a hub id, or the default SmolLM2-135M-Instruct.")
    method: str = _f("auto", "lora, qlora (bitsandbytes NF4), full (every weight trained; the run leaves model/ instead of "
                     "adapter/, for small models), or auto (qlora on CUDA, lora otherwise).",
                     choices=["auto", "lora", "qlora", "full"])
    lora_r: int = _f(16, "LoRA rank.")
    lora_alpha: int | None = _f(None, "LoRA alpha (default: 2 x lora_r).")
    lora_dropout: float = _f(0.05, "LoRA dropout.")
    target_modules: str = _f("all-linear", "Modules that get LoRA adapters: all-linear or a comma list (q_proj,v_proj).")
    learning_rate: float = _f(0.0, "Peak learning rate (0: the planner's: 1e-3 for models up to 1B parameters, where "
                                   "2e-4 learned the values far slower on a CPU budget; 2e-4 above).")
    epochs: float = _f(0.0, "Upper budget of training epochs (0: the planner's, from the data size; ignored when --max-steps "
                            "> 0). With the task metric on, the validation split decides when to stop within it.")
    max_steps: int = _f(-1, "Stop after this many optimizer steps (-1: use --epochs).")
    batch_size: int = _f(0, "Micro-batch size per device (0: chosen by the planner).")
    grad_accum: int = _f(0, "Gradient accumulation steps (0: chosen by the planner).")
    max_length: int = _f(1024, "Longest tokenized example; longer ones are truncated.")
    warmup_ratio: float = _f(0.05, "Fraction of steps used for learning-rate warm-up.")
    task_metric: bool = _f(True, "Score the validation split with the eval's task metric during training, keep the best "
                                 "checkpoint by it and stop on a plateau (off: keep the last step, as plain SFT does).")
    val_size: float = _f(0.0, "Validation rows held out of train.jsonl: a fraction (0-1), a count, or 0 for auto (10%, "
                              "8-32 rows; none when under 32 rows would remain). Ignored with --val-data or DATA/val.jsonl.")
    reward_size: float = _f(0.0, "With --stage sft: rows of train.jsonl held out of SFT for a later --stage dpo/grpo (a fraction "
                                 "0-1 or a count; 0: none), written to RUN/reward_rows.jsonl. The stage then trains on these "
                                 "prompts, which the adapter has not memorised, so its mistakes show there.")
    val_data: str | None = _f(None, "Your own validation file (JSONL, messages format); default DATA/val.jsonl when present.")
    eval_steps: int = _f(0, "Score the validation split every N optimizer steps (0: about twice an epoch, skipping a "
                            "score while scoring has taken over a fifth of the time).")
    early_stopping_patience: int = _f(3, "Stop after this many validation scores in a row that do not beat the best (0: never).")
    time_budget: float = _f(30.0, "Wall-clock budget for training and its evaluations in minutes (0: none); the learning "
                                  "rate decays to zero by then and the best step so far is kept.")
    gradient_checkpointing: str = _f("auto", "on, off or auto (planner decides).", choices=["auto", "on", "off"])
    group_by_length: bool = _f(True, "Batch examples of similar length together (less padding, faster).")
    share_prefix: bool = _f(True, "Run the prompt tokens every row of a batch starts with (the system prompt; in GRPO the "
                                  "whole prompt of a group) once per batch, not once per row (same loss, less compute; CPU).")
    logging_steps: int = _f(1, "Log metrics every N steps.")
    report_to: str = _f("trackio", "Experiment tracker for the loss, the task metric and the eval: trackio (local, opened with "
                                   "`trackio show`; files beside the run folder in trackio/), tensorboard, wandb, mlflow, or none.",
                        choices=["trackio", "tensorboard", "wandb", "mlflow", "none"])
    save_steps: int = _f(50, "Save a resumable checkpoint every N steps.")
    seed: int = _f(42, "Random seed.")
    device: str = _f("auto", "auto, cpu or cuda.", choices=["auto", "cpu", "cuda"])
    dtype: str = _f("auto", "auto, float32, bfloat16 or float16 for the trainable model (auto: bf16 on GPUs that have it and on CPUs "
                    "a matmul probe measures fast at it, with the LoRA weights in fp32; fp32 on other CPUs).",
                    choices=["auto", "float32", "bfloat16", "float16"])
    trust_remote_code: bool = _f(False, "Allow model code from the hub (off by default).")
    num_processes: int = _f(1, "Train as N processes under `accelerate launch` (one per GPU; on a machine without GPUs, "
                            "CPU processes over gloo, DDP only); 1 trains in this process.")
    strategy: str = _f("ddp", "With --num-processes above 1: ddp (a full copy per process), fsdp (sharded; GPUs only) "
                       "or deepspeed (ZeRO-2; GPUs and the deepspeed package).", choices=["ddp", "fsdp", "deepspeed"])
    save_total_limit: int = _f(2, "Keep only the newest N checkpoints (adapter + optimizer state).")
    stage: str = _f("sft", "sft (supervised, from the base model); dpo (preference pairs: the SFT adapter's own wrong replies on "
                    "the training rows against the references) or grpo (reinforcement, the eval's scorer as the reward), "
                    "both starting from --from RUN_DIR's adapter (its LoRA shape; --lora-* flags do not apply).",
                    choices=["sft", "dpo", "grpo"])
    from_run: str | None = _f(None, "With --stage dpo/grpo: the finished SFT run folder to start from (its adapter, base "
                                    "model and validation split).", flag="from")
    dpo_beta: float = _f(0.1, "With --stage dpo: how far the model may move from the SFT adapter (trl's default 0.1).")
    dpo_samples: int = _f(1, "With --stage dpo: replies sampled per training row (temperature 1) besides the greedy one, "
                             "to find more of the model's mistakes (0: greedy only).")
    grpo_generations: int = _f(4, "With --stage grpo: replies sampled per prompt, scored and compared within their group.")
    grpo_mistakes_only: bool = _f(True, "With --stage grpo: first answer every row greedily and train on the prompts the SFT "
                                        "adapter gets wrong (on a prompt it gets right every reply of the group scores alike, "
                                        "which teaches GRPO nothing); off: every row's prompt.")
    grpo_beta: float = _f(0.04, "With --stage grpo: weight of the KL penalty to the SFT adapter (0: none, and no "
                                "reference pass).")
    reward_weights: dict[str, str] = _f({}, "With --stage grpo: weights of the reward's parts json, schema, fields, exact, "
                                           "length, one flag each (--reward-weights fields=3 --reward-weights length=1; "
                                           "default json=1 schema=1 fields=2 exact=1 length=0.5).")
    debug_nan_at_step: int = _f(0, "Testing only: poison the adapter with NaN at this step to exercise the NaN guard.", hidden=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora_alpha is None:
            self.lora_alpha = 2 * self.lora_r

    def validate(self) -> None:
        problems = []
        if not self.data:
            problems.append("--data is missing: pass the folder written by `ftassist data build`")
        if not self.out:
            problems.append("--out is missing: name a run folder, e.g. --out runs/first")
        if self.lora_r <= 0:
            problems.append(f"--lora-r {self.lora_r} must be positive (8-64 is usual)")
        if self.learning_rate < 0 or self.learning_rate > 1e-2:
            problems.append(f"--learning-rate {self.learning_rate} is out of range: use something between 1e-5 and 1e-3 "
                            "(or 0 for the planner's)")
        if self.epochs < 0:
            problems.append(f"--epochs {self.epochs:g} must be >= 0 (0: the planner's budget from the data size)")
        if self.val_size < 0 or (self.val_size >= 1 and not float(self.val_size).is_integer()):
            problems.append(f"--val-size {self.val_size:g} is invalid: use a fraction between 0 and 1, a whole count, or 0 for auto")
        if self.reward_size < 0 or (self.reward_size >= 1 and not float(self.reward_size).is_integer()):
            problems.append(f"--reward-size {self.reward_size:g} is invalid: use a fraction between 0 and 1, a whole count, or 0 for none")
        if self.eval_steps < 0 or self.early_stopping_patience < 0 or self.time_budget < 0:
            problems.append("--eval-steps, --early-stopping-patience and --time-budget must be >= 0 (0: auto / off)")
        if self.val_data and not Path(self.val_data).is_file():
            problems.append(f"--val-data {self.val_data}: no such file; pass a JSONL in messages format")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"--warmup-ratio {self.warmup_ratio:g} must be a fraction in [0, 1) of the run (0.05 is usual)")
        if self.num_processes < 1:
            problems.append(f"--num-processes {self.num_processes} must be >= 1 (1 trains in this process)")
        if self.batch_size < 0 or self.grad_accum < 0:
            problems.append("--batch-size and --grad-accum must be >= 0 (0 lets the planner choose)")
        if self.max_length < 16:
            problems.append(f"--max-length {self.max_length} is too small: use at least 16")
        if self.method == "qlora" and self.device == "cpu" and self.dtype in ("bfloat16", "float16"):
            problems.append("--method qlora with --device cpu needs --dtype float32 or auto: half precision is very slow on this CPU")
        if self.method == "full" and self.stage != "sft":
            problems.append(f"--method full applies to --stage sft only: the {self.stage} stage trains the LoRA adapter of "
                            "its --from run; drop --method")
        if self.logging_steps < 1 or self.save_steps < 1 or self.save_total_limit < 1:
            problems.append("--logging-steps, --save-steps and --save-total-limit must be >= 1")
        problems += self._stage_problems()
        from ftassist.tracking import tracker_missing

        missing = tracker_missing(self.report_to)
        if missing:
            problems.append(missing)
        _raise(problems)


    def _stage_problems(self) -> list[str]:
        """What is wrong with --stage / --from and the DPO and GRPO settings."""
        from ftassist.train.reward import check_weights

        problems = check_weights(self.reward_weights)
        if self.stage == "sft":
            if self.from_run:
                problems.append(f"--from {self.from_run} only applies with --stage dpo or grpo: add the stage or drop --from")
            return problems
        if self.reward_size:
            problems.append(f"--reward-size holds rows out of SFT for the stage after it: pass it to the SFT run, not to "
                            f"--stage {self.stage} (which trains on the rows its --from run held out, when it held any)")
        if not self.from_run:
            problems.append(f"--stage {self.stage} needs --from RUN_DIR: the finished SFT run whose adapter it improves "
                            f"(train one first: `ftassist train --data {self.data or 'DATA'} --out runs/sft`)")
        elif _trained_full(Path(self.from_run)):
            problems.append(f"--from {self.from_run} is a full fine-tuning run (model/, no adapter): the {self.stage} stage "
                            "trains a LoRA adapter on an SFT adapter; start it from a --method lora run")
        elif not (Path(self.from_run) / "adapter" / "adapter_config.json").is_file():
            problems.append(f"--from {self.from_run}: no adapter/adapter_config.json there; pass the folder of a finished "
                            "`ftassist train` run")
        elif Path(self.from_run).resolve() == Path(self.out or ".").resolve():
            problems.append(f"--out {self.out} is the --from run itself: give the {self.stage} stage a folder of its own")
        if self.num_processes > 1:
            problems.append(f"--stage {self.stage} trains in one process: drop --num-processes")
        if self.dpo_beta <= 0 or self.grpo_beta < 0:
            problems.append("--dpo-beta must be > 0 (0.1 is usual) and --grpo-beta >= 0 (0: no KL penalty)")
        if not 0 <= self.dpo_samples <= 8:
            problems.append(f"--dpo-samples {self.dpo_samples} is out of range: use 0 (greedy only) to 8")
        if not 2 <= self.grpo_generations <= 16:
            problems.append(f"--grpo-generations {self.grpo_generations} is out of range: GRPO compares 2 to 16 replies per prompt")
        return problems


@dataclass
class MergeConfig(Checked):
    """How `ftassist merge` folds a trained adapter into a full-precision copy of its base."""

    run_dir: str = _f("", "Run folder written by `ftassist train`.", positional=True)
    out: str = _f("", "Folder for the merged model (safetensors).")
    dtype: str = _f("auto", "Precision of the merged weights: auto (float32 on a CPU; on a GPU the precision the run "
                            "trained in, float16 where the GPU has no bfloat16), float32, bfloat16 or float16 (never 4-bit).",
                    choices=["auto", "float32", "bfloat16", "float16"])

    def validate(self) -> None:
        problems = []
        if not self.run_dir:
            problems.append("RUN_DIR is missing: pass the folder written by `ftassist train`")
        if not self.out:
            problems.append("--out is missing: name a folder for the merged model")
        _raise(problems)


@dataclass
class VerifyConfig(Checked):
    """How `ftassist verify` runs the parity gate: greedy probes through base + adapter, the merged model and
    (with --base-url) a running server; fails below 99% token agreement or on a different chat template."""

    run_dir: str = _f("", "Run folder written by `ftassist train`.", positional=True)
    merged: str | None = _f(None, "Merged folder (default: RUN_DIR/merged, else merged into a temporary folder).")
    base_url: str | None = _f(None, "A running server to check too, e.g. http://127.0.0.1:8000/v1")
    api_key: str | None = _f(None, "The server's API key.")
    adapter_name: str | None = _f(None, "Served name of the run's adapter (default: found by its folder).")
    merged_name: str | None = _f(None, "Served name of the merged model (default: found by its folder).")
    max_new_tokens: int = _f(32, "Tokens generated per probe.")
    limit: int = _f(8, "Test rows used as probes.")

    def validate(self) -> None:
        problems = []
        if not self.run_dir:
            problems.append("RUN_DIR is missing: pass the folder written by `ftassist train`")
        if self.max_new_tokens < 1 or self.limit < 1:
            problems.append("--max-new-tokens and --limit must be >= 1 (32 and 8 are the defaults)")
        if (self.api_key or self.adapter_name or self.merged_name) and not self.base_url:
            problems.append("--api-key, --adapter-name and --merged-name describe a server: add --base-url")
        _raise(problems)


@dataclass
class InspectConfig(Checked):
    """How `ftassist data inspect` reads one file: its format, mapping and findings; it writes nothing."""

    file: str = _f("", "The file to inspect.", positional=True)
    column_map: dict[str, str] = _f({}, "Column mapping, e.g. output=label (flag: --map KEY=COL).", flag="map")
    model: str | None = _f(None, "Model whose tokenizer measures lengths (default: the default model).")
    max_length: int = _f(1024, "Token budget of one example.")

    def validate(self) -> None:
        problems = []
        if not self.file:
            problems.append("FILE is missing: name the file to inspect")
        elif not Path(self.file).is_file():
            problems.append(f"{self.file}: no such file")
        if self.max_length < 16:
            problems.append(f"--max-length {self.max_length} is too small: use at least 16")
        _raise(problems)


@dataclass
class ExportConfig(Checked):
    """How `ftassist export` writes GGUF files for llama.cpp and Ollama, and proves they answer like the adapter."""

    run_dir: str = _f("", "Run folder written by `ftassist train`.", positional=True)
    format: str = _f("gguf", "Export format.", choices=["gguf"])
    quants: list[str] = _f(["f16", "q8_0", "q4_k_m"], "Quantisations to write (repeatable): f16 (always written; it must "
                                                      "agree with the adapter), q8_0, q4_k_m, or f32 (then f32 must agree).",
                           flag="quant")
    out: str = _f("", "Folder for the files (default: RUN_DIR/gguf).")
    pre_tokenizer: str | None = _f(None, "llama.cpp pre-tokenizer name for a tokenizer its converter does not know, "
                                         "e.g. gpt-2 for byte-level BPE; checked against the training tokenizer after.")
    verify: bool = _f(True, "Serve each file with llama.cpp's OpenAI-compatible server and run the parity probes "
                            "and the JSON eval against it.")
    limit: int = _f(8, "Test rows used as parity probes.")
    max_new_tokens: int = _f(32, "Tokens generated per parity probe.")
    eval_limit: int = _f(0, "Test rows the JSON eval uses per file (0: all).")
    n_ctx: int = _f(2048, "llama.cpp context length, also written to the Modelfile.")

    def validate(self) -> None:
        problems = []
        if not self.run_dir:
            problems.append("RUN_DIR is missing: pass the folder written by `ftassist train`")
        unknown = [q for q in self.quants if q not in ("f32", "f16", "q8_0", "q4_k_m")]
        if unknown or not self.quants:
            problems.append(f"--quant {unknown or '(none)'}: choose from f16, q8_0, q4_k_m, f32 (repeatable)")
        if self.limit < 1 or self.max_new_tokens < 1 or self.eval_limit < 0 or self.n_ctx < 256:
            problems.append("--limit and --max-new-tokens must be >= 1, --eval-limit >= 0, --n-ctx >= 256")
        _raise(problems)


@dataclass
class ServeConfig(Checked):
    """How `ftassist serve` starts vLLM's OpenAI-compatible server."""

    model: str = _f(DEFAULT_MODEL, "Model to serve: a merged folder, a base folder or hub id.")
    adapters: dict[str, str] = _f({}, "LoRA adapters served beside the base: NAME=PATH (repeatable).", flag="adapter")
    served_name: str | None = _f(None, "Name clients use for the base model (default: base).")
    host: str = _f("127.0.0.1", "Address to bind; anything but loopback requires --api-key.")
    port: int = _f(8000, "Port to bind.")
    api_key: str | None = _f(None, "Bearer key clients must send on every route but /health and /ping (required off loopback).")
    dtype: str = _f("auto", "auto (float32 on CPU: the precision ftassist trains in there, so replies match; on a GPU the "
                            "precision the model was trained and merged in, float16 on GPUs without bfloat16), float32, "
                            "bfloat16 or float16.", choices=["auto", "float32", "bfloat16", "float16"])
    gpu: int | None = _f(None, "GPU index to serve on (pinned with CUDA_VISIBLE_DEVICES; default: the first visible).")
    gpu_memory_utilization: float | None = _f(None, "Share of the GPU's whole memory vLLM may take (default: vLLM's 0.9); "
                                                    "lower it to leave room for a training job on the same GPU.")
    max_model_len: int = _f(2048, "Longest prompt + reply in tokens.")
    max_lora_rank: int = _f(64, "Largest LoRA rank the server accepts (rounded up to one vLLM takes: 8, 16, 32, 64, ...).")
    enforce_eager: bool = _f(False, "Skip torch.compile warm-up: faster start, slower tokens.")
    block_size: int | None = _f(None, "KV-cache block size in tokens (default: 32 on CPU, where vLLM's own 128 served 32 "
                                      "streams 1.2x slower; vLLM's choice on CUDA). A multiple of 32 on CPU.")
    startup_timeout: float = _f(600.0, "Seconds to wait for the server to become healthy.")
    log_file: str | None = _f(None, "Server log file (default: a file under the run folder or the temp dir).")
    extra_args: list[str] = _f([], "More vLLM flags passed through as they are (e.g. --tensor-parallel-size 2).")
    record: str | None = _f(None, "Write the server's record (URL, key, model names, pid: `serving.registry`) to this "
                                  "file while it runs, e.g. runs/first/server.json; removed when it stops.")

    def validate(self) -> None:
        problems = []
        if self.record and not Path(self.record).parent.is_dir():
            problems.append(f"--record {self.record}: the folder {Path(self.record).parent} does not exist; create it first")
        if self.host not in ("127.0.0.1", "localhost", "::1") and not self.api_key:
            problems.append(f"--host {self.host} exposes the server beyond this machine: add --api-key KEY")
        if not (0 < self.port < 65536):
            problems.append(f"--port {self.port} is not a valid port (1-65535)")
        if self.block_size is not None and self.block_size <= 0:
            problems.append(f"--block-size {self.block_size} must be a positive number of tokens, e.g. 32")
        if self.gpu is not None and self.gpu < 0:
            problems.append(f"--gpu {self.gpu} must be a GPU index (0, 1, ...)")
        if self.gpu_memory_utilization is not None and not 0.05 <= self.gpu_memory_utilization <= 0.95:
            problems.append(f"--gpu-memory-utilization {self.gpu_memory_utilization:g} must be between 0.05 and 0.95, e.g. 0.5")
        for name in self.adapters:
            if not name or "/" in name or name == (self.served_name or "base"):
                problems.append(f"--adapter name {name!r} is invalid: use a plain name other than the base's, e.g. tuned=runs/a/adapter")
        _raise(problems)


@dataclass
class EvalConfig(Checked):
    """How `ftassist eval` measures JSON-format compliance through any OpenAI-compatible endpoint."""

    base_url: str = _f("", "Endpoint base URL of every model named without @URL, e.g. http://127.0.0.1:8000/v1 "
                           "(optional when every --model names its URL).")
    models: list[str] = _f([], "Arms to compare, the first is the reference (repeatable): NAME served at --base-url, or "
                               "NAME@URL / LABEL=NAME@URL on another OpenAI-compatible endpoint, e.g. "
                               "merged=merged@http://127.0.0.1:8001/v1. Labels must be unique.", flag="model")
    data: str = _f("", "Test set JSONL in OpenAI messages format (the last assistant message is the reference).")
    schema: str | None = _f(None, "JSON Schema of the reply (inferred from the references when omitted).")
    out: str = _f("", "Output folder: report.json, report.md, charts.")
    api_key: str | None = _f(None, "API key for the endpoint (default: $OPENAI_API_KEY or 'EMPTY'); also sent to "
                                   "NAME@URL endpoints that have no --api-key-for.")
    api_keys: dict[str, str] = _f({}, "API key of one arm's endpoint: LABEL=KEY (repeatable), e.g. gpt=sk-...", flag="api_key_for")
    max_tokens: int = _f(0, "Longest reply generated; 0: from the test set, the longest reference's length in UTF-8 bytes "
                            "+ 32, between 64 and 1024 (a token is at least one byte, so a right reply fits, and a model "
                            "that never stops costs no more than that).")
    temperature: float = _f(0.0, "Sampling temperature (0: greedy).")
    samples: int = _f(1, "Samples per example (with temperature > 0 this measures stability).")
    concurrency: int = _f(32, "Requests in flight at once. A vLLM server batches them (on 2 CPU cores 150 rows x 6 arms "
                              "took 504 s at 8, 365 s at 16, 307 s at 32; bench/eval_speed.py); for a server that "
                              "answers one at a time (llama.cpp's default) or a rate-limited API, set 1-4 and a longer "
                              "--timeout.")
    constrained: bool = _f(False, "Also run each model under structured outputs (response_format json_schema).")
    limit: int = _f(0, "Evaluate only the first N examples (0: all).")
    timeout: float = _f(120.0, "Seconds allowed for one request.")
    forgetting_probe: bool = _f(True, "Also ask each model a few general questions (arithmetic, a summary, a refusal) to spot forgetting.")
    history: str | None = _f(None, "JSONL file that gets one summary line per eval (default: history.jsonl beside the --out folder).")
    worst: int = _f(5, "How many worst examples the report shows side by side.")
    vote: bool = _f(False, "Also score each arm's per-field majority over its --samples replies as an arm of its own "
                           "(self-consistency; costs --samples completions per example).")
    sampling: dict[str, str] = _f({}, "Server-specific sampling field sent with every request: NAME=VALUE (repeatable), "
                                      "e.g. repeat_penalty=1.0 for llama.cpp's server, whose default of 1.1 changes greedy replies.")

    def sampling_fields(self) -> dict:
        """`sampling` with numeric values as numbers.

        >>> EvalConfig(sampling={"repeat_penalty": "1.0", "mode": "x"}).sampling_fields()
        {'repeat_penalty': 1.0, 'mode': 'x'}
        """
        def value(text):
            try:
                return float(text) if not isinstance(text, (int, float)) else text
            except ValueError:
                return text

        return {k: value(v) for k, v in self.sampling.items()}

    def validate(self) -> None:
        from ftassist.evaluation.arms import arm_problems

        problems = []
        if not self.models:
            problems.append("--model is missing: name at least one served model")
            if not self.base_url:
                problems.append("--base-url is missing, e.g. --base-url http://127.0.0.1:8000/v1")
        problems += arm_problems(self.models, self.base_url, self.api_keys)
        if not self.data:
            problems.append("--data is missing: pass a test.jsonl from `ftassist data build`")
        if not self.out:
            problems.append("--out is missing: name a folder for the report")
        if self.samples < 1 or self.concurrency < 1 or self.max_tokens < 0:
            problems.append("--samples and --concurrency must be >= 1, --max-tokens >= 0 (0: from the references)")
        if self.samples > 1 and self.temperature == 0:
            problems.append("--samples > 1 needs --temperature > 0, otherwise every sample is the same")
        if self.vote and self.samples < 3:
            problems.append(f"--vote needs --samples 3 or more (got {self.samples}) and --temperature > 0, e.g. "
                            "--vote --samples 5 --temperature 0.7")
        _raise(problems)


@dataclass
class AugmentConfig(Checked):
    """How `ftassist data augment` grows a handful of labelled rows with a teacher model the user's scorer vouches for."""

    seed: str = _f("", "Labelled rows: a train.jsonl from `ftassist data build` (messages; the reply is the JSON label).",
                   positional=True)
    unlabelled: str | None = _f(None, "Inputs to label: a text file (one input per line) or JSONL with a `text` or `input` "
                                      "field.")
    schema: str | None = _f(None, "JSON schema of the labels (default: schema.json beside the seed file).")
    test: str | None = _f(None, "Test rows no new row may resemble (default: test.jsonl beside the seed file).")
    out: str = _f("", "Folder for augmented.jsonl, provenance.jsonl and the report (augment.md, augment.json).")
    teacher_url: str = _f("", "OpenAI-compatible endpoint of the teacher (a served bigger model, or a hosted API).")
    teacher_model: str = _f("", "Model name the teacher endpoint serves.")
    teacher_api_key: str | None = _f(None, "API key for the teacher endpoint (default: $OPENAI_API_KEY or 'EMPTY').")
    max_inputs: int = _f(0, "Label at most this many of the unlabelled inputs, the first ones (0: all).")
    write: int = _f(0, "New inputs the teacher writes in the style of the labelled ones, then labels like any input.")
    write_temperature: float = _f(1.0, "Sampling temperature of the written inputs (higher: more varied).")
    samples: int = _f(5, "Labels the teacher samples per input; each field keeps the majority's value.")
    temperature: float = _f(0.7, "Sampling temperature of those labels.")
    agreement: float = _f(0.8, "Keep a row only when at least this share of the samples gave every field its kept value.")
    shots: int = _f(8, "Labelled rows shown to the teacher as examples in each request.")
    holdout: int = _f(0, "Labelled rows held out of the examples to measure the teacher (0: a third, at most 10).")
    accuracy_floor: float = _f(0.8, "Refuse to label when the teacher's field accuracy on the held-out rows is below this.")
    force: bool = _f(False, "Label even when the teacher is below --accuracy-floor (the report still says so first).")
    concurrency: int = _f(4, "Teacher requests in flight at once.")
    max_tokens: int = _f(512, "Longest label in tokens.")
    timeout: float = _f(120.0, "Seconds allowed for one teacher request.")

    def validate(self) -> None:
        problems = []
        if not self.seed:
            problems.append("SEED is missing: pass the labelled rows (train.jsonl from `ftassist data build`)")
        if not self.out:
            problems.append("--out is missing: name a folder for the augmented rows and the report")
        if not self.teacher_url.startswith(("http://", "https://")):
            problems.append(f"--teacher-url {self.teacher_url!r} must start with http:// or https://, e.g. "
                            "http://127.0.0.1:8000/v1")
        if not self.teacher_model:
            problems.append("--teacher-model is missing: name the model the teacher endpoint serves")
        if self.samples < 1 or self.shots < 1 or self.concurrency < 1 or self.holdout < 0 or self.max_tokens < 16:
            problems.append("--samples, --shots and --concurrency must be >= 1, --holdout >= 0, --max-tokens >= 16")
        if self.max_inputs < 0:
            problems.append(f"--max-inputs {self.max_inputs} must be 0 (all) or more")
        if self.write < 0 or self.write_temperature < 0:
            problems.append(f"--write {self.write} and --write-temperature {self.write_temperature:g} must be >= 0")
        if self.samples > 1 and self.temperature <= 0:
            problems.append("--samples above 1 needs --temperature above 0, or every sample is the same label")
        for flag, value in (("--agreement", self.agreement), ("--accuracy-floor", self.accuracy_floor)):
            if not 0.0 <= value <= 1.0:
                problems.append(f"{flag} {value:g} must be a share between 0 and 1, e.g. 0.8")
        _raise(problems)


@dataclass
class NextConfig(Checked):
    """How `ftassist next` tries the levers that could improve a finished SFT run, on its own validation split."""

    run_dir: str = _f("", "Finished SFT run folder written by `ftassist train`.", positional=True)
    budget: float = _f(60.0, "Minutes all the levers' runs may take together; a lever that does not fit what is left is "
                             "skipped and said so.")
    levers: list[str] = _f(["dpo", "grpo", "minutes", "rank", "model"],
                           "Levers to try (repeatable): dpo, grpo, minutes, rank, model (model needs --larger-model).",
                           flag="lever")
    larger_model: str | None = _f(None, "A larger base model to try the same SFT on (a folder, a .gguf file or a hub id).")
    out: str | None = _f(None, "Folder for the levers' runs and next.md / next.json (default: RUN_DIR/next).")

    def validate(self) -> None:
        problems = []
        if not self.run_dir:
            problems.append("RUN_DIR is missing: pass the folder written by `ftassist train`")
        if not self.budget > 0:
            problems.append(f"--budget {self.budget:g} must be above 0 minutes, e.g. --budget 60")
        known = ("dpo", "grpo", "minutes", "rank", "model")
        unknown = [lever for lever in self.levers if lever not in known]
        if unknown or not self.levers:
            problems.append(f"--lever {', '.join(unknown) or '(none)'}: use any of {', '.join(known)}")
        if self.levers == ["model"] and not self.larger_model:
            problems.append("--lever model needs --larger-model PATH (the model to try)")
        _raise(problems)


@dataclass
class PushConfig(Checked):
    """How `ftassist push` uploads a run's merged model (or its adapter) to the Hugging Face Hub."""

    run_dir: str = _f("", "Run folder written by `ftassist train`.", positional=True)
    repo: str = _f("", "Hub repository to create or update: OWNER/NAME.")
    what: str = _f("merged", "What to upload: the merged model (RUN_DIR/merged) or the adapter (RUN_DIR/adapter).",
                   choices=["merged", "adapter"])
    private: bool = _f(True, "Create the repository as private.")

    def validate(self) -> None:
        problems = []
        if not self.run_dir:
            problems.append("RUN_DIR is missing: pass the folder written by `ftassist train`")
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", self.repo or ""):
            problems.append(f"--repo {self.repo!r}: write OWNER/NAME, e.g. --repo ada/tickets-lora")
        _raise(problems)


@dataclass
class EvidenceConfig(Checked):
    """How `ftassist data measure` measures the base model with prompting before any training."""

    data: str = _f("", "Data folder written by `ftassist data build` (train.jsonl, test.jsonl, schema.json).",
                   positional=True)
    model: str = _f(DEFAULT_MODEL, "Base model to measure.")
    rows: int = _f(8, "Test rows to measure on (a sample; the eval after training uses them all).")
    shots: int = _f(3, "Training examples put in the prompt as earlier turns.")
    seed: int = _f(0, "Seed of the row and example sample.")

    def validate(self) -> None:
        problems = []
        if not self.data:
            problems.append("DATA is missing: name the folder `ftassist data build --out` wrote")
        if self.rows < 1:
            problems.append(f"--rows {self.rows}: measure at least 1 row")
        if self.shots < 0:
            problems.append(f"--shots {self.shots}: must be 0 or more")
        _raise(problems)


@dataclass
class DemoConfig(Checked):
    """How `ftassist demo` runs the whole pipeline on the example task and the default model."""

    out: str = _f("demo_out", "Folder for everything the demo writes (data, run, merged model, eval).")
    model: str = _f(DEFAULT_MODEL, "Base model to fine-tune.")
    example: str = _f("examples/support_tickets", "Example task folder: train.jsonl, test.jsonl, schema.json.")
    epochs: float = _f(1.0, "Training epochs over the example's train split.")
    max_steps: int = _f(-1, "Stop training after this many steps (-1: use --epochs).")
    learning_rate: float = _f(3e-4, "Peak learning rate.")
    port: int = _f(8011, "Port for the demo's vLLM server (loopback only).")
    limit: int = _f(0, "Evaluate only the first N test examples (0: all).")

    def validate(self) -> None:
        problems = []
        if not (1 <= self.port < 65536):
            problems.append(f"--port {self.port} is not a valid port")
        if self.max_steps <= 0 and self.epochs <= 0:
            problems.append("--epochs must be > 0 when --max-steps is not set")
        _raise(problems)


def _raise(problems: list[str]) -> None:
    if problems:
        raise ConfigError(problems)


def load_config(cls: type, path: str | Path, **overrides: Any) -> Any:
    """Build `cls` from a YAML file plus overrides; unknown keys are an error naming them.

    Returns the validated config; raises `ConfigError` for an unreadable file or bad keys.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError([f"--config {path}: cannot read it as YAML ({exc.__class__.__name__}: {exc})"]) from exc
    if not isinstance(raw, dict):
        raise ConfigError([f"--config {path}: expected a mapping of field: value, got {type(raw).__name__}"])
    return build_config(cls, {**raw, **overrides}, source=str(path))


def build_config(cls: type, values: dict[str, Any], source: str = "arguments") -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError([f"{source}: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(names))}"])
    try:
        cfg = cls(**values)
    except TypeError as exc:
        raise ConfigError([f"{source}: {exc}"]) from exc
    cfg.validate()
    return cfg


def save_config(cfg: Any, path: str | Path) -> None:
    """Write a config as YAML (atomically) so a run folder records exactly what ran.

    Hidden testing hooks (`hidden=True` in their metadata) are left out while they hold their default.
    """
    from ftassist.files import write_text_atomic

    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
              if not (f.metadata.get("hidden") and getattr(cfg, f.name) == f.default)}
    write_text_atomic(Path(path), yaml.safe_dump(values, sort_keys=False))
