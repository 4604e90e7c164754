"""Trained tokens/s, peak RSS and share of the matmul peak: trl's LoRA recipe against ftassist's trainer.

    python bench/train_throughput.py                      # SmolLM2-135M, example task, 8 steps each
    python bench/train_throughput.py --steps 8 --batch 8 --model PATH --recipes trl,ftassist

(trl)      the baseline: the LoRA recipe trl's docs give (`bench/recipes.py` "fair": `SFTTrainer`, lr 2e-4,
           loss on the completion, no gradient checkpointing, dynamic padding, batch 8, trl's tiled LM head),
           LoRA r=16 on all linear layers, bf16 only where this CPU is fast at it.
(trldefaults) trl's raw `SFTConfig` defaults (`bench/recipes.py` "defaults": loss on every token, its
           gradient-checkpointing default): the row the figures before 2026-12-05 called "the plain trl recipe".
(hf)       a second reference: HF `Trainer` + peft LoRA, every batch padded to max_length=512, fp32, loss on
           every token - the older tutorial recipe (what the first figures in RESULTS.md compared against).
(ftassist) `ftassist.train.trainer.train`: trl SFTTrainer, dynamic padding grouped by length, loss on the
           reply only (on CPU the model's own cross-entropy at the reply positions), the planner's precision
           (bf16 autocast where the probe says this CPU is fast at it), no checkpointing, the prompt prefix
           every row of a batch starts with run once (`ftassist.train.prefix`).
(noshare)  the same trainer with `--no-share-prefix`: every row runs its whole prompt (what sharing saves).

All three train the same rows at the same batch size. Throughput counts only non-padding tokens and
skips the first step of each (warm-up). The share of the peak is 4 N FLOPs per trained token (LoRA:
forward 2N, backward through the activations 2N) over the fp32 (or bf16) matmul rate measured here
just before. Every recipe runs in this one process, one after the other; peak RSS is sampled per
phase. Other work on the machine slows them all, but not alike: rerun on an idle machine.
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


def trl_recipe(model_path: str, rows: list[dict], steps: int, batch: int, recipe: str = "fair") -> dict:
    """A trl recipe of `bench/recipes.py` for `steps` steps of `batch` rows; tokens from trl's own non-padding count."""
    from transformers import TrainerCallback

    from bench.recipes import trl_trainer

    marks = []

    class Mark(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "num_tokens" in logs:
                marks.append((time.time(), logs["num_tokens"]))

    with tempfile.TemporaryDirectory() as out:
        trainer = trl_trainer(model_path, rows, Path(out), recipe=recipe, max_steps=steps, logging_steps=1,
                              batch_size=batch, callbacks=[Mark()])
        with PeakRSS() as rss:
            trainer.train()
    (t1, n1), (t2, n2) = marks[0], marks[-1]
    return {"tokens_per_s": (n2 - n1) / (t2 - t1), "peak_rss_gib": rss.peak / 2**30, "start_rss_gib": rss.start / 2**30,
            "s_per_step": (t2 - t1) / (len(marks) - 1), "bf16": trainer.args.bf16}


def hf_recipe(model_path: str, rows: list[dict], steps: int, batch: int, max_length: int = 512) -> dict:
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


def ftassist_recipe(model_path: str, data_dir: Path, steps: int, batch: int, share_prefix: bool = True) -> dict:
    from ftassist.config import TrainConfig
    from ftassist.train.trainer import train

    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(data=str(data_dir), out=out, model=model_path, max_steps=steps, batch_size=batch, grad_accum=1,
                          save_steps=10_000, task_metric=False, report_to="none", share_prefix=share_prefix)
        with PeakRSS() as rss:
            result = train(cfg, progress=False)
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-1]
    return {"tokens_per_s": (last["tokens"] - first["tokens"]) / (last["time"] - first["time"]),
            "peak_rss_gib": rss.peak / 2**30, "start_rss_gib": rss.start / 2**30,
            "s_per_step": (last["time"] - first["time"]) / (len(rows) - 1), "bf16": result.plan.dtype == "bfloat16"}


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
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--recipes", default="trl,trldefaults,noshare,ftassist",
                        help="Any of trl (the baseline), trldefaults, hf, noshare, ftassist.")
    args = parser.parse_args()

    import torch
    from transformers import AutoConfig

    from ftassist.files import read_jsonl
    from ftassist.model import resolve_model
    from ftassist.train.planner import ModelShape
    from ftassist.train.precision import fast_bf16, matmul_gflops, measure_rates

    model_path = resolve_model(args.model)
    params = ModelShape.from_config(AutoConfig.from_pretrained(model_path)).params
    rows = read_jsonl(Path(args.data))[: args.steps * args.batch * 2]
    rates = measure_rates()
    peak = {False: matmul_gflops(torch.float32, 1024, 1.0),
            True: matmul_gflops(torch.bfloat16, 1024, 1.0) if fast_bf16(rates) else rates.bf16_gflops}
    print(f"model {model_path} ({params / 1e6:.0f}M parameters); {len(rows)} rows; {args.steps} steps x batch "
          f"{args.batch}; {torch.get_num_threads()} torch threads; matmul peak fp32 {peak[False]:.1f} GFLOP/s, bf16 "
          f"{peak[True]:.1f} (fast bf16: {fast_bf16(rates)}); load average {os.getloadavg()[0]:.1f}", flush=True)
    names = {"trl": "trl LoRA recipe (lr 2e-4, completion loss, no checkpointing)",
             "trldefaults": "trl SFTConfig defaults (loss on every token)", "hf": "HF Trainer + peft, padded to 512",
             "ftassist": "ftassist trainer", "noshare": "ftassist trainer, --no-share-prefix"}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        (data_dir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        for name in [n.strip() for n in args.recipes.split(",") if n.strip()]:
            run = {"trl": lambda: trl_recipe(model_path, rows, args.steps, args.batch),
                   "trldefaults": lambda: trl_recipe(model_path, rows, args.steps, args.batch, recipe="defaults"),
                   "hf": lambda: hf_recipe(model_path, rows, args.steps, args.batch),
                   "ftassist": lambda: ftassist_recipe(model_path, data_dir, args.steps, args.batch),
                   "noshare": lambda: ftassist_recipe(model_path, data_dir, args.steps, args.batch, share_prefix=False)}[name]
            r = results[name] = run()
            r["peak_share"] = r["tokens_per_s"] * 4 * params / 1e9 / peak[bool(r.get("bf16"))]
            print(f"({name}) {names[name]}: {r['tokens_per_s']:.1f} trained tokens/s, {r['s_per_step']:.1f} s/step, "
                  f"{100 * r['peak_share']:.0f}% of the {'bf16' if r.get('bf16') else 'fp32'} matmul peak, peak RSS "
                  f"{r['peak_rss_gib']:.2f} GiB (phase began at {r['start_rss_gib']:.2f})", flush=True)
            gc.collect()
            _trim_heap()
    base = results.get("trl")
    for name, r in results.items():
        if base and name != "trl":
            print(f"ratio ({name})/(trl): {r['tokens_per_s'] / base['tokens_per_s']:.2f}x tokens/s, "
                  f"{r['peak_rss_gib'] / base['peak_rss_gib']:.2f}x peak RSS")
    if "ftassist" in results and "noshare" in results:
        a, b = results["ftassist"], results["noshare"]
        print(f"ratio (ftassist)/(noshare), what sharing the prompt prefix adds: {a['tokens_per_s'] / b['tokens_per_s']:.2f}x "
              f"tokens/s, {b['s_per_step'] / a['s_per_step']:.2f}x steps/s, {a['peak_rss_gib'] / b['peak_rss_gib']:.2f}x peak RSS")
    print(f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
