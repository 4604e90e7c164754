"""Hostile inputs: each ends in a clear UserError naming the file (and line) or a finding, fast."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ftassist.data.findings import count_by_check
from ftassist.data.records import load_records
from ftassist.data.checks import validate_records
from ftassist.errors import UserError

D = Path(__file__).parent / "fixtures" / "data"


def refuse(path: Path, pattern: str) -> None:
    with pytest.raises(UserError, match=pattern) as info:
        load_records([path])
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_json_names_line(tmp_path):
    p = tmp_path / "cut.json"
    p.write_text(json.dumps([{"instruction": "a", "output": "b"}] * 3, indent=1)[:-20])
    refuse(p, r"cut.json:\d+: invalid JSON .*truncated")


def test_truncated_parquet_and_xlsx(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": ["a"] * 50, "completion": ["b"] * 50}), tmp_path / "t.parquet")
    data = (tmp_path / "t.parquet").read_bytes()
    (tmp_path / "t.parquet").write_bytes(data[: len(data) // 2])
    refuse(tmp_path / "t.parquet", r"t.parquet: cannot read it as Parquet")
    (tmp_path / "t.xlsx").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    refuse(tmp_path / "t.xlsx", r"t.xlsx: not a readable .xlsx file")


def test_50mb_single_line_jsonl_is_a_finding(tmp_path):
    p = tmp_path / "big.jsonl"
    good = (D / "clean.jsonl").read_text().splitlines()[0]
    p.write_text(good + "\n" + json.dumps({"messages": [{"role": "user", "content": "a" * 50_000_000}]}) + "\n")
    loaded = load_records([p])
    assert len(loaded.examples) == 1
    assert [(f.check, f.severity, f.source) for f in loaded.findings] == [("record_too_large", "error", f"{p}:2")]


def test_50mb_single_line_csv_is_refused(tmp_path):
    p = tmp_path / "big.csv"
    p.write_text("question,answer\n" + "q" * 50_000_000 + ",a\n")
    refuse(p, r"big.csv:\d+: cannot read it as CSV \(field larger than field limit")


def test_json_nested_10000_deep(tmp_path):
    p = tmp_path / "deep.json"
    p.write_text("[" * 10_000 + "]" * 10_000)
    refuse(p, r"deep.json: JSON nested too deep")
    p2 = tmp_path / "deep.jsonl"
    good = (D / "clean.jsonl").read_text().splitlines()[0]
    p2.write_text(good + "\n" + '{"messages": ' + "[" * 100 + "]" * 100 + "}\n")
    loaded = load_records([p2])
    assert [(f.check, f.source) for f in loaded.findings] == [("invalid_json", f"{p2}:2")]
    assert "nested deeper than 64 levels" in loaded.findings[0].message


def test_zip_renamed_json_empty_and_binary(tmp_path):
    shutil.make_archive(str(tmp_path / "arch"), "zip", D, "clean.jsonl")
    (tmp_path / "arch.zip").rename(tmp_path / "data.json")
    refuse(tmp_path / "data.json", r"data.json: the file is a ZIP archive")
    (tmp_path / "empty.jsonl").write_text("")
    refuse(tmp_path / "empty.jsonl", r"empty.jsonl: the file is empty")
    (tmp_path / "blank.csv").write_text("\n\n  \n")
    refuse(tmp_path / "blank.csv", r"blank.csv: the file is empty")
    (tmp_path / "noise.txt").write_bytes(b"\x00\x01\x02\x03" * 500 + bytes(range(1, 32)) * 300)
    refuse(tmp_path / "noise.txt", r"noise.txt: binary data")
    (tmp_path / "ctrl.md").write_bytes(bytes(i % 9 + 1 for i in range(5000)))
    refuse(tmp_path / "ctrl.md", r"ctrl.md: looks like binary data")
    (tmp_path / "bad.jsonl").write_bytes(b'{"a": "\xff\xfe\xfa\xfb\xfc\xfd"}\n' * 2 + b"\x81\x8d\x8f\x90\x9d" * 10)
    with pytest.raises(UserError, match=r"bad.jsonl:1: not UTF-8 .*re-save the file as UTF-8"):
        load_records([tmp_path / "bad.jsonl"])


def test_unknown_extension_and_missing_file(tmp_path):
    refuse(tmp_path / "x.docm", r"unknown file type .docm")
    refuse(tmp_path / "nope.jsonl", r"nope.jsonl: no such file")


def test_formula_cells_are_findings_not_errors():
    loaded = load_records([D / "formula_injection.csv"])
    found, _ = validate_records(loaded.examples)
    assert count_by_check(found) == {"formula_injection": 2}
    assert {f.severity for f in found} == {"warning"}
