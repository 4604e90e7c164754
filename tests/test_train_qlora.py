"""QLoRA on CPU: the tiny model trained on a bitsandbytes NF4 (double quant) base, its adapter used in full precision."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from ftassist.train import trainer as training
from tests.test_train_runner import tiny_cfg

import bitsandbytes as bnb  # noqa: E402 - installed by `make test`; a missing extra must fail, not skip


def test_qlora_trains_lora_on_a_frozen_nf4_base_and_saves_a_plain_peft_adapter(tiny_model, small_data, tmp_path,
                                                                               monkeypatch):
    built = []

    def keep_trainer(*args, **kwargs):
        trainer, guard = build_trainer(*args, **kwargs)
        model = trainer.model
        built.append({
            "trainer": trainer,
            "lora_before": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
            "nf4_before": {n: m.weight.detach().clone() for n, m in model.named_modules()
                           if isinstance(m, bnb.nn.Linear4bit)},
        })
        return trainer, guard

    build_trainer = training.build_trainer
    monkeypatch.setattr(training, "build_trainer", keep_trainer)
    run = tmp_path / "qlora"
    result = training.train(tiny_cfg(small_data, run, tiny_model, method="qlora", device="cpu", max_steps=10,
                                   save_steps=100), progress=False)

    # The base really is 4-bit: all 7 linear layers of both blocks are bnb Linear4bit holding packed NF4
    # (two 4-bit codes per uint8) with double-quantized constants; only the LM head and embeddings stay float.
    (seen,) = built
    model = seen["trainer"].model
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert len(quantized) == 2 * 7
    for name, layer in quantized.items():
        state = layer.weight.quant_state
        assert layer.weight.dtype == torch.uint8 and layer.weight.numel() * 2 == layer.in_features * layer.out_features
        assert (state.quant_type, state.nested, state.dtype) == ("nf4", True, torch.float32), name
        assert torch.equal(layer.weight, seen["nf4_before"][name]), f"{name}: the 4-bit base changed"
        # never repacked for bitsandbytes' fused bf16 CPU kernel (no backward): scored between steps, trained after
        assert not layer.support_avx512bf16_for_cpu and not getattr(state, "packing_format_for_cpu", False), name
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and p.dtype == torch.float32 for n, p in trainable.items())
    for name, before in seen["lora_before"].items():
        assert not torch.equal(trainable[name].detach(), before), f"{name} did not train"

    # Loss is finite and falls.
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]  # validation rows sit beside the loss rows
    assert len(losses) == 10 and all(isinstance(x, float) and x == x and abs(x) != float("inf") for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05
    assert result.steps == 10

    info = json.loads((run / "run.json").read_text())
    assert (info["method"], info["dtype"], info["device"], info["mergeable"]) == ("qlora", "float32", "cpu", True)
    assert info["quantization"] == {"library": "bitsandbytes", "bits": 4, "quant_type": "nf4", "double_quant": True,
                                    "compute_dtype": "float32"}
    assert "NF4 4-bit" in info["plan_explanation"]

    # The adapter is an ordinary float32 peft LoRA adapter: nothing 4-bit in it, keyed like a LoRA run's.
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["base_model_name_or_path"]) == ("LORA", 16, str(tiny_model))
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    assert len(weights) == 2 * 7 * 2 and all("lora_A" in k or "lora_B" in k for k in weights)
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values())
    assert any(w.abs().sum() > 0 for k, w in weights.items() if "lora_B" in k)

    # It loads onto the full-precision base, holds exactly the trained values, and changes the model's output.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    full = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
                                     run / "adapter").eval()
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in full.modules())
    loaded = {n.replace(".default", ""): p for n, p in full.named_parameters() if "lora_" in n}
    assert {n.replace(".default", "") for n in trainable} == set(loaded)
    for name, p in trainable.items():
        assert torch.equal(loaded[name.replace(".default", "")].detach(), p.detach())
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        tuned = full(ids).logits
        with full.disable_adapter():
            plain = full(ids).logits
    assert torch.isfinite(tuned).all() and not torch.allclose(tuned, plain)

    # Merge (and verify, and so serving) use the base the adapter trained and was selected on: the NF4 weights,
    # dequantized, not the original full-precision ones it never saw.
    from serving.run_folder import read_run

    merged = read_run(run).load_model(torch.float32)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in merged.modules())
    model.eval()
    with torch.no_grad():
        as_trained = model(ids).logits
        from_merge = merged(ids).logits
    assert torch.allclose(from_merge, as_trained, atol=1e-4), (from_merge - as_trained).abs().max()
    assert (from_merge - tuned).abs().max() > 1e-3  # the original base + adapter is another model
