"""The GPU path's decisions, each a pure function of the device's capabilities, checked with the capabilities of the
GPUs people rent injected (T4, V100, L4, A100, H100) and with no GPU: no test here needs one."""

from __future__ import annotations

import dataclasses
import gc
import weakref

import pytest

from ftassist.config import ServeConfig, TrainConfig
from ftassist.device import GiB, PROFILES, merge_placement, pick_gpu, place_server, server_memory_fraction, serve_dtype, train_dtype
from ftassist.errors import ConfigError
from ftassist.train.distributed import launch_command
from ftassist.train.planner import Hardware, ModelShape, plan_training, resolve_dtype
from serving.launch import build_vllm_argv, vllm_env

# name: (training dtype, served dtype of a model trained there, accelerate flag, merge dtype of a bf16-trained run)
EXPECTED = {
    "T4": ("float16", "float16", "fp16", "float16"),
    "V100": ("float16", "float16", "fp16", "float16"),
    "L4": ("bfloat16", "bfloat16", "bf16", "bfloat16"),
    "A100": ("bfloat16", "bfloat16", "bf16", "bfloat16"),
    "H100": ("bfloat16", "bfloat16", "bf16", "bfloat16"),
    "cpu": ("float32", "float32", None, "float32"),
}
EIGHT_B = ModelShape(vocab=128256, hidden=4096, layers=32, intermediate=14336, heads=32, kv_heads=8)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_one_precision_per_device_from_training_to_serving(name):
    device = PROFILES[name]
    trained, served, flag, merged = EXPECTED[name]
    assert train_dtype(device) == trained
    # The server runs what training ran (and merge saved): a bf16-trained model on a T4 is served in fp16.
    assert serve_dtype("auto", device, trained=trained) == served
    assert serve_dtype("auto", device, trained="bfloat16") == served
    assert merge_placement(device, "bfloat16", 2 * GiB).dtype == merged
    argv = build_vllm_argv(ServeConfig(model="/m"), python="py", device=device, trained=trained)
    assert argv[argv.index("--dtype") + 1] == served
    launch = launch_command(TrainConfig(data="d", out="runs/a"), num_processes=2, strategy="ddp",
                            cpu=not device.cuda, device=device)
    assert (launch[launch.index("--mixed_precision") + 1] if "--mixed_precision" in launch else None) == flag
    # The planner's --dtype auto is the same decision, reached from the hardware it detected.
    hw = Hardware.from_device(device) if device.cuda else Hardware("cpu", "CPU", 8 * GiB, 8 * GiB)
    assert resolve_dtype("auto", hw, "qlora" if device.cuda else "lora") == trained


def test_bfloat16_asked_of_a_gpu_without_it_is_refused_before_vllm_loads():
    with pytest.raises(ValueError, match=r"Tesla T4 \(compute capability 7.5\) has no bfloat16; use --dtype float16"):
        build_vllm_argv(ServeConfig(model="/m", dtype="bfloat16"), device=PROFILES["T4"])
    argv = build_vllm_argv(ServeConfig(model="/m", dtype="bfloat16"), device=PROFILES["A100"])
    assert argv[argv.index("--dtype") + 1] == "bfloat16"
    # An explicit float32 is kept on every device (the precision a CPU-trained adapter's parity needs).
    assert serve_dtype("float32", PROFILES["T4"]) == "float32"


def test_an_explicit_training_dtype_reaches_accelerate_as_asked():
    cfg = TrainConfig(data="d", out="runs/a", dtype="float32")
    argv = launch_command(cfg, num_processes=2, strategy="ddp", device=PROFILES["H100"])
    assert argv[argv.index("--mixed_precision") + 1] == "no"


def test_qlora_adapters_stay_float32_unless_training_computes_in_bfloat16():
    from ftassist.device import adapter_dtype

    assert [adapter_dtype("qlora", train_dtype(PROFILES[n])) for n in ("T4", "V100", "L4", "H100", "cpu")] == \
        ["float32", "float32", None, None, "float32"]
    assert adapter_dtype("lora", "float16") is None  # peft keeps LoRA adapters float32 itself


def test_an_8b_model_merges_on_the_gpu_in_its_training_precision_and_streams_where_the_card_is_short():
    weights = EIGHT_B.params * 2
    on_h100 = merge_placement(PROFILES["H100"], "bfloat16", weights)
    assert (on_h100.dtype, on_h100.device_map) == ("bfloat16", "auto")
    assert on_h100.reason == "merged on the NVIDIA H100 80GB HBM3 in bfloat16, the precision it trained in"
    on_t4 = merge_placement(PROFILES["T4"], "bfloat16", weights)
    assert (on_t4.dtype, on_t4.device_map) == ("float16", "auto")
    assert "and the CPU (the 15.0 GiB of weights do not fit its 15 GiB)" in on_t4.reason
    # An asked precision wins; a CPU merges in float32 (the parity gate's precision there).
    assert merge_placement(PROFILES["A100"], "bfloat16", weights, asked="float32").dtype == "float32"
    assert merge_placement(PROFILES["cpu"], "bfloat16", weights)[:2] == ("float32", "cpu")


