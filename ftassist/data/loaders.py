"""Reading the user's files into records: bytes -> text (encoding found, never garbled) -> rows.

`read_table(path)` returns a `RawFile`: the rows as read (dicts, or whatever a JSON line held)
with their line numbers, the file kind and encoding. Every way a file can be unusable (empty,
binary, an archive under a text name, nested too deep, truncated) raises `UserError` naming
the file, the line when known, and what to do. Size limits keep memory bounded.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftassist.errors import UserError

MAX_FILE_BYTES = 512 * 1024 * 1024  # larger inputs should be split or converted to Parquet first
MAX_RECORD_CHARS = 1_000_000  # one example longer than this cannot be a training example
MAX_DEPTH = 64  # JSON nesting deeper than this is not a chat example
MAX_UNZIPPED_BYTES = 512 * 1024 * 1024  # xlsx/docx are zip files: refuse zip bombs
LEGACY_ENCODINGS = ("cp1252", "cp1250", "cp1251", "iso8859_15", "cp1253", "cp1254", "cp1257", "koi8_r")

TEXT_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
              ".txt": "text", ".md": "markdown", ".markdown": "markdown"}
BINARY_KINDS = {".parquet": "parquet", ".pq": "parquet", ".xlsx": "xlsx", ".pdf": "pdf", ".docx": "docx"}
MAGIC = [(b"PK\x03\x04", "a ZIP archive (an .xlsx, .docx or .zip file)"), (b"%PDF", "a PDF file"),
         (b"PAR1", "a Parquet file"), (b"\x1f\x8b", "a gzip archive"), (b"\x89PNG", "a PNG image"),
         (b"\xff\xd8\xff", "a JPEG image"), (b"SQLite format 3", "an SQLite database"), (b"\x7fELF", "a program")]


@dataclass
class RawFile:
    """What one file held: `rows` as (line number, record) pairs, plus how it was read."""

    path: Path
    kind: str
    rows: list[tuple[int, Any]] = field(default_factory=list)
    encoding: str = ""
    text: str = ""
    columns: list[str] = field(default_factory=list)
    problems: list[tuple[int, str, str]] = field(default_factory=list)  # (line, check id, message)


def file_kind(path: Path) -> str:
    """The kind of file by extension ('jsonl', 'csv', 'pdf', ...); UserError for unknown ones."""
    ext = path.suffix.lower()
    kind = TEXT_KINDS.get(ext) or BINARY_KINDS.get(ext)
    if not kind:
        known = ", ".join(sorted(set(TEXT_KINDS) | set(BINARY_KINDS)))
        raise UserError(f"{path}: unknown file type {ext or '(no extension)'}; use one of {known}")
    return kind


def read_bytes(path: Path) -> bytes:
    """The file's bytes; UserError when missing, empty, a folder or over MAX_FILE_BYTES."""
    if not path.exists():
        raise UserError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; pass the files inside it")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise UserError(f"{path}: {size / 2**20:.0f} MB is over the {MAX_FILE_BYTES // 2**20} MB limit; split it or convert it to Parquet")
    data = path.read_bytes()
    if not data.strip():
        raise UserError(f"{path}: the file is empty; add examples or remove it from the inputs")
    return data


def decode_text(data: bytes, path: Path) -> tuple[str, str]:
    """Decode a text file; returns (text, encoding name).

    UTF-8 (with or without BOM) and UTF-16 (BOM, or the zero-byte pattern) are read as they are;
    other bytes are decoded only when charset detection is sure of a single-byte code page.
    Raises UserError for binary data or bytes no encoding explains.
    """
    for magic, what in MAGIC:
        if data.startswith(magic):
            raise UserError(f"{path}: the file is {what}, not {path.suffix} text; rename it to its real type or export it as text")
    if data.startswith(b"\xef\xbb\xbf"):
        return _decode(data, "utf-8-sig", path), "utf-8-sig"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return _decode(data, "utf-16", path), "utf-16"
    head = data[:4096]
    if b"\x00" in head:
        even, odd = head[0::2].count(0), head[1::2].count(0)
        half = len(head) // 2 or 1
        if odd / half > 0.3 and even == 0:
            return _decode(data, "utf-16-le", path), "utf-16-le"
        if even / half > 0.3 and odd == 0:
            return _decode(data, "utf-16-be", path), "utf-16-be"
        raise UserError(f"{path}: binary data (zero bytes) in a {path.suffix} file; export it as UTF-8 text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        text, enc = _decode_legacy(data, path, exc)
    else:
        enc = "utf-8"
    check_not_binary(text, path)
    return text, enc


def _decode(data: bytes, encoding: str, path: Path) -> str:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n" if "16" not in encoding else "\n".encode(encoding)) + 1
        raise UserError(f"{path}:{line}: invalid {encoding} bytes; the file is truncated or mixes encodings, re-save it as UTF-8") from exc
    check_not_binary(text, path)
    return text


def _decode_legacy(data: bytes, path: Path, exc: UnicodeDecodeError) -> tuple[str, str]:
    from charset_normalizer import from_bytes

    line = data[: exc.start].count(b"\n") + 1
    # Only single-byte code pages are candidates: multi-byte guesses on short texts are unreliable.
    # Ties go to the commoner code page (the order of LEGACY_ENCODINGS).
    matches = list(from_bytes(data[:2_000_000], cp_isolation=list(LEGACY_ENCODINGS)))
    if matches:
        best = min(matches, key=lambda m: (round(m.chaos, 3), -round(m.coherence, 3), LEGACY_ENCODINGS.index(m.encoding)))
        if best.chaos < 0.2:
            try:
                return data.decode(best.encoding), best.encoding
            except UnicodeDecodeError:
                pass
    raise UserError(
        f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x}) and no single-byte encoding fits for sure; "
        "re-save the file as UTF-8"
    ) from exc


