"""build_dataset end to end (exact files written, split rules, fixes) and the CLI's exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftassist.config import DataConfig
from ftassist.data.build import build_dataset
from ftassist.errors import UserError
from ftassist.files import read_jsonl

ROOT = Path(__file__).resolve().parent.parent
D = Path(__file__).parent / "fixtures" / "data"
OUTPUTS = {"train.jsonl", "test.jsonl", "schema.json", "hf_dataset", "report.json", "report.md", "lengths.png", "dataset_card.md",
           "fingerprint.json"}


def test_example_task_builds_clean(tiny_model, example_dir, tmp_path):
    cfg = DataConfig(inputs=[str(example_dir / "train.jsonl")], test_inputs=[str(example_dir / "test.jsonl")],
                     schema=str(example_dir / "schema.json"), out=str(tmp_path / "data"), model=str(tiny_model))
    result = build_dataset(cfg)
    assert result.exit_code == 0 and (result.train_rows, result.test_rows) == (400, 60)
    assert [f for f in result.findings if f.severity == "error"] == []
    assert {p.name for p in result.out.iterdir()} == OUTPUTS
    train = read_jsonl(result.out / "train.jsonl")
    assert train == read_jsonl(example_dir / "train.jsonl")
    assert json.loads((result.out / "schema.json").read_text()) == json.loads((example_dir / "schema.json").read_text())
    report = json.loads((result.out / "report.json").read_text())
    assert report["counts"] == {"rows_in": 460, "train": 400, "test": 60, "dropped": {}, "masked": 0}
    assert [f["format"] for f in report["inputs"]] == ["openai_chat", "openai_chat"]
    assert "![token lengths](lengths.png)" in (result.out / "report.md").read_text()
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(result.out / "dataset_card.md")  # the Hub's own reader
    assert card.data.task_categories == ["text-generation"] and card.data.size_categories == ["n<1K"]
    assert card.data.configs[0]["data_files"] == [{"split": "train", "path": "train.jsonl"}, {"split": "test", "path": "test.jsonl"}]
    assert card.data.ftassist_version_id == report["fingerprint"]["id"]
    import datasets

    dd = datasets.load_from_disk(str(result.out / "hf_dataset"))
    assert (dd["train"].num_rows, dd["test"].num_rows) == (400, 60)
    assert dd["train"][0]["messages"] == train[0]["messages"]
    assert "openai_chat" in result.summary and "train 400 rows, test 60 rows" in result.summary


def test_split_keeps_duplicates_together_and_stratifies(tiny_model, tmp_path):
    result = build_dataset(DataConfig(inputs=[str(D / "label_imbalance.csv"), str(D / "duplicate_exact.jsonl")],
                                      out=str(tmp_path / "o"), model=str(tiny_model), test_size=0.25, seed=3))
    assert result.exit_code == 0 and result.train_rows + result.test_rows == 26
    train = [json.dumps(r) for r in read_jsonl(result.out / "train.jsonl")]
    test = [json.dumps(r) for r in read_jsonl(result.out / "test.jsonl")]
    dup = json.dumps(read_jsonl(D / "duplicate_exact.jsonl")[0])
    assert (train.count(dup), test.count(dup)) in ((3, 0), (0, 3))
    assert "schema.json" not in {p.name for p in result.out.iterdir()}
    labels = [r["messages"][-1]["content"] for r in read_jsonl(result.out / "test.jsonl")]
    assert "positive" in labels


def test_errors_give_exit_1_and_reports_only(tiny_model, tmp_path):
    result = build_dataset(DataConfig(inputs=[str(D / "empty_content.jsonl")], out=str(tmp_path / "o"), model=str(tiny_model)))
    assert result.exit_code == 1 and (result.train_rows, result.test_rows) == (0, 0)
    assert {p.name for p in result.out.iterdir()} == {"report.json", "report.md", "lengths.png", "dataset_card.md"}
    report = json.loads((result.out / "report.json").read_text())
    assert report["findings_by_check"] == {"empty_content": 2}
    fixed = build_dataset(DataConfig(inputs=[str(D / "empty_content.jsonl")], out=str(tmp_path / "o"), model=str(tiny_model),
                                     drop_invalid=True))
    assert fixed.exit_code == 0 and fixed.train_rows + fixed.test_rows == 3
    assert "dropped 2 invalid" in fixed.summary


def test_mask_pii_and_inferred_schema(tiny_model, tmp_path):
    """PII is masked in the written rows; a JSON task without --schema gets a schema inferred from its replies.

    Inferred type lists follow `ftassist.schema` (object, array, string, number, boolean, null), the order eval uses.
    """
    result = build_dataset(DataConfig(inputs=[str(D / "pii.jsonl")], out=str(tmp_path / "o"), model=str(tiny_model), mask_pii=True))
    rows = read_jsonl(result.out / "train.jsonl") + read_jsonl(result.out / "test.jsonl")
    text = json.dumps(rows)
    assert "jane.doe@example.org" not in text and "[EMAIL]" in text and "[SSN]" in text
    result = build_dataset(DataConfig(inputs=[str(D / "json_task.jsonl")], out=str(tmp_path / "j"), model=str(tiny_model),
                                      drop_invalid=True))
    schema = json.loads((result.out / "schema.json").read_text())
    assert schema["properties"]["urgent"] == {"type": ["string", "boolean"]}  # inferred from every JSON reply
    assert result.report["schema"]["source"] == "inferred from the majority of 7 JSON replies"
    assert result.report["findings_by_check"] == {"invalid_json_output": 1}


def test_refuses_to_overwrite_foreign_folder(tiny_model, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="holds other files"):
        build_dataset(DataConfig(inputs=[str(D / "clean.jsonl")], out=str(tmp_path), model=str(tiny_model)))
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ftassist_cli", "data", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_cli_exit_codes(tiny_model, tmp_path):
    ok = cli("build", str(D / "clean.jsonl"), "--out", str(tmp_path / "a"), "--model", str(tiny_model))
    assert ok.returncode == 0, ok.stderr
    assert "Traceback" not in ok.stderr and "wrote train 11 rows, test 1 rows" in ok.stdout
    bad = cli("build", str(D / "role_order.jsonl"), "--out", str(tmp_path / "b"), "--model", str(tiny_model))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "errors found" in bad.stdout
    (tmp_path / "empty.jsonl").write_text("")
    unusable = cli("build", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "c"), "--model", str(tiny_model))
    assert unusable.returncode == 2
    lines = unusable.stderr.strip().splitlines()
    assert lines == [f"ftassist data: error: {tmp_path / 'empty.jsonl'}: the file is empty; add examples or remove it from the inputs"]
    mapped = cli("build", str(D / "mapped.csv"), "--map", "instruction=col_a", "--map", "output=nope", "--out", str(tmp_path / "d"))
    assert mapped.returncode == 2 and len(mapped.stderr.strip().splitlines()) == 1 and "no such column" in mapped.stderr
    inspect = cli("inspect", str(D / "pii.jsonl"), "--model", str(tiny_model))
    assert inspect.returncode == 0 and "openai_chat, 11 rows" in inspect.stdout and "pii_card" in inspect.stdout


def test_a_one_row_latin1_csv_builds_with_an_empty_test_split(tiny_model, tmp_path):
    src = tmp_path / "one.csv"
    src.write_bytes("instruction,output\nCafé question,réponse\n".encode("latin-1"))
    out = tmp_path / "o"
    result = build_dataset(DataConfig(inputs=[str(src)], out=str(out), model=str(tiny_model)))
    assert result.exit_code == 0 and (result.train_rows, result.test_rows) == (1, 0)
    import datasets

    dd = datasets.load_from_disk(str(out / "hf_dataset"))
    assert list(dd) == ["train"] and dd["train"].num_rows == 1  # the empty test split is left out, not written broken
    assert "Café" in dd["train"][0]["messages"][0]["content"]


def test_fingerprint_names_the_version_and_changes_with_the_content(tiny_model, example_dir, tmp_path):
    from ftassist.data.fingerprint import read_fingerprint, sha256_file

    def build(name, train=example_dir / "train.jsonl", **kw):
        cfg = DataConfig(inputs=[str(train)], test_inputs=[str(example_dir / "test.jsonl")],
                         out=str(tmp_path / name), model=str(tiny_model), **kw)
        return build_dataset(cfg).out

    a, again = read_fingerprint(build("a")), read_fingerprint(build("again"))
    assert a["id"] == again["id"] and len(a["id"]) == 12  # the same inputs and settings: the same version
    assert a["splits"]["train.jsonl"] == sha256_file(tmp_path / "a" / "train.jsonl")
    assert a["inputs"][str(example_dir / "train.jsonl")] == sha256_file(example_dir / "train.jsonl")
    setting = read_fingerprint(build("b", system_prompt="Reply in JSON."))  # the rows have their own: same content
    assert setting["id"] == a["id"] and setting["settings_sha256"] != a["settings_sha256"]
    fewer = tmp_path / "fewer.jsonl"
    fewer.write_text("".join((example_dir / "train.jsonl").read_text().splitlines(keepends=True)[:-1]))
    assert read_fingerprint(build("c", train=fewer))["id"] != a["id"]  # one row less: another version
    assert json.loads((tmp_path / "a" / "report.json").read_text())["fingerprint"]["id"] == a["id"]
