"""The reward stages after SFT (--stage dpo|grpo --from RUN_DIR) on a tiny model that half-knows a toy JSON task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ftassist.config import TrainConfig
from ftassist.errors import ConfigError, UserError
from ftassist.evaluation.metrics import make_validator, score_reply
from ftassist.train.reward import DEFAULT_WEIGHTS, reward_funcs, reward_parts, total_reward
from ftassist.train.trainer import train
from tests.tiny import build_tiny_llama

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}, "required": ["a", "b"],
          "additionalProperties": False}


def _row(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"item {i}"},
                         {"role": "assistant", "content": json.dumps({"a": i % 3, "b": "x"})}]}


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict:
    """A tiny model with sharp logits, trained 20 steps on 40 rows of `{"a": i % 3, "b": "x"}`: it has the format
    and some of the values (greedy right on some rows, wrong on others; sampled replies vary)."""
    root = tmp_path_factory.mktemp("toy")
    model = build_tiny_llama(root / "model", init_std=0.3)
    data = root / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(_row(i)) + "\n" for i in range(48)), encoding="utf-8")
    (data / "test.jsonl").write_text("".join(json.dumps(_row(i)) + "\n" for i in range(48, 54)), encoding="utf-8")
    (data / "schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    sft = train(TrainConfig(data=str(data), out=str(root / "sft"), model=str(model), max_steps=20, eval_steps=20,
                            batch_size=8, grad_accum=1, learning_rate=1e-2, lora_dropout=0.0, seed=7, report_to="none"),
                progress=False)
    return {"root": root, "model": model, "data": data, "sft": sft.run_dir}


def _stage(toy: dict, out: Path, stage: str, **kw) -> TrainConfig:
    base = dict(data=str(toy["data"]), out=str(out), model=str(toy["model"]), stage=stage, from_run=str(toy["sft"]),
                max_steps=4, save_steps=2, eval_steps=2, batch_size=4, grad_accum=1, seed=7, report_to="none")
    return TrainConfig(**{**base, **kw})


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _changed(a: Path, b: Path) -> list[str]:
    """The adapter tensors that differ between two adapter folders (same keys asserted)."""
    x, y = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert x.keys() == y.keys()
    return [k for k in x if not torch.equal(x[k], y[k])]


def test_the_reward_scores_fixed_replies_exactly():
    v = make_validator(SCHEMA)
    ref = {"a": 2, "b": "x"}
    assert reward_parts("I cannot help with that.", ref, v) == dict.fromkeys(DEFAULT_WEIGHTS, 0.0)
    # Valid JSON, wrong schema (a string where an integer belongs): parses, fails the schema, half the fields right.
    assert reward_parts('{"a": "2", "b": "x"}', ref, v) == {"json": 1.0, "schema": 0.0, "fields": 0.5, "exact": 0.0, "length": 0.0}
    assert reward_parts('{"a": 1, "b": "x"}', ref, v) == {"json": 1.0, "schema": 1.0, "fields": 0.5, "exact": 0.0, "length": 0.0}
    right = reward_parts('{"a": 2, "b": "x"}', ref, v)
    assert right == {"json": 1.0, "schema": 1.0, "fields": 1.0, "exact": 1.0, "length": 0.0}
    assert total_reward(right, DEFAULT_WEIGHTS) == 5.0
    # A right object followed by chatter: an 18-character reference, a 26-character reply: 26/18 - 1 - 0.25 over.
    long = reward_parts('{"a": 2, "b": "x"} Thanks!', ref, v)
    assert long["exact"] == 1.0 and long["length"] == pytest.approx(-(26 / 18 - 1.25))
    assert reward_parts('{"a": 2, "b": "x"}' + " and more" * 40, ref, v)["length"] == -1.0
    # The length part measures against the reference as the data wrote it: copying a pretty-printed one costs nothing.
    pretty = json.dumps(ref, indent=2)
    assert reward_parts(pretty, ref, v, pretty)["length"] == 0.0
    assert reward_parts(pretty, ref, v)["length"] < 0  # against compact JSON the same reply runs on
    # trl's side: one named function per weighted part, reading the `reference` column; weight 0 drops a part.
    funcs, weights = reward_funcs(v, {**DEFAULT_WEIGHTS, "length": 0.0})
    assert [f.__name__ for f in funcs] == ["json", "schema", "fields", "exact"] and weights == [1.0, 1.0, 2.0, 1.0]
    completions = [[{"role": "assistant", "content": '{"a": 1, "b": "x"}'}], [{"role": "assistant", "content": "no"}]]
    fields = funcs[2](prompts=[[], []], completions=completions, reference=[json.dumps(ref)] * 2)
    assert fields == [0.5, 0.0]


def test_stage_flags_are_checked_before_anything_loads(toy, tmp_path):
    with pytest.raises(ConfigError, match="--stage dpo needs --from RUN_DIR"):
        TrainConfig(data="d", out="o", stage="dpo").validate()
    with pytest.raises(ConfigError, match="--from .* only applies with --stage dpo or grpo"):
        TrainConfig(data="d", out="o", from_run=str(toy["sft"])).validate()
    with pytest.raises(ConfigError, match="no adapter/adapter_config.json there"):
        TrainConfig(data="d", out="o", stage="grpo", from_run=str(tmp_path)).validate()
    with pytest.raises(ConfigError, match=r"--reward-weights fieldz: unknown part.*--reward-weights exact=-1 must be a finite number >= 0"):
        TrainConfig(data="d", out="o", stage="grpo", from_run=str(toy["sft"]),
                    reward_weights={"fieldz": "1", "exact": "-1"}).validate()
    for bad in ("nan", "inf"):
        with pytest.raises(ConfigError, match=f"--reward-weights fields={bad} must be a finite number"):
            TrainConfig(data="d", out="o", stage="grpo", from_run=str(toy["sft"]), reward_weights={"fields": bad}).validate()
    with pytest.raises(ConfigError, match="is the --from run itself"):
        TrainConfig(data="d", out=str(toy["sft"]), stage="dpo", from_run=str(toy["sft"])).validate()
    # A stage cannot start from another stage: the chain is SFT -> one reward stage.
    dpo = tmp_path / "dpo"
    train(_stage(toy, dpo, "dpo", max_steps=1), progress=False)
    with pytest.raises(UserError, match="is itself a dpo stage"):
        train(_stage(toy, tmp_path / "again", "grpo", from_run=str(dpo)), progress=False)


def test_dpo_pairs_are_built_only_from_wrong_replies(toy):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftassist.train.dataset import load_split
    from ftassist.train.stages import build_pairs
    from ftassist.train.validation import generate_replies

    tokenizer = AutoTokenizer.from_pretrained(toy["model"])
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(toy["model"]), str(toy["sft"] / "adapter"))
    rows = load_split(toy["data"])[:24]
    v = make_validator(SCHEMA)
    greedy = generate_replies(model.eval(), tokenizer, [r["prompt"] for r in rows], 32)
    wrong = {i + 1 for i, (reply, r) in enumerate(zip(greedy, rows))
             if not score_reply(reply, json.loads(r["completion"][0]["content"]), v)["exact"]}
    assert 0 < len(wrong) < len(rows), "the toy model should answer some rows right and some wrong"

    pairs, summary = build_pairs(model, tokenizer, rows, v, samples=0, seed=0)
    assert {p["why"]["row"] for p in pairs} == wrong and len(pairs) == len(wrong) == summary["pairs"]
    for p in pairs:
        row = rows[p["why"]["row"] - 1]
        assert p["prompt"] == row["prompt"] and p["chosen"] == row["completion"] and p["why"]["source"] == "greedy"
        score = score_reply(p["rejected"][0]["content"], json.loads(row["completion"][0]["content"]), v)
        assert not score["exact"] and p["why"]["wrong_fields"] == [k for k, ok in score["fields"].items() if not ok]
    assert summary["rows_with_mistakes"] == len(wrong) and summary["replies"] == len(rows)

    # Sampled replies find more mistakes; a row's identical wrong replies count once, and none is right.
    sampled, more = build_pairs(model, tokenizer, rows, v, samples=3, seed=0)
    assert more["replies"] == 4 * len(rows) and len(sampled) >= len(pairs)
    keys = [(p["why"]["row"], p["rejected"][0]["content"]) for p in sampled]
    assert len(set(keys)) == len(keys)
    assert all(not score_reply(p["rejected"][0]["content"], json.loads(p["chosen"][0]["content"]), v)["exact"] for p in sampled)


def test_dpo_steps_change_the_sft_adapter_and_log_the_preference_figures(toy, tmp_path):
    run = tmp_path / "dpo"
    result = train(_stage(toy, run, "dpo"), progress=False)
    info = json.loads((run / "run.json").read_text())
    assert info["stage"] == "dpo" and info["from_run"] == str(toy["sft"]) and info["mergeable"] is True
    pairs = [json.loads(line) for line in (run / "pairs.jsonl").read_text().splitlines()]
    assert info["stage_data"]["pairs"] == len(pairs) == info["n_examples"] > 0
    assert all(p["why"]["failures"] or p["why"]["wrong_fields"] for p in pairs)
    # The SFT run's validation rows are neither trained on nor made into pairs; they judge this stage too.
    held = {json.loads(line)["messages"][0]["content"] for line in (toy["sft"] / "val.jsonl").read_text().splitlines()}
    assert held and not held & {p["prompt"][0]["content"] for p in pairs}
    assert info["validation"]["source"] == f"the validation split of {toy['sft']}"
    rows = _rows(run)
    losses = [r for r in rows if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2, 3, 4]
    assert all({"rewards_margins", "rewards_accuracies", "logps_chosen", "logps_rejected"} <= r.keys() for r in losses)
    # Step 0 is the SFT adapter itself, scored on the same rows when that run ended: the stage has to beat it.
    evals = [r for r in rows if "val_rows" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]
    sft_best = json.loads((toy["sft"] / "run.json").read_text())["selection"]["metrics"]
    assert {k: v for k, v in evals[0].items() if k.startswith("val_")} == sft_best
    assert _changed(toy["sft"] / "adapter", run / "checkpoints" / "checkpoint-4"), "DPO left the SFT adapter as it was"
    # Only the trained adapter is saved: trl's frozen reference copy is not in the folder.
    assert not (result.weights_dir / "ref").exists() and not (run / "best" / "ref").exists()
    # The parity gate covers the stage's adapter like any other: merged, it answers as base + adapter does.
    from serving.verify import verify_run

    report = verify_run(run, limit=2, max_new_tokens=12)
    assert report.passed and report.agreement == {"merged_hf": 1.0}


def test_rows_held_out_of_sft_are_what_the_stage_trains_on(toy, tmp_path):
    from ftassist.train.trainer import prepare_run

    with pytest.raises(ConfigError, match="--reward-size 1.5 is invalid"):
        TrainConfig(data="d", out="o", reward_size=1.5).validate()
    with pytest.raises(ConfigError, match="pass it to the SFT run, not to --stage grpo"):
        TrainConfig(data="d", out="o", stage="grpo", from_run=str(toy["sft"]), reward_size=8).validate()
    with pytest.raises(UserError, match="--reward-size 60 holds out 60 of 40 training rows"):
        prepare_run(TrainConfig(data=str(toy["data"]), out=str(tmp_path / "x"), model=str(toy["model"]), reward_size=60))
    sft = tmp_path / "sft"
    train(TrainConfig(data=str(toy["data"]), out=str(sft), model=str(toy["model"]), reward_size=8, max_steps=2,
                      eval_steps=2, batch_size=8, grad_accum=1, seed=7, report_to="none"), progress=False)

    def prompts(path: Path) -> list[str]:
        return [json.loads(line)["messages"][0]["content"] for line in path.read_text().splitlines()]

    held, val = prompts(sft / "reward_rows.jsonl"), prompts(sft / "val.jsonl")
    everything = prompts(toy["data"] / "train.jsonl")
    assert len(held) == 8 and len(set(held)) == 8 and set(held) <= set(everything) and not set(held) & set(val)
    info = json.loads((sft / "run.json").read_text())
    assert info["n_examples"] == len(everything) - len(val) - 8  # SFT trained on neither split
    assert info["stage_data"]["reward_rows"] == 8 and "8 rows are held out of SFT" in info["stage_data"]["rows_note"]
    # The same rows again when the run resumes or is planned again: the hold-out is seeded.
    again = prepare_run(TrainConfig(data=str(toy["data"]), out=str(sft), model=str(toy["model"]), reward_size=8, seed=7))
    assert prompts(sft / "reward_rows.jsonl") == held and "8 rows are held out of SFT" in again.explanation()
    assert not set(held) & {r["prompt"][0]["content"] for r in again.train_rows}

    grpo = tmp_path / "grpo"
    train(_stage(toy, grpo, "grpo", from_run=str(sft), max_steps=1, eval_steps=1), progress=False)
    data = json.loads((grpo / "run.json").read_text())["stage_data"]
    assert data["rows"] == 8 and f"the 8 rows {sft} held out of SFT" in data["rows_note"]
    dpo = tmp_path / "dpo"
    train(_stage(toy, dpo, "dpo", from_run=str(sft), max_steps=1, eval_steps=1), progress=False)
    pairs = [json.loads(line) for line in (dpo / "pairs.jsonl").read_text().splitlines()]
    assert pairs and {p["prompt"][0]["content"] for p in pairs} <= set(held)
    # A stage from a run that held nothing out trains on that run's rows, and says what that costs.
    plain = prepare_run(_stage(toy, tmp_path / "plain", "dpo"))
    assert len(plain.train_rows) == len(everything) - len(prompts(toy["sft"] / "val.jsonl"))
    assert "held none out" in plain.explanation() and "--reward-size" in plain.explanation()


def test_a_stage_that_never_beats_the_sft_adapter_leaves_the_sft_adapter(toy, tmp_path):
    # An SFT run whose kept step scored perfectly (a copy of the toy's, its record saying so): no step can beat it.
    import shutil

    sft = tmp_path / "sft"
    shutil.copytree(toy["sft"], sft)
    info = json.loads((sft / "run.json").read_text())
    info["selection"]["metrics"].update(val_field_accuracy=1.0, val_exact=1.0, val_schema_valid=1.0, val_loss=0.0)
    (sft / "run.json").write_text(json.dumps(info))
    run = tmp_path / "dpo"
    result = train(_stage(toy, run, "dpo", from_run=str(sft)), progress=False)
    assert result.selection["step"] == 0 and result.selection["last_step"] == 4
    assert "no step of the dpo stage beat the SFT adapter it started from" in result.selection["summary"]
    assert not _changed(sft / "adapter", result.weights_dir)  # the SFT adapter, as it was
    assert _changed(sft / "adapter", run / "checkpoints" / "checkpoint-4")  # though the stage did train


def test_a_stage_resumed_after_its_best_was_lost_keeps_what_it_holds_and_its_rows_once(toy, tmp_path):
    import shutil

    sft = tmp_path / "sft"  # step 0 (the SFT adapter) scored perfectly: it stays the best
    shutil.copytree(toy["sft"], sft)
    info = json.loads((sft / "run.json").read_text())
    info["selection"]["metrics"].update(val_field_accuracy=1.0, val_exact=1.0, val_schema_valid=1.0, val_loss=0.0)
    (sft / "run.json").write_text(json.dumps(info))
    run = tmp_path / "dpo"
    cfg = _stage(toy, run, "dpo", from_run=str(sft))
    train(cfg, progress=False)
    # Killed after step 3, where best/ had been saved past the last checkpoint (2): on resume that best/ belongs to
    # steps that train again and is dropped; the SFT adapter of step 0 must come back, not a crash at the end.
    shutil.rmtree(run / "checkpoints" / "checkpoint-4")
    (run / "best" / "best.json").write_text(json.dumps({"step": 3}))
    result = train(cfg, resume=True, progress=False)
    assert result.selection["step"] == 0 and not _changed(sft / "adapter", result.weights_dir)
    assert [r["step"] for r in _rows(run) if "val_rows" in r] == [0, 2, 4]
    # Killed before its first checkpoint: it starts over, and the rows of before are not counted twice.
    shutil.rmtree(run / "checkpoints")
    result = train(cfg, resume=True, progress=False)
    assert [r["step"] for r in _rows(run) if "val_rows" in r] == [0, 2, 4]
    assert [r["step"] for r in _rows(run) if "loss" in r] == [1, 2, 3, 4]
    assert result.selection["step"] == 0 and not _changed(sft / "adapter", result.weights_dir)


def test_a_stage_judged_on_another_split_still_never_trains_on_the_sft_runs_and_has_no_step_0(toy, tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(_row(i)) + "\n" for i in range(60, 66)), encoding="utf-8")
    run = tmp_path / "dpo"
    train(_stage(toy, run, "dpo", val_data=str(other), max_steps=2), progress=False)
    held = {json.loads(line)["messages"][0]["content"] for line in (toy["sft"] / "val.jsonl").read_text().splitlines()}
    pairs = [json.loads(line) for line in (run / "pairs.jsonl").read_text().splitlines()]
    assert held and not held & {p["prompt"][0]["content"] for p in pairs}
    n_train = 48 - len(held)
    assert json.loads((run / "pairs.json").read_text())["rows"] == n_train
    # The SFT figures were measured on other rows: they are no step 0 here.
    assert [r["step"] for r in _rows(run) if "val_rows" in r] == [2]


def test_grpo_steps_change_the_sft_adapter_and_log_the_reward_parts_and_kl(toy, tmp_path):
    run = tmp_path / "grpo"
    result = train(_stage(toy, run, "grpo", grpo_generations=4, reward_weights={"fields": "3", "length": "0"}),
                   progress=False)
    info = json.loads((run / "run.json").read_text())
    assert info["stage"] == "grpo" and info["stage_data"]["reward_weights"] == {**DEFAULT_WEIGHTS, "fields": 3.0, "length": 0.0}
    assert info["stage_data"]["reward"] == "json 1 + schema 1 + fields 3 + exact 1"
    # It trains on the prompts the SFT adapter answers wrong greedily (a right one's group would all score alike).
    mistakes = [json.loads(line) for line in (run / "pairs.jsonl").read_text().splitlines()]
    assert {p["why"]["source"] for p in mistakes} == {"greedy"}
    wrong = {p["why"]["row"] for p in mistakes}
    assert info["n_examples"] == info["stage_data"]["prompts"] == len(wrong) < info["stage_data"]["rows"] == 40
    assert info["stage_data"]["mistakes"]["rows_with_mistakes"] == len(wrong)
    losses = [r for r in _rows(run) if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2, 3, 4]
    for r in losses:
        assert {"reward", "rewards_json_mean", "rewards_schema_mean", "rewards_fields_mean", "rewards_exact_mean"} <= r.keys()
        assert "rewards_length_mean" not in r  # weight 0: not computed
        assert 0.0 <= r["rewards_fields_mean"] <= 1.0
        assert 0.0 <= r["skipped_groups"] <= 1.0  # the share of the step's micro-batches whose group agreed (skipped)
        assert ("kl" in r) == (r["skipped_groups"] < 1.0)  # the KL is computed only where the loss is
    assert any(r["skipped_groups"] < 1.0 for r in losses), "every step was skipped"
    # The total is the weighted sum of the parts' means.
    r = losses[0]
    assert r["reward"] == pytest.approx(r["rewards_json_mean"] + r["rewards_schema_mean"] + 3 * r["rewards_fields_mean"]
                                        + r["rewards_exact_mean"], abs=1e-4)
    assert any(r["rewards_fields_std"] > 0 for r in losses), "no group had replies of different reward"
    assert _changed(toy["sft"] / "adapter", run / "checkpoints" / "checkpoint-4"), "GRPO left the SFT adapter as it was"
    assert not (result.weights_dir / "ref").exists()
    # Off, every row's prompt trains.
    every = prepare_run_info(toy, tmp_path / "every", grpo_mistakes_only=False)
    assert every["n_examples"] == every["stage_data"]["prompts"] == 40 and "mistakes" not in every["stage_data"]


def prepare_run_info(toy: dict, run: Path, **kw) -> dict:
    """run.json of a one-step GRPO stage."""
    train(_stage(toy, run, "grpo", max_steps=1, eval_steps=1, **kw), progress=False)
    return json.loads((run / "run.json").read_text())


def test_the_cli_refuses_a_stage_without_its_sft_run_and_a_search_of_a_stage(toy, tmp_path, capsys):
    from ftassist_cli import main

    assert main(["train", "--stage", "dpo", "--data", str(toy["data"]), "--out", str(tmp_path / "x")]) == 2
    assert "--stage dpo needs --from RUN_DIR" in capsys.readouterr().err
    assert main(["train", "--stage", "grpo", "--from", str(toy["sft"]), "--data", str(toy["data"]),
                 "--out", str(tmp_path / "y"), "--search"]) == 2
    assert "--search tries SFT configurations" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_the_app_starts_a_reward_stage_from_a_finished_run_of_the_workspace(toy, tmp_path):
    import dataclasses
    import shutil
    import time

    from ftassist_app import conversation, train_step
    from ftassist_app.settings import AppSettings
    from ftassist_app.workspace import workspace_for

    ws = workspace_for(AppSettings(runs_dir=tmp_path / "runs", model=str(toy["model"])), username="ada")
    ws.jobs_dir.mkdir(parents=True, exist_ok=True)
    with pytest.raises(UserError, match="pick the finished training run"):
        train_step.propose_stage(ws, "", "dpo")
    with pytest.raises(UserError):
        train_step.propose_stage(ws, "not-mine", "dpo")
    shutil.copytree(toy["sft"], ws.jobs_dir / "20261202-sft")
    cfg = train_step.propose_stage(ws, "20261202-sft", "dpo")
    assert cfg.stage == "dpo" and cfg.from_run == str(ws.jobs_dir / "20261202-sft") and cfg.data == str(toy["data"])
    s = conversation.new_session()
    for s in conversation.start_job_in_chat(s, ws, dataclasses.replace(cfg, max_steps=2, eval_steps=2, report_to="none")):
        pass
    deadline = time.time() + 300
    while time.time() < deadline:
        s, status, _ = conversation.poll(s, ws)
        if status.state not in train_step.ACTIVE:
            break
        time.sleep(1)
    assert status.state == "completed", (Path(s.run_dir) / "train.log").read_text()[-2000:]
    info = json.loads((Path(s.run_dir) / "run.json").read_text())
    assert info["stage"] == "dpo" and info["stage_data"]["pairs"] > 0
    # A stage is not a starting point for another.
    with pytest.raises(UserError, match="is itself a dpo stage"):
        train_step.propose_stage(ws, Path(s.run_dir).name, "grpo")


def test_the_plain_head_gives_what_trls_fused_head_gives_on_cpu(toy):
    """`ftassist.train.head` replaces trl's tiled head on CPU: the same per-token fields, loss and gradients."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from ftassist.train.head import use_plain_head

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(toy["model"]), str(toy["sft"] / "adapter"),
                                      is_trainable=True)
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (4, 40))
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :28] = -100  # the prompt
    labels[1, -5:], mask[1, -5:] = -100, 0  # a shorter row, padded
    fields = ("log_probs", "entropy", "mean_logits", "is_top1", "log_sum_sq_probs", "loss", "label_mask")
    add_fused_lm_head(model.get_base_model(), outputs=fields[:5])

    def once():
        model.zero_grad()
        out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        out.log_probs.sum().backward()
        return out, [p.grad.clone() for p in model.parameters() if p.requires_grad]

    trl_out, trl_grads = once()
    assert use_plain_head(model.get_base_model())
    out, grads = once()
    for name in fields:
        a, b = getattr(trl_out, name), getattr(out, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name
    assert (out.log_probs[:, :27] == 0).all() and (out.log_probs[:, 27:34] != 0).all()  # only the reply positions
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(trl_grads, grads))
    # Without fused_lm_head the model is the plain model (generation is unchanged).
    assert model(input_ids=ids, attention_mask=mask).logits.shape == (4, 40, model.config.vocab_size)


