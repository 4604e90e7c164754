"""Shared fixtures: the tiny random model and small data sets, built once per test session."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.tiny import build_tiny_llama

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


@pytest.fixture()
def small_data(tmp_path) -> Path:
    """A built data folder (train.jsonl 48 rows, test.jsonl 8 rows) from the example task."""
    out = tmp_path / "data"
    out.mkdir()
    lines = (EXAMPLE / "train.jsonl").read_text(encoding="utf-8").splitlines()
    (out / "train.jsonl").write_text("\n".join(lines[:48]) + "\n", encoding="utf-8")
    test = (EXAMPLE / "test.jsonl").read_text(encoding="utf-8").splitlines()
    (out / "test.jsonl").write_text("\n".join(test[:8]) + "\n", encoding="utf-8")
    shutil.copy(EXAMPLE / "schema.json", out / "schema.json")
    return out
