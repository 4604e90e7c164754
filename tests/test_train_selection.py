"""Selection by the task metric on the tiny model: scored at the interval, best kept, plateau, time budget, search."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from ftassist.config import TrainConfig
from ftassist.train.trainer import train
from ftassist.train.search import CANDIDATES, Candidate, search


def _cfg(data: Path, out: Path, model: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), model=str(model), max_steps=8, save_steps=2, eval_steps=2, batch_size=4,
                grad_accum=1, learning_rate=2e-3, seed=7)
    return TrainConfig(**{**base, **kw})


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def plant_scores(monkeypatch, scores: dict[str, float]) -> None:
    """The search reads candidate NAME's validation rows with field accuracy `scores[NAME]` (loss and all else as
    trained): on the tiny random model every setting scores about the same, so the plant decides which is better."""
    import ftassist.train.search as search_module

    real = search_module.read_jsonl

    def planted(path):
        rows, path = real(path), Path(path)
        if path.name != "metrics.jsonl" or path.parent.name not in scores:
            return rows
        return [{**r, "val_field_accuracy": scores[path.parent.name]} if "val_loss" in r else r for r in rows]

    monkeypatch.setattr(search_module, "read_jsonl", planted)


def _untrained_val(small_data: Path, model: Path) -> Path:
    """A validation file whose references are the untrained model's own greedy replies (24 tokens, free text).

    The first step trains at learning rate 0 (warm-up), so the evaluation at step 1 sees the untrained model
    and its replies start with the references (ROUGE-L near 1); training then moves the replies away.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftassist.train.validation import generate_replies

    rows = [json.loads(line) for line in (small_data / "train.jsonl").read_text().splitlines()][:8]
    prompts = [r["messages"][:-1] for r in rows]
    replies = generate_replies(AutoModelForCausalLM.from_pretrained(model).eval(), AutoTokenizer.from_pretrained(model),
                               prompts, 24)
    path = small_data.parent / "val_untrained.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for prompt, reply in zip(prompts, replies):
            fh.write(json.dumps({"messages": prompt + [{"role": "assistant", "content": reply}]}) + "\n")
    return path


def test_validation_is_scored_at_the_interval_and_lands_in_metrics(tiny_model, small_data, tmp_path):
    run = tmp_path / "run"
    result = train(_cfg(small_data, run, tiny_model), progress=False)
    evals = [r for r in _rows(run) if "val_loss" in r]
    assert [r["step"] for r in evals] == [2, 4, 6, 8]
    for r in evals:
        assert r["val_rows"] == 8 and set(r["val_per_field"]) == {"category", "priority", "sentiment", "order_id", "amount", "products"}
        assert 0.0 <= r["val_field_accuracy"] <= 1.0 and r["val_loss"] > 0
    # The held-out rows are written, are not trained on, and the loss rows still count every step.
    held = (run / "val.jsonl").read_text().splitlines()
    assert len(held) == 8 and json.loads((run / "run.json").read_text())["n_examples"] == 40
    assert [r["step"] for r in _rows(run) if "loss" in r] == list(range(1, 9))
    assert result.selection["step"] in (2, 4, 6, 8) and "kept step" in result.summary


def test_the_kept_adapter_is_the_best_step_not_the_last(tiny_model, small_data, tmp_path):
    run = tmp_path / "run"
    result = train(_cfg(small_data, run, tiny_model, val_data=str(_untrained_val(small_data, tiny_model)), eval_steps=1,
                        save_steps=1, save_total_limit=10, early_stopping_patience=0), progress=False)
    scores = [r["val_rougeL"] for r in _rows(run) if "val_loss" in r]
    assert len(scores) == 8 and scores[0] > max(scores[1:])  # the construction: training moves away from the references
    info = json.loads((run / "run.json").read_text())
    assert info["selection"]["step"] == 1 and info["selection"]["last_step"] == 8 and result.selection["step"] == 1
    kept = load_file(run / "adapter" / "adapter_model.safetensors")
    at_best = load_file(run / "checkpoints" / "checkpoint-1" / "adapter_model.safetensors")
    last = load_file(run / "checkpoints" / "checkpoint-8" / "adapter_model.safetensors")
    assert all(torch.equal(kept[k], at_best[k]) for k in kept)
    assert any(not torch.equal(kept[k], last[k]) for k in kept)


