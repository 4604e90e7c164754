"""A CLI command does not open with dependency warnings a user cannot act on (`ftassist/log_filters.py`).

bitsandbytes logs its "Failed to load CPU gemm_4bit_forward from kernels-community ... pip install
kernels" warning only on a CPU with AVX512-BF16, so the subprocesses here make bitsandbytes' CPU probe
say yes on any host: the warning is reproduced without ftassist first (so this test cannot pass
because the warning stopped firing), then absent from a real `ftassist train` that imports peft.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GEMM_WARNING = "Failed to load CPU gemm_4bit_forward from kernels-community"

# Python run as `python -c PRELUDE + BODY`: bitsandbytes.functional.has_avx512bf16 answers True from the
# moment the module is loaded, before bitsandbytes' CPU backend reads it (at import, to decide on the warning).
PRELUDE = '''
import importlib.abc, importlib.util, sys

class AVX512BF16(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "bitsandbytes.functional":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module
        def exec_module(module):
            load(module)
            module.has_avx512bf16 = lambda: True
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, AVX512BF16())
'''


def run_python(body: str) -> subprocess.CompletedProcess:
    """`body` run by this Python after PRELUDE, offline, from the repository root."""
    return subprocess.run([sys.executable, "-c", PRELUDE + body], capture_output=True, text=True, cwd=ROOT,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_the_warning_fires_without_ftassist():
    proc = run_python("import peft\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert GEMM_WARNING in proc.stderr, ("bitsandbytes no longer logs the gemm_4bit warning this way; "
                                         "check ftassist/log_filters.py against it:\n" + proc.stderr[-3000:])


def test_a_cli_command_that_loads_peft_does_not_show_it(tiny_model, small_data, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--data", str(small_data), "--out", str(out), "--model", str(tiny_model),
            "--max-steps", "1", "--report-to", "none"]
    proc = run_python(f"from ftassist_cli import main\nsys.exit(main({argv!r}))\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "adapter" / "adapter_model.safetensors").is_file(), proc.stdout  # a LoRA adapter: peft was loaded
    assert "trained 1 steps" in proc.stdout, proc.stdout
    assert GEMM_WARNING not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert "pip install kernels" not in proc.stderr, proc.stderr[-3000:]


def test_only_that_message_is_dropped(caplog):
    import ftassist  # noqa: F401  (installs the filters)

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already "
                       "`pip install kernels` and the kernels >= 0.11.1", "No module named 'kernels'")
        logger.warning("some other bitsandbytes warning")
        logging.getLogger("bitsandbytes").warning("Failed to load CPU gemm_4bit_forward from a parent logger")
    assert [r.getMessage() for r in caplog.records] == [
        "some other bitsandbytes warning",
        "Failed to load CPU gemm_4bit_forward from a parent logger",
    ]


def test_trls_vllm_version_warning_is_dropped_and_other_warnings_stay():
    """trl warns that vLLM 0.32 is newer than it lists: nothing a user of ftassist can change. Other warnings,
    trl's included, still show."""
    import warnings

    import ftassist  # noqa: F401  (installs the filters)

    def trl_warns(message: str) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            ftassist.log_filters.install_log_filters()  # catch_warnings reset the filters: install them as at import
            warnings.warn_explicit(message, UserWarning, "trl/generation/vllm_client.py", 48, module="trl.generation.vllm_client")
        return [str(w.message) for w in caught]

    assert trl_warns("TRL currently supports vLLM versions from 0.22.0 to 0.31.0. You have version 0.32.0 installed.") == []
    assert trl_warns("Something else trl wants you to know") == ["Something else trl wants you to know"]
