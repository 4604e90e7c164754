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


def _batch(trainer, rows=range(4)):
    features = [{k: trainer.train_dataset[i][k] for k in ("input_ids", "labels")} for i in rows]
    return trainer.data_collator(features)


def _inputs(batch) -> dict:
    """What compute_loss hands the model: the batch without its labels."""
    return {k: v for k, v in batch.items() if k != "labels"}


def test_the_shared_prompt_prefix_runs_once_with_the_same_loss_and_gradients(tiny_model, small_data, tmp_path):
    from ftassist.train.loss import reply_positions

    trainer = _trainer(tiny_model, small_data, tmp_path / "run")
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    batch = _batch(trainer)
    keep = reply_positions(batch["labels"])
    prefix = trainer._shared_prefix(_inputs(batch), keep)
    # every example row starts with the same system prompt: that many tokens run once, all before the first reply token
    assert 16 <= prefix <= int(keep.min())
    assert (batch["input_ids"][:, :prefix] == batch["input_ids"][0, :prefix]).all()
    assert not (batch["input_ids"][:, prefix] == batch["input_ids"][0, prefix]).all()
    trainer.model.train()
    calls = []
    hook = trainer.model.register_forward_pre_hook(lambda mod, args, kw: calls.append(kw["input_ids"].shape),
                                                   with_kwargs=True)
    try:
        trainer.share_prefix = True
        shared, shared_grads = _loss_and_grads(trainer, batch, None)
    finally:
        hook.remove()
    assert trainer.prefix_check.verdict is True  # the first shared batch was checked against the plain forward
    width = batch["input_ids"].shape[1]
    assert calls[:2] == [torch.Size([1, prefix]), torch.Size([4, width - prefix])]  # the prefix once, then each row's rest
    trainer.share_prefix = False
    plain, plain_grads = _loss_and_grads(trainer, batch, None)
    assert shared == pytest.approx(plain, rel=1e-5) and plain > 1.0
    for name, grad in plain_grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-4, atol=1e-6)


def test_the_prefix_is_not_shared_where_it_cannot_be(tiny_model, small_data, tmp_path):
    from ftassist.train.loss import reply_positions

    trainer = _trainer(tiny_model, small_data, tmp_path / "run")
    batch = _batch(trainer)
    keep = reply_positions(batch["labels"])
    assert trainer._shared_prefix(_inputs(batch), keep) > 0
    one = _batch(trainer, rows=[0])
    assert trainer._shared_prefix(_inputs(one), reply_positions(one["labels"])) == 0  # one row: nothing shared
    trainer.args.gradient_checkpointing = True  # checkpointing turns the cache off
    assert trainer._shared_prefix(_inputs(batch), keep) == 0
    trainer.args.gradient_checkpointing = False
    trainer.prefix_check.decide(1.5, 1.0)  # a model whose shared loss disagreed on its first batch keeps the plain forward
    assert trainer.prefix_check.verdict is False
    assert trainer._shared_prefix(_inputs(batch), keep) == 0
    trainer.prefix_check.decide(1.0, 1.0)  # the first verdict stands
    assert trainer.prefix_check.verdict is False


def test_training_with_the_shared_prefix_takes_the_same_steps(tiny_model, small_data, tmp_path):
    runs = {}
    for share in (False, True):
        trainer = _trainer(tiny_model, small_data, tmp_path / f"run-{share}", group_by_length=False, share_prefix=share)
        assert trainer.share_prefix is share
        trainer.train()
        runs[share] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(runs[True]) == 4
    assert runs[True] == pytest.approx(runs[False], abs=1e-4)