@pytest.mark.parametrize("layout", ["dpo rows sharing a system prompt", "a grpo group of one left-padded prompt"])
def test_the_shared_prefix_gives_the_plain_heads_fields_and_gradients(toy, monkeypatch, layout):
    """DPO/GRPO run the prompt tokens a batch's rows start with once (`share_prefix`): same log-probabilities, loss
    and gradients as every row run whole, and the prefix is really run once."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ftassist.train import prefix as prefix_module
    from ftassist.train.head import use_plain_head

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(toy["model"]), str(toy["sft"] / "adapter"),
                                      is_trainable=True)
    torch.manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (4, 40))
    mask = torch.ones_like(ids)
    if layout.startswith("dpo"):
        ids[:, :20] = ids[0, :20]  # the system prompt; each row's question differs from position 20
        start = 28
        mask[1, -5:] = 0  # a shorter row, right-padded
    else:
        ids[:, :30] = ids[0, :30]  # one prompt, its first 6 positions left padding, in every row of the group
        ids[:, :6], mask[:, :6] = 0, 0
        start = 30
        mask[2, -4:] = 0  # a shorter reply
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :start] = -100
    fields = ("log_probs", "entropy", "mean_logits", "is_top1", "log_sum_sq_probs", "loss", "label_mask")
    calls = []
    original = prefix_module.forward_shared
    monkeypatch.setattr(prefix_module, "forward_shared", lambda *a, **k: calls.append(a[3]) or original(*a, **k))

    def once(share):
        assert use_plain_head(model.get_base_model(), share_prefix=share)
        model.zero_grad()
        out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        (out.log_probs.sum() + out.entropy.sum()).backward()
        return out, [p.grad.clone() for p in model.parameters() if p.requires_grad]

    plain, plain_grads = once(False)
    assert calls == []
    shared, shared_grads = once(True)
    # The first shared batch is checked against the plain forward once, then trained on shared.
    expected = 20 if layout.startswith("dpo") else start - 1
    assert calls == [expected, expected], calls
    for name in fields:
        a, b = getattr(plain, name), getattr(shared, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.allclose(a.float(), b.float(), atol=1e-4), name
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(plain_grads, shared_grads))


def test_the_nan_guard_stops_a_stage_and_marks_it_not_mergeable(toy, tmp_path):
    from ftassist.train.trainer import TrainingFailed

    run = tmp_path / "nan"
    with pytest.raises(TrainingFailed, match="loss is nan|grad_norm is nan"):
        train(_stage(toy, run, "dpo", debug_nan_at_step=2, eval_steps=10), progress=False)
    info = json.loads((run / "run.json").read_text())
    assert info["mergeable"] is False and info["stage"] == "dpo" and "nan" in info["failure"]
    assert not (run / "adapter").exists()


def test_a_grpo_micro_batch_whose_group_agrees_is_skipped_and_logged(caplog):
    """The mixin in front of trl's loss: all-zero advantages never reach the forward pass; others do."""
    import logging

    from collections import defaultdict
    from types import SimpleNamespace

    from ftassist.train.stages import AgreeingGroupSkipMixin

    class Loss:
        def __init__(self):
            self.calls = []
            self._metrics = {"train": defaultdict(list)}
            self.state = SimpleNamespace(global_step=6)

        def _compute_loss(self, model, inputs):
            self.calls.append(inputs)
            return torch.tensor(0.5, requires_grad=True)

    trainer = type("T", (AgreeingGroupSkipMixin, Loss), {})()
    with caplog.at_level(logging.INFO, logger="ftassist.train"):
        skipped = trainer._compute_loss(None, {"advantages": torch.zeros(4)})
    assert skipped.item() == 0.0 and skipped.requires_grad and trainer.calls == []
    skipped.backward()  # what the trainer does next: no error, no parameter touched
    assert "GRPO step 7: every reply of the group scored alike" in caplog.text
    varied = {"advantages": torch.tensor([0.5, -0.5, 0.0, 0.0])}
    assert trainer._compute_loss(None, varied).item() == 0.5 and trainer.calls == [varied]
    assert trainer._metrics["train"]["skipped_groups"] == [1.0, 0.0]
