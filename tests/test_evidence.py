"""Evidence before advice: the base model measured on the user's rows, and the advice that cites it."""

from __future__ import annotations

import json

import pytest

from ftassist.advisor import Answers, advise_from_evidence
from ftassist.config import DataConfig
from ftassist.data.build import build_dataset
from ftassist.evidence import PROMPTING, STRUCTURED, ArmFigures, Evidence, few_shot_prompt, measure_prompting
from ftassist.train.validation import generate_replies

from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "support_tickets"


def evidence(plain: tuple[float, float, float], forced: tuple[float, float, float], rows: int = 40) -> Evidence:
    def arm(name, rates):
        return ArmFigures(name, rows, rates[0], rates[0], rates[1], rates[2], {"category": rates[1], "amount": 0.1})
    return Evidence((arm(PROMPTING, plain), arm(STRUCTURED, forced)), rows, 3, "base")


def test_content_missing_recommends_fine_tuning_and_cites_the_figures():
    rec = advise_from_evidence(evidence((0.70, 0.24, 0.0), (1.0, 0.30, 0.05)), Answers(fixed_format=True))
    assert rec.approach == "fine-tuning" and rec.fine_tuning_fits
    text = rec.to_markdown()
    assert "prompting: 70% schema-valid, 24% of fields right" in text
    assert "prompting + structured outputs: 100% schema-valid, 30% of fields right" in text
    assert "fine-tuning is needed for the content" in text
    assert "`amount` (10% right)" in text


def test_honest_when_prompting_is_enough():
    rec = advise_from_evidence(evidence((0.95, 0.93, 0.70), (1.0, 0.95, 0.75)), Answers(fixed_format=True))
    assert rec.approach == "prompting" and not rec.fine_tuning_fits
    assert "is enough here" in rec.headline and "not better answers" in rec.to_markdown()


def test_format_and_content_both_missing_and_new_facts_add_rag():
    rec = advise_from_evidence(evidence((0.10, 0.05, 0.0), (0.60, 0.10, 0.0), rows=8), Answers(new_facts=True))
    assert rec.approach == "both"
    text = rec.to_markdown()
    assert "both the format and the content" in text and "RAG" in text and "small sample" in text


def test_few_shot_prompt_puts_instruction_and_shots_first():
    shots = [{"messages": [{"role": "system", "content": "old"}, {"role": "user", "content": "u1"},
                           {"role": "assistant", "content": "{}"}]}]
    msgs = few_shot_prompt([{"role": "system", "content": "mine"}, {"role": "user", "content": "q"}], shots, {"type": "object"})
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert '{"type": "object"}' in msgs[0]["content"] and msgs[0]["content"].endswith("mine") and msgs[-1]["content"] == "q"


@pytest.fixture(scope="module")
def built(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ev") / "data"
    build_dataset(DataConfig(inputs=[str(EXAMPLE / "train.jsonl")], test_inputs=[str(EXAMPLE / "test.jsonl")],
                             schema=str(EXAMPLE / "schema.json"), out=str(out), model=str(tiny_model)))
    return out


def test_measured_on_the_users_rows_structured_outputs_always_match_the_schema(built, tiny_model):
    ev = measure_prompting(built, str(tiny_model), rows=3, shots=1)
    assert ev.rows == 3 and [a.name for a in ev.arms] == [PROMPTING, STRUCTURED]
    plain, forced = ev.arms
    assert plain.schema_valid == 0.0 and not plain.sample.startswith("{")  # a random model writes no JSON by itself
    first_key = next(iter(json.loads((built / "schema.json").read_text())["properties"]))
    assert forced.sample.startswith('{"' + first_key + '": ')  # under the grammar it writes the schema's object
    assert Evidence.from_dict(json.loads(json.dumps(ev.to_dict()))) == ev


def test_generation_with_the_constraint_parses(built, tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftassist.evidence import schema_constraint

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}
    replies = generate_replies(model, tok, [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "a longer one"}]],
                               24, logits_processors=schema_constraint(tok, model, schema))
    assert [set(json.loads(r)) for r in replies] == [{"ok"}, {"ok"}]


def test_cli_measure_prints_figures_and_advice_and_refuses_bad_input(built, tiny_model, tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "ftassist_cli", "data", "measure", *args], capture_output=True, text=True,
                              cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, timeout=300)

    ok = cli(str(built), "--model", str(tiny_model), "--rows", "2", "--shots", "1")
    assert ok.returncode == 0, ok.stderr
    assert "prompting + structured outputs:" in ok.stdout and "**Recommendation:" in ok.stdout
    assert json.loads((built / "evidence.json").read_text())["rows"] == 2
    bad = cli(str(built), "--model", str(tiny_model), "--rows", "0")
    assert bad.returncode == 2 and "--rows 0: measure at least 1 row" in bad.stderr and "Traceback" not in bad.stderr
    missing = cli(str(tmp_path / "nowhere"), "--model", str(tiny_model))
    assert missing.returncode == 2 and "build the data set first" in missing.stderr and "Traceback" not in missing.stderr
