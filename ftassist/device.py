"""What the machine's accelerator can do, and every precision and placement decision that follows from it.

Each decision is a pure function of a `Device`, so the GPU path is tested on a machine without one, with the
capabilities of the GPUs people rent injected (`PROFILES`: T4, V100, L4, A100, H100, and no GPU):

    >>> [(name, train_dtype(d), serve_dtype("auto", d), mixed_precision(train_dtype(d)))
    ...  for name, d in PROFILES.items() if name in ("T4", "A100", "cpu")]
    [('T4', 'float16', 'float16', 'fp16'), ('A100', 'bfloat16', 'bfloat16', 'bf16'), ('cpu', 'float32', 'float32', 'no')]

Why these rules:
- bfloat16 needs compute capability 8.0 (Ampere) or later. A T4 (7.5) or V100 (7.0) runs bf16 matmuls emulated
  or not at all, and vLLM refuses `--dtype bfloat16` there, so training and serving both use float16 on them, and
  QLoRA's adapters stay float32 (trl casts them to bfloat16 whatever the GPU: `adapter_dtype`).
- Training, merging, verifying and serving use one precision per run: a float32 reference checked against a
  bfloat16 server agreed on 82% of greedy tokens, under the 99% gate (README, serving).
- Merge and verify run where training ran: on a GPU in the training dtype with `device_map`, so an 8B model needs
  ~16 GB of GPU memory instead of two float32 copies (~60 GB) in RAM (`merge_placement`).
- A training job and a vLLM server share a GPU only when both fit; the server is told its share
  (`--gpu-memory-utilization`), not vLLM's default 90% of the card (`server_memory_fraction`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

GiB = 2**30
BF16_CAPABILITY = (8, 0)  # Ampere: the first CUDA GPUs with native bfloat16
# What CUDA's context, cuBLAS workspaces and the caching allocator's slack take beside a process's tensors.
CUDA_MARGIN_BYTES = GiB
# vLLM needs the weights plus at least a little KV cache; below this share of the weights it cannot serve a batch.
MIN_KV_SHARE = 0.10


@dataclass(frozen=True)
class Device:
    """One accelerator (or the CPU) as the decisions below see it."""

    kind: str  # "cuda" or "cpu"
    name: str
    total_bytes: int = 0  # GPU memory (0 on a CPU: RAM is the planner's business)
    capability: tuple[int, int] | None = None  # CUDA compute capability
    index: int = 0

    @property
    def cuda(self) -> bool:
        return self.kind == "cuda"

    @property
    def bf16(self) -> bool:
        """Native bfloat16: CUDA compute capability >= 8.0 (a CPU's bf16 speed is `train.precision`'s probe)."""
        return self.cuda and self.capability is not None and tuple(self.capability) >= BF16_CAPABILITY


def _gpu(name: str, gib: float, capability: tuple[int, int]) -> Device:
    return Device("cuda", name, int(gib * GiB), capability)


# Capabilities of the GPUs a Space or a rented workstation has: what the tests inject.
PROFILES: dict[str, Device] = {
    "T4": _gpu("Tesla T4", 15.0, (7, 5)),
    "V100": _gpu("Tesla V100-SXM2-32GB", 31.7, (7, 0)),
    "L4": _gpu("NVIDIA L4", 22.0, (8, 9)),
    "A100": _gpu("NVIDIA A100-SXM4-80GB", 79.1, (8, 0)),
    "H100": _gpu("NVIDIA H100 80GB HBM3", 79.1, (9, 0)),
    "cpu": Device("cpu", "CPU"),
}


def detect_devices() -> list[Device]:
    """Every CUDA device torch sees, in index order; [] without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    found = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        found.append(Device("cuda", props.name, int(props.total_memory), (props.major, props.minor), i))
    return found


def detect_device() -> Device:
    """The first CUDA device, else the CPU."""
    devices = detect_devices()
    return devices[0] if devices else PROFILES["cpu"]


