"""Shared fixtures: the tiny random model and small data sets, built once per test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.tiny import build_tiny_adapter, build_tiny_llama

# Every test trains in the same precision on every host: the bf16 probe (ftassist/train/precision.py) would
# pick bf16 on hosts with AMX or AVX512-BF16. tests/test_train_precision.py switches it on where it is tested.
os.environ["FTASSIST_BF16_PROBE"] = "0"

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "support_tickets"
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Folder of a tiny random Llama (hidden 64, 2 layers) with a ChatML tokenizer."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def example_dir() -> Path:
    return EXAMPLE


def write_small_data(out: Path) -> Path:
    """Write a built data folder (train.jsonl 48 rows, test.jsonl 8 rows, schema.json) from the example task."""
    out.mkdir(parents=True)
    lines = (EXAMPLE / "train.jsonl").read_text(encoding="utf-8").splitlines()
    (out / "train.jsonl").write_text("\n".join(lines[:48]) + "\n", encoding="utf-8")
    test = (EXAMPLE / "test.jsonl").read_text(encoding="utf-8").splitlines()
    (out / "test.jsonl").write_text("\n".join(test[:8]) + "\n", encoding="utf-8")
    shutil.copy(EXAMPLE / "schema.json", out / "schema.json")
    return out


@pytest.fixture()
def small_data(tmp_path) -> Path:
    """A built data folder (train.jsonl 48 rows, test.jsonl 8 rows) from the example task."""
    return write_small_data(tmp_path / "data")


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model, tmp_path_factory) -> Path:
    """A LoRA adapter (r=8, all linear layers) for `tiny_model`, made directly with peft.

    Its B matrices are random, not zero, so it really changes the model's outputs.
    """
    return build_tiny_adapter(tiny_model, tmp_path_factory.mktemp("tiny_adapter") / "adapter")


class SessionServer:
    """The session's vLLM server, started on first use and started again when it has died (a crash then fails the
    test it happened in, with the exit code and the log's end, instead of every later test that needs a server)."""

    def __init__(self, tiny_model, tiny_adapter, root: Path):
        self.tiny_model, self.tiny_adapter, self.root = tiny_model, tiny_adapter, root
        self.server = None
        self.starts = 0
        self.failed: str | None = None  # why a start failed: every later test fails at once rather than wait again

    def get(self):
        if self.failed:
            pytest.fail(f"the vLLM server could not start earlier in this session: {self.failed}", pytrace=False)
        if self.server is None or not self.server.alive():
            if self.server is not None:
                self.server.stop()  # a dead server's engine processes may still hold its KV cache
            try:
                self.server = self._start()
            except Exception as exc:
                self.failed = str(exc)
                raise
        return self.server

    def _start(self):
        import os

        from ftassist.config import ServeConfig
        from ftassist.process import free_port
        from serving.launch import start_server

        self.starts += 1
        log = self.root / f"server-{self.starts}.log"
        cfg = ServeConfig(
            model=str(self.tiny_model), adapters={"tuned": str(self.tiny_adapter)}, port=free_port(),
            api_key="sk-ftassist-test", dtype="float32", max_model_len=512, max_lora_rank=16, enforce_eager=True,
            startup_timeout=300, log_file=str(log),
        )
        return start_server(cfg, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})

    def stop(self):
        if self.server is not None:
            self.server.stop()


@pytest.fixture(scope="session")
def _session_server(tiny_model, tiny_adapter, tmp_path_factory):
    holder = SessionServer(tiny_model, tiny_adapter, tmp_path_factory.mktemp("vllm"))
    try:
        yield holder
    finally:
        holder.stop()


@pytest.fixture()
def vllm_server(_session_server):
    """The real vLLM CPU server, shared by the session: `tiny_model` as "base", the adapter as "tuned".

    Yields a `serving.server.ServerProcess`: `base_url` (ends in /v1), `api_key`, `base_name`,
    `adapter_name`, `log_path`. Stopped (whole process group) when the session ends. A server that dies during a
    test fails that test's teardown with its exit code and the end of its log; the next test gets a new one.
    """
    server = _session_server.get()
    yield server
    code = server.process.poll()
    if code is not None:
        from serving.server import log_tail

        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        pytest.fail(f"vLLM server {how} during this test (SIGKILL with no Python traceback in its log is usually the "
                    f"kernel's out-of-memory killer); the end of its log ({server.log_path}):\n{log_tail(server.log_path)}",
                    pytrace=False)
