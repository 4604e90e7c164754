"""Log messages from our dependencies that a user of ftassist cannot act on, dropped at their source.

Installed by `ftassist/__init__.py`, so before any dependency that emits them is imported (every
front end, worker and script imports `ftassist` first). Each filter sits on the one logger that
emits its message and drops that message alone; everything else the logger says still shows.

- bitsandbytes 0.50 (`bitsandbytes/backends/cpu/ops.py`), on a CPU with AVX512-BF16 (AMX hosts
  included), logs a warning at import: "Failed to load CPU gemm_4bit_forward from kernels-community
  ... `pip install kernels`". peft imports bitsandbytes, so there it was the first line of
  `ftassist train` and of every other command that loads peft. The kernel it names is a faster 4-bit matmul fetched from the Hugging
  Face Hub at import time by the `kernels` package; ftassist trains 4-bit (QLoRA) on CUDA and LoRA
  on a CPU, and bitsandbytes falls back to its own CPU path when the kernel is absent, so there is
  nothing for the user to do.
- trl 1.16 warns at import of its vLLM helpers (`trl/generation/`, loaded by its DPO and GRPO trainers)
  "TRL currently supports vLLM versions from 0.22.0 to 0.31.0. You have version 0.32.0 installed". ftassist
  never generates through trl's vLLM path (`use_vllm=False`); vLLM 0.32 is installed for `ftassist serve`,
  which needs exactly that version. Dropped with `warnings.filterwarnings` (it is a warning, not a log record).
"""

from __future__ import annotations

import logging
import warnings

# (logger name, the start of the message it logs)
UNACTIONABLE = (
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
)


class DropMessage(logging.Filter):
    """A filter that drops records whose message starts with `prefix`, and passes every other record.

    >>> f = DropMessage("Failed to load CPU gemm_4bit_forward")
    >>> f.filter(logging.makeLogRecord({"msg": "Failed to load CPU gemm_4bit_forward from x: %s", "args": ("e",)}))
    False
    >>> f.filter(logging.makeLogRecord({"msg": "Something else went wrong"}))
    True
    """

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


# Python warnings (module, the start of the message) a user cannot act on, as `warnings.filterwarnings` takes them.
UNACTIONABLE_WARNINGS = (("trl", "TRL currently supports vLLM versions"),)


def install_log_filters() -> None:
    """Put a `DropMessage` filter for each entry of `UNACTIONABLE` on its logger and ignore each of
    `UNACTIONABLE_WARNINGS`; calling it again adds none."""
    for module, prefix in UNACTIONABLE_WARNINGS:
        warnings.filterwarnings("ignore", message=prefix, category=UserWarning, module=module)
    for name, prefix in UNACTIONABLE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessage) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(DropMessage(prefix))
