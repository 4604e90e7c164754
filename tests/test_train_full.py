"""Full fine-tuning (`--method full`) on the tiny model: every weight trains, the run leaves model/, checkpoints
resume, merge and the parity gate read it, the search tries it, and the reward stages refuse it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ftassist.config import MergeConfig, TrainConfig
from ftassist.errors import ConfigError
from ftassist.train import checkpoints
from ftassist.train.trainer import train


def full_cfg(data: Path, out: Path, model: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), model=str(model), method="full", max_steps=6, save_steps=3, batch_size=4,
                grad_accum=1, learning_rate=1e-3, eval_steps=3, seed=7, report_to="none")
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def full_run(tiny_model, tmp_path_factory) -> Path:
    from tests.conftest import write_small_data

    root = tmp_path_factory.mktemp("full")
    data = write_small_data(root / "data")
    train(full_cfg(data, root / "run", tiny_model), progress=False)
    return root / "run"


def test_full_fine_tuning_trains_every_weight_and_leaves_the_model_folder(full_run, tiny_model):
    from ftassist.train.weights import trained_weights

    assert trained_weights(full_run) == full_run / "model" and not (full_run / "adapter").exists()
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in (full_run / "model").iterdir()}
    tuned, base = load_file(full_run / "model" / "model.safetensors"), load_file(tiny_model / "model.safetensors")
    assert set(tuned) == set(base) and not any("lora" in k for k in tuned)
    changed = [k for k in base if not torch.equal(tuned[k].float(), base[k].float())]
    assert len(changed) == len(base)  # every tensor moved (norms, embeddings and all linear layers)
    info = json.loads((full_run / "run.json").read_text())
    assert info["method"] == "full" and info["mergeable"] is True
    assert "every weight trained, float32 weights" in info["plan_explanation"]
    assert "gradients" in info["plan_explanation"] and info["selection"]["step"] in (0, 3, 6)
    ck = checkpoints.newest_checkpoint(full_run / "checkpoints")
    assert ck is not None and ck.name == "checkpoint-6" and (ck / "model.safetensors").is_file()


def test_a_full_run_resumes_from_its_checkpoint(full_run, tiny_model, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    data = Path(yaml.safe_load((run / "config.yaml").read_text())["data"])
    cfg = full_cfg(data, run, tiny_model, max_steps=9)
    result = train(cfg, resume=True, progress=False)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert result.steps == 9 and steps == list(range(1, 10))  # 1-6 kept from before, 7-9 trained after the resume
    assert checkpoints.newest_checkpoint(run / "checkpoints").name == "checkpoint-9"


def test_merge_and_the_parity_gate_read_a_full_run(full_run, tmp_path):
    from serving.merge import merge_adapter
    from serving.verify import verify_run

    merged = merge_adapter(MergeConfig(run_dir=str(full_run), out=str(tmp_path / "merged")))
    ours, theirs = load_file(full_run / "model" / "model.safetensors"), load_file(merged / "model.safetensors")
    assert set(ours) == set(theirs) and all(torch.equal(ours[k].float(), theirs[k].float()) for k in ours)
    assert (merged / "chat_template.jinja").read_text() == (full_run / "model" / "chat_template.jinja").read_text()
    report = verify_run(full_run, merged, limit=2, max_new_tokens=12, write=False)
    assert report.passed and report.agreement == {"merged_hf": 1.0}


def test_reward_stages_refuse_a_full_run_and_full_refuses_a_stage(full_run, tmp_path):
    with pytest.raises(ConfigError, match="is a full fine-tuning run"):
        TrainConfig(data="d", out=str(tmp_path / "dpo"), stage="dpo", from_run=str(full_run)).validate()
    with pytest.raises(ConfigError, match="--method full applies to --stage sft only"):
        TrainConfig(data="d", out=str(tmp_path / "dpo"), stage="grpo", method="full", from_run=str(full_run)).validate()


def test_the_search_tries_full_fine_tuning_on_small_models_only(tiny_model, small_data, tmp_path, monkeypatch):
    import ftassist.train.search as search_module
    from ftassist.train.search import CANDIDATES, fitting

    cfg = TrainConfig(data=str(small_data), out=str(tmp_path / "s"), model=str(tiny_model))
    kept, left = fitting(cfg, CANDIDATES)
    assert [c.name for c in kept] == [c.name for c in CANDIDATES] and left == []
    assert kept[1].overrides["method"] == "full"  # second: a field the budget cuts to two still compares it
    monkeypatch.setattr(search_module, "FULL_MAX_PARAMS", 1000)
    kept, left = fitting(cfg, CANDIDATES)
    assert all(c.overrides.get("method") != "full" for c in kept) and len(kept) == len(CANDIDATES) - 1
    assert left[0]["name"] == "full-lr1e-4" and "up to 1e-06B parameters" in left[0]["why"]


def test_a_search_won_by_full_fine_tuning_leaves_its_model_in_out(tiny_model, small_data, tmp_path):
    from ftassist.train.search import Candidate, search
    from serving.run_folder import read_run

    out = tmp_path / "search"
    (out / "adapter").mkdir(parents=True)  # a stale adapter of an earlier search must not shadow the winner
    (out / "adapter" / "adapter_config.json").write_text("{}")
    result = search(TrainConfig(data=str(small_data), out=str(out), model=str(tiny_model), max_steps=4, eval_steps=2,
                                batch_size=4, grad_accum=1, save_steps=100, time_budget=1.0, report_to="none"),
                    (Candidate("full", {"method": "full", "learning_rate": 1e-3}),))
    assert result.winner == "full" and not (out / "adapter").exists()
    assert read_run(out).full and read_run(out).weights_dir == out / "model"


def test_the_app_serves_a_full_run_alone_as_tuned(full_run, tiny_model, tmp_path):
    from ftassist_app.serve_step import served_models, serve_config
    from serving.registry import ServerRecord

    cfg = serve_config(str(tiny_model), str(full_run), tmp_path)
    assert (cfg.model, cfg.served_name, cfg.adapters) == (str(full_run / "model"), "tuned", {})
    assert "fully fine-tuned model as `tuned`" in served_models(str(full_run))
    assert ServerRecord("http://127.0.0.1:1/v1", "k", ["tuned"], 1).tuned == "tuned"
    assert ServerRecord("http://127.0.0.1:1/v1", "k", ["base"], 1).tuned is None


def test_resuming_a_full_run_as_lora_is_refused_with_the_method_to_use(full_run, tiny_model, tmp_path):
    import shutil

    from ftassist.errors import UserError

    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    data = Path(yaml.safe_load((run / "config.yaml").read_text())["data"])
    with pytest.raises(UserError, match="is a full fine-tuning checkpoint but this run is set to --method lora.*--method full"):
        train(full_cfg(data, run, tiny_model, method="lora", max_steps=9), resume=True, progress=False)


def test_the_plan_counts_every_weight_for_full_fine_tuning():
    from ftassist.train.planner import ModelShape, estimate_memory

    shape = ModelShape(vocab=49152, hidden=576, layers=30, intermediate=1536, heads=9, kv_heads=3, tied_embeddings=True)
    kw = dict(seq_len=256, micro_batch=8, lora_r=16, compute_bytes=4, weight_bytes=4)
    lora, full = estimate_memory(shape, **kw), estimate_memory(shape, **kw, full=True)
    assert (full.weights, full.lora, full.optimizer) == (4 * shape.params, 4 * shape.params, 8 * shape.params)
    assert lora.optimizer == 8 * shape.lora_params(16) < full.optimizer
    assert full.activations == lora.activations
    half = estimate_memory(shape, **{**kw, "compute_bytes": 2}, full=True)
    assert half.weights == 6 * shape.params  # float32 weights and autocast's bf16 copies


def test_a_setting_that_does_not_fit_is_left_out_of_the_search_and_losers_lose_their_checkpoints(
        tiny_model, small_data, tmp_path, monkeypatch):
    import ftassist.train.trainer as trainer_module
    from ftassist.train.planner import PlanDoesNotFit
    from ftassist.train.search import Candidate, search
    from tests.test_train_selection import plant_scores

    real = trainer_module.plan_training

    def plan(*args, **kw):
        if kw["method"] == "full":  # as a machine without the memory for a whole model's optimizer would say
            raise PlanDoesNotFit("training does not fit: even micro-batch 1 needs about 99 GiB")
        return real(*args, **kw)

    monkeypatch.setattr(trainer_module, "plan_training", plan)
    plant_scores(monkeypatch, {"a": 0.2, "b": 0.7})  # "b", the second tried, is the better by the task metric
    out = tmp_path / "search"
    cands = (Candidate("a", {"learning_rate": 1e-3}), Candidate("full", {"method": "full"}),
             Candidate("b", {"learning_rate": 1e-5}))
    result = search(TrainConfig(data=str(small_data), out=str(out), model=str(tiny_model), max_steps=200, eval_steps=2,
                                batch_size=4, grad_accum=1, save_steps=2, time_budget=1.5, report_to="none"), cands)
    record = json.loads((out / "search.json").read_text())
    assert [d["name"] for d in record["not_tried"]] == ["full"] and "does not fit this machine" in record["not_tried"][0]["why"]
    # the rungs were planned for 3 settings (3, 2, 1): both that fit go on to rung 1, best first, and "b" alone to 2
    assert [(r["name"], r["rung"]) for r in record["rows"]] == [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("b", 2)]
    assert result.winner == record["winner"] == "b"
    assert not (out / "candidates" / "a" / "checkpoints").exists()  # never resumed again, so not kept
    assert (out / "candidates" / "b" / "checkpoints").is_dir()
    assert "Not tried: full (it does not fit this machine" in (out / "search.md").read_text()