def test_early_stopping_fires_on_a_plateau(tiny_model, small_data, tmp_path):
    run = tmp_path / "run"
    result = train(_cfg(small_data, run, tiny_model, max_steps=40, eval_steps=1, early_stopping_patience=2,
                        val_data=str(_untrained_val(small_data, tiny_model))), progress=False)
    # The untrained replies are best (steps 1-2 barely move the weights: warm-up), then two evaluations that do not
    # beat it stop the run, far before the 40-step budget.
    assert result.selection["step"] <= 2 and result.steps == result.selection["step"] + 2
    assert result.selection["stopped"].startswith("plateau: 2 evaluations")


def test_the_time_budget_stops_training_and_checkpoints_where_it_stopped(tiny_model, small_data, tmp_path):
    run = tmp_path / "run"
    result = train(_cfg(small_data, run, tiny_model, max_steps=40, save_steps=50, time_budget=0.0001), progress=False)
    assert result.steps == 1 and result.selection["stopped"].startswith("time budget of")
    assert (run / "checkpoints" / "checkpoint-1").is_dir()  # resumable from exactly there


def test_a_budget_too_short_for_the_search_is_refused_before_training(tiny_model, small_data, tmp_path):
    import pytest

    from ftassist.errors import UserError

    with pytest.raises(UserError, match=f"too short to search {len(CANDIDATES)} settings"):
        search(_cfg(small_data, tmp_path / "s", tiny_model, time_budget=0.5))
    assert not (tmp_path / "s" / "candidates").exists()


def test_search_respects_its_time_budget_and_keeps_the_best_by_the_task_metric(tiny_model, small_data, tmp_path,
                                                                               monkeypatch):
    out = tmp_path / "search"
    cands = (Candidate("slow", {"learning_rate": 1e-5}), Candidate("fast", {"learning_rate": 3e-3}),
             Candidate("mid", {"learning_rate": 5e-4}))
    # "mid" is the best by the task metric, "slow" second: neither the first tried nor the last.
    plant_scores(monkeypatch, {"slow": 0.5, "fast": 0.1, "mid": 0.9})
    budget_min = 2.0
    # Steps beyond what any host reaches in the budget: the clock, not the step cap, ends every call.
    result = search(_cfg(small_data, out, tiny_model, max_steps=100_000, eval_steps=2, save_steps=100,
                         time_budget=budget_min), cands)
    record = json.loads((out / "search.json").read_text())
    # The first calls' loading and last evaluation come on top of their shares (later shares leave room for it).
    assert budget_min * 60 * 0.75 <= record["wall_s"] <= budget_min * 60 + 20  # the budget is used, not left unspent
    assert [r["candidates"] for r in record["rungs"]] == [3, 2, 1]
    # halving: all 3 in order, then the best 2 best first, then the best 1
    assert [(r["name"], r["rung"]) for r in record["rows"]] == [("slow", 0), ("fast", 0), ("mid", 0), ("mid", 1),
                                                                 ("slow", 1), ("mid", 2)]
    assert [r["kept"] for r in record["rows"] if r["rung"] == 0] == [True, False, True]
    assert result.winner == record["winner"] == "mid"
    assert not (out / "candidates" / "fast" / "checkpoints").exists()  # out after rung 0
    assert not (out / "candidates" / "slow" / "checkpoints").exists()  # out after rung 1
    table = (out / "search.md").read_text()
    assert "Winner: `mid`" in table
    winner_rows = [line for line in table.splitlines() if line.endswith("| winner |")]
    assert len(winner_rows) == 1 and winner_rows[0].startswith("| mid | 2 |")
    # OUT is the winner's run: its adapter, byte for byte
    adopted = (out / "adapter" / "adapter_model.safetensors").read_bytes()
    assert adopted == (out / "candidates" / "mid" / "adapter" / "adapter_model.safetensors").read_bytes()
    assert adopted != (out / "candidates" / "slow" / "adapter" / "adapter_model.safetensors").read_bytes()
    assert (out / "run.json").read_bytes() == (out / "candidates" / "mid" / "run.json").read_bytes()


