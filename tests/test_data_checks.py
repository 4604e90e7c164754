"""Each check id against its fixture file: exact finding counts, severities and rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftassist.data.checks import load_tokenizer, usable_messages, validate_records
from ftassist.data.findings import count_by_check
from ftassist.data.fixes import apply_fixes
from ftassist.data.pii import find_pii, iban_ok, luhn_ok, mask_pii
from ftassist.data.records import load_records
from ftassist.schema import infer_schema, load_schema

D = Path(__file__).parent / "fixtures" / "data"


def findings_for(name: str, **kw):
    loaded = load_records([D / name])
    found, lengths = validate_records(loaded.examples, **kw)
    return loaded, loaded.findings + found, lengths


@pytest.mark.parametrize("name, expected", [
    ("clean.jsonl", {}),
    ("not_a_dict.jsonl", {"not_a_dict": 2}),
    ("missing_messages.jsonl", {"missing_messages": 3}),
    ("message_missing_key.jsonl", {"message_missing_key": 3}),
    ("unknown_key.jsonl", {"unknown_key": 1}),
    ("unknown_role.jsonl", {"unknown_role": 1}),
    ("missing_content.jsonl", {"missing_content": 2}),
    ("no_assistant_message.jsonl", {"no_assistant_message": 2}),
    ("role_order.jsonl", {"role_order": 3}),
    ("empty_content.jsonl", {"empty_content": 2}),
    ("invalid_json.jsonl", {"invalid_json": 1}),
    ("duplicate_exact.jsonl", {"duplicate_exact": 2}),
    ("duplicate_near.jsonl", {"duplicate_near": 1}),
    ("mojibake.jsonl", {"mojibake": 1}),
    ("binary_text.jsonl", {"binary_text": 1}),
    ("pii.jsonl", {"pii_card": 1, "pii_email": 1, "pii_iban": 1, "pii_phone": 1, "pii_ssn": 1}),
    ("label_imbalance.csv", {"label_imbalance": 1}),
    ("formula_injection.csv", {"formula_injection": 2}),
    ("csv_ragged_row.csv", {"csv_ragged_row": 1}),
])
def test_check_counts(name, expected):
    _, findings, _ = findings_for(name)
    assert count_by_check(findings) == expected
    for f in findings:
        assert f.message and f.severity in ("error", "warning", "info") and f.check in expected


def test_severities_rows_and_fields():
    _, f, _ = findings_for("role_order.jsonl")
    assert [(x.row, x.severity) for x in f] == [(3, "error"), (4, "error"), (5, "warning")]
    _, f, _ = findings_for("empty_content.jsonl")
    assert [(x.row, x.field, x.source.endswith(f":{x.row + 1}")) for x in f] == [
        (3, "messages[0].content", True), (4, "messages[1].content", True)]
    _, f, _ = findings_for("duplicate_exact.jsonl")
    assert [(x.row, x.severity) for x in f] == [(3, "warning"), (4, "warning")]
    assert "row 0" in f[0].message and "--drop-duplicates" in f[0].message
    _, f, _ = findings_for("invalid_json.jsonl")
    assert f[0].row is None and f[0].source.endswith("invalid_json.jsonl:4") and f[0].severity == "error"
    _, f, _ = findings_for("formula_injection.csv")
    assert [(x.row, x.field) for x in f] == [(1, "column 'question'"), (2, "column 'answer'")]


def test_leakage_between_train_and_test():
    train = load_records([D / "leak_train.jsonl"])
    test = load_records([D / "leak_test.jsonl"], split="test")
    found, _ = validate_records(train.examples + test.examples)
    assert [(f.check, f.severity, f.row) for f in found] == [("train_test_leak", "error", 9)]
    assert "train row 2" in found[0].message


def test_lengths_with_real_tokenizer(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    _, found, lengths = findings_for("lengths.jsonl", tokenizer=tok, max_length=512)
    assert [(f.check, f.severity, f.row) for f in found] == [("too_long", "warning", 3), ("fully_masked", "error", 4)]
    full = tok.apply_chat_template(load_records([D / "lengths.jsonl"]).examples[0].messages, tokenize=True)
    full = full["input_ids"] if isinstance(full, dict) or hasattr(full, "keys") else full
    assert lengths.total[0] == len(full)
    assert lengths.prompt[:3] == [None] * 3 and lengths.prompt[3] < 512 <= lengths.prompt[4] < lengths.total[4]


def test_json_task_given_and_inferred_schema():
    schema = load_schema(D / "json_task.schema.json")
    _, found, _ = findings_for("json_task.jsonl", schema=schema)
    assert [(f.check, f.row) for f in found] == [("invalid_json_output", 6), ("schema_mismatch", 7)]
    assert "urgent" in found[1].message
    inferred = infer_schema([{"topic": "a", "urgent": True}, {"topic": "b", "urgent": False}])
    assert inferred["properties"] == {"topic": {"type": "string"}, "urgent": {"type": "boolean"}}
    assert inferred["required"] == ["topic", "urgent"]


def test_pii_detection_and_masking():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89370400440532013000") and not iban_ok("DE89370400440532013001")
    assert [m.kind for m in find_pii("ssn 123-45-6789, mail a.b@c.io")] == ["ssn", "email"]
    assert find_pii("Order A12925 cost 149.99 on 2024-05-01.") == ()
    assert mask_pii("Pay DE89 3704 0044 0532 0130 00 NOW") == ("Pay [IBAN] NOW", 1)


def test_apply_fixes_drops_and_masks():
    loaded, found, _ = findings_for("duplicate_exact.jsonl")
    msgs = usable_messages(loaded.examples, found)
    fixed = apply_fixes(loaded.examples, found, msgs, drop_duplicates=True)
    assert fixed.kept == [0, 1, 2] and fixed.dropped == {"duplicate_exact": 2} and fixed.remaining == []
    loaded, found, _ = findings_for("pii.jsonl")
    fixed = apply_fixes(loaded.examples, found, usable_messages(loaded.examples, found), mask_pii_values=True)
    assert fixed.masked == 5 and fixed.remaining == []
    assert fixed.messages[3][0]["content"] == "Write to me at [EMAIL] please."
    loaded, found, _ = findings_for("empty_content.jsonl")
    fixed = apply_fixes(loaded.examples, found, usable_messages(loaded.examples, found), drop_invalid=True)
    assert fixed.kept == [0, 1, 2] and fixed.dropped == {"invalid": 2}
    assert loaded.examples[4].messages[1]["content"] == ""  # inputs untouched
