"""LoRA dropout on a CPU (`ftassist.train.dropout`): what `nn.Dropout` does, from a quarter of the random draws."""

from __future__ import annotations

from pathlib import Path

import torch
from datasets import Dataset
from torch import nn
from transformers import AutoTokenizer

from ftassist.config import TrainConfig
from ftassist.files import read_jsonl
from ftassist.train import assembly
from ftassist.train.dropout import FastDropout, use_fast_dropout
from ftassist.train.planner import Plan


def test_every_element_is_dropped_at_the_rate_and_the_kept_ones_are_scaled():
    """Each of the four 16-bit lanes of a 64-bit draw drops at p (a lane stuck at one sign would not), the kept
    elements carry 1/(1-p), so the mean is kept, and the gradient flows through the kept elements only."""
    torch.manual_seed(1)
    drop = FastDropout(0.1)
    x = torch.ones(200_000, 8, requires_grad=True)
    y = drop(x)
    dropped = (y == 0).float()
    lanes = dropped.reshape(-1, 4).mean(0)
    assert torch.all((lanes - 0.1).abs() < 0.005), lanes
    scale = torch.tensor(1 / (1 - drop.rate))  # drop.rate: p to within 1/131072 (a 16-bit threshold)
    assert abs(drop.rate - 0.1) < 1 / 131072
    assert set(torch.unique(y).tolist()) == {0.0, scale.item()}
    assert abs(y.mean().item() - 1.0) < 0.005
    y.sum().backward()
    assert torch.equal(x.grad, (y != 0).float() * scale)


def test_the_same_seed_draws_the_same_masks_and_eval_mode_drops_nothing():
    x = torch.randn(3, 70, 16, dtype=torch.bfloat16)
    torch.manual_seed(5)
    first = FastDropout(0.05)(x)
    torch.manual_seed(5)
    assert torch.equal(first, FastDropout(0.05)(x))
    assert first.dtype == torch.bfloat16 and first.shape == x.shape
    assert torch.equal(FastDropout(0.05).eval()(x), x)


def test_a_cpu_trainer_drops_lora_inputs_with_fast_dropout(tiny_model, small_data, tmp_path):
    """The trainer every CPU stage builds swaps each LoRA layer's `nn.Dropout` (none is left behind); with
    lora_dropout 0 peft's `nn.Identity` stays."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    dataset = Dataset.from_list(read_jsonl(small_data / "train.jsonl"))
    plan = Plan("lora", "cpu", "float32", 2, 1, False, 256, 1.0, 10.0, "test")
    for p, kind in ((0.1, FastDropout), (0.0, nn.Identity)):
        cfg = TrainConfig(data=str(small_data), out=str(tmp_path / f"run{p}"), model=str(tiny_model), lora_dropout=p,
                          max_steps=1, report_to="none")
        trainer, _ = assembly.build_trainer(cfg, plan, cfg.model, tokenizer, dataset, Path(cfg.out), None, False)
        drops = [d for m in trainer.model.modules() if isinstance(getattr(m, "lora_dropout", None), nn.ModuleDict)
                 for d in m.lora_dropout.values()]
        assert drops and all(type(d) is kind for d in drops), {type(d) for d in drops}
        if kind is FastDropout:
            assert all(d.p == 0.1 for d in drops)
            assert use_fast_dropout(trainer.model) == 0  # nothing left to swap