def test_a_search_whose_calls_cost_more_than_the_budget_affords_cuts_its_field_and_gives_the_rest_to_the_first(
        tiny_model, small_data, tmp_path, monkeypatch):
    import ftassist.train.search as search_module

    # Demand that each rung-0 share be 1000x a call's measured cost: no field of 2 or more affords that.
    monkeypatch.setattr(search_module, "MIN_SHARE_OF_OVERHEAD", 1000.0)
    out = tmp_path / "search"
    cands = (Candidate("first", {"learning_rate": 1e-3}), Candidate("second", {"learning_rate": 5e-4}),
             Candidate("third", {"learning_rate": 2e-4}))
    budget_min = 1.5
    result = search(_cfg(small_data, out, tiny_model, max_steps=400, eval_steps=2, save_steps=100, time_budget=budget_min),
                    cands)
    record = json.loads((out / "search.json").read_text())
    assert [d["name"] for d in record["not_tried"]] == ["second", "third"] and result.winner == "first"
    assert "Not tried: second (each call costs" in (out / "search.md").read_text()
    # The first setting trains on with what is left (resumed), rather than the search stopping with time unspent.
    assert [(r["name"], r["rung"]) for r in record["rows"]] == [("first", 0), ("first", 1)]
    assert record["rows"][1]["steps"] > record["rows"][0]["steps"]
    assert record["wall_s"] <= budget_min * 60 + 20


def test_the_measuring_copy_answers_like_the_adapter_and_leaves_its_weights_alone(tiny_model, small_data):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftassist.train.validation import generate_replies, load_validation, measuring_copy, score_model

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    with torch.no_grad():  # a non-zero adapter, so folding it in matters
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    twin = measuring_copy(model)
    assert twin is not model and not hasattr(twin, "peft_config")  # a merged plain model
    rows = [json.loads(line) for line in (small_data / "train.jsonl").read_text().splitlines()][:6]
    prompts = [r["messages"][:-1] for r in rows]
    model.eval()
    with torch.no_grad():
        assert generate_replies(twin.eval(), tok, prompts, 16) == generate_replies(model, tok, prompts, 16)
    model.train()
    val = load_validation(small_data / "train.jsonl", None, "test")
    metrics, scores = score_model(model, tok, val, max_new_tokens=8)
    assert model.training and len(scores) == len(val.examples) and metrics["loss"] > 0
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


def test_the_learning_rate_decays_to_zero_by_the_end_of_the_time_budget(tiny_model, small_data, tmp_path):
    run = tmp_path / "run"
    result = train(_cfg(small_data, run, tiny_model, max_steps=100_000, eval_steps=100_000, save_steps=100_000,
                        logging_steps=1, time_budget=0.1), progress=False)
    lrs = [r["lr"] for r in _rows(run) if "loss" in r]
    assert result.selection["stopped"].startswith("time budget of 0.1 min") and result.steps < 10_000
    # A schedule planned for the step budget alone would still be at the peak (under 10% of the steps done);
    # this one warmed up, then decayed with the clock to nearly zero when the budget ran out.
    assert max(lrs) > 0.9 * 2e-3 and lrs[-1] < 0.1 * 2e-3
    assert all(b <= a for a, b in zip(lrs[lrs.index(max(lrs)):], lrs[lrs.index(max(lrs)) + 1:]))
    assert "decays linearly to zero at step 100000 or at the end of the 0.1 min budget" in \
        json.loads((run / "run.json").read_text())["budget"]["explanation"]


def test_the_time_budget_also_stops_a_run_without_a_validation_split(tiny_model, small_data, tmp_path):
    run = tmp_path / "run"
    result = train(_cfg(small_data, run, tiny_model, max_steps=100_000, save_steps=100_000, logging_steps=1,
                        task_metric=False, time_budget=0.05), progress=False)
    assert 1 <= result.steps < 10_000 and result.selection is None
    assert (run / "checkpoints" / f"checkpoint-{result.steps}").is_dir()  # resumable from where the clock stopped it
    lrs = [r["lr"] for r in _rows(run) if "loss" in r]
    assert lrs[-1] < 0.1 * max(lrs)  # decayed with the clock, not with the 100,000-step plan
    counted = [r["elapsed_s"] for r in _rows(run) if "loss" in r]
    assert counted == sorted(counted) and counted[-1] >= 0.05 * 60  # each row: the training seconds the clock counted

    # Resumed, it counts on from there: the budget is already spent, so one more step and it stops again.
    again = train(_cfg(small_data, run, tiny_model, max_steps=100_000, save_steps=100_000, logging_steps=1,
                       task_metric=False, time_budget=0.05), resume=True, progress=False)
    assert again.steps == result.steps + 1
    assert _rows(run)[-1]["elapsed_s"] >= counted[-1]
