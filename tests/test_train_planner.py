"""The planner's pure decisions: memory estimate, batch choice, refusal, OOM back-off."""

from __future__ import annotations

import pytest

from ftassist.errors import UserError
from ftassist.train.planner import GiB, Hardware, ModelShape, estimate_memory, plan_training, resolve_dtype, \
    resolve_method, shrink_after_oom

SMOL = ModelShape(vocab=49152, hidden=576, layers=30, intermediate=1536, heads=9, kv_heads=3, tied_embeddings=True)
SEVEN_B = ModelShape(vocab=32000, hidden=4096, layers=32, intermediate=11008, heads=32, kv_heads=32)


def test_shape_counts_parameters_like_the_real_models():
    assert 130e6 < SMOL.params < 140e6  # SmolLM2-135M
    assert 6.5e9 < SEVEN_B.params < 6.9e9  # Llama-2-7B
    # LoRA r=16 on all seven linear layers of SmolLM2: 30 x 16 x (sum of in+out)
    assert SMOL.lora_params(16) == 30 * 16 * sum(a + b for a, b in SMOL.linear_shapes())


def test_checkpointing_and_qlora_cut_the_estimate():
    kw = dict(seq_len=1024, micro_batch=8, lora_r=16, compute_bytes=2)
    full = estimate_memory(SEVEN_B, weight_bytes=2, **kw)
    ck = estimate_memory(SEVEN_B, weight_bytes=2, checkpointing=True, **kw)
    q = estimate_memory(SEVEN_B, weight_bytes=0.53, checkpointing=True, **kw)
    assert ck.activations < full.activations / 5
    assert q.weights < ck.weights / 3
    assert full.total > ck.total > q.total


def test_cpu_plan_for_the_demo_is_fp32_lora_without_checkpointing():
    hw = Hardware("cpu", "CPU (2 cores)", budget=18 * GiB, total=24 * GiB)
    method, dtype = resolve_method("auto", "cpu"), resolve_dtype("auto", hw)
    plan = plan_training(SMOL, hw, seq_len=180, method=method, dtype=dtype, lora_r=16, n_examples=400)
    assert (plan.method, plan.dtype, plan.checkpointing) == ("lora", "float32", False)
    assert (plan.micro_batch, plan.grad_accum) == (8, 1)  # on a CPU an effective batch of 8: twice the updates per example
    assert "float32" in plan.explanation and "checkpointing is off" in plan.explanation


def test_small_gpu_gets_checkpointing_and_a_big_one_drops_it_keeping_the_effective_batch():
    # QLoRA 7B at 2048 tokens on CUDA, estimated: micro-batch 4 without checkpointing needs 69.8 GiB, 2 needs 37.7;
    # with checkpointing 8 needs 13.6 GiB and 16 needs 21.6.
    hw = Hardware("cuda", "small GPU", budget=int(14 * GiB), total=16 * GiB, bf16=True)
    plan = plan_training(SEVEN_B, hw, seq_len=2048, method="qlora", dtype="bfloat16", lora_r=16)
    # 14 GiB: nothing of 4 or more fits without checkpointing, so the biggest micro-batch that fits with it.
    assert (plan.micro_batch, plan.grad_accum, plan.checkpointing) == (8, 2, True)
    assert plan.estimate_gib == pytest.approx(13.55, abs=0.01) and plan.budget_gib == 14.0
    big = Hardware("cuda", "big GPU", budget=int(130 * GiB), total=141 * GiB, bf16=True)
    roomy = plan_training(SEVEN_B, big, seq_len=2048, method="qlora", dtype="bfloat16", lora_r=16)
    # More memory buys what the planner prefers first: no checkpointing (a third less compute), even at a smaller
    # micro-batch (4 without it, not 8 with it); the effective batch stays 16 either way.
    assert (roomy.micro_batch, roomy.grad_accum, roomy.checkpointing) == (4, 4, False)
    assert roomy.estimate_gib == pytest.approx(69.78, abs=0.01)


def test_refuses_clearly_when_nothing_fits():
    hw = Hardware("cuda", "tiny GPU", budget=2 * GiB, total=4 * GiB, bf16=True)
    with pytest.raises(UserError, match="does not fit.*--max-length"):
        plan_training(SEVEN_B, hw, seq_len=4096, method="lora", dtype="bfloat16", lora_r=16)