def check_not_binary(text: str, path: Path) -> None:
    """UserError when more than 1% of the first 64k characters are control characters."""
    sample = text[:65536]
    bad = sum(1 for c in sample if ord(c) < 32 and c not in "\t\n\r\f") + sample.count("\x7f")
    if sample and bad / len(sample) > 0.01:
        raise UserError(f"{path}: looks like binary data, not text ({bad} control characters); export it as UTF-8 text")


def json_depth(obj: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of `obj`, counted without recursion and stopping once past `limit`."""
    depth, stack = 0, [(obj, 1)]
    while stack:
        item, d = stack.pop()
        if isinstance(item, (dict, list)):
            depth = max(depth, d)
            if depth > limit:
                return depth
            stack.extend((v, d + 1) for v in (item.values() if isinstance(item, dict) else item))
    return depth


def parse_json(text: str, path: Path, line: int | None = None) -> Any:
    """json.loads with the file and line in every error; UserError for invalid or too deep JSON."""
    where = f"{path}:{line}" if line else str(path)
    try:
        obj = json.loads(text)
    except RecursionError as exc:
        raise UserError(f"{where}: JSON nested too deep to be a training example; flatten it") from exc
    except json.JSONDecodeError as exc:
        at = (line or exc.lineno) if line else exc.lineno
        hint = "the file looks truncated" if exc.pos >= len(text.rstrip()) - 1 else "fix the JSON syntax"
        raise UserError(f"{path}:{at}: invalid JSON ({exc.msg}); {hint}") from exc
    if json_depth(obj) > MAX_DEPTH:
        raise UserError(f"{where}: JSON nested deeper than {MAX_DEPTH} levels; that is not a training example, flatten it")
    return obj


def read_jsonl_file(raw: RawFile) -> None:
    """Parse one JSON value per line; bad or oversized lines become problems, not exceptions."""
    for lineno, line in enumerate(raw.text.splitlines(), 1):
        if not line.strip():
            continue
        if len(line) > MAX_RECORD_CHARS:
            raw.problems.append((lineno, "record_too_large",
                                 f"line is {len(line):,} characters, over the {MAX_RECORD_CHARS:,} limit; split or drop it"))
            continue
        try:
            raw.rows.append((lineno, parse_json(line, raw.path, lineno)))
        except UserError as exc:
            raw.problems.append((lineno, "invalid_json", f"{exc}; fix the line or pass --drop-invalid"))


def read_json(raw: RawFile) -> None:
    """A JSON array of records, an object holding one (e.g. {"data": [...]}), or one record."""
    try:
        obj = parse_json(raw.text, raw.path)
    except UserError:
        lines = [ln for ln in raw.text.splitlines() if ln.strip()]
        if len(lines) > 1 and lines[0].lstrip().startswith("{") and lines[0].rstrip().endswith("}"):
            raw.kind = "jsonl"  # JSON Lines under a .json name
            return read_jsonl_file(raw)
        raise
    if isinstance(obj, dict):
        lists = [k for k, v in obj.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v[:20])]
        if len(lists) == 1 and not {"messages", "conversations"} & set(obj):
            obj = obj[lists[0]]
        else:
            obj = [obj]
    if not isinstance(obj, list):
        raise UserError(f"{raw.path}: holds a JSON {type(obj).__name__}; expected an array of records or an object holding one")
    raw.rows = [(i + 1, rec) for i, rec in enumerate(obj)]


def read_csv(raw: RawFile) -> None:
    """CSV/TSV with a header row; the delimiter is sniffed for .csv. Line numbers are the file's."""
    csv.field_size_limit(MAX_RECORD_CHARS)
    if raw.kind == "tsv":
        dialect: Any = csv.excel_tab
    else:
        try:
            dialect = csv.Sniffer().sniff(raw.text[:65536], delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel
    reader = csv.reader(io.StringIO(raw.text, newline=""), dialect, strict=True)
    try:
        header = next(reader)
        raw.columns = [h.strip() for h in header]
        if len(set(raw.columns)) != len(raw.columns) or "" in raw.columns:
            raise UserError(f"{raw.path}:1: the header row has empty or repeated column names ({', '.join(header)}); name every column once")
        start = reader.line_num
        for cells in reader:
            if not any(c.strip() for c in cells):
                start = reader.line_num
                continue
            if len(cells) != len(raw.columns):
                raw.problems.append((start + 1, "csv_ragged_row",
                                     f"row has {len(cells)} cells, the header has {len(raw.columns)}; fix the quoting or delimiters"))
            else:
                raw.rows.append((start + 1, dict(zip(raw.columns, cells))))
            start = reader.line_num
    except csv.Error as exc:
        raise UserError(f"{raw.path}:{reader.line_num}: cannot read it as {raw.kind.upper()} ({exc}); check the quoting, or the file is truncated") from exc


def check_zip(path: Path) -> None:
    """UserError when `path` is not a sound zip file or would expand past MAX_UNZIPPED_BYTES."""
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(i.file_size for i in zf.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{path}: not a readable {path.suffix} file (broken or truncated zip: {exc}); re-save it") from exc
    if total > MAX_UNZIPPED_BYTES:
        raise UserError(f"{path}: would expand to {total / 2**20:.0f} MB; refusing it (zip bomb?), re-save it plainly")


def read_xlsx(raw: RawFile) -> None:
    """The first non-empty sheet of an .xlsx, first row as header; formulas kept as text."""
    import openpyxl

    check_zip(raw.path)
    try:
        wb = openpyxl.load_workbook(raw.path, read_only=True, data_only=False)
    except Exception as exc:  # openpyxl raises many types for a broken workbook
        raise UserError(f"{raw.path}: cannot open it as an Excel workbook ({exc.__class__.__name__}: {exc}); re-save it as .xlsx") from exc
    try:
        for ws in wb.worksheets:
            rows = ws.iter_rows(values_only=True)
            header = next(rows, None)
            if not header or not any(h is not None for h in header):
                continue
            raw.columns = [str(h).strip() if h is not None else f"column_{i + 1}" for i, h in enumerate(header)]
            for lineno, cells in enumerate(rows, 2):
                if cells and any(c not in (None, "") for c in cells):
                    raw.rows.append((lineno, dict(zip(raw.columns, cells))))
            return
    finally:
        wb.close()
    raise UserError(f"{raw.path}: every sheet is empty; put a header row and examples in the first sheet")


def read_parquet(raw: RawFile) -> None:
    """All rows of a Parquet file; UserError naming the file for a truncated or broken one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(raw.path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{raw.path}: cannot read it as Parquet ({exc}); the file is truncated or not Parquet") from exc
    raw.columns = list(table.column_names)
    raw.rows = [(i + 1, rec) for i, rec in enumerate(table.to_pylist())]


def read_table(path: str | Path) -> RawFile:
    """Read a data file (not a document) into a RawFile; raises UserError when unusable."""
    path = Path(path)
    kind = file_kind(path)
    raw = RawFile(path=path, kind=kind)
    if kind in ("parquet", "xlsx"):
        if not path.exists():
            raise UserError(f"{path}: no such file; check the path")
        if path.stat().st_size == 0:
            raise UserError(f"{path}: the file is empty; add examples or remove it from the inputs")
        (read_parquet if kind == "parquet" else read_xlsx)(raw)
        raw.encoding = "binary"
    else:
        raw.text, raw.encoding = decode_text(read_bytes(path), path)
        {"jsonl": read_jsonl_file, "json": read_json, "csv": read_csv, "tsv": read_csv}[kind](raw)
    if not raw.rows and not raw.problems:
        raise UserError(f"{path}: holds no records; add examples or remove it from the inputs")
    return raw