def train_dtype(device: Device, *, cpu_bf16: bool = False, method: str = "lora") -> str:
    """The training precision `--dtype auto` resolves to: bfloat16 on GPUs that have it, float16 on older GPUs;
    on a CPU bfloat16 only where the probe measured it fast (`cpu_bf16`) and not for QLoRA, else float32.

    >>> train_dtype(PROFILES["L4"]), train_dtype(PROFILES["V100"]), train_dtype(PROFILES["cpu"], cpu_bf16=True)
    ('bfloat16', 'float16', 'bfloat16')
    >>> train_dtype(PROFILES["cpu"], cpu_bf16=True, method="qlora")
    'float32'
    """
    if device.cuda:
        return "bfloat16" if device.bf16 else "float16"
    return "bfloat16" if cpu_bf16 and method != "qlora" else "float32"


def mixed_precision(dtype: str) -> str:
    """accelerate's `--mixed_precision` for a training dtype.

    >>> mixed_precision("bfloat16"), mixed_precision("float16"), mixed_precision("float32")
    ('bf16', 'fp16', 'no')
    """
    return {"bfloat16": "bf16", "float16": "fp16"}.get(dtype, "no")


def adapter_dtype(method: str, dtype: str) -> str | None:
    """The dtype the trainable LoRA weights must be held in after trl built the model, or None to leave them.

    trl 1.16 casts QLoRA's adapters to bfloat16 whatever the hardware (`SFTTrainer.__init__`). That is right only
    when training computes in bfloat16: with float16 autocast the gradient scaler refuses half-precision weights,
    and on a CPU bfloat16 is slow; there the adapters go back to float32.

    >>> adapter_dtype("qlora", "bfloat16"), adapter_dtype("qlora", "float16"), adapter_dtype("lora", "float16")
    (None, 'float32', None)
    """
    return "float32" if method == "qlora" and dtype != "bfloat16" else None


def serve_dtype(dtype: str, device: Device, *, trained: str | None = None) -> str:
    """The vLLM `--dtype` for `dtype` ("auto" or explicit) on `device`; `trained` is the precision the run trained
    (and so merged) in, when known.

    auto: float32 on a CPU (what ftassist trains in there; a bf16 server drifts from it at near-ties); on a GPU the
    training precision, as float16 where the GPU lacks bfloat16. Raises ValueError for bfloat16 asked of a GPU that
    lacks it (vLLM's own refusal, said before the server loads anything).

    >>> serve_dtype("auto", PROFILES["H100"], trained="float16"), serve_dtype("auto", PROFILES["T4"], trained="bfloat16")
    ('float16', 'float16')
    >>> serve_dtype("auto", PROFILES["A100"]), serve_dtype("auto", PROFILES["cpu"], trained="bfloat16")
    ('bfloat16', 'float32')
    """
    if dtype == "bfloat16" and device.cuda and not device.bf16:
        raise ValueError(f"--dtype bfloat16: the {device.name} (compute capability {_cc(device)}) has no bfloat16; "
                         "use --dtype float16 or auto")
    if dtype != "auto":
        return dtype
    if not device.cuda:
        return "float32"
    if trained in ("bfloat16", "float16"):
        return trained if device.bf16 else "float16"
    return "bfloat16" if device.bf16 else "float16"


class Placement(NamedTuple):
    """Where and in which precision a merge (or the parity reference) loads the model."""

    dtype: str
    device_map: str  # "cpu" or "auto" (accelerate spreads layers over the GPU, then the CPU)
    reason: str


def merge_placement(device: Device, trained: str, weights_bytes: int, *, asked: str = "auto") -> Placement:
    """Where to merge (and verify) a run trained in `trained` whose base holds `weights_bytes` in that precision.

    On a GPU: the training precision (float16 on GPUs without bfloat16), `device_map="auto"` so layers that do not
    fit the card stream through the CPU instead of failing. On a CPU: float32, the precision the parity gate was
    passed in. `asked` (MergeConfig.dtype) other than auto wins.

    >>> merge_placement(PROFILES["A100"], "bfloat16", 16 * GiB)[:2]
    ('bfloat16', 'auto')
    >>> merge_placement(PROFILES["T4"], "bfloat16", 2 * GiB)[:2], merge_placement(PROFILES["cpu"], "bfloat16", GiB)[:2]
    (('float16', 'auto'), ('float32', 'cpu'))
    """
    if not device.cuda:
        dtype = "float32" if asked == "auto" else asked
        return Placement(dtype, "cpu", f"no GPU: merged on the CPU in {dtype}")
    dtype = asked if asked != "auto" else ("float16" if trained == "bfloat16" and not device.bf16 else
                                           trained if trained in ("bfloat16", "float16") else
                                           "bfloat16" if device.bf16 else "float16")
    fits = weights_bytes + CUDA_MARGIN_BYTES <= device.total_bytes
    where = (f"on the {device.name}" if fits else
             f"on the {device.name} and the CPU (the {weights_bytes / GiB:.1f} GiB of weights do not fit its "
             f"{device.total_bytes / GiB:.0f} GiB)")
    return Placement(dtype, "auto", f"merged {where} in {dtype}, the precision it trained in")


