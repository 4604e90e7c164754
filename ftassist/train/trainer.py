"""`train(cfg)`: fine-tune a LoRA/QLoRA adapter (or, `--method full`, every weight) with trl's SFTTrainer and write the
run folder.

    from ftassist.train.trainer import train
    result = train(TrainConfig(data="data/", out="runs/first", max_steps=30))
    print(result.summary)

The run folder gets `adapter/` (peft adapter + tokenizer + the chat template used; `model/`, the whole model, for
`--method full`: `ftassist.train.weights`),
`config.yaml`, `run.json`, `metrics.jsonl`, `status.json`, `train.log`, `checkpoints/` and, when
the validation split is carved from train.jsonl, `val.jsonl`. The run is judged by the task's
own metric, not the loss: the validation split is scored with the eval's scorer during training
(`ftassist.train.selection`), the adapter left in `adapter/` is the best-scoring step, and a
plateau or `--time-budget` ends training within the planner's epoch budget; `run.json`'s
`selection` says which step won and why.
Speed on CPU comes from what is *not* done: batches are padded only to their own longest
example and grouped by length (no padding to max_length), the precision is the one this CPU is
fast at (bf16 autocast only where the probe measured it faster, `ftassist.train.precision`; elsewhere
float32: bf16 is 10-300x slower on CPUs without native support), gradient checkpointing is off unless memory
needs it, checkpoints hold only the adapter and optimizer state, the loss is the model's own cross-entropy over full logits rather than trl's
tiled LM head, which without Triton costs ~4x more (`ftassist.train.loss`), and the prompt tokens every row of a
batch starts with (the system prompt) run once per batch (`ftassist.train.prefix`). Padding-free packing
is *not* used: trl documents its position_ids-based flattening for FlashAttention's varlen
kernels only, and whether CPU sdpa keeps flattened rows apart (transformers may derive a
block-diagonal mask from position_ids) has not been verified here; dynamic padding is correct
on every backend.
"""

from __future__ import annotations

import gc
import logging
import os
import platform
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftassist.config import TrainConfig, save_config
from ftassist.data.augment import augmented_rows
from ftassist.data.fingerprint import read_fingerprint
from ftassist.errors import UserError
from ftassist.files import atomic_dir, read_jsonl
from ftassist import tracking
from ftassist.train import checkpoints
from ftassist.train.assembly import QLORA_DOUBLE_QUANT, QLORA_QUANT_TYPE, build_trainer, is_main_process
from ftassist.train.distributed import release_process_group
from ftassist.train.planner import Budget, ModelShape, Plan, detect_hardware, plan_budget, \
    plan_training, resolve_dtype, resolve_method, shrink_after_oom
from ftassist.train.status import ACTIVE, StatusWriter, read_status
from ftassist.train.record import RunRecord, write_run_record
from ftassist.train.validation import ValidationSet
from ftassist.train.weights import ADAPTER_DIR, FULL_DIR, holds_full_model, weights_folder_name

log = logging.getLogger("ftassist.train")

class TrainingFailed(UserError):
    """Training stopped on its own: NaN/inf or dead loss, repeated out-of-memory."""


