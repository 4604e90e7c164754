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
