"""On CPU the trainer takes the model's own cross-entropy instead of trl's tiled LM head: same loss, same steps.

`ftassist.train.loss` explains why (trl's head is ~4x slower without Triton). These tests hold the
two paths to the same numbers on the tiny model: one batch's loss (with and without
`num_items_in_batch`), its gradients, trl's token count, and a short training run step by step.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ftassist.config import TrainConfig
from ftassist.train import trainer as training
from ftassist.train.dataset import as_dataset, load_split
from ftassist.train.planner import Plan


def _trainer(tiny_model: Path, data: Path, out: Path, **kw):
    from transformers import AutoTokenizer

    # No LoRA dropout, so a train-mode forward is deterministic and both paths see the same network.
    cfg = TrainConfig(data=str(data), out=str(out), model=str(tiny_model), max_steps=4, save_steps=1000, batch_size=4,
                      grad_accum=2, learning_rate=2e-3, seed=7, lora_dropout=0.0, **kw)
    plan = Plan("lora", "cpu", "float32", cfg.batch_size, cfg.grad_accum, False, 256, 1.0, 10.0, "test")
    tok = AutoTokenizer.from_pretrained(tiny_model)
    trainer, _ = training.build_trainer(cfg, plan, cfg.model, tok, as_dataset(load_split(data)), out, None, False)
    return trainer


def _loss_and_grads(trainer, batch: dict, num_items):
    model = trainer.model
    model.zero_grad()
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=num_items)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.item(), grads


def test_cpu_loss_equals_trls_tiled_head_on_one_batch(tiny_model, small_data, tmp_path):
    trainer = _trainer(tiny_model, small_data, tmp_path / "run")
    assert trainer.plain_loss  # CPU, plain nll: the plain path is taken
    with torch.no_grad():  # B starts at zero; make the adapter non-trivial so every LoRA gradient is exercised
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    features = [{k: trainer.train_dataset[i][k] for k in ("input_ids", "labels")} for i in range(4)]
    batch = trainer.data_collator(features)
    assert (batch["labels"] == -100).any() and (batch["attention_mask"] == 0).any()  # prompt and padding masked
    trainer.model.train()
    valid = int((batch["labels"][:, 1:] != -100).sum())

    for num_items in (None, torch.tensor(3 * valid)):  # alone, and as one micro-batch of an accumulated step
        trainer.plain_loss = False
        before = trainer._total_train_tokens
        trl_loss, trl_grads = _loss_and_grads(trainer, batch, num_items)
        trl_counted = trainer._total_train_tokens - before
        trainer.plain_loss = True
        before = trainer._total_train_tokens
        ours, our_grads = _loss_and_grads(trainer, batch, num_items)
        assert trainer._total_train_tokens - before == trl_counted == int(batch["attention_mask"].sum())
        assert trainer._metrics["train"]["num_tokens"] == [trainer._total_train_tokens]

        assert ours == pytest.approx(trl_loss, abs=1e-5)
        assert trl_loss > 1.0  # a real loss (random tiny model over a 1k vocabulary), not a degenerate zero
        assert our_grads.keys() == trl_grads.keys() and len(our_grads) == 2 * 7 * 2
        for name, grad in our_grads.items():
            assert grad.abs().sum() > 0, name
            torch.testing.assert_close(grad, trl_grads[name], rtol=1e-4, atol=1e-6)


def test_training_takes_the_same_steps_on_either_path(tiny_model, small_data, tmp_path):
    runs = {}
    for plain in (False, True):
        trainer = _trainer(tiny_model, small_data, tmp_path / f"run-{plain}", group_by_length=False)
        trainer.plain_loss = plain
        trainer.train()
        rows = [h for h in trainer.state.log_history if "loss" in h]
        runs[plain] = {"loss": [r["loss"] for r in rows], "tokens": [r["num_tokens"] for r in rows]}
    assert len(runs[True]["loss"]) == 4
    assert runs[True]["tokens"] == runs[False]["tokens"] and runs[True]["tokens"][0] > 0
    assert runs[True]["loss"] == pytest.approx(runs[False]["loss"], abs=1e-4)
    assert runs[True]["loss"][-1] < runs[True]["loss"][0]  # and it learns