class JobCancelled(BaseException):
    """Raised in the training process when it receives SIGTERM (`ftassist jobs cancel`)."""


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    weights_dir: Path  # adapter/, or model/ for --method full
    summary: str
    final_loss: float | None
    first_loss: float | None
    steps: int = 0
    plan: Plan | None = None
    selection: dict | None = None  # which validated step was kept and why (None: the last step)


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True, log_file: bool = True) -> TrainResult:
    """Train per `cfg`, writing `cfg.out`; with `resume`, continue from the newest complete checkpoint.

    Returns a TrainResult. Raises UserError (or its subclasses ConfigError / TrainingFailed) for
    bad input or a run that had to stop; KeyboardInterrupt / JobCancelled leave state `cancelled`.
    """
    cfg.validate()
    run = Path(cfg.out)
    main = is_main_process()
    if main:
        _claim_run_dir(run, resume)
    status = StatusWriter(run, state="running", started_at=time.time(), mergeable=False, reason=None) if main else None
    handler = _attach_log(run / "train.log") if log_file and main else None
    if status is not None:
        status.update()
        status.start_heartbeat()
    old_sigterm = None
    if threading.current_thread() is threading.main_thread():
        old_sigterm = signal.signal(signal.SIGTERM, raise_cancelled)
    try:
        result = _train(cfg, run, status, resume=resume, progress=progress and main)
    except (JobCancelled, KeyboardInterrupt) as exc:
        _finish(status, "cancelled", f"cancelled by the user ({type(exc).__name__})")
        raise
    except UserError as exc:
        _finish(status, "failed", str(exc))
        raise
    except BaseException as exc:
        log.exception("training crashed")
        _finish(status, "failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        release_process_group()
        if old_sigterm is not None:
            signal.signal(signal.SIGTERM, old_sigterm)
        if status is not None:
            status.stop_heartbeat()
        if handler is not None:
            for name in ("ftassist", "transformers", "trl"):
                logging.getLogger(name).removeHandler(handler)
            handler.close()
    return result


@dataclass
class Prepared:
    """Everything decided before the model loads: rows, validation split, precision, memory plan and budget."""

    model_path: str
    tokenizer: Any
    train_rows: list[dict]
    val: ValidationSet | None
    val_note: str
    plan: Plan
    budget: Budget
    lengths: list[int]
    source: Any = None  # `stages.Source`: the SFT run a dpo/grpo stage starts from
    rows_note: str = ""  # which rows train: those held out for a reward stage, or the ones it trains on

    def explanation(self) -> str:
        """The plan in words: memory, precision, budget, the rows it trains on and how the run is judged."""
        return " ".join(x for x in (self.plan.explanation, self.budget.explanation, self.rows_note, self.val_note) if x)


def prepare_run(cfg: TrainConfig, run: Path | None = None) -> Prepared:
    """Read the data, hold out the validation split (written to RUN/val.jsonl when carved) and plan the run.

    The same calls serve `train` and the app's plan preview, so what the preview says is what runs.
    Raises UserError for bad data, a model without a chat template or a plan that does not fit.
    """
    from transformers import AutoConfig, AutoTokenizer

    from ftassist.model import resolve_model
    from ftassist.train.dataset import load_split

    rows = load_split(cfg.data)  # fails on bad data before anything heavy loads
    source = None
    if cfg.stage != "sft":
        from ftassist.train.stages import read_source

        source = read_source(cfg)
    rows, val, val_note = split_validation(cfg, rows, run, source)
    from ftassist.train.stages import split_reward_rows

    rows, rows_note = split_reward_rows(cfg, rows, run, source)
    model_path = source.base_model if source is not None else resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.trust_remote_code)
    if not tokenizer.chat_template:
        raise UserError(f"--model {model_path}: the tokenizer has no chat template; use an instruct/chat model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lengths = [token_length(tokenizer, row) for row in rows]
    seq_len = min(cfg.max_length, max(lengths))
    hw = detect_hardware(cfg.device)
    method = resolve_method(cfg.method, hw.device)
    dtype = resolve_dtype(cfg.dtype, hw, method)
    shape = ModelShape.from_config(AutoConfig.from_pretrained(model_path, trust_remote_code=cfg.trust_remote_code))
    plan = plan_training(shape, hw, seq_len=seq_len, method=method, dtype=dtype, lora_r=cfg.lora_r,
                         batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, checkpointing=cfg.gradient_checkpointing,
                         n_examples=len(rows))
    budget = stage_budget(cfg, plan, len(rows), validating=val is not None, params=shape.params)
    return Prepared(model_path, tokenizer, rows, val, val_note, plan, budget, lengths, source, rows_note)


def stage_budget(cfg: TrainConfig, plan: Plan, n_items: int, *, validating: bool, params: int) -> Budget:
    """The budget over `n_items` (training rows; DPO: its pairs): an optimizer step takes micro-batch x grad-accum of
    them (GRPO: grad-accum prompts, each a group of replies); dpo/grpo have their own epoch and rate defaults."""
    epochs, lr = (cfg.epochs, cfg.learning_rate)
    if cfg.stage != "sft":
        from ftassist.train.stages import defaults

        epochs, lr = defaults(cfg)
    per_step = plan.grad_accum if cfg.stage == "grpo" else plan.micro_batch * plan.grad_accum
    eval_steps = cfg.eval_steps
    if cfg.stage != "sft" and not eval_steps:
        from ftassist.train.stages import STAGE_EVALS

        total = cfg.max_steps if cfg.max_steps > 0 else int(-(-epochs * -(-n_items // per_step) // 1))
        eval_steps = max(1, total // STAGE_EVALS)
    return plan_budget(n_items, per_step, epochs=epochs, max_steps=cfg.max_steps, eval_steps=eval_steps,
                       validating=validating,
                       # several ranks: no clock (each would read its own; ranks whose rates differ diverge)
                       time_budget_min=cfg.time_budget if int(os.environ.get("WORLD_SIZE", "1")) == 1 else 0.0,
                       learning_rate=lr, params=params, warmup=cfg.warmup_ratio, method=plan.method)


def split_validation(cfg: TrainConfig, rows: list[dict], run: Path | None,
                     source=None) -> tuple[list[dict], ValidationSet | None, str]:
    """(train rows, validation set or None, one sentence saying which): --val-data, DATA/val.jsonl, the split the
    `--from` SFT run carved (its rows are not trained on here either), or carved."""
    from ftassist.train.validation import carve_validation, load_validation

    if not cfg.task_metric:
        return rows, None, "The task metric is off (--no-task-metric): the last step is kept, judged by nothing but the loss."
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return rows, None, ("Validation scoring and the time budget run in single-process training only: this "
                            "multi-process run trains its epoch budget and keeps the last step.")
    schema = Path(cfg.data) / "schema.json"
    given = Path(cfg.val_data) if cfg.val_data else Path(cfg.data) / "val.jsonl"
    if source is not None and source.val_file is not None:  # whichever split judges the stage, never train on these
        from ftassist.train.dataset import to_prompt_completion
        from ftassist.train.stages import exclude_rows

        rows = exclude_rows(rows, [to_prompt_completion(r) for r in read_jsonl(source.val_file)])
    if cfg.val_data or given.is_file():
        val = load_validation(given, schema, f"{given}")
    elif source is not None and source.val_file is not None:
        from ftassist.train.stages import carved_split_name

        val = load_validation(source.val_file, schema, carved_split_name(source))
    else:
        rows, held = carve_validation(rows, cfg.val_size, cfg.seed)
        if not held:
            return rows, None, (f"No validation split: {len(rows)} training rows are too few to hold any out; the last step "
                                "is kept. Pass --val-data FILE to judge the run by the task metric.")
        target = (run or Path(cfg.out)) / "val.jsonl"
        from ftassist.files import write_jsonl_atomic

        write_jsonl_atomic(target, [{"messages": r["prompt"] + r["completion"]} for r in held])
        val = load_validation(target, schema, f"{len(held)} rows held out of {Path(cfg.data) / 'train.jsonl'}")
    what = ("field accuracy, then whole-object match and schema validity" if val.task == "json"
            else "ROUGE-L, then exact match")
    return rows, val, (f"Validation: {len(val)} rows ({val.source}), replies generated greedily and scored like "
                       f"`ftassist eval`; the step with the best {what} (ties: lower validation loss) is kept.")


def _train(cfg: TrainConfig, run: Path, status: StatusWriter | None, *, resume: bool, progress: bool) -> TrainResult:
    from ftassist.train.dataset import as_dataset
    from ftassist.train.schedule import Clock, budget_stop
    from ftassist.train.selection import BEST_DIR, EVAL_SHARE, TaskMetricCallback, counted_seconds, describe_choice, \
        drop_stale_best, eval_rows

    started = time.time()
    prep = prepare_run(cfg, run)
    plan, budget, tokenizer, model_path = prep.plan, prep.budget, prep.tokenizer, prep.model_path
    if plan.method == "qlora":
        _require_bitsandbytes()
    dataset = as_dataset(prep.train_rows) if cfg.stage == "sft" else None
    pairs: list[dict] = []
    stage_data = None
    if cfg.stage == "dpo":
        from ftassist.train.stages import ensure_pairs

        pairs, stage_data = ensure_pairs(cfg, plan, model_path, tokenizer, prep.train_rows, _validator(cfg, prep),
                                         prep.source, run, resume)
        budget = prep.budget = stage_budget(cfg, plan, len(pairs), validating=prep.val is not None,
                                            params=ModelShape.from_config(_model_config(cfg, model_path)).params)
    elif cfg.stage == "grpo":
        from ftassist.train.reward import describe_weights, resolve_weights

        weights = resolve_weights(cfg.reward_weights)
        stage_data = {"reward_weights": weights, "reward": describe_weights(weights), "generations": cfg.grpo_generations,
                      "beta": cfg.grpo_beta, "rows": len(prep.train_rows)}
        if cfg.grpo_mistakes_only:
            from ftassist.train.stages import ensure_pairs

            mistakes, scan = ensure_pairs(cfg, plan, model_path, tokenizer, prep.train_rows, _validator(cfg, prep),
                                          prep.source, run, resume)
            prep.train_rows = [prep.train_rows[i - 1] for i in sorted({p["why"]["row"] for p in mistakes})]
            budget = prep.budget = stage_budget(cfg, plan, len(prep.train_rows), validating=prep.val is not None,
                                                params=ModelShape.from_config(_model_config(cfg, model_path)).params)
            stage_data["mistakes"] = scan
        stage_data["prompts"] = len(prep.train_rows)
    if cfg.stage == "sft" and cfg.reward_size:  # the rows held out for a stage after it, said in run.json too
        from ftassist.train.stages import REWARD_ROWS_FILE

        stage_data = {"reward_rows": len(read_jsonl(run / REWARD_ROWS_FILE))}
    if stage_data is not None:
        stage_data["rows_note"] = prep.rows_note
    log.info("plan: %s", prep.explanation())
    info = run_info(cfg, model_path, plan, n_examples=len(pairs) if pairs else len(prep.train_rows), longest=max(prep.lengths),
                    truncated=sum(n > cfg.max_length for n in prep.lengths), budget=budget.to_dict(),
                    validation={"rows": len(prep.val), "task": prep.val.task, "source": prep.val.source}
                    if prep.val is not None else None, validation_note=prep.val_note,
                    data_fingerprint=(read_fingerprint(cfg.data) or {}).get("id"),  # None: not from `data build`
                    augmented=augmented_rows(cfg.data),
                    tracking=tracking.prepare(run, cfg.report_to) if is_main_process() else None,
                    stage=cfg.stage, from_run=str(prep.source.run) if prep.source is not None else None,
                    stage_data=stage_data)
    ckdir = run / "checkpoints"
    if is_main_process():
        save_config(cfg, run / "config.yaml")
        write_run_record(run, info)
        checkpoints.clean_partial(ckdir)
    resume_from = checkpoints.newest_checkpoint(ckdir) if resume else None
    if resume_from is not None and holds_full_model(resume_from) != (plan.method == "full"):
        kind = "full fine-tuning" if holds_full_model(resume_from) else "LoRA"
        raise UserError(f"--resume: {resume_from} is a {kind} checkpoint but this run is set to --method {plan.method}; "
                        f"resume with the method it was trained with ({'--method full' if kind != 'LoRA' else '--method lora'})")
    if resume_from is not None and is_main_process():
        _trim_metrics(run / "metrics.jsonl", checkpoints.checkpoint_step(resume_from))
        drop_stale_best(run)
        log.info("resuming from %s", resume_from)
    elif is_main_process():  # from scratch (a resume with no checkpoint yet too): no row or best/ of before counts
        shutil.rmtree(run / BEST_DIR, ignore_errors=True)
        _trim_metrics(run / "metrics.jsonl", -1)
    if prep.source is not None and prep.val is not None and is_main_process():
        from ftassist.train.stages import same_split, seed_from_sft

        if same_split(prep.source, prep.val.source):
            seed_from_sft(run, prep.source)  # judged on the SFT run's own split: its adapter is step 0

    built: dict[str, Any] = {"selector": None, "resume": resume_from}

    def build():
        # The time a resumed run has already trained (the last kept row's count) and its last evaluation's length.
        rows = read_jsonl(run / "metrics.jsonl") if (run / "metrics.jsonl").exists() else []
        done = eval_rows(rows)
        # Several ranks have no time budget (the plan's is 0): each would read its own clock, and ranks whose
        # learning rates differ train different weights; nor validation, so nothing stops rank 0 alone.
        alone = int(os.environ.get("WORLD_SIZE", "1")) == 1
        clock = Clock(budget.time_budget_s, counted_seconds(rows), done[-1]["val_s"] if done else 0.0)
        selector, extra = None, []
        if prep.val is None and alone and budget.time_budget_s > 0:
            extra = [budget_stop(clock)]  # no validation: the clock alone stops it
        if prep.val is not None and is_main_process():
            selector = TaskMetricCallback(run, prep.val, tokenizer, every=budget.eval_every,
                                          patience=cfg.early_stopping_patience, clock=clock, log=log,
                                          max_eval_share=EVAL_SHARE if cfg.eval_steps == 0 else None)
        common: dict[str, Any] = dict(epochs=budget.epochs, learning_rate=budget.learning_rate,
                      extra_callbacks=[selector] if selector else extra, clock=clock)
        if cfg.stage == "dpo":
            from ftassist.train.stages import build_dpo_trainer

            trainer, guard = build_dpo_trainer(cfg, plan, model_path, tokenizer, pairs, prep.source, run, status,
                                               progress, **common)
        elif cfg.stage == "grpo":
            from ftassist.train.stages import build_grpo_trainer

            trainer, guard = build_grpo_trainer(cfg, plan, model_path, tokenizer, prep.train_rows, _validator(cfg, prep),
                                                prep.source, run, status, progress, **common)
        else:
            trainer, guard = build_trainer(cfg, plan, model_path, tokenizer, dataset, run, status, progress, **common)
        if selector is not None:  # the task metric reaches the tracker as the loss does
            selector.report = lambda logs, t=trainer: _report(t, logs)
        built["selector"] = selector
        return trainer, guard

    def shrunk():
        if built["selector"] is not None:
            built["selector"].report = None  # its closure holds the failed trainer
        built["resume"] = checkpoints.newest_checkpoint(ckdir)
        info.plan = plan.to_dict()
        write_run_record(run, info)

    trainer, guard, output = fit_retrying_oom(
        build, lambda t: t.train(resume_from_checkpoint=str(built["resume"]) if built["resume"] else None),
        plan, on_shrink=shrunk)
    selector = built["selector"]

    rows = read_jsonl(run / "metrics.jsonl") if (run / "metrics.jsonl").exists() else []
    losses = [r["loss"] for r in rows if isinstance(r.get("loss"), (int, float))]
    if guard.reason:
        info.mergeable, info.failure = False, guard.reason
        write_run_record(run, info)
        raise TrainingFailed(f"training stopped: {guard.reason}; the run is marked not mergeable "
                             "(try a lower --learning-rate)")
    adapter = run / weights_folder_name(plan.method)
    best = selector.best if selector is not None else None
    kept = f"kept the last step {trainer.state.global_step}"
    if is_main_process():
        with atomic_dir(adapter) as tmp:
            if best is not None:
                for item in (run / BEST_DIR).iterdir():
                    if item.name != "best.json":
                        shutil.copy2(item, tmp / item.name)
            else:
                checkpoints.save_adapter(trainer.model, tmp)
            tokenizer.save_pretrained(tmp)
            # The exact template the prompts were rendered with, also as a plain file for servers.
            (tmp / "chat_template.jinja").write_text(tokenizer.chat_template, encoding="utf-8")
        if best is not None and selector is not None and prep.val is not None:
            reason = selector.stop_reason or f"epoch budget done at step {trainer.state.global_step}"
            kept = describe_choice(best, {"step": trainer.state.global_step}, prep.val.task, reason)
            if best["step"] == 0:
                kept = f"no step of the {cfg.stage} stage beat the SFT adapter it started from, which is kept: {kept}"
            info.selection = {"step": best["step"], "last_step": trainer.state.global_step, "stopped": reason,
                                 "metrics": {k: v for k, v in best.items() if k.startswith("val_")}, "summary": kept}
        elapsed = time.time() - started
        info.mergeable, info.finished_at, info.steps = True, time.time(), trainer.state.global_step
        info.train_runtime_s = round(output.metrics.get("train_runtime", 0), 1)
        write_run_record(run, info)
        _finish(status, "completed", None, mergeable=True, step=trainer.state.global_step)
    else:
        elapsed = time.time() - started
    first, final = (losses[0], losses[-1]) if losses else (None, None)
    summary = (f"trained {trainer.state.global_step} steps in {elapsed:.0f} s ({plan.method}, {plan.dtype}, "
               f"{plan.device}); loss {first} -> {final}; {kept}; {'model' if plan.method == 'full' else 'adapter'}: {adapter}")
    opened = (info.tracking or {}).get("open")
    if opened:
        summary += f"; tracked in Trackio: {opened}"
    log.info(summary)
    return TrainResult(run, adapter, summary, final, first, trainer.state.global_step, plan, info.selection)


def fit_retrying_oom(build, fit, plan: Plan, *, on_shrink=None, release=None):
    """(trainer, guard, fit's result) of `build()` then `fit(trainer)`, rebuilt with half the micro-batch (and twice
    the accumulation, `shrink_after_oom`) each time CUDA runs out of memory. Raises TrainingFailed when it gives up.

    The failed trainer is dropped and memory released *after* the except block: inside it the traceback's frames
    still hold the trainer and its model, so nothing could be freed before the next model loads beside it.
    `release` (default: gc, then torch's CUDA cache) runs between the two; `on_shrink` after it.
    """
    import torch

    retries = 0
    while True:
        trainer, guard = build()
        try:
            return trainer, guard, fit(trainer)
        except torch.cuda.OutOfMemoryError as exc:
            smaller = shrink_after_oom(plan.micro_batch, plan.grad_accum, retries)
            if smaller is None:
                raise TrainingFailed(f"CUDA out of memory at micro-batch {plan.micro_batch} after {retries} retries; "
                                     "lower --max-length or use a smaller --model") from exc
        retries += 1
        log.warning("CUDA out of memory at micro-batch %d: retrying with %d x %d", plan.micro_batch, *smaller)
        plan.micro_batch, plan.grad_accum = smaller
        trainer = guard = None
        (release or release_memory)()
        if on_shrink is not None:
            on_shrink()


def release_memory() -> None:
    """Collect the dropped trainer's reference cycles, then hand the CUDA allocator's cached blocks back."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _validator(cfg: TrainConfig, prep: Prepared):
    """The schema validator the reward stages score training replies with: the validation split's, else DATA's
    schema.json, else one inferred from the training references."""
    if prep.val is not None and prep.val.validator is not None:
        return prep.val.validator
    from ftassist.evaluation.metrics import make_validator
    from ftassist.schema import infer_schema, load_schema
    from ftassist.train.stages import references

    path = Path(cfg.data) / "schema.json"
    return make_validator(load_schema(path) if path.is_file() else infer_schema(references(prep.train_rows)))


def _model_config(cfg: TrainConfig, model_path: str):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_path, trust_remote_code=cfg.trust_remote_code)


def token_length(tokenizer, row: dict) -> int:
    """Tokens of prompt + completion rendered with the tokenizer's chat template."""
    text = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _report(trainer, logs: dict) -> None:
    """Hand `logs` to every callback's on_log (the trackers) without cancelling the step's own loss log,
    which the handler's on_log would (it clears should_log)."""
    should_log = trainer.control.should_log
    trainer.callback_handler.on_log(trainer.args, trainer.state, trainer.control, logs)
    trainer.control.should_log = should_log


def run_info(cfg: TrainConfig, model_path: str, plan: Plan, **facts) -> RunRecord:
    """The run.json record at the start: base model, method, precision, device, versions and the plan."""
    import peft
    import torch
    import transformers
    import trl

    return RunRecord(
        base_model=str(Path(model_path).resolve()) if Path(model_path).exists() else model_path,
        model=cfg.model, method=plan.method, dtype=plan.dtype, device=plan.device,
        plan=plan.to_dict(), plan_explanation=plan.explanation,
        # How the frozen base was held while training; the adapter is plain LoRA and loads onto the full-precision base.
        quantization={"library": "bitsandbytes", "bits": 4, "quant_type": QLORA_QUANT_TYPE,
                      "double_quant": QLORA_DOUBLE_QUANT, "compute_dtype": plan.dtype} if plan.method == "qlora" else None,
        versions={"python": platform.python_version(), "torch": torch.__version__,
                  "transformers": transformers.__version__, "peft": peft.__version__, "trl": trl.__version__},
        world_size=int(os.environ.get("WORLD_SIZE", "1")), **facts)


def _claim_run_dir(run: Path, resume: bool) -> None:
    """Refuse a folder a live job is using; on a fresh start clear a previous run's outputs."""
    if (run / "status.json").exists():
        state = read_status(run)
        if state.state in ACTIVE and state.pid not in _own_lineage():
            raise UserError(f"--out {run}: a training job (pid {state.pid}) is still running there; "
                            f"cancel it with `ftassist jobs cancel {run}` or pick another --out")
    run.mkdir(parents=True, exist_ok=True)
    if not resume:
        for name in ("checkpoints", ADAPTER_DIR, FULL_DIR, "best"):
            shutil.rmtree(run / name, ignore_errors=True)
        for name in ("metrics.jsonl", "run.json", "val.jsonl", "reward_rows.jsonl", "pairs.jsonl", "pairs.json"):
            (run / name).unlink(missing_ok=True)


def _own_lineage() -> set[int]:
    """This process and its ancestors: a job's recorded pid is the worker itself, or the launcher of its ranks."""
    import psutil

    me = psutil.Process()
    return {me.pid, *(p.pid for p in me.parents())}


def _trim_metrics(path: Path, step: int) -> None:
    """Drop metric rows after `step` (they are recomputed when a run resumes from there)."""
    if path.exists():
        from ftassist.files import write_jsonl_atomic

        write_jsonl_atomic(path, [r for r in read_jsonl(path) if r.get("step", 0) <= step])


def _finish(status: StatusWriter | None, state: str, reason: str | None, **fields) -> None:
    if status is not None:
        status.update(state=state, reason=reason, ended_at=time.time(), **fields)


def raise_cancelled(signum, frame):
    raise JobCancelled(f"signal {signum}")


def _require_bitsandbytes() -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise UserError("--method qlora needs bitsandbytes: `pip install bitsandbytes`, or use --method lora") from exc


def _attach_log(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("ftassist", "transformers", "trl"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("ftassist").setLevel(logging.INFO)
    return handler
