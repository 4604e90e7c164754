"""Merging a real peft adapter into the tiny model: same logits, safetensors only, training template kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ftassist.config import MergeConfig
from ftassist.errors import ConfigError, UserError
from serving.merge import merge_adapter

TRAINED_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}" \
                   "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"


def make_run(root: Path, base: Path, adapter: Path, data: Path | None = None, *, link: bool = False,
             template: str | None = None, mergeable: bool, reason: str | None = None) -> Path:
    """A run folder as `ftassist train` writes it (its own writers): adapter/ (+ tokenizer), config.yaml, run.json."""
    from ftassist.config import TrainConfig, save_config
    from ftassist.train.record import RunRecord, write_run_record

    from transformers import AutoTokenizer

    run = root / "run"
    run.mkdir(parents=True)
    if link:
        (run / "adapter").symlink_to(adapter)
    else:
        shutil.copytree(adapter, run / "adapter")
        tok = AutoTokenizer.from_pretrained(base)
        if template:
            tok.chat_template = template
        tok.save_pretrained(run / "adapter")
    save_config(TrainConfig(data=str(data or root / "data"), out=str(run), model=str(base), method="lora", lora_r=8,
                            lora_alpha=16, learning_rate=2e-4, max_steps=6), run / "config.yaml")
    write_run_record(run, RunRecord(base_model=str(base), model=str(base), method="lora", dtype="float32", device="cpu",
                                mergeable=mergeable, failure=reason))
    return run


@pytest.fixture()
def run_dir(tmp_path, tiny_model, tiny_adapter, small_data) -> Path:
    return make_run(tmp_path, tiny_model, tiny_adapter, small_data, template=TRAINED_TEMPLATE, mergeable=True)


def test_merged_logits_equal_base_plus_adapter(run_dir, tiny_model, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = merge_adapter(MergeConfig(run_dir=str(run_dir), out=str(tmp_path / "merged")))
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 2, 100, 200, 300]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    plain = base(ids).logits
    tuned = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.inference_mode():
        want, got = tuned(ids).logits, merged(ids).logits
    assert (want - plain).abs().max() > 1e-2  # the adapter really changes the model
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_files_are_safetensors_only_with_training_template_and_card(run_dir, tmp_path):
    from transformers import AutoTokenizer

    from ftassist.evaluation.metrics import make_validator, score_reply
    from ftassist.evaluation.report import write_report
    from tests.test_eval_report import synthetic_report
    from ftassist.evaluation.summary import summarize_arm

    # an eval report in the shape the eval writes: arm summaries from the eval's own scorer and summarizer
    validator = make_validator({"type": "object"})
    ref = {"a": 1, "b": "x"}
    scores = {"base": ["no json", '{"a": 2, "b": "y"}'], "tuned": ['{"a": 1, "b": "x"}', '{"a": 1, "b": "y"}']}
    arms = [summarize_arm(name, [[score_reply(r, ref, validator)] for r in replies], "json", model=name)
            for name, replies in scores.items()]
    # written by the eval's own writer, as `ftassist eval --out RUN/eval` leaves it
    write_report(run_dir / "eval", synthetic_report(run_dir, arms, scores), [])
    out = merge_adapter(MergeConfig(run_dir=str(run_dir), out=str(tmp_path / "merged")))
    names = sorted(p.name for p in out.iterdir())
    assert names == ["README.md", "chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
                     "tokenizer.json", "tokenizer_config.json"]
    assert AutoTokenizer.from_pretrained(out).chat_template == TRAINED_TEMPLATE
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == AutoTokenizer.from_pretrained(out).eos_token_id
    card = (out / "README.md").read_text()
    assert "method: lora, LoRA r=8, alpha=16" in card
    assert "| tuned | 75.0% (" in card and "| base | 0.0% (" in card  # field accuracy first, with its interval
    from huggingface_hub import ModelCard

    meta = ModelCard.load(out / "README.md").data  # the Hub's own reader parses the metadata
    assert meta.library_name == "transformers" and "ftassist" in meta.tags
    results = {r.metric_type: r.metric_value for r in meta.eval_results}
    assert results == {"field_accuracy": 0.75, "exact": 0.5, "schema_valid": 1.0, "strict": 1.0, "extractable": 1.0}
    assert "train 48 examples, test 8 examples" in card
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
    assert not list(tmp_path.glob(".merged.*"))  # no temporary folder left behind


def test_refuses_a_run_marked_not_mergeable(tmp_path, tiny_model, tiny_adapter):
    run = make_run(tmp_path, tiny_model, tiny_adapter, mergeable=False, reason="loss became NaN at step 3")
    with pytest.raises(UserError) as err:
        merge_adapter(MergeConfig(run_dir=str(run), out=str(tmp_path / "merged")))
    assert str(err.value) == (f"{run}: the run is marked not mergeable (loss became NaN at step 3); fix the cause and "
                              "train again, or resume it with `ftassist jobs resume`")
    assert not (tmp_path / "merged").exists()


def test_missing_and_incomplete_run_dirs(tmp_path):
    with pytest.raises(UserError) as err:
        merge_adapter(MergeConfig(run_dir=str(tmp_path / "nope"), out=str(tmp_path / "m")))
    assert str(err.value) == (f"{tmp_path / 'nope'}: no such run folder; pass the folder written by `ftassist train` "
                              "(it holds adapter/ and config.yaml)")
    (tmp_path / "half").mkdir()
    with pytest.raises(ConfigError) as err:
        merge_adapter(MergeConfig(run_dir=str(tmp_path / "half"), out=str(tmp_path / "m")))
    assert len(err.value.problems) == 2
    assert err.value.problems[0].startswith(f"{tmp_path / 'half'}: adapter/adapter_config.json is missing")
    assert err.value.problems[1].startswith(f"{tmp_path / 'half'}: config.yaml is missing")


def test_cli_merge(run_dir, tmp_path, capsys):
    from ftassist_cli import main

    assert main(["merge", str(run_dir), "--out", str(tmp_path / "m")]) == 0
    assert f"merged model written to {tmp_path / 'm'}" in capsys.readouterr().out
    assert main(["merge", str(tmp_path / "nope"), "--out", str(tmp_path / "m2")]) == 2
