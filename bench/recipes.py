"""The trl recipes a user copies from trl's docs, built one way for every benchmark that compares with them.

Two recipes, both `SFTTrainer` with LoRA r=16 / alpha 32 / dropout 0.05 on all linear layers:

fair      the reference row everywhere ftassist is compared: what trl's PEFT guide trains a LoRA with,
          learning rate 2e-4 ("~10x the full fine-tuning rate"), the loss on the completion only (each row
          given as a conversational prompt/completion pair, which trl masks by default), 2 epochs, no gradient
          checkpointing (a CPU has the memory and it costs a third more compute), every other `SFTConfig`
          default (batch 8, dynamic padding, linear schedule).
defaults  trl's raw `SFTConfig` defaults, kept as a second row and labelled so: learning rate 2e-5 (a full
          fine-tuning default that barely moves a LoRA), the loss on every token of the `messages` rows.

Both run with `use_cpu=True` and `bf16` only where this CPU multiplies bf16 fast (trl's default bf16=True runs
~300x slower on one without; ftassist's probe says which, `ftassist/train/precision.py`). `time_limit_s` ends
training at the first step past that wall time, so a comparison "within the same 30 minutes" holds for both.
"""

from __future__ import annotations

from pathlib import Path

# Each recipe: the `SFTConfig` fields it sets beyond the shared ones, whether rows go in as prompt/completion pairs.
RECIPES = {
    "fair": {"config": {"learning_rate": 2e-4, "gradient_checkpointing": False}, "completion_only": True,
             "label": "trl LoRA recipe (lr 2e-4, loss on the completion, r16, 2 epochs)"},
    "defaults": {"config": {}, "completion_only": False,  # trl's own: lr 2e-5, gradient checkpointing on
                 "label": "trl SFTConfig defaults (lr 2e-5, loss on every token, r16, 2 epochs)"},
}


def recipe_rows(rows: list[dict], completion_only: bool) -> list[dict]:
    """The rows as the recipe feeds them: prompt/completion pairs (loss on the completion) or whole `messages`.

    >>> chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    >>> recipe_rows([{"messages": chat}], True)
    [{'prompt': [{'role': 'user', 'content': 'q'}], 'completion': [{'role': 'assistant', 'content': 'a'}]}]
    >>> recipe_rows([{"messages": chat}], False) == [{"messages": chat}]
    True
    """
    if not completion_only:
        return [{"messages": r["messages"]} for r in rows]
    return [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows]


def trl_trainer(model_path: str, rows: list[dict], out: Path, *, recipe: str = "fair", epochs: float = 2.0,
                max_steps: int = -1, logging_steps: int = 10, batch_size: int = 8, time_limit_s: float | None = None,
                seed: int = 42, callbacks=()):
    """The SFTTrainer of `recipe` ("fair" or "defaults"), ready to `.train()`; checkpoints off, logs to nowhere
    but `callbacks`."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from ftassist.train.precision import cpu_rates, fast_bf16
    from ftassist.train.schedule import Clock, budget_stop

    spec = RECIPES[recipe]
    bf16 = fast_bf16(cpu_rates())
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    args = SFTConfig(output_dir=str(out), num_train_epochs=epochs, max_steps=max_steps, bf16=bf16, use_cpu=True,
                     per_device_train_batch_size=batch_size,  # trl's default is 8
                     save_strategy="no", report_to="none", disable_tqdm=True, logging_steps=logging_steps,
                     seed=seed, **spec["config"])
    # ftassist's own time-budget stop (it also asks for a checkpoint at the stop: one small save in `out`)
    limit = [budget_stop(Clock(time_limit_s))] if time_limit_s else []
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(recipe_rows(rows, spec["completion_only"])),
                      processing_class=tok, callbacks=list(callbacks) + limit,
                      peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