def server_memory_fraction(device: Device, *, model_bytes: int, job_bytes: int = 0) -> float:
    """vLLM's `--gpu-memory-utilization` for a server of a `model_bytes` model on `device`, beside a training job the
    planner estimated at `job_bytes` (0: the GPU is the server's). Raises ValueError when the two do not fit.

    vLLM takes this share of the *whole* card for weights, activations and KV cache, and refuses to start when less
    is free; its default 0.9 leaves nothing for a job on the same GPU.

    >>> server_memory_fraction(PROFILES["L4"], model_bytes=GiB)
    0.9
    >>> server_memory_fraction(PROFILES["L4"], model_bytes=GiB, job_bytes=8 * GiB)
    0.54
    """
    total = device.total_bytes
    if not device.cuda or total <= 0:
        raise ValueError("a GPU memory share needs a CUDA device")
    free = total - (job_bytes + CUDA_MARGIN_BYTES if job_bytes else 0)
    fraction = min(0.9, free / total - 0.05)  # vLLM counts other processes' memory at start; keep 5% of slack
    need = model_bytes * (1 + MIN_KV_SHARE) + CUDA_MARGIN_BYTES
    if fraction * total < need:
        raise ValueError(f"a {model_bytes / GiB:.1f} GiB model server does not fit beside a {job_bytes / GiB:.1f} GiB "
                         f"training job on the {device.name} ({total / GiB:.0f} GiB): wait for the job to end, or serve "
                         "it on another GPU")
    return round(fraction, 2)


def pick_gpu(devices: list[Device], busy: dict[int, int]) -> int | None:
    """The GPU index a new job or server goes to (`devices` in index order, as `detect_devices` lists them): the one
    with fewest holders (`busy`: index -> jobs and servers on it), lowest index first; None without GPUs.

    >>> pick_gpu([PROFILES["L4"], PROFILES["L4"]], {0: 1}), pick_gpu([], {})
    (1, None)
    """
    if not devices:
        return None
    return min(range(len(devices)), key=lambda i: (busy.get(i, 0), i))


def place_server(devices: list[Device], servers: dict[int, int], job_bytes: dict[int, int], *,
                 model_bytes: int) -> tuple[int | None, float | None]:
    """(GPU index, vLLM's `--gpu-memory-utilization`) for a new server: a GPU without a server, the one with the least
    training on it (`job_bytes`: index -> the planner's estimate of the jobs pinned there), and the share that leaves
    those jobs their memory. (None, None) without GPUs; ValueError when every GPU has a server or it does not fit.

    >>> place_server([PROFILES["L4"], PROFILES["L4"]], {}, {0: 8 * GiB}, model_bytes=GiB)
    (1, 0.9)
    >>> place_server([PROFILES["L4"]], {}, {0: 8 * GiB}, model_bytes=GiB)
    (0, 0.54)
    """
    if not devices:
        return None, None
    free = [i for i in range(len(devices)) if not servers.get(i)]
    if not free:
        raise ValueError(f"every GPU of this machine ({len(devices)}) already runs a model server")
    index = min(free, key=lambda i: (job_bytes.get(i, 0), i))
    return index, server_memory_fraction(devices[index], model_bytes=model_bytes, job_bytes=job_bytes.get(index, 0))


def visible_devices_env(index: int | None) -> dict[str, str]:
    """The environment that pins a child process to one GPU ({} when there is none to pin).

    >>> visible_devices_env(1), visible_devices_env(None)
    ({'CUDA_VISIBLE_DEVICES': '1'}, {})
    """
    return {} if index is None else {"CUDA_VISIBLE_DEVICES": str(index)}


def _cc(device: Device) -> str:
    return ".".join(map(str, device.capability)) if device.capability else "unknown"
