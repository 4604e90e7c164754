"""The plain trl recipe a user copies from the docs, built one way for every benchmark that compares with it.

`SFTTrainer` on the `messages` rows, LoRA r=16 / alpha 32 / dropout 0.05 on all linear layers, and every
other `SFTConfig` default (learning rate 2e-5, batch 8, dynamic padding, loss on every token) but two
that a CPU forces: `use_cpu=True`, and `bf16` only where this CPU multiplies bf16 fast (trl's default
bf16=True runs ~300x slower on one without; ftassist's probe says which, `ftassist/train/precision.py`).
"""

from __future__ import annotations

from pathlib import Path


def trl_trainer(model_path: str, rows: list[dict], out: Path, *, epochs: float = 2.0, max_steps: int = -1,
                logging_steps: int = 10, batch_size: int = 8, callbacks=()):
    """The SFTTrainer of the plain recipe, ready to `.train()`; checkpoints off, logs to nowhere but `callbacks`."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from ftassist.train.precision import cpu_rates, fast_bf16

    bf16 = fast_bf16(cpu_rates())
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    args = SFTConfig(output_dir=str(out), num_train_epochs=epochs, max_steps=max_steps, bf16=bf16, use_cpu=True,
                     per_device_train_batch_size=batch_size,  # trl's default is 8
                     save_strategy="no", report_to="none", disable_tqdm=True, logging_steps=logging_steps)
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list([{"messages": r["messages"]} for r in rows]),
                      processing_class=tok, callbacks=list(callbacks),
                      peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