def test_user_choices_are_kept():
    hw = Hardware("cpu", "CPU", budget=18 * GiB, total=24 * GiB)
    plan = plan_training(SMOL, hw, seq_len=128, method="lora", dtype="float32", lora_r=8, batch_size=2,
                         grad_accum=3, checkpointing="on")
    assert (plan.micro_batch, plan.grad_accum, plan.checkpointing) == (2, 3, True)


def test_oom_backoff_halves_the_micro_batch_a_few_times_then_gives_up():
    steps, state, retries = [], (16, 1), 0
    while (state := shrink_after_oom(*state, retries)) is not None:
        steps.append(state)
        retries += 1
    assert steps == [(8, 2), (4, 4), (2, 8)]
    assert all(m * a == 16 for m, a in steps)
    assert shrink_after_oom(1, 16, 0) is None


def test_cpu_estimate_matches_the_rss_measured_for_smollm2_at_8_x_212_tokens():
    # Measured with trl 1.16 on SmolLM2-shaped random models (fp32 LoRA r=16, 8 x 212 tokens, 3 steps), peak RSS
    # during train() above the RSS before it, vocab 49152: 1 / 3 / 5 layers: 1.36 / 1.66 / 2.03 GiB (1 layer was
    # 2.00-2.06 GiB with trl's tiled head, before ftassist.train.loss). The bench's whole process peaked at
    # 6.56-6.71 GiB at 8 x <=198 tokens (7.0-7.5 GiB with trl's tiled head).
    def step_cost(shape):  # what train() adds on top of the loaded model and runtime
        e = estimate_memory(shape, seq_len=212, micro_batch=8, lora_r=16, weight_bytes=4, compute_bytes=4)
        return (e.activations + e.lm_head + e.lora + e.optimizer) / GiB

    def smol(layers, vocab):
        return ModelShape(vocab=vocab, hidden=576, layers=layers, intermediate=1536, heads=9, kv_heads=3,
                          tied_embeddings=True)

    for (layers, vocab), measured in {(1, 49152): 1.36, (3, 49152): 1.66, (5, 49152): 2.03}.items():
        assert step_cost(smol(layers, vocab)) == pytest.approx(measured, rel=0.12), (layers, vocab)

    e = estimate_memory(SMOL, seq_len=212, micro_batch=8, lora_r=16, weight_bytes=4, compute_bytes=4)
    # The LM head + loss: 4 float32 copies of the 1696 x 49152 logits (the model's own cross-entropy on CPU).
    assert e.lm_head == 4 * 1696 * 49152 * 4
    assert 5.7 < e.activations / GiB < 5.85 and 8.0 < e.total / GiB < 8.2
    e198 = estimate_memory(SMOL, seq_len=198, micro_batch=8, lora_r=16, weight_bytes=4, compute_bytes=4)
    assert 6.71 < e198.total / GiB < 6.71 * 1.15  # above the bench's measured peak, but not by much

    # The full logits grow with the tokens, like the activations, and stay well below them.
    big = estimate_memory(SMOL, seq_len=1024, micro_batch=8, lora_r=16, weight_bytes=4, compute_bytes=4)
    assert big.lm_head == 4 * 8192 * 49152 * 4 and big.lm_head < big.activations / 4
    assert big.activations > 4.5 * e.activations
    # On CUDA trl's tiled Triton head (2 tiles, capped at 4096 tokens) and the caching allocator keep far less.
    gpu = estimate_memory(SMOL, seq_len=212, micro_batch=8, lora_r=16, weight_bytes=4, compute_bytes=4, device="cuda")
    assert gpu.activations < e.activations / 1.6 and gpu.lm_head == 2 * 1696 * 32768 * 4
    gpu_big = estimate_memory(SMOL, seq_len=1024, micro_batch=8, lora_r=16, weight_bytes=4, compute_bytes=4,
                              device="cuda")
    assert gpu_big.lm_head == 2 * 4096 * 32768 * 4


def test_explanation_names_every_part_of_the_estimate():
    hw = Hardware("cpu", "CPU (2 cores)", budget=18 * GiB, total=24 * GiB)
    plan = plan_training(SMOL, hw, seq_len=212, method="lora", dtype="float32", lora_r=16, batch_size=8, grad_accum=2)
    assert plan.estimate_gib == pytest.approx(8.08, abs=0.05)
    for part in ("weights 0.50 GiB", "activations 5.76 GiB", "LM head + loss 1.24 GiB", "runtime 0.50 GiB",
                 "Estimated memory 8.08 GiB of 18.00 GiB", "micro-batch 8 x 212 tokens"):
        assert part in plan.explanation