def test_a_server_beside_a_job_gets_the_share_the_job_leaves():
    l4 = PROFILES["L4"]
    alone = server_memory_fraction(l4, model_bytes=GiB)
    beside = server_memory_fraction(l4, model_bytes=GiB, job_bytes=8 * GiB)
    assert (alone, beside) == (0.9, 0.54)
    # What the share buys: the job, the server and CUDA's margin stay under the card's memory.
    assert beside * l4.total_bytes + 8 * GiB + GiB < l4.total_bytes
    with pytest.raises(ValueError, match="does not fit beside a 12.0 GiB training job on the Tesla T4"):
        server_memory_fraction(PROFILES["T4"], model_bytes=2 * GiB, job_bytes=12 * GiB)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        server_memory_fraction(PROFILES["cpu"], model_bytes=GiB)


def test_jobs_and_servers_are_pinned_to_the_least_used_gpu():
    two = [PROFILES["L4"], dataclasses.replace(PROFILES["L4"], index=1)]
    assert pick_gpu(two, {}) == 0
    assert pick_gpu(two, {0: 1}) == 1
    assert pick_gpu(two, {0: 1, 1: 2}) == 0
    assert pick_gpu([], {}) is None
    env = vllm_env({"PATH": "/bin"}, cuda=True, gpu=1)
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in vllm_env({"PATH": "/bin"}, cuda=False, gpu=1)  # nothing to pin on a CPU


def test_a_server_goes_to_a_gpu_without_a_server_and_the_least_training():
    two = [PROFILES["L4"], dataclasses.replace(PROFILES["L4"], index=1)]
    assert place_server(two, {}, {}, model_bytes=GiB) == (0, 0.9)
    assert place_server(two, {}, {0: 8 * GiB}, model_bytes=GiB) == (1, 0.9)
    assert place_server(two, {1: 1}, {0: 8 * GiB}, model_bytes=GiB) == (0, 0.54)  # the only GPU without a server
    with pytest.raises(ValueError, match="every GPU of this machine \\(2\\) already runs a model server"):
        place_server(two, {0: 1, 1: 1}, {}, model_bytes=GiB)
    assert place_server([], {}, {}, model_bytes=GiB) == (None, None)


def test_the_server_share_reaches_vllm_only_on_a_gpu():
    cfg = ServeConfig(model="/m", gpu_memory_utilization=0.54)
    argv = build_vllm_argv(cfg, device=PROFILES["L4"])
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.54"
    assert "--gpu-memory-utilization" not in build_vllm_argv(cfg, device=PROFILES["cpu"])
    assert "--gpu-memory-utilization" not in build_vllm_argv(ServeConfig(model="/m"), device=PROFILES["L4"])


def test_serve_config_refuses_a_bad_gpu_index_or_share():
    with pytest.raises(ConfigError) as err:
        ServeConfig(model="/m", gpu=-1, gpu_memory_utilization=1.2).validate()
    text = str(err.value)
    assert "--gpu -1 must be a GPU index" in text and "--gpu-memory-utilization 1.2 must be between 0.05 and 0.95" in text


def test_qlora_on_an_8b_model_fits_a_t4_in_float16():
    hw = Hardware.from_device(PROFILES["T4"])
    dtype = resolve_dtype("auto", hw, "qlora")
    plan = plan_training(EIGHT_B, hw, seq_len=1024, method="qlora", dtype=dtype, lora_r=16)
    assert (plan.dtype, plan.device) == ("float16", "cuda")
    assert plan.estimate_gib <= hw.budget / GiB


def test_an_oom_retry_frees_the_failed_trainer_before_building_the_next():
    import torch

    from ftassist.train.planner import Plan
    from ftassist.train.trainer import fit_retrying_oom

    class Trainer:
        def __init__(self):
            self.me = self  # a reference cycle, as HF trainers have (callbacks, accelerator): only gc frees it

        def train(self):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    alive_at_build: list[bool] = []
    refs: list[weakref.ref] = []
    released: list[int] = []

    def build():
        alive_at_build.append(any(r() is not None for r in refs))
        trainer = Trainer()
        refs.append(weakref.ref(trainer))
        if len(refs) == 3:
            trainer.train = lambda: "done"  # the third micro-batch fits
        return trainer, None

    plan = Plan("lora", "cuda", "bfloat16", 8, 2, False, 256, 1.0, 1.0, "")
    trainer, _, out = fit_retrying_oom(build, lambda t: t.train(), plan,
                                       release=lambda: (gc.collect(), released.append(1)))
    assert out == "done" and (plan.micro_batch, plan.grad_accum) == (2, 8)
    assert alive_at_build == [False, False, False], "a failed trainer was still alive when the next was built"
    assert len(released) == 2
