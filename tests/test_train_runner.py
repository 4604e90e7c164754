"""train() on the tiny model: labels, files written, learning, frozen base, NaN guard."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ftassist.config import TrainConfig, load_config
from ftassist.errors import UserError
from ftassist.train.planner import Plan
from ftassist.train.trainer import TrainingFailed, build_trainer, train


def tiny_cfg(data: Path, out: Path, model: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), model=str(model), max_steps=8, save_steps=4, batch_size=4,
                grad_accum=1, learning_rate=2e-3, seed=7)
    return TrainConfig(**{**base, **kw})


def test_labels_cover_only_the_assistant_reply_and_its_end_of_turn(tiny_model, small_data, tmp_path):
    from transformers import AutoTokenizer

    from ftassist.train.dataset import as_dataset, load_split

    tok = AutoTokenizer.from_pretrained(tiny_model)
    cfg = tiny_cfg(small_data, tmp_path / "run", tiny_model)
    plan = Plan("lora", "cpu", "float32", 4, 1, False, 256, 1.0, 10.0, "test")
    dataset = as_dataset(load_split(small_data))
    trainer, _ = build_trainer(cfg, plan, str(tiny_model), tok, dataset, tmp_path / "run", None, False)
    rows = [json.loads(line) for line in (small_data / "train.jsonl").read_text().splitlines()]
    for i in range(5):
        ex = trainer.train_dataset[i]
        reply = rows[i]["messages"][-1]["content"]
        kept = [t for t in ex["labels"] if t != -100]
        # The learned tokens are exactly the reply plus the template's end of turn: the model learns to stop.
        assert tok.decode(kept) == reply + "<|im_end|>\n"
        assert tok.eos_token_id in kept and tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id
        # Everything before the reply (system, user, "<|im_start|>assistant\n") is masked.
        first = next(j for j, t in enumerate(ex["labels"]) if t != -100)
        assert tok.decode(ex["input_ids"][:first]).endswith("<|im_start|>assistant\n")
        assert all(t == -100 for t in ex["labels"][:first])
        assert ex["labels"][first:] == ex["input_ids"][first:]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_train_writes_the_run_folder_learns_and_leaves_the_base_untouched(tiny_model, small_data, tmp_path):
    base_hash = _sha(tiny_model / "model.safetensors")
    run = tmp_path / "run"
    # The plain path (--no-task-metric): no validation split, the last step is kept. The selection path is
    # tested in test_train_selection.py.
    cfg = tiny_cfg(small_data, run, tiny_model, task_metric=False)
    result = train(cfg, progress=False)
    assert result.selection is None

    assert result.run_dir == run and result.weights_dir == run / "adapter"
    assert sorted(p.name for p in run.iterdir()) == [
        "adapter", "checkpoints", "config.yaml", "metrics.jsonl", "run.json", "status.json", "train.log"]
    adapter_files = {p.name for p in (run / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja"} <= adapter_files
    from tests.tiny import CHATML

    assert (run / "adapter" / "chat_template.jinja").read_text() == CHATML
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir()) == ["checkpoint-4", "checkpoint-8"]
    assert not any(p.name.startswith(".") for p in (run / "checkpoints").iterdir())

    assert load_config(TrainConfig, run / "config.yaml") == cfg
    info = json.loads((run / "run.json").read_text())
    assert info["base_model"] == str(tiny_model.resolve())
    assert (info["method"], info["dtype"], info["device"], info["mergeable"]) == ("lora", "float32", "cpu", True)
    assert {"torch", "transformers", "peft", "trl"} <= set(info["versions"]) and info["plan_explanation"]
    status = json.loads((run / "status.json").read_text())
    assert (status["state"], status["step"], status["total_steps"], status["mergeable"]) == ("completed", 8, 8, True)

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert {"step", "loss", "grad_norm", "lr", "tokens_per_s", "eta_s", "epoch"} <= set(rows[0])
    assert all(r["tokens_per_s"] > 0 for r in rows)
    losses = [r["loss"] for r in rows]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05
    assert result.first_loss == losses[0] and result.final_loss == losses[-1]

    final = load_file(run / "adapter" / "adapter_model.safetensors")
    early = load_file(run / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors")
    assert final and all("lora_A" in k or "lora_B" in k for k in final)  # nothing but LoRA was trained
    assert len(final) == 2 * 7 * 2  # A and B for all 7 linear layers of both blocks (all-linear)
    for key, value in final.items():
        assert torch.isfinite(value).all()
        assert not torch.equal(value, early[key]), f"{key} did not change between step 4 and 8"
        if "lora_B" in key:
            assert value.abs().sum() > 0  # B starts at zero: non-zero means it trained
    assert _sha(tiny_model / "model.safetensors") == base_hash

    # The adapter loads onto the base and runs in eval mode.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), run / "adapter").eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


def test_injected_nan_stops_the_run_and_marks_it_not_mergeable(tiny_model, small_data, tmp_path):
    run = tmp_path / "nan"
    with pytest.raises(TrainingFailed, match="nan"):
        train(tiny_cfg(small_data, run, tiny_model, max_steps=20, save_steps=3, debug_nan_at_step=4), progress=False)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "nan" in status["reason"] and status["mergeable"] is False
    assert json.loads((run / "run.json").read_text())["mergeable"] is False
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] <= 4 + 2 and rows[-1]["loss"] == "nan"
    assert not (run / "adapter").exists()
    # The checkpoint left to resume from predates the poison.
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir()) == ["checkpoint-3"]


def test_bad_rows_fail_before_the_model_loads(small_data, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(UserError, match="row 1.*assistant"):
        train(TrainConfig(data=str(bad), out=str(tmp_path / "run"), model=str(tmp_path / "nope")), progress=False)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and "row 1" in status["reason"]


def test_out_of_memory_halves_the_micro_batch_and_resumes_from_the_newest_checkpoint(tiny_model, small_data, tmp_path,
                                                                                     monkeypatch):
    """The runner's own retry loop, run: an out-of-memory error at step 3 (raised as CUDA raises it) is caught,
    the micro-batch halved and the gradient accumulation doubled, and training resumes from checkpoint-2."""
    from transformers import TrainerCallback

    from ftassist.train import trainer as training

    class OutOfMemoryOnce(TrainerCallback):
        raised = False

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 2 and not OutOfMemoryOnce.raised:
                OutOfMemoryOnce.raised = True
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    real = training.build_trainer
    plans = []

    def build(cfg, plan, *args, extra_callbacks=(), **kw):
        plans.append((plan.micro_batch, plan.grad_accum))
        return real(cfg, plan, *args, extra_callbacks=[*extra_callbacks, OutOfMemoryOnce()], **kw)

    monkeypatch.setattr(training, "build_trainer", build)
    run = tmp_path / "run"
    result = train(tiny_cfg(small_data, run, tiny_model, max_steps=6, save_steps=2, batch_size=4, grad_accum=1), progress=False)
    assert plans == [(4, 1), (2, 2)] and result.steps == 6
    info = json.loads((run / "run.json").read_text())
    assert (info["plan"]["micro_batch"], info["plan"]["grad_accum"], info["mergeable"]) == (2, 2, True)
    assert "retrying with 2 x 2" in (run / "train.log").read_text()
    steps = [r["step"] for r in (json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == list(range(1, 7))  # steps 1-2 kept from before the error, 3-6 after the resume
