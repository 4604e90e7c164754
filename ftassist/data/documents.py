"""Documents (TXT, Markdown, PDF, DOCX) -> passages -> instruction pairs made by templates.

No model is needed: a passage under a heading becomes "According to TITLE, what is said about
HEADING?" -> the passage; a passage without one becomes "Continue this passage from TITLE:
FIRST SENTENCE" -> the rest. Each example keeps its source passage as provenance. (With a
teacher model, `ftassist.data.teacher` turns the same passages into question/answer pairs.)

PDFs are parsed in a child process (`python -m ftassist.data.documents FILE.pdf`) under CPU-time
and memory limits, so a PDF built to expand without end fails with a clear error, not a hang.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from ftassist.data.findings import DataRow
from ftassist.data.loaders import check_zip, decode_text, read_bytes
from ftassist.errors import UserError

MAX_DOC_CHARS = 20_000_000
PASSAGE_CHARS = 1200
PDF_SECONDS = 60
PDF_MEMORY_MB = 1024
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def read_document(path: Path, kind: str) -> tuple[str, str]:
    """The text of a document (headings as Markdown '#' lines) and its encoding; UserError if unusable."""
    if kind in ("text", "markdown"):
        return decode_text(read_bytes(path), path)
    if not path.exists():
        raise UserError(f"{path}: no such file; check the path")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty; add content or remove it from the inputs")
    if kind == "docx":
        return read_docx(path), "binary"
    return read_pdf(path), "binary"


def read_docx(path: Path) -> str:
    """Paragraph text of a .docx; heading styles become '#' lines."""
    check_zip(path)
    try:
        import docx
    except ImportError as exc:
        raise UserError("reading .docx needs python-docx: pip install 'ftassist[documents]'") from exc
    try:
        doc = docx.Document(str(path))
    except Exception as exc:  # python-docx raises several types for a broken file
        raise UserError(f"{path}: cannot open it as a Word document ({exc.__class__.__name__}: {exc}); re-save it as .docx") from exc
    lines = []
    for para in doc.paragraphs:
        style = (para.style.name or "") if para.style is not None else ""
        level = re.match(r"Heading (\d)", style)
        if level:
            lines.append(f"{'#' * int(level.group(1))} {para.text}")
        elif style == "Title":
            lines.append(f"# {para.text}")
        else:
            lines.append(para.text)
        lines.append("")
    return "\n".join(lines)


def read_pdf(path: Path, seconds: int = PDF_SECONDS, memory_mb: int = PDF_MEMORY_MB) -> str:
    """Text of a PDF, extracted in a child process limited to `seconds` CPU and `memory_mb` memory.

    Raises UserError naming the file when the PDF is broken, encrypted, or exceeds the limits.
    """
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, memory_mb * 2**20))
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))

    cmd = [sys.executable, "-m", "ftassist.data.documents", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=seconds + 5, preexec_fn=limit)
    except subprocess.TimeoutExpired as exc:
        raise UserError(f"{path}: reading the PDF took over {seconds} s; it may be built to expand without end, export its text instead") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        last = err[-1] if err else ""
        if proc.returncode < 0 or "MemoryError" in last:
            raise UserError(f"{path}: reading the PDF went over {memory_mb} MB of memory or {seconds} s of CPU; "
                            "it may be built to expand without end, export its text instead")
        raise UserError(f"{path}: {last or 'cannot read the PDF'}")
    return json.loads(proc.stdout)["text"]


def _pdf_worker(path: str) -> int:
    """Child-process entry: print {"text": ...} for the PDF at `path`; exit 3 with one line on failure."""
    try:
        from pypdf import PdfReader
    except ImportError:
        print("reading .pdf needs pypdf: pip install 'ftassist[documents]'", file=sys.stderr)
        return 3
    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            print("the PDF is encrypted; save an unencrypted copy", file=sys.stderr)
            return 3
        pages, total = [], 0
        for page in reader.pages:
            text = page.extract_text() or ""
            total += len(text)
            if total > MAX_DOC_CHARS:
                print(f"the PDF holds over {MAX_DOC_CHARS:,} characters of text; split it", file=sys.stderr)
                return 3
            pages.append(text)
    except MemoryError:
        print("MemoryError", file=sys.stderr)
        return 3
    except Exception as exc:  # pypdf raises many types for broken files; report the cause in one line
        if "Limit" in exc.__class__.__name__:
            print(f"the PDF expands past the decompression limit ({exc}); it may be built to expand without end, "
                  "export its text instead", file=sys.stderr)
            return 3
        print(f"cannot read the PDF ({exc.__class__.__name__}: {exc}); the file is broken or truncated", file=sys.stderr)
        return 3
    text = "\n\n".join(pages)
    if not text.strip():
        print("the PDF has no extractable text (scanned images?); run OCR first or export its text", file=sys.stderr)
        return 3
    sys.stdout.write(json.dumps({"text": text}))
    return 0


def split_passages(text: str, size: int = PASSAGE_CHARS) -> list[tuple[str | None, str]]:
    """[(heading or None, passage)]: paragraphs grouped up to about `size` characters, never across
    a heading; over-long paragraphs are cut at sentence ends (or hard at `size`)."""
    out: list[tuple[str | None, str]] = []
    heading: str | None = None
    buf: list[str] = []

    def flush() -> None:
        if buf:
            out.append((heading, "\n\n".join(buf)))
            buf.clear()

    for block in re.split(r"\n\s*\n", text[:MAX_DOC_CHARS]):
        block = block.strip()
        if not block:
            continue
        first, _, rest = block.partition("\n")
        m = HEADING.match(first)
        if m:
            flush()
            heading = m.group(2).strip()
            block = rest.strip()
            if not block:
                continue
        for piece in _cut(block, size):
            if buf and sum(map(len, buf)) + len(piece) > size:
                flush()
            buf.append(piece)
    flush()
    return out


def _cut(block: str, size: int) -> list[str]:
    if len(block) <= size:
        return [block]
    pieces, cur = [], ""
    for sent in SENTENCE_END.split(block):
        for chunk in (sent[i:i + size] for i in range(0, len(sent), size)):
            if cur and len(cur) + 1 + len(chunk) > size:
                pieces.append(cur)
                cur = chunk
            else:
                cur = f"{cur} {chunk}".strip()
    if cur:
        pieces.append(cur)
    return pieces


def passage_messages(passage: str, title: str, heading: str | None = None) -> list[dict]:
    """One instruction pair for a passage (see the module docstring for the templates).

    >>> passage_messages("Cats sleep a lot. They nap 15 hours a day.", "Pets")[0]["content"]
    'Continue this passage from "Pets":\\n\\nCats sleep a lot.'
    """
    if heading:
        return [{"role": "user", "content": f'According to "{title}", what is said about {heading}?'},
                {"role": "assistant", "content": passage}]
    parts = SENTENCE_END.split(passage.strip(), maxsplit=1)
    if len(parts) == 2 and parts[1].strip():
        head, rest = parts
    else:
        cut = passage.rfind(" ", 0, max(1, len(passage) // 3))
        head, rest = (passage[:cut], passage[cut + 1:]) if cut > 0 else (passage, passage)
    return [{"role": "user", "content": f'Continue this passage from "{title}":\n\n{head}'},
            {"role": "assistant", "content": rest}]


def document_passages(path: Path, kind: str) -> list[tuple[str | None, str]]:
    """[(heading or None, passage)] of a document file; UserError if unreadable or without text."""
    text, _ = read_document(path, kind)
    passages = split_passages(text)
    if not passages:
        raise UserError(f"{path}: no text to make examples from; add content or remove it from the inputs")
    return passages


def document_title(path: Path) -> str:
    """The title templates and the teacher prompt use: the file name without extension, '_' as spaces."""
    return path.stem.replace("_", " ")


def provenance(path: Path, index: int, heading: str | None, text: str, method: str = "template") -> dict:
    """The provenance kept with each example made from a passage (`index` counts from 0)."""
    return {"file": str(path), "passage": index + 1, "heading": heading, "text": text, "method": method}


def document_examples(path: Path, kind: str, split: str = "train") -> tuple[list[DataRow], str, str]:
    """Examples for a document file; returns (examples, format id, reason). UserError if unusable."""
    passages = document_passages(path, kind)
    title = document_title(path)
    examples = [
        DataRow(messages=passage_messages(p, title, h), raw=None, fmt="document", split=split,
                source=f"{path}:passage {i + 1}", meta={"provenance": provenance(path, i, h, p)})
        for i, (h, p) in enumerate(passages)
    ]
    reason = (f"{kind.upper()} document: {len(passages)} passages split at headings and paragraphs (~{PASSAGE_CHARS} characters), "
              "each turned into an instruction pair by a template")
    return examples, "document", reason


if __name__ == "__main__":
    sys.exit(_pdf_worker(sys.argv[1]))
