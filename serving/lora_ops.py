"""LoRA on a vLLM CPU server at the cost of a matrix product, not of a copy of the adapter per token.

vLLM's CPU LoRA ops (`vllm.lora.ops.torch_ops`) gather the adapter's weights once per token
(`weights[indices]`: tokens x out x in floats) and multiply token by token (`einsum "bi,boi->bo"`). In a
prefill of a few thousand tokens that is hundreds of megabytes copied per layer and projection: a tuned
adapter's first pass over an eval's prompts took 4x its second (cached) one. The ops here give the same
result with one product per adapter present in the batch (`x[rows] @ W[adapter].T`), and keep the
originals' signatures and their output handling (padding, slices, add or overwrite). One difference, a fix: a
token with no adapter (index -1, a base-model request batched with adapter requests) gets no LoRA; vLLM's CPU ops
gave it the adapter in the last slot, so on a server with adapters a base reply depended on what else was running.

`register` (the `vllm.general_plugins` entry point, run by vLLM in each of its processes) puts them in
`vllm.lora.punica_wrapper.punica_cpu`, the only user of the torch ops. `FTASSIST_LORA_OPS=0` leaves vLLM's.

    >>> import torch
    >>> w = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)   # 2 adapters, out 3, in 4
    >>> x, out = torch.ones(3, 4), torch.zeros(3, 3)
    >>> bgmv_shrink(x, w, out, torch.tensor([0, 1, 0]), scaling=0.5)
    >>> out.tolist()
    [[3.0, 11.0, 19.0], [27.0, 35.0, 43.0], [3.0, 11.0, 19.0]]
"""

from __future__ import annotations

import logging
import os

import torch

ENV = "FTASSIST_LORA_OPS"
_log = logging.getLogger("vllm.ftassist_lora_ops")  # under vLLM's logger: its handler prints it in the server log


def grouped_products(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """out[b] = inputs[b] @ weights[indices[b]].T, one product per distinct index; 0 where the index is -1.

    -1 is vLLM's "no adapter" (a request for the base model). vLLM's CPU ops index the weights with it, which is
    the last slot: a base request batched with adapter requests got the adapter in that slot (its GPU kernels skip
    -1). Here it gets nothing, as a base request alone does.
    """
    w = weights.squeeze(1) if weights.dim() == 4 else weights
    x = inputs.to(dtype)
    distinct = torch.unique(indices)
    if distinct.numel() == 1 and int(distinct[0]) >= 0:
        return x @ w[int(distinct[0])].to(dtype).T
    out = torch.zeros(x.shape[0], w.shape[1], dtype=dtype, device=x.device)
    for index in distinct.tolist():
        if index >= 0:
            rows = indices == index
            out[rows] = x[rows] @ w[index].to(dtype).T
    return out


def bgmv_shrink(inputs: torch.Tensor, lora_b_weights: torch.Tensor, output_tensor: torch.Tensor,
                lora_indices_tensor: torch.Tensor, scaling: float = 1.0) -> None:
    outputs = grouped_products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(inputs: torch.Tensor, lora_b_weights: torch.Tensor, output_tensor: torch.Tensor,
                lora_indices_tensor: torch.Tensor, add_inputs: bool = True) -> None:
    outputs = grouped_products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = 1 if outputs.shape[0] == 1 and output_tensor.shape[0] != 1 else output_tensor.shape[0]
    common = min(outputs.shape[1], output_tensor.shape[1])  # adapter and model may pad differently
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(inputs: torch.Tensor, lora_b_weights: torch.Tensor, output_tensor: torch.Tensor,
                      lora_indices_tensor: torch.Tensor, slice_offset: int, slice_size: int,
                      add_inputs: bool = True) -> None:
    outputs = grouped_products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset: slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset: slice_offset + slice_size] = outputs


def sgmv_shrink(inputs, lora_a_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
                batches, max_seq_length, token_nums, scaling) -> None:
    bgmv_shrink(inputs, lora_a_weights, output_tensor, torch.repeat_interleave(lora_indices_tensor, seq_len_tensor),
                scaling)


def sgmv_expand(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
                batches, max_seq_length, token_nums, add_inputs=False) -> None:
    bgmv_expand(inputs, lora_b_weights, output_tensor, torch.repeat_interleave(lora_indices_tensor, seq_len_tensor),
                add_inputs)


def sgmv_expand_slice(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
                      batches, max_seq_length, token_nums, slice_offset, slice_size, add_inputs=False) -> None:
    bgmv_expand_slice(inputs, lora_b_weights, output_tensor,
                      torch.repeat_interleave(lora_indices_tensor, seq_len_tensor), slice_offset, slice_size, add_inputs)


OPS = {f.__name__: f for f in (bgmv_shrink, bgmv_expand, bgmv_expand_slice, sgmv_shrink, sgmv_expand, sgmv_expand_slice)}


def register() -> bool:
    """Put these ops in vLLM's CPU punica wrapper (vLLM calls this in each process); True when done.

    Nothing is changed with FTASSIST_LORA_OPS=0 or when that vLLM has no such wrapper or names (logged)."""
    if os.environ.get(ENV, "1") == "0":
        return False
    try:
        from vllm.lora.punica_wrapper import punica_cpu
    except Exception as exc:  # noqa: BLE001 - another vLLM build: keep its own ops
        _log.info("ftassist LoRA ops not installed: %s", exc)
        return False
    missing = [name for name in OPS if not hasattr(punica_cpu, name)]
    if missing:
        _log.info("ftassist LoRA ops not installed: vllm's punica_cpu has no %s", ", ".join(missing))
        return False
    for name, op in OPS.items():
        setattr(punica_cpu, name, op)
    _log.info("ftassist LoRA ops installed in vLLM's CPU punica wrapper (FTASSIST_LORA_OPS=0 keeps vLLM's own)")
    return True
