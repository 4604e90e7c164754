"""GGUF export on the tiny model: llama.cpp's converter and quantiser, the Modelfile, and the real llama.cpp server."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from ftassist_cli import main
from ftassist.config import ExportConfig
from ftassist.errors import ConfigError, UserError
from serving import gguf
from serving.export import ExportReport, FileCheck, export_gguf
from serving.parity import NEAR_TIE
from tests.test_merge_model import make_run
from tests.tiny import build_tiny_adapter, build_tiny_llama


PROBES, NEW_TOKENS = 4, 7  # the parity probes (4 test rows + the general prompts) and tokens generated for each


@pytest.fixture(scope="module")
def sharp_model(tmp_path_factory):
    """A tiny model with clear logit winners (init std 0.3), and an adapter for it.

    Seed 26, planted so that the f32 file must answer exactly as the adapter does (`plant` checks it):
    - on every token of its greedy replies to the export's probes the top two logits are more than NEAR_TIE apart
      (at least 0.06; seed 0's closest pair was 0.0004 apart). llama.cpp's f16 KV cache moves such a gap by up to
      ~0.03 against torch (0.022 measured on this model; 7.5e-5 with an f32 cache): no coin tosses.
    - no reply is cut by the token budget inside a UTF-8 character (the random model emits lone bytes): the server
      would generate on to complete the character, and its text would be longer than llama.cpp's in process.
    """
    root = tmp_path_factory.mktemp("sharp")
    model = build_tiny_llama(root / "model", init_std=0.3, seed=26)
    return model, build_tiny_adapter(model, root / "adapter")


def plant(run: Path) -> tuple[float, int]:
    """(the smallest gap between the top two logits of base + adapter over its greedy replies to the export's probes,
    how many of those replies end inside a UTF-8 character), read with the run's f32 GGUF vocabulary."""
    import codecs

    import torch
    from llama_cpp import Llama

    from serving.run_folder import read_run
    from serving.verify import load_reference

    ref = load_reference(read_run(str(run), for_merge=True), limit=PROBES, max_new_tokens=NEW_TOKENS)
    vocab = Llama(model_path=str(run / "gguf" / "model-f32.gguf"), vocab_only=True, verbose=False)
    gaps, cut = [], 0
    try:
        for prompt, reply in zip(ref.prompts, ref.replies):
            with torch.inference_mode():
                logits = ref.model(torch.tensor([prompt + reply])).logits[0, len(prompt) - 1:len(prompt) - 1 + len(reply)]
            top = logits.float().topk(2).values
            gaps += (top[:, 0] - top[:, 1]).tolist()
            pending = codecs.getincrementaldecoder("utf-8")("ignore")
            pending.decode(vocab.detokenize([t for t in reply if t not in ref.eos]), final=False)
            cut += bool(pending.getstate()[0])
    finally:
        vocab.close()
    return min(gaps), cut


@pytest.fixture(scope="module")
def exported(sharp_model, tmp_path_factory):
    """One verified export of a tiny run (f16 + q8_0 + q4_k_m), shared by the tests that read it."""
    from tests.conftest import write_small_data

    root = tmp_path_factory.mktemp("export")
    data = write_small_data(root / "data")
    run = make_run(root, *sharp_model, data, mergeable=True)
    report = export_gguf(ExportConfig(run_dir=str(run), quants=["f32", "q8_0", "q4_k_m"], pre_tokenizer="gpt-2",
                                      limit=PROBES, eval_limit=4, max_new_tokens=NEW_TOKENS))
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
    hosts (the real model's f16 figure is in bench/RESULTS.md). The sharp model is planted without near-ties, so
    f32 must agree on every probe."""
    run, report = exported
    by_quant = {f.quant: f for f in report.files}
    assert list(by_quant) == ["f16", "f32", "q8_0", "q4_k_m"] and report.gate == "f32"
    for check in report.files:
        assert check.tokens_ok is True and check.template_ok is True, check.detail
        assert check.agreement is not None and 0.0 <= check.agreement <= 1.0
        assert check.served_same is not None and check.served_default is not None
    f32 = by_quant["f32"]
    # The plant holds (see sharp_model): no near-tie on any reply token, so f32 must answer as the adapter does, in
    # llama.cpp and through its server, and the export passes.
    smallest_gap, cut_inside_a_character = plant(run)
    assert smallest_gap > NEAR_TIE and cut_inside_a_character == 0
    assert f32.agreement >= 0.99 and f32.mismatches == [], f32.mismatches
    assert f32.served_same >= 0.99
    assert report.passed is True
    saved = json.loads((run / "gguf" / "export.json").read_text())
    assert saved["passed"] is report.passed and saved["gate"] == "f32"
    assert [f["quant"] for f in saved["files"]] == ["f16", "f32", "q8_0", "q4_k_m"]
    assert "| model-f32.gguf |" in (run / "gguf" / "export.md").read_text()


def _checks(**gate) -> list[FileCheck]:
    """Files that all pass (f32 the gate); `gate` overrides the f32 file's figures."""
    def check(quant, agreement):
        return FileCheck(quant=quant, file=f"model-{quant}.gguf", bytes=1, agreement=agreement, tokens_ok=True,
                         template_ok=True, served_same=1.0, served_default=1.0)

    files = [check("f16", 0.9), check("f32", 1.0), check("q4_k_m", 0.5)]
    files[1] = dataclasses.replace(files[1], **gate)
    return files


def _report(files: list[FileCheck], **kw) -> ExportReport:
    return ExportReport(**{**dict(run_dir="r", out="r/gguf", files=files, modelfile="Modelfile", metadata_problems=[],
                                  verified=True), **kw})


def test_the_gate_file_alone_must_agree_and_every_file_must_tokenise_as_training():
    assert _report(_checks()).passed is True  # f16 at 90% and q4_k_m at 50% are reported, not required
    assert _report(_checks(agreement=0.98)).passed is False
    assert _report(_checks(agreement=None)).passed is False
    assert _report(_checks(served_same=0.98)).passed is False
    assert _report(_checks(served_same=None)).passed is False
    assert _report(_checks(), metadata_problems=["eos id 2, training 0"]).passed is False
    assert _report(_checks(), verified=False).passed is False
    broken = _checks()
    broken[2].tokens_ok = False  # a small file that splits a prompt differently fails the export
    assert _report(broken).passed is False
    broken = _checks()
    broken[0].template_ok = False
    assert _report(broken).passed is False
    # Without f32, f16 is the gate: at 90% it fails
    without_f32 = [f for f in _checks() if f.quant != "f32"]
    assert _report(without_f32).gate == "f16" and _report(without_f32).passed is False
    assert "# GGUF export: FAILED" in _report(without_f32).markdown()
    assert "# GGUF export: NOT VERIFIED" in _report(_checks(), verified=False).markdown()


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


def test_converter_is_installed_where_make_setup_puts_it(monkeypatch):
    monkeypatch.delenv(gguf.ENV, raising=False)
    root = gguf.converter_root()
    assert root == Path(sys.prefix) / "share" / "llama.cpp"
    assert (root / "convert_hf_to_gguf.py").is_file() and (root / "conversion").is_dir()
    assert (root / "gguf-py" / "gguf").is_dir()
