"""Default-model resolution: local folders, clear errors, and the offline GGUF copy."""

from __future__ import annotations

import json

import pytest

from ftassist.errors import UserError
from ftassist.model import resolve_model


def test_local_folder_is_used_as_is(tiny_model):
    assert resolve_model(str(tiny_model)) == str(tiny_model)


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_missing_path_is_named(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        resolve_model(str(tmp_path / "nope"))


def test_unknown_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="hub is not reachable"):
        resolve_model("someone/some-model")


@pytest.mark.slow
def test_default_model_prepared_offline_from_gguf(tmp_path, monkeypatch):
    """The shipped GGUF becomes a normal safetensors folder that transformers loads and that answers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("FTASSIST_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = resolve_model(None)
    assert path.startswith(str(tmp_path))
    files = {p.name for p in (tmp_path / "models" / "SmolLM2-135M-Instruct").iterdir()}
    assert "model.safetensors" in files and "tokenizer.json" in files
    assert not any(name.endswith((".bin", ".gguf", ".tmp")) for name in files)
    config = json.loads((tmp_path / "models" / "SmolLM2-135M-Instruct" / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2+2? Answer with a number."}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert "4" in tok.decode(out[0, prompt["input_ids"].shape[1]:])
    assert resolve_model(None) == path  # prepared once, then reused


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(UserError, match="magic bytes"):
        resolve_model(str(bad))
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    with pytest.raises(UserError, match="must be a .gguf"):
        resolve_model(str(other))


def test_a_folder_with_two_gguf_files_asks_for_one(tmp_path):
    for name in ("a.Q4_K_M.gguf", "a.Q8_0.gguf"):
        (tmp_path / name).write_bytes(b"GGUF")
    with pytest.raises(UserError, match=r"holds 2 GGUF files \(a.Q4_K_M.gguf, a.Q8_0.gguf\); pass the one"):
        resolve_model(str(tmp_path))


@pytest.mark.slow
def test_a_gguf_model_is_dequantised_once_and_trains(tiny_model, small_data, tmp_path, monkeypatch, capsys):
    """A GGUF written by the project's own converter (f32) is loaded back as `--model`, from the file and from its
    folder: the same weights and tokens as the model it came from, prepared once into the cache, and it trains."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftassist_cli import main
    from serving import gguf

    monkeypatch.setenv("FTASSIST_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "ollama"
    folder.mkdir()
    file = gguf.convert(tiny_model, folder / "tiny.gguf", "f32", pre_tokenizer="gpt-2")
    prepared = resolve_model(str(file))
    assert prepared.startswith(str(tmp_path / "cache" / "models" / "tiny-"))
    stamp = (tmp_path / "cache" / "models").stat().st_mtime_ns, sorted(p.name for p in (tmp_path / "cache" / "models").iterdir())
    assert resolve_model(str(folder)) == prepared  # the folder holding it: the same prepared copy, not a second one
    assert sorted(p.name for p in (tmp_path / "cache" / "models").iterdir()) == stamp[1]

    original = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    loaded = AutoModelForCausalLM.from_pretrained(prepared, dtype=torch.float32)
    text = "Order 4 boxes to Leeds by Friday {\"qty\": 4}"
    ids = AutoTokenizer.from_pretrained(tiny_model)(text)["input_ids"]
    assert AutoTokenizer.from_pretrained(prepared)(text)["input_ids"] == ids
    with torch.no_grad():
        want, got = original(torch.tensor([ids])).logits, loaded(torch.tensor([ids])).logits
    assert torch.allclose(want, got, atol=1e-4), (want - got).abs().max()

    run = tmp_path / "run"
    code = main(["train", "--data", str(small_data), "--out", str(run), "--model", str(file),
                 "--max-steps", "2", "--batch-size", "2", "--grad-accum", "1", "--save-steps", "2"])
    assert code == 0 and "trained 2 steps" in capsys.readouterr().out
    assert json.loads((run / "run.json").read_text())["base_model"] == prepared
