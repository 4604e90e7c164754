"""bf16 on the CPUs that are fast at it: the probe, its per-host cache, the planner's choice, a real bf16 run."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from ftassist.train import precision
from ftassist.train.planner import GiB, Hardware, detect_hardware, plan_training, resolve_dtype
from ftassist.train.precision import MatmulRates, cpu_rates
from tests.test_train_planner import SMOL

FAST = MatmulRates(fp32_gflops=199.0, bf16_gflops=877.0)  # AVX512-BF16 host of this kind (the figures)
SLOW = MatmulRates(fp32_gflops=27.2, bf16_gflops=1.8)  # AVX2-only AMD EPYC (measured here)


@pytest.fixture
def probing(monkeypatch, tmp_path):
    """The probe switched on (the test session switches it off) with an empty cache of its own."""
    monkeypatch.setenv("FTASSIST_BF16_PROBE", "1")
    monkeypatch.setenv("FTASSIST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_planner_picks_bf16_where_the_probe_says_it_is_fast_and_fp32_where_not(probing):
    for rates, want in ((FAST, "bfloat16"), (SLOW, "float32")):
        hw = detect_hardware("cpu", probe=lambda r=rates: r)
        assert hw.device == "cpu" and hw.rates == rates
        dtype = resolve_dtype("auto", hw, "lora")
        assert dtype == want
        plan = plan_training(SMOL, hw, seq_len=180, method="lora", dtype=dtype, lora_r=16, n_examples=400)
        assert plan.dtype == want
        if want == "bfloat16":
            assert "bfloat16 autocast, LoRA weights in float32: this CPU multiplies bf16 4.4x as fast" in plan.explanation
        else:
            assert "float32: this CPU has no fast bfloat16: fp32 27 GFLOP/s, bf16 1.8 GFLOP/s" in plan.explanation
    fast = detect_hardware("cpu", probe=lambda: FAST)
    assert resolve_dtype("auto", fast, "qlora") == "float32"  # 4-bit on a CPU stays fp32
    assert resolve_dtype("float32", fast, "lora") == "float32"  # an explicit choice is kept, and said so
    plan = plan_training(SMOL, fast, seq_len=180, method="lora", dtype="float32", lora_r=16, n_examples=400)
    assert "float32 as asked, though this CPU multiplies bf16 4.4x as fast" in plan.explanation


def test_the_probe_is_off_when_asked(monkeypatch):
    monkeypatch.setenv("FTASSIST_BF16_PROBE", "0")
    hw = detect_hardware("cpu", probe=lambda: pytest.fail("the probe ran though it is off"))
    assert hw.rates is None and resolve_dtype("auto", hw) == "float32"
    plan = plan_training(SMOL, hw, seq_len=180, method="lora", dtype="float32", lora_r=16, n_examples=400)
    assert "the bfloat16 probe was off: FTASSIST_BF16_PROBE=0" in plan.explanation


def test_rates_are_measured_once_per_host_and_survive_a_broken_cache(probing):
    calls = []

    def measure():
        calls.append(1)
        return SLOW

    assert cpu_rates(measure=measure) == SLOW and cpu_rates(measure=measure) == SLOW
    assert len(calls) == 1  # the second call read the cache
    stored = json.loads((probing / precision.PROBE_FILE).read_text())
    assert stored == {precision.host_key(): {"fp32_gflops": 27.2, "bf16_gflops": 1.8}}
    (probing / precision.PROBE_FILE).write_text("{not json")
    assert cpu_rates(measure=measure) == SLOW and len(calls) == 2  # measured again, cache rewritten
    assert json.loads((probing / precision.PROBE_FILE).read_text())[precision.host_key()]["fp32_gflops"] == 27.2


def test_the_real_probe_measures_both_precisions():
    rates = precision.measure_rates()
    assert rates.fp32_gflops > 0.5 and rates.bf16_gflops > 0.01
    assert precision.fast_bf16(rates) == (rates.bf16_gflops >= 1.5 * rates.fp32_gflops)


def test_a_host_the_probe_found_fast_trains_in_bf16_with_fp32_lora_weights(probing, tiny_model, small_data, tmp_path):
    """The whole path on the tiny model: the cached probe result says fast, so `train` plans bf16 on this CPU,
    trains under bf16 autocast with the LoRA weights in fp32, and the run record and plan say so."""
    from ftassist.config import TrainConfig
    from ftassist.train.trainer import train

    probing.mkdir(parents=True)
    (probing / precision.PROBE_FILE).write_text(json.dumps({precision.host_key(): {"fp32_gflops": 199.0,
                                                                                      "bf16_gflops": 877.0}}))
    run = tmp_path / "run"
    result = train(TrainConfig(data=str(small_data), out=str(run), model=str(tiny_model), max_steps=3, batch_size=4,
                               grad_accum=1, save_steps=3, learning_rate=2e-3, task_metric=False, device="cpu"),
                   progress=False)
    assert result.plan.dtype == "bfloat16" and result.steps == 3
    info = json.loads((run / "run.json").read_text())
    assert info["dtype"] == "bfloat16" and "bfloat16 autocast" in info["plan_explanation"]
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    assert weights and {str(w.dtype) for w in weights.values()} == {"torch.float32"}
    assert all(w.isfinite().all() for w in weights.values())


def test_cpu_hardware_without_a_probe_result_is_fp32():
    hw = Hardware("cpu", "CPU", budget=18 * GiB, total=24 * GiB)
    assert resolve_dtype("auto", hw) == "float32"
