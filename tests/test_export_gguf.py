"""GGUF export on the tiny model: llama.cpp's converter and quantiser, the Modelfile, and the real llama.cpp server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ftassist_cli import main
from ftassist.config import ExportConfig
from ftassist.errors import ConfigError, UserError
from serving import gguf
from serving.export import export_gguf
from serving.parity import NEAR_TIE
from tests.test_merge_model import make_run
from tests.tiny import build_tiny_adapter, build_tiny_llama


@pytest.fixture(scope="module")
def sharp_model(tmp_path_factory):
    """A tiny model with clear logit winners (init std 0.3), and an adapter for it."""
    root = tmp_path_factory.mktemp("sharp")
    model = build_tiny_llama(root / "model", init_std=0.3)
    return model, build_tiny_adapter(model, root / "adapter")


@pytest.fixture(scope="module")
def exported(sharp_model, tmp_path_factory):
    """One verified export of a tiny run (f16 + q8_0 + q4_k_m), shared by the tests that read it."""
    from tests.conftest import write_small_data

    root = tmp_path_factory.mktemp("export")
    data = write_small_data(root / "data")
    run = make_run(root, *sharp_model, data, mergeable=True)
    report = export_gguf(ExportConfig(run_dir=str(run), quants=["f32", "q8_0", "q4_k_m"], pre_tokenizer="gpt-2",
                                      eval_limit=4, max_new_tokens=16))
    return run, report


def test_files_load_and_carry_the_training_template_and_eos(exported):
    from transformers import AutoTokenizer

    run, report = exported
    out = run / "gguf"
    assert sorted(p.name for p in out.glob("*.gguf")) == ["model-f16.gguf", "model-f32.gguf", "model-q4_k_m.gguf",
                                                          "model-q8_0.gguf"]
    assert not list(out.glob("*.part"))
    tok = AutoTokenizer.from_pretrained(run / "adapter")
    for name in ("model-f32.gguf", "model-f16.gguf", "model-q8_0.gguf", "model-q4_k_m.gguf"):
        meta = gguf.read_metadata(out / name)
        assert meta["tokenizer.chat_template"] == tok.chat_template
        assert meta["tokenizer.ggml.eos_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")
    assert gguf.read_metadata(out / "model-f32.gguf")["general.file_type"] == 0  # ALL_F32
    assert gguf.read_metadata(out / "model-f16.gguf")["general.file_type"] == 1  # MOSTLY_F16
    assert gguf.read_metadata(out / "model-q8_0.gguf")["general.file_type"] == 7  # MOSTLY_Q8_0
    assert report.metadata_problems == []


def test_served_files_answer_the_probes_like_the_adapter(exported):
    """f32 is the gate on a random model: its near-equal logits make f16's agreement a coin toss between
    hosts (the real model's f16 figure is in bench/RESULTS.md)."""
    run, report = exported
    by_quant = {f.quant: f for f in report.files}
    assert list(by_quant) == ["f16", "f32", "q8_0", "q4_k_m"] and report.gate == "f32"
    for check in report.files:
        assert check.tokens_ok is True and check.template_ok is True, check.detail
        assert check.agreement is not None and 0.0 <= check.agreement <= 1.0
        assert check.served_same is not None and check.served_default is not None
    f32 = by_quant["f32"]
    # llama.cpp and torch round differently: on random weights a divergence may only be where the top two
    # logits are within NEAR_TIE of each other; anything else is a broken export.
    assert f32.agreement >= 0.5, f32.mismatches
    assert all(m.margin is not None and abs(m.margin) < NEAR_TIE for m in f32.mismatches), f32.mismatches
    assert f32.served_same >= 0.75
    assert report.passed is (f32.agreement >= 0.99 and f32.served_same >= 0.99)
    saved = json.loads((run / "gguf" / "export.json").read_text())
    assert saved["passed"] is report.passed and saved["gate"] == "f32"
    assert [f["quant"] for f in saved["files"]] == ["f16", "f32", "q8_0", "q4_k_m"]
    assert "| model-f32.gguf |" in (run / "gguf" / "export.md").read_text()


def test_the_json_eval_ran_on_every_file(exported):
    run, report = exported
    eval_report = json.loads((Path(report.eval_report) / "report.json").read_text())
    assert [a["name"] for a in eval_report["arms"]] == ["f16", "f32", "q8_0", "q4_k_m"]
    assert all(a["n"] == 4 and a["request_errors"] == 0 for a in eval_report["arms"])
    assert [c["b"] for c in eval_report["comparisons"]] == ["f32", "q8_0", "q4_k_m"]
    assert eval_report["config"]["sampling"] == {"repeat_penalty": "1.0"}
    for check in report.files:
        assert set(check.eval) == {"field_accuracy", "exact", "schema_valid", "strict"}


def test_llama_server_takes_a_key_that_starts_with_a_dash_and_keeps_it_off_argv(exported, tmp_path):
    """CI once failed here: a fresh token_urlsafe key began with '-' and argparse read it as a flag."""
    import httpx

    from serving.llamacpp import start_llama_server

    run, _ = exported
    key = "-k" + "x" * 20
    with start_llama_server(run / "gguf" / "model-q4_k_m.gguf", name="dash", log_path=tmp_path / "server.log",
                            api_key=key) as server:
        assert server.api_key == key
        assert key not in (Path("/proc") / str(server.process.pid) / "cmdline").read_bytes().decode()
        assert httpx.get(f"{server.base_url}/models").status_code == 401
        listed = httpx.get(f"{server.base_url}/models", headers={"Authorization": f"Bearer {key}"})
        assert listed.status_code == 200 and [m["id"] for m in listed.json()["data"]] == ["dash"]


def test_modelfile_parses_and_points_at_the_smallest_file(exported):
    run, _ = exported
    pairs = gguf.parse_modelfile((run / "gguf" / "Modelfile").read_text())
    commands = dict(pairs)
    assert commands["FROM"] == "./model-q4_k_m.gguf" and (run / "gguf" / "model-q4_k_m.gguf").exists()
    assert "<|im_start|>{{ .Role }}" in commands["TEMPLATE"]
    assert ("PARAMETER", 'stop "<|im_end|>"') in pairs and ("PARAMETER", "temperature 0") in pairs


def test_modelfile_parser_refuses_broken_files():
    with pytest.raises(ValueError, match="unclosed"):
        gguf.parse_modelfile('FROM ./m.gguf\nTEMPLATE """{{ .Prompt }}\n')
    with pytest.raises(ValueError, match="needs FROM"):
        gguf.parse_modelfile("PARAMETER temperature 0\n")
    with pytest.raises(ValueError, match="unknown Modelfile command"):
        gguf.parse_modelfile("FROM ./m.gguf\nTEMPERATURE 0\n")


def test_default_system_message_is_carried_into_the_modelfile(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert gguf.default_system(tok) is None
    tok.chat_template = ("{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are Tiny.<|im_end|>\n{% endif %}"
                         + tok.chat_template)
    assert gguf.default_system(tok) == "You are Tiny."
    assert ("SYSTEM", "You are Tiny.") in gguf.parse_modelfile(gguf.modelfile("m.gguf", tok))


def test_unknown_tokenizer_is_refused_with_the_fix(tiny_model, tmp_path):
    with pytest.raises(UserError, match="--pre-tokenizer gpt-2"):
        gguf.convert(tiny_model, tmp_path / "m.gguf", "f16")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_a_wrong_pre_tokenizer_is_caught_by_the_tokenizer_check(tiny_model, tiny_adapter, small_data, tmp_path):
    """Splitting on whitespace only is not the tiny byte-level tokenizer's rule: the export must say so."""
    run = make_run(tmp_path, tiny_model, tiny_adapter, small_data, mergeable=True)
    report = export_gguf(ExportConfig(run_dir=str(run), quants=["f16"], pre_tokenizer="whitespace", eval_limit=2,
                                      max_new_tokens=8))
    f16 = report.files[0]
    assert f16.tokens_ok is False and "pre-tokenizer is wrong" in f16.detail
    assert not report.passed and "FAILED" in (run / "gguf" / "export.md").read_text()
    assert main(["export", str(run), "--quant", "f16", "--pre-tokenizer", "whitespace", "--eval-limit", "1",
                 "--max-new-tokens", "4"]) == 1


def test_config_and_cli_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--quant"):
        ExportConfig(run_dir="r", quants=["q5"]).validate()
    assert main(["export", str(tmp_path / "nope")]) == 2
    assert "error" in capsys.readouterr().err


def test_missing_converter_names_the_fix(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv(gguf.ENV, str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="make setup"):
        gguf.convert(tiny_model, tmp_path / "m.gguf", "f16", pre_tokenizer="gpt-2")


def test_converter_is_installed_where_make_setup_puts_it():
    assert os.environ.get(gguf.ENV) or (gguf.converter_root() / "conversion").is_dir()
