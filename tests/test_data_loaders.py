"""Reading every input kind and encoding, format detection with its reason, column mapping."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from ftassist.data.documents import read_pdf, split_passages
from ftassist.data.mapping import suggest_column_map
from ftassist.data.records import load_records
from ftassist.errors import UserError

D = Path(__file__).parent / "fixtures" / "data"
FIRST_TICKET = [{"role": "user", "content": "Explain the weather in Lisbon."},
                {"role": "assistant", "content": "Expect mild sunshine with a breeze off the Atlantic most afternoons."}]


def make_pdf(path: Path, text: str = "Hello PDF world. Second sentence here.", stream: bytes | None = None) -> Path:
    """A minimal one-page PDF with `text` (or a raw FlateDecode content `stream`)."""
    data = stream if stream is not None else f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    flate = b" /Filter /FlateDecode" if stream is not None else b""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d%s >>\nstream\n" % (len(data), flate) + data + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = b"%PDF-1.4\n", []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1) + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    path.write_bytes(out)
    return path


@pytest.mark.parametrize("name, fmt, rows", [
    ("clean.jsonl", "openai_chat", 12), ("sharegpt.json", "sharegpt", 3), ("alpaca.json", "alpaca", 3),
    ("prompt_completion.jsonl", "prompt_completion", 3), ("question_answer.jsonl", "question_answer", 3),
    ("text.jsonl", "text", 3), ("mapped.csv", "mapped", 4), ("guide.md", "document", 3),
])
def test_formats_detected_with_reason(name, fmt, rows):
    loaded = load_records([D / name])
    info = loaded.files[0]
    assert (info.format, info.rows, len(loaded.examples)) == (fmt, rows, rows)
    assert info.reason
    for ex in loaded.examples:
        assert [m["role"] for m in ex.messages][-1] == "assistant"


def test_converted_messages_are_exact():
    share = load_records([D / "sharegpt.json"]).examples[0].messages
    assert share == FIRST_TICKET
    alpaca = load_records([D / "alpaca.json"]).examples[0].messages
    assert alpaca == [{"role": "user", "content": "Explain the weather in Lisbon.\n\nKeep it short."}, FIRST_TICKET[1]]
    mapped = load_records([D / "mapped.csv"]).examples[0]
    assert mapped.meta["column_map"] == {"instruction": "col_a", "output": "col_b"}
    assert mapped.messages[1]["content"] == FIRST_TICKET[1]["content"]


@pytest.mark.parametrize("name, encoding", [("utf8_bom.csv", "utf-8-sig"), ("cp1252.csv", "cp1252"), ("utf16.jsonl", "utf-16")])
def test_encodings_read_without_garbling(name, encoding):
    loaded = load_records([D / name])
    assert loaded.files[0].encoding == encoding
    first = loaded.examples[0].messages
    if name.endswith(".csv"):
        assert first[0]["content"] == "What is a café?"
        assert first[1]["content"].startswith("A small place that serves coffee") and "crêpes" in first[1]["content"]
        assert loaded.examples[1].messages[0]["content"] == "What is naïve?"
    else:
        assert first[0]["content"] == "How should I go about the weather in Lisbon?"


def test_cyrillic_cp1251_is_read(tmp_path):
    p = tmp_path / "ru.csv"
    p.write_bytes("question,answer\nЧто такое кофе?,Напиток из зёрен.\nГде мой заказ?,Он уже в пути к вам.\n".encode("cp1251"))
    loaded = load_records([p])
    assert loaded.files[0].encoding == "cp1251"
    assert loaded.examples[0].messages[0]["content"] == "Что такое кофе?"


def test_suggest_column_map_by_name_and_contents():
    assert suggest_column_map(["review", "label"], [{"review": "Nice", "label": "pos"}])[0] == {"instruction": "review", "output": "label"}
    rows = [{"a": "a long customer message about a parcel", "b": "shipping", "n": "3"}] * 3
    mapping, reason = suggest_column_map(["a", "b", "n"], rows)
    assert mapping == {"instruction": "a", "output": "b"} and "contents" in reason
    mapping, reason = suggest_column_map(["n"], [{"n": "1"}])
    assert "output" not in mapping and "--map" in reason


def test_user_column_map_and_bad_map(tmp_path):
    loaded = load_records([D / "mapped.csv"], {"instruction": "col_b", "output": "col_a"})
    assert loaded.files[0].format == "mapped"
    assert loaded.examples[0].messages[1]["content"] == "Tell me about the weather in Lisbon."
    with pytest.raises(UserError, match=r"mapped.csv: --map output=nope: no such column; the columns are col_a, col_b, id"):
        load_records([D / "mapped.csv"], {"instruction": "col_a", "output": "nope"})
    p = tmp_path / "nums.csv"
    p.write_text("x,y\n1,2\n3,4\n")
    with pytest.raises(UserError, match=r"nums.csv: columns x, y match no known format.*--map instruction=COL"):
        load_records([p])


def test_parquet_xlsx_docx_pdf(tmp_path):
    import docx
    import openpyxl
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"question": ["What is Parquet?"], "answer": ["A columnar file format."]}), tmp_path / "a.parquet")
    wb = openpyxl.Workbook()
    wb.active.append(["instruction", "output"])
    wb.active.append(["Say hi", "Hi!"])
    wb.save(tmp_path / "b.xlsx")
    doc = docx.Document()
    doc.add_heading("Returns", level=1)
    doc.add_paragraph("Items can be returned within 30 days. Keep the receipt.")
    doc.save(tmp_path / "c.docx")
    make_pdf(tmp_path / "d.pdf")
    loaded = load_records([tmp_path / n for n in ("a.parquet", "b.xlsx", "c.docx", "d.pdf")])
    assert [(f.kind, f.format, f.rows) for f in loaded.files] == [
        ("parquet", "question_answer", 1), ("xlsx", "alpaca", 1), ("docx", "document", 1), ("pdf", "document", 1)]
    msgs = [ex.messages for ex in loaded.examples]
    assert msgs[0][1]["content"] == "A columnar file format." and msgs[1][0]["content"] == "Say hi"
    assert msgs[2] == [{"role": "user", "content": 'According to "c", what is said about Returns?'},
                       {"role": "assistant", "content": "Items can be returned within 30 days. Keep the receipt."}]
    assert msgs[3][0]["content"] == 'Continue this passage from "d":\n\nHello PDF world.'
    assert msgs[3][1]["content"] == "Second sentence here."
    assert loaded.examples[2].meta["provenance"]["text"] == "Items can be returned within 30 days. Keep the receipt."


def test_passages_split_at_headings_and_size():
    text = "# A\n\none. two.\n\n# B\n\n" + "x" * 3000
    parts = split_passages(text, size=1200)
    assert [(h, len(p)) for h, p in parts] == [("A", 9), ("B", 1200), ("B", 1200), ("B", 600)]


def test_pdf_that_expands_without_end_is_refused(tmp_path):
    comp = zlib.compressobj(9)
    chunk = b"0" * (1 << 20)
    body = b"".join(comp.compress(chunk) for _ in range(400)) + comp.flush()  # 400 MB when inflated
    path = make_pdf(tmp_path / "bomb.pdf", stream=body)
    assert path.stat().st_size < 2_000_000
    with pytest.raises(UserError, match=r"bomb.pdf: .*(expand|limit|memory)"):
        read_pdf(path, seconds=20, memory_mb=512)


def test_column_roles_say_why_and_a_guess_is_flagged(tmp_path):
    from ftassist.data.formats import table_mapping

    rows = [{"notes": "call back", "review_text": "Great phone, weak battery", "gold_json": '{"rating": 4}'}] * 3
    mapping, reason = suggest_column_map(["notes", "review_text", "gold_json"], rows)
    assert mapping == {"instruction": "review_text", "output": "gold_json"}  # not `notes`, though it stands first
    assert "output=gold_json (its values are JSON)" in reason and "(a word of its name: text)" in reason
    p = tmp_path / "t.csv"
    p.write_text("notes,col_a,col_b\n" + "".join(f"n{i},question {i},answer {i}\n" for i in range(4)))
    found = table_mapping(p)
    assert found.mapping == {"instruction": "notes", "output": "col_a"} and found.guess  # order alone: said, not silent
    assert table_mapping(D / "alpaca.json") is None  # a known format needs no mapping
