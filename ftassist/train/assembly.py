"""How a trainer is put together, the same for every stage: the base model, the shared arguments, the callbacks.

`build_trainer` assembles the SFT stage's trainer (`ftassist.train.trainer` runs it); the reward
stages (`ftassist.train.stages`) assemble theirs from the same parts: `load_base` (the base as the
plan holds it), `common_args` (batch, schedule, checkpoints, precision, device), `run_callbacks`
(metrics rows, the NaN guard) and `finish_trainer` (checkpoint rotation, the budget clock).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ftassist import tracking
from ftassist.config import TrainConfig
from ftassist.device import adapter_dtype
from ftassist.train import checkpoints
from ftassist.train.planner import ModelShape, Plan, plan_learning_rate
from ftassist.train.status import StatusWriter

log = logging.getLogger("ftassist.train")

# QLoRA's base: bitsandbytes 4-bit NormalFloat with its quantization constants quantized again (the paper's recipe).
QLORA_QUANT_TYPE = "nf4"
QLORA_DOUBLE_QUANT = True


def is_main_process() -> bool:
    """False on the non-zero ranks of an `accelerate launch` run (they write no run files)."""
    return int(os.environ.get("RANK", "0")) == 0


def build_trainer(cfg: TrainConfig, plan: Plan, model_path: str, tokenizer, dataset, run: Path,
                  status: StatusWriter | None, progress: bool, *, epochs: float | None = None,
                  learning_rate: float | None = None, extra_callbacks=(), clock=None):
    """Load the base model for `plan` and return (SFTTrainer, GuardCallback) ready to train.

    `clock` (a `schedule.Clock`) is the run's time budget: the schedule follows it and every metrics row records
    the training seconds it has counted, which is what a resumed run starts counting from."""
    from peft import LoraConfig
    from trl import SFTConfig

    model = load_base(cfg, plan, model_path)
    targets = cfg.target_modules if cfg.target_modules == "all-linear" else [
        t.strip() for t in cfg.target_modules.split(",") if t.strip()]
    peft_config = None if plan.method == "full" else LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r, lora_dropout=cfg.lora_dropout,
        target_modules=targets, bias="none", task_type="CAUSAL_LM")
    args = SFTConfig(
        **common_args(cfg, plan, run, epochs=epochs,
                      learning_rate=learning_rate or cfg.learning_rate or plan_learning_rate(
                          ModelShape.from_config(model.config).params, plan.method)),
        max_length=cfg.max_length,
        packing=False,
        padding_free=False,
        completion_only_loss=True,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        trust_remote_code=cfg.trust_remote_code,
    )
    guard, callbacks, clock = run_callbacks(cfg, run, status, progress, extra_callbacks, clock)
    trainer = _AtomicSFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                peft_config=peft_config, callbacks=callbacks)
    finish_trainer(trainer, cfg, plan, clock)
    return trainer, guard


def load_base(cfg: TrainConfig, plan: Plan, model_path: str):
    """The base model as `plan` holds it (its dtype; 4-bit NF4 for QLoRA, prepared for k-bit training; float32 for full
    fine-tuning, whose half-precision compute is autocast: updates to half-precision weights would round away)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = getattr(torch, plan.dtype)
    kwargs = {"dtype": torch.float32 if plan.method == "full" else torch_dtype, "trust_remote_code": cfg.trust_remote_code}
    if plan.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=QLORA_QUANT_TYPE, bnb_4bit_use_double_quant=QLORA_DOUBLE_QUANT,
            bnb_4bit_compute_dtype=torch_dtype)
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))} if plan.device == "cuda" else {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    model.config.use_cache = False
    if plan.method == "qlora":
        from peft import prepare_model_for_kbit_training

        if plan.device == "cpu":
            keep_4bit_differentiable(model)

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=plan.checkpointing,
                                                gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)
    return model


