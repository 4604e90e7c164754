"""`ftassist next`: on a run with planted validation results it picks the lever that moved the task metric and says
so; a lever that does not fit the budget is skipped with the reason; bad input exits 2 with the fix."""

from __future__ import annotations

import json
from pathlib import Path

from ftassist_cli import main
from ftassist.config import TrainConfig, save_config
from ftassist.train.levers import Trial, choose


def figures(exact: float, fields: float, valid: float = 1.0) -> dict:
    return {"val_exact": exact, "val_field_accuracy": fields, "val_schema_valid": valid, "val_rows": 32}


def finished(run: Path, metrics: dict, *, minutes: float = 10.0, stage: str = "sft") -> Path:
    run.mkdir(parents=True)
    cfg = TrainConfig(data="data", out=str(run), model="m", stage=stage,
                      from_run="sft" if stage != "sft" else None)
    save_config(cfg, run / "config.yaml")
    (run / "run.json").write_text(json.dumps({"selection": {"step": 10, "metrics": metrics}, "train_runtime_s": minutes * 60}))
    return run


def test_the_lever_that_moved_whole_objects_is_recommended_with_its_figures(tmp_path, capsys):
    run = finished(tmp_path / "sft", figures(0.5, 0.80))
    finished(run / "next" / "dpo", figures(0.46875, 0.81), stage="dpo")  # worse on whole objects
    finished(run / "next" / "rank", figures(0.5625, 0.79))  # +2 rows of whole objects
    code = main(["next", str(run), "--budget", "4", "--lever", "dpo", "--lever", "rank", "--lever", "minutes",
                 "--lever", "model"])
    out = capsys.readouterr().out
    assert code == 0
    assert "**Recommended: rank** (SFT at LoRA rank 32 (was 16), 10 min): it moved whole objects by +6.2 and fields by -1.0" in out
    assert "- dpo (--stage dpo from the kept adapter, 1.33333 min): whole objects 46.9%" in out
    # minutes needs the run's 10 min plus a share: more than the 4-min budget, so it is not trained
    assert "- minutes (SFT again with 11 min and plateau patience 6): not tried: needs 11 min, 4 of the 4-min budget left" in out
    assert "- model (model): not tried: no --larger-model given" in out
    report = json.loads((run / "next" / "next.json").read_text())
    assert report["recommended"] == "rank" and [t["lever"] for t in report["trials"]] == ["model", "dpo", "rank", "minutes"]
    assert not (run / "next" / "model").exists()
    assert not (run / "next" / "minutes").exists()
    assert "Recommended: rank" in (run / "next" / "next.md").read_text()


def test_a_gain_that_loses_schema_validity_is_not_recommended_and_none_is_said_so():
    base = figures(0.5, 0.80)
    broke = Trial("minutes", "longer", TrainConfig(), 10, figures(0.60, 0.85, valid=0.90))
    same = Trial("dpo", "dpo", TrainConfig(), 2, figures(0.5, 0.80))
    choice = choose(base, [broke, same])
    assert choice.lever is None
    assert any("(loses schema validity: not recommended)" in line for line in choice.lines)
    assert "None of these moved the task metric" in choice.lines[-1]
    # one row of schema validity (1/32) may come and go by chance; fields break a tie of whole objects
    wobble = Trial("rank", "r32", TrainConfig(), 10, figures(0.5, 0.84, valid=1 - 1 / 32))
    assert choose(base, [same, wobble]).lever == "rank"


def test_bad_input_exits_2_with_the_fix(tmp_path, capsys):
    assert main(["next", str(tmp_path)]) == 2
    assert "not a finished run with a validation split" in capsys.readouterr().err
    stage = finished(tmp_path / "dpo", figures(0.5, 0.8), stage="dpo")
    assert main(["next", str(stage)]) == 2
    assert "run `ftassist next` on the SFT run it started from" in capsys.readouterr().err
    assert main(["next", str(stage), "--lever", "bigger"]) == 2
    assert "--lever bigger: use any of dpo, grpo, minutes, rank, model" in capsys.readouterr().err
    assert main(["next", str(stage), "--lever", "model"]) == 2
    assert "--lever model needs --larger-model PATH" in capsys.readouterr().err


def test_a_lever_really_trains_on_the_runs_validation_split(tiny_model, small_data, tmp_path, capsys):
    """End to end on the tiny model: an SFT run, then `ftassist next --lever rank` trains the rank-32 run for real
    (the run's own settings: 2 steps) and reports its kept step's figures on the same validation rows."""
    from ftassist.train.trainer import train

    run = tmp_path / "sft"
    train(TrainConfig(data=str(small_data), out=str(run), model=str(tiny_model), max_steps=2, eval_steps=2, batch_size=2,
                      grad_accum=1, max_length=256, report_to="none"), progress=False)
    sft = json.loads((run / "run.json").read_text())
    assert main(["next", str(run), "--lever", "rank", "--budget", "10"]) == 0
    out = capsys.readouterr().out
    trial = json.loads((run / "next" / "next.json").read_text())["trials"][0]
    assert trial["lever"] == "rank" and trial["metrics"] is not None and trial["seconds"] > 0
    rank = json.loads((run / "next" / "rank" / "run.json").read_text())
    assert json.loads((run / "next" / "rank" / "adapter" / "adapter_config.json").read_text())["r"] == 32
    assert rank["validation"] == sft["validation"]  # the same rows held out of the same train.jsonl
    assert json.loads((run / "next" / "rank" / "val.jsonl").read_text().splitlines()[0]) == \
        json.loads((run / "val.jsonl").read_text().splitlines()[0])
    assert "- rank (SFT at LoRA rank 32 (was 16)" in out
