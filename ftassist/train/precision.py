"""Whether this CPU multiplies bfloat16 faster than float32: a short matmul probe, cached per host.

CPUs of one kind differ: with AMX or AVX512-BF16 a bf16 matmul runs several times faster than fp32;
without them torch emulates bf16 and it runs 10-300x slower (measured here on an AVX2-only AMD EPYC:
fp32 27 GFLOP/s, bf16 1.3-1.8). The planner trains in bf16 (autocast, the LoRA weights kept in fp32)
only where the probe measured it faster, and says which, with the figures.

    >>> fast_bf16(MatmulRates(fp32_gflops=199.0, bf16_gflops=877.0))
    True
    >>> fast_bf16(MatmulRates(fp32_gflops=27.2, bf16_gflops=1.8))
    False

The result is kept in `cache_dir()/precision-probe.json`, keyed by the CPU's model name and flags,
the torch version and the thread count, so each host pays the ~0.5 s once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

FAST_RATIO = 1.5  # bf16 must beat fp32 by this much to be worth the rounding
PROBE_FILE = "precision-probe.json"


@dataclass(frozen=True)
class MatmulRates:
    """GFLOP/s of a square matmul in each precision on this host's CPU threads."""

    fp32_gflops: float
    bf16_gflops: float

    def describe(self) -> str:
        return f"fp32 {self.fp32_gflops:.0f} GFLOP/s, bf16 {self.bf16_gflops:.1f} GFLOP/s"


def fast_bf16(rates: MatmulRates) -> bool:
    """True when bf16 matmuls ran at least FAST_RATIO times the fp32 rate."""
    return rates.bf16_gflops >= FAST_RATIO * rates.fp32_gflops


def matmul_gflops(dtype, n: int, seconds: float = 0.15) -> float:
    """GFLOP/s of an n x n matmul in `dtype`, repeated for about `seconds` after one warm-up."""
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    count, started = 0, time.perf_counter()
    while True:
        a @ b
        count += 1
        spent = time.perf_counter() - started
        if spent >= seconds:
            return 2 * n ** 3 * count / spent / 1e9


def measure_rates() -> MatmulRates:
    """fp32 at 512 and bf16 at 256 (a slow bf16 path takes ~0.1 s there, ~2 s at 512); bf16 again at 512
    when it looks fast, so the two are compared at the same size."""
    import torch

    fp32 = matmul_gflops(torch.float32, 512)
    bf16 = matmul_gflops(torch.bfloat16, 256)
    if bf16 >= fp32:
        bf16 = matmul_gflops(torch.bfloat16, 512)
    return MatmulRates(round(fp32, 1), round(bf16, 1))


def host_key() -> str:
    """CPU model name and flags, torch version and thread count: what the rates depend on."""
    import torch

    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            lines = [line for line in fh if line.startswith(("model name", "flags"))]
        cpu = "".join(sorted(set(lines)))
    except OSError:
        import platform

        cpu = platform.processor() or platform.machine()
    text = f"{cpu}|torch {torch.__version__}|threads {torch.get_num_threads()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cpu_rates(cache: Path | None = None, measure=measure_rates) -> MatmulRates:
    """This host's rates: from the cache when this host was probed before, else measured (and cached)."""
    from ftassist.files import write_json_atomic
    from ftassist.model import cache_dir

    path = (cache or cache_dir()) / PROBE_FILE
    key = host_key()
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if isinstance(known.get(key), dict):
        try:
            return MatmulRates(**known[key])
        except TypeError:
            pass  # an entry of another shape (an older probe): measure again below
    rates = measure()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {**known, key: asdict(rates)})
    except OSError:
        pass  # a read-only cache only costs the probe again
    return rates


def probe_enabled() -> bool:
    """FTASSIST_BF16_PROBE=0 skips the probe (fp32 on every CPU, as before it existed)."""
    return os.environ.get("FTASSIST_BF16_PROBE", "1") != "0"