def keep_4bit_differentiable(model) -> None:
    """Keep bitsandbytes' CPU 4-bit layers on their plain path (dequantize, then a matmul in the compute dtype).

    On a CPU with AVX512-BF16, a `Linear4bit` run once in eval mode without gradients (the task-metric scoring
    between steps does that) repacks its weight, in place and for good, for a fused bf16 kernel that has no backward:
    training after the first scoring would then drop the gradient through every frozen 4-bit layer (torch only
    warns) and selection would score a bf16 model that is not the one merged. Measured on an AMD EPYC with
    avx512_bf16: the tiny model's merged logits differed from the trained model's by 2e-3 instead of < 1e-4."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


CHECKPOINTING_KWARGS = {"use_reentrant": False}


def common_args(cfg: TrainConfig, plan: Plan, run: Path, *, epochs: float | None, learning_rate: float) -> dict:
    """The `TrainingArguments` every stage shares (SFT, DPO, GRPO): batch, schedule, checkpoints, precision, device."""
    return dict(
        output_dir=str(run / "checkpoints"),
        per_device_train_batch_size=plan.micro_batch,
        gradient_accumulation_steps=plan.grad_accum,
        learning_rate=learning_rate,
        num_train_epochs=epochs if epochs is not None else (cfg.epochs or 2.0),
        max_steps=cfg.max_steps,
        warmup_steps=cfg.warmup_ratio,  # the schedule itself is `schedule.budget_lambda` (BudgetScheduleMixin)
        lr_scheduler_type="linear",
        logging_steps=cfg.logging_steps,
        logging_nan_inf_filter=False,  # the guard must see NaN, not a smoothed stand-in
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=None,  # AtomicCheckpointMixin rotates (HF's rotation would act on staging)
        eval_strategy="no",
        seed=cfg.seed,
        bf16=plan.dtype == "bfloat16",  # trl defaults bf16=True, which is ~300x slower on this kind of CPU
        fp16=plan.dtype == "float16",
        use_cpu=plan.device == "cpu",
        gradient_checkpointing=plan.checkpointing,
        gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS if plan.checkpointing else None,
        optim="paged_adamw_8bit" if plan.device == "cuda" else "adamw_torch",
        dataloader_num_workers=0,
        dataloader_pin_memory=plan.device == "cuda",
        report_to=cfg.report_to,
        project=tracking.PROJECT,
        run_name=run.name,
        disable_tqdm=True,
    )


def run_callbacks(cfg: TrainConfig, run: Path, status: StatusWriter | None, progress: bool, extra_callbacks, clock):
    """(guard, every callback of a run, the clock): metrics rows, the NaN guard, the test-only NaN injection, extras."""
    from ftassist.train.callbacks import GuardCallback, MetricsCallback, NanInjectionCallback
    from ftassist.train.schedule import Clock

    guard = GuardCallback(zero_patience=None if cfg.stage == "grpo" else 3)  # GRPO: equal rewards give a 0 loss
    clock = clock if clock is not None else Clock()
    callbacks = [MetricsCallback(run, status, progress=progress, log=log, clock=clock) if is_main_process() else None,
                 guard,
                 NanInjectionCallback(cfg.debug_nan_at_step) if cfg.debug_nan_at_step else None, *extra_callbacks]
    return guard, [c for c in callbacks if c is not None], clock


def finish_trainer(trainer, cfg: TrainConfig, plan: Plan, clock) -> None:
    """What every stage's trainer gets after construction: checkpoint rotation, the budget clock, no stdout printer,
    and on a CPU the fast LoRA dropout and fp32 adapters for QLoRA."""
    from transformers.trainer_callback import PrinterCallback

    trainer.keep_checkpoints = cfg.save_total_limit
    trainer.budget_clock, trainer.warmup_share = clock, cfg.warmup_ratio
    trainer.share_prefix = cfg.share_prefix  # SFT's loss on CPU (`ftassist.train.loss`)
    trainer.remove_callback(PrinterCallback)  # metrics go to metrics.jsonl / train.log / the bar, not stdout
    if plan.device == "cpu":
        from ftassist.train.dropout import use_fast_dropout

        use_fast_dropout(trainer.model)  # torch's LoRA dropout mask was a fifth of a CPU step (`dropout`)
    held = adapter_dtype(plan.method, plan.dtype)
    if held is not None:
        # trl casts QLoRA adapters to bf16 whatever the hardware: wrong under fp16 autocast (the gradient scaler
        # refuses half-precision weights; T4, V100) and very slow on a CPU. `ftassist.device.adapter_dtype`.
        import torch

        for p in trainer.model.parameters():
            if p.requires_grad:
                p.data = p.data.to(getattr(torch, held))


def _trainer_class():
    from trl import SFTTrainer

    from ftassist.train.loss import PlainCausalLossMixin
    from ftassist.train.schedule import BudgetScheduleMixin

    class AtomicSFTTrainer(checkpoints.AtomicCheckpointMixin, PlainCausalLossMixin, BudgetScheduleMixin, SFTTrainer):
        """SFTTrainer whose checkpoints appear only when complete, with the plain loss path on CPU (see `loss`) and
        a learning rate that decays to zero at the step or the time budget (see `schedule`)."""

    return AtomicSFTTrainer


def _AtomicSFTTrainer(**kwargs):  # noqa: N802 - builds the class lazily so importing this module stays light
    return _trainer_class()(**kwargs)
