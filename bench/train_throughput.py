"""Trained tokens/s and peak RSS: the plain recipe against ftassist's trainer, same model and data.

    python bench/train_throughput.py                      # SmolLM2-135M, example task, 6 steps each
    python bench/train_throughput.py --steps 8 --batch 8 --model PATH

(a) plain: HF `Trainer` + peft LoRA (all-linear, r=16), every batch padded to max_length=512,
    fp32, loss on every token - the recipe most tutorials show.
(b) ftassist: `ftassist.train.trainer.train` - trl SFTTrainer, dynamic padding grouped by length,
    loss on the reply only (on CPU the model's own cross-entropy, not trl's tiled LM head), fp32,
    no checkpointing.
Throughput counts only non-padding tokens and skips the first step of each (warm-up). Both run
in this one process, one after the other; peak RSS is sampled per phase. Other work on the
machine slows both alike, but the figures still move with it - rerun on an idle machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class PeakRSS:
    """Samples this process's RSS every 50 ms; `peak` is the highest seen since start()."""

    def __init__(self):
        import psutil

        self.proc, self.peak, self.start, self._stop = psutil.Process(), 0, 0, threading.Event()

    def __enter__(self):
        self.start = self.peak = self.proc.memory_info().rss
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def plain_recipe(model_path: str, rows: list[dict], steps: int, batch: int, max_length: int = 512) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments, \
        default_data_collator

    tok = AutoTokenizer.from_pretrained(model_path)

    def encode(row):
        text = tok.apply_chat_template(row["messages"], tokenize=False)
        enc = tok(text, padding="max_length", max_length=max_length, truncation=True, add_special_tokens=False)
        enc["labels"] = [t if m else -100 for t, m in zip(enc["input_ids"], enc["attention_mask"])]
        return enc

    ds = Dataset.from_list(rows).map(encode, remove_columns=["messages"])
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    marks = []

    class Mark(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            marks.append((time.time(), state.num_input_tokens_seen))

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch, max_steps=steps, learning_rate=2e-4,
                                 logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                                 include_num_input_tokens_seen="non_padding", disable_tqdm=True, seed=42)
        with PeakRSS() as rss:
            Trainer(model=model, args=args, train_dataset=ds, data_collator=default_data_collator,
                    callbacks=[Mark()]).train()
    (t1, n1), (t2, n2) = marks[0], marks[-1]
    return {"tokens_per_s": (n2 - n1) / (t2 - t1), "peak_rss_gib": rss.peak / 2**30, "start_rss_gib": rss.start / 2**30,
            "s_per_step": (t2 - t1) / (len(marks) - 1), "padded_tokens_per_step": batch * max_length}


def ftassist_recipe(model_path: str, data_dir: Path, steps: int, batch: int) -> dict:
    from ftassist.config import TrainConfig
    from ftassist.train.trainer import train

    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(data=str(data_dir), out=out, model=model_path, max_steps=steps, batch_size=batch, grad_accum=1,
                          save_steps=10_000)
        with PeakRSS() as rss:
            train(cfg, progress=False)
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-1]
    return {"tokens_per_s": (last["tokens"] - first["tokens"]) / (last["time"] - first["time"]),
            "peak_rss_gib": rss.peak / 2**30, "start_rss_gib": rss.start / 2**30,
            "s_per_step": (last["time"] - first["time"]) / (len(rows) - 1)}


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise) so phase (b) starts clean."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Model folder (default: SmolLM2-135M-Instruct, prepared offline).")
    parser.add_argument("--data", default=str(ROOT / "examples" / "support_tickets" / "train.jsonl"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--recipes", default="a,b", help="Which to run: a (plain), b (ftassist) or a,b.")
    args = parser.parse_args()

    import torch

    from ftassist.files import read_jsonl
    from ftassist.model import resolve_model

    model_path = resolve_model(args.model)
    rows = read_jsonl(Path(args.data))[: args.steps * args.batch * 2]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        (data_dir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"model {model_path}; {len(rows)} rows; {args.steps} steps x batch {args.batch}; "
              f"{torch.get_num_threads()} torch threads; load average {os.getloadavg()[0]:.1f}", flush=True)
        plain = ours = None
        if "a" in args.recipes:
            plain = plain_recipe(model_path, rows, args.steps, args.batch)
            print(f"(a) plain HF Trainer + peft, padded to 512: {plain['tokens_per_s']:.1f} trained tokens/s, "
                  f"{plain['s_per_step']:.1f} s/step, peak RSS {plain['peak_rss_gib']:.2f} GiB "
                  f"(phase began at {plain['start_rss_gib']:.2f})", flush=True)
            gc.collect()
            _trim_heap()
        if "b" in args.recipes:
            ours = ftassist_recipe(model_path, data_dir, args.steps, args.batch)
            print(f"(b) ftassist trainer: {ours['tokens_per_s']:.1f} trained tokens/s, {ours['s_per_step']:.1f} s/step, "
                  f"peak RSS {ours['peak_rss_gib']:.2f} GiB (phase began at {ours['start_rss_gib']:.2f})", flush=True)
    if plain and ours:
        print(f"ratio (b)/(a): {ours['tokens_per_s'] / plain['tokens_per_s']:.2f}x tokens/s, "
              f"{ours['peak_rss_gib'] / plain['peak_rss_gib']:.2f}x peak RSS; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
