"""serving.lora_ops: the same numbers as vLLM's own CPU LoRA ops for tokens with an adapter, no LoRA for tokens
without one (index -1, where vLLM's CPU ops used the last slot), installed in vLLM's processes by the plugin."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch
from vllm.lora.ops import torch_ops as vllm_ops

from serving import lora_ops


def _case(seed: int, tokens: int, slots: int, out: int, inp: int, four_dims: bool):
    g = torch.Generator().manual_seed(seed)
    weights = torch.randn(slots, out, inp, generator=g)
    if four_dims:
        weights = weights.unsqueeze(1)
    x = torch.randn(tokens, inp, generator=g)
    indices = torch.randint(-1, slots, (tokens,), generator=g)  # -1: a token of a request for the base model
    if tokens >= 2:
        indices[:2] = torch.tensor([-1, 0])  # both kinds, whatever the draw
    base = torch.randn(tokens, out + 3, generator=g)
    return weights, x, indices, base


@pytest.mark.parametrize("four_dims", [False, True])
@pytest.mark.parametrize("slots", [1, 3])
def test_bgmv_ops_match_vllm(slots, four_dims):
    weights, x, indices, base = _case(slots + 10 * four_dims, 37, slots, 24, 16, four_dims)
    for name, args in [("bgmv_shrink", (0.5,)), ("bgmv_expand", (True,)), ("bgmv_expand", (False,)),
                       ("bgmv_expand_slice", (2, 24, True)), ("bgmv_expand_slice", (1, 24, False))]:
        ours, theirs = base.clone(), base.clone()
        getattr(lora_ops, name)(x, weights, ours, indices, *args)
        getattr(vllm_ops, name)(x, weights, theirs, indices, *args)
        lora, none = indices >= 0, indices < 0
        torch.testing.assert_close(ours[lora], theirs[lora], rtol=1e-5, atol=1e-5, msg=f"{name}{args}")
        assert not torch.equal(ours[lora], base[lora])  # the op wrote something
        adds = name != "bgmv_shrink" and args[-1] is True
        columns = ours[none] != base[none]  # what the op changed in the rows without an adapter
        if adds:  # adding no LoRA leaves the rows as they were
            assert not columns.any()
        else:  # a shrink or an overwrite writes zeros there, in the columns it writes
            assert (ours[none][columns] == 0).all() and columns.any()


def test_sgmv_ops_match_vllm_on_a_prefill_of_three_sequences():
    weights, x, _, base = _case(7, 12, 2, 24, 16, False)
    seq_lens, seq_loras = torch.tensor([5, 4, 3]), torch.tensor([1, 0, 1])
    starts = torch.tensor([0, 5, 9])
    meta = (starts, seq_lens, seq_loras, 3, 5, 12)
    for name, args in [("sgmv_shrink", (0.25,)), ("sgmv_expand", (True,)), ("sgmv_expand_slice", (3, 24, False))]:
        ours, theirs = base.clone(), base.clone()
        getattr(lora_ops, name)(x, weights, ours, *meta, *args)
        getattr(vllm_ops, name)(x, weights, theirs, *meta, *args)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5, msg=name)


def test_expand_of_one_row_broadcast_like_vllm():
    weights, x, _, base = _case(3, 1, 2, 24, 16, False)
    ours, theirs = base[:4].clone(), base[:4].clone()
    lora_ops.bgmv_expand(x, weights, ours, torch.tensor([1]), True)
    vllm_ops.bgmv_expand(x, weights, theirs, torch.tensor([1]), True)
    torch.testing.assert_close(ours, theirs)


def test_register_installs_the_ops_in_vllms_cpu_wrapper_and_the_plugin_is_declared(monkeypatch):
    from vllm.lora.punica_wrapper import punica_cpu

    saved = {name: getattr(punica_cpu, name) for name in lora_ops.OPS}
    try:
        monkeypatch.setenv(lora_ops.ENV, "0")
        assert lora_ops.register() is False
        assert punica_cpu.sgmv_shrink is saved["sgmv_shrink"]
        monkeypatch.delenv(lora_ops.ENV)
        assert lora_ops.register() is True
        assert all(getattr(punica_cpu, name) is op for name, op in lora_ops.OPS.items())
    finally:
        for name, op in saved.items():
            setattr(punica_cpu, name, op)
    plugins = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="vllm.general_plugins")}
    assert plugins.get("ftassist_lora_ops") == "serving.lora_ops:register"


def test_a_prefill_sequence_without_an_adapter_gets_no_lora_in_a_mixed_batch():
    weights, x, _, base = _case(11, 12, 2, 24, 16, False)
    seq_lens, seq_loras, starts = torch.tensor([5, 4, 3]), torch.tensor([1, -1, 0]), torch.tensor([0, 5, 9])
    ours, theirs = base.clone(), base.clone()
    lora_ops.sgmv_expand(x, weights, ours, starts, seq_lens, seq_loras, 3, 5, 12, True)
    vllm_ops.sgmv_expand(x, weights, theirs, starts, seq_lens, seq_loras, 3, 5, 12, True)
    assert torch.equal(ours[5:9], base[5:9])  # the base request's tokens: as if it ran alone
    assert not torch.equal(theirs[5:9], base[5:9])  # vLLM's CPU op gave them the adapter in the last slot
    torch.testing.assert_close(ours[:5], theirs[:5])
    torch.testing.assert_close(ours[9:], theirs[9:])
