"""Content checks on structurally valid examples.

Check ids (severity): duplicate_exact (warning), duplicate_near (info), train_test_leak (error),
label_imbalance (warning), mojibake (warning), binary_text (error), formula_injection (warning),
invalid_json_output (error), schema_mismatch (error), schema_minority (warning: breaks the
schema inferred from the majority of the replies), pii_email / pii_phone / pii_card /
pii_iban / pii_ssn (warning).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np

from ftassist.data.findings import DataRow, Finding, clip
from ftassist.data.pii import PLACEHOLDER, find_pii
from ftassist.schema import parse_json_reply

Msgs = list[dict] | None
MOJIBAKE = re.compile(r"Ã[\u0080-\u00bf]|â€|Â[\u00a0-\u00bf]|\ufffd")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
FORMULA = re.compile(r"^(?:[=@\t\r]|[+-][A-Za-z(].*\()", re.S)
NEAR_JACCARD = 0.85
PERMS, BANDS = 64, 16


def reply(msgs: list[dict]) -> str:
    return msgs[-1]["content"]


def norm(text: str) -> str:
    """Lower-case, punctuation dropped, whitespace collapsed: the key for near-identical texts."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def conv_key(msgs: list[dict]) -> str:
    return "\x1e".join(f"{m['role']}\x1f{m['content']}" for m in msgs)


def prompt_key(msgs: list[dict]) -> str:
    return "\x1e".join(f"{m['role']}\x1f{norm(m['content'])}" for m in msgs[:-1])


def check_duplicates(examples: list[DataRow], msgs: list[Msgs]) -> list[Finding]:
    """duplicate_exact for each repeat of an earlier example (same split), duplicate_near for
    examples whose word 3-grams overlap an earlier one's by NEAR_JACCARD or more."""
    out: list[Finding] = []
    first: dict[tuple[str, str], int] = {}
    exact: set[int] = set()
    for i, m in enumerate(msgs):
        if m is None:
            continue
        key = (examples[i].split, conv_key(m))
        if key in first:
            j = first[key]
            exact.add(i)
            out.append(Finding("duplicate_exact", "warning", i, None, f"same as row {j} ({examples[j].source}); "
                               "pass --drop-duplicates to keep only the first", clip(reply(m)), examples[i].source))
        else:
            first[key] = i
    rows = [i for i, m in enumerate(msgs) if m is not None and i not in exact]
    for i, j, sim in near_pairs([" ".join(norm(x["content"]) for x in msgs[r]) for r in rows], rows, examples):  # type: ignore[union-attr]
        out.append(Finding("duplicate_near", "info", i, None, f"{sim:.0%} like row {j} ({examples[j].source}); "
                           "check whether both are needed", clip(reply(msgs[i])), examples[i].source))  # type: ignore[arg-type]
    return out


def _shingles(text: str) -> set[str]:
    words = text.split()
    return {" ".join(words[k:k + 3]) for k in range(max(1, len(words) - 2))}


def minhash(texts: list[str], chunk: int = 2000) -> np.ndarray:
    """MinHash signatures (len(texts) x PERMS) of each text's word 3-grams, computed in numpy chunks."""
    rng = np.random.default_rng(0)
    prime = np.uint64((1 << 61) - 1)
    a = rng.integers(1, 1 << 28, PERMS, dtype=np.uint64)  # gram hashes < 2**32: a*x+b stays below 2**61
    b = rng.integers(0, 1 << 28, PERMS, dtype=np.uint64)
    mult = np.array([0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D], dtype=np.uint64)
    vocab: dict[str, int] = {}
    sigs = np.empty((len(texts), PERMS), dtype=np.uint64)
    for start in range(0, len(texts), chunk):
        ids = [[vocab.setdefault(w, len(vocab) + 1) for w in t.split()] for t in texts[start:start + chunk]]
        ids = [w + [0] * (3 - len(w)) if len(w) < 3 else w for w in ids]
        lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter((x for w in ids for x in w), dtype=np.uint64, count=int(lens.sum()))
        flat = np.concatenate([flat, np.zeros(2, dtype=np.uint64)])
        ends = np.cumsum(lens)
        row_of = np.repeat(np.arange(len(ids)), lens)
        pos = np.arange(len(row_of))
        valid = pos + 2 < ends[row_of]
        pos = pos[valid]
        grams = (flat[pos] * mult[0] + flat[pos + 1] * mult[1] + flat[pos + 2] * mult[2]) & np.uint64(0xFFFFFFFF)
        hashed = (a[:, None] * grams[None, :] + b[:, None]) % prime  # PERMS x grams, rows contiguous
        offsets = np.searchsorted(row_of[valid], np.arange(len(ids)))
        sigs[start:start + len(ids)] = np.minimum.reduceat(hashed, offsets, axis=1).T
    return sigs


def near_pairs(texts: list[str], rows: list[int], examples: list[DataRow]) -> list[tuple[int, int, float]]:
    """(row, earlier row, similarity) for near-duplicates found by MinHash LSH, verified exactly."""
    if not texts:
        return []
    sigs = minhash(texts)
    per = PERMS // BANDS
    buckets: list[dict[bytes, int]] = [dict() for _ in range(BANDS)]
    where = {row: k for k, row in enumerate(rows)}
    out: list[tuple[int, int, float]] = []
    shingles: dict[int, set[str]] = {}
    for k, row in enumerate(rows):
        sig = sigs[k]
        best: tuple[int, float] | None = None
        seen: set[int] = set()
        for band in range(BANDS):
            other = buckets[band].setdefault(sig[band * per:(band + 1) * per].tobytes(), row)
            if other == row or other in seen or examples[other].split != examples[row].split:
                continue
            seen.add(other)
            s1 = shingles.get(row) or shingles.setdefault(row, _shingles(texts[k]))
            s2 = shingles.get(other) or shingles.setdefault(other, _shingles(texts[where[other]]))
            sim = len(s1 & s2) / len(s1 | s2)
            if sim >= NEAR_JACCARD and (best is None or sim > best[1]):
                best = (other, sim)
        if best:
            out.append((row, best[0], best[1]))
    return out


def check_leakage(examples: list[DataRow], msgs: list[Msgs]) -> list[Finding]:
    """train_test_leak for each test example whose prompt (case and punctuation aside) is a train one's."""
    train: dict[str, int] = {}
    for i, m in enumerate(msgs):
        if m is not None and examples[i].split == "train":
            train.setdefault(prompt_key(m), i)
    out = []
    for i, m in enumerate(msgs):
        if m is not None and examples[i].split == "test" and prompt_key(m) in train:
            j = train[prompt_key(m)]
            out.append(Finding("train_test_leak", "error", i, None, f"test example has the same prompt as train row {j} "
                               f"({examples[j].source}): the test score would be inflated; remove one of them or pass "
                               "--drop-invalid", clip(m[-2]["content"] if len(m) > 1 else ""), examples[i].source))
    return out


def class_labels(replies: list[str]) -> Counter | None:
    """The replies' counts when they form a small set of classes (<= 20, each repeated), else None."""
    counts = Counter(r.strip() for r in replies)
    n = len(replies)
    if n >= 10 and 2 <= len(counts) <= 20 and len(counts) <= n / 4 and max(map(len, counts)) <= 100:
        return counts
    return None


def check_labels(examples: list[DataRow], msgs: list[Msgs]) -> list[Finding]:
    """label_imbalance when replies are classes and the rarest has under a tenth of the commonest."""
    counts = class_labels([reply(m) for i, m in enumerate(msgs) if m is not None and examples[i].split == "train"])
    if not counts:
        return []
    (top, hi), (low, lo) = counts.most_common()[0], counts.most_common()[-1]
    if lo * 10 >= hi:
        return []
    shown = ", ".join(f"{k!r}: {v}" for k, v in counts.most_common())
    return [Finding("label_imbalance", "warning", None, "assistant", f"replies are {len(counts)} classes and {low!r} has "
                    f"{lo} examples against {hi} of {top!r}; add examples of the rare classes or balance them", shown)]


def check_text(examples: list[DataRow], msgs: list[Msgs]) -> list[Finding]:
    """mojibake, binary_text and pii_* findings for every message of every valid example."""
    out = []
    for i, m in enumerate(msgs):
        if m is None:
            continue
        src = examples[i].source
        for j, msg in enumerate(m):
            text, field = msg["content"], f"messages[{j}].content"
            if CONTROL.search(text):
                out.append(Finding("binary_text", "error", i, field, "control characters in the text (binary data or a "
                                   "broken export); clean the text or pass --drop-invalid", clip(text), src))
            bad = MOJIBAKE.search(text)
            if bad:
                out.append(Finding("mojibake", "warning", i, field, f"garbled characters {bad.group(0)!r} (text decoded with "
                                   "the wrong encoding); re-export the source as UTF-8", clip(text[max(0, bad.start() - 40):]), src))
            kinds = Counter(p.kind for p in find_pii(text))
            for kind, n in kinds.items():
                out.append(Finding(f"pii_{kind}", "warning", i, field, f"{n} {kind} value(s) look like personal data; "
                                   f"pass --mask-pii to replace them with {PLACEHOLDER[kind]}", clip(text), src))
    return out


def check_formulas(examples: list[DataRow]) -> list[Finding]:
    """formula_injection for spreadsheet cells (CSV/TSV/XLSX/Parquet) that a spreadsheet would run."""
    out = []
    for i, ex in enumerate(examples):
        if ex.tabular and isinstance(ex.raw, dict):
            for col, val in ex.raw.items():
                if isinstance(val, str) and FORMULA.match(val):
                    out.append(Finding("formula_injection", "warning", i, f"column {col!r}", "the cell starts like a "
                                       "spreadsheet formula and would run if the file is opened in Excel; remove the "
                                       "leading character or prefix it with '", clip(val), ex.source))
    return out


def check_json(examples: list[DataRow], msgs: list[Msgs], schema: dict | None, inferred: bool = False) -> list[Finding]:
    """invalid_json_output for replies that don't parse, schema_mismatch for those that break `schema`
    (schema_minority warnings when the schema was `inferred` from the majority of the replies)."""
    if schema is None:
        return []
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(schema)
    out = []
    for i, m in enumerate(msgs):
        if m is None:
            continue
        ok, value = parse_json_reply(reply(m))
        field = f"messages[{len(m) - 1}].content"
        if not ok:
            out.append(Finding("invalid_json_output", "error", i, field, "the reply is not valid JSON but this is a JSON "
                               "task; fix the reply or pass --drop-invalid", clip(reply(m)), examples[i].source))
            continue
        err = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if err is not None:
            where = "/".join(map(str, err.absolute_path)) or "(root)"
            if inferred:
                out.append(Finding("schema_minority", "warning", i, field, f"the reply disagrees with most replies at "
                                   f"{where}: {clip(err.message, 120)}; fix the reply, or give the schema (--schema) if "
                                   "it is right", clip(reply(m)), examples[i].source))
                continue
            out.append(Finding("schema_mismatch", "error", i, field, f"the reply breaks the schema at {where}: "
                               f"{clip(err.message, 120)}; fix the reply or pass --drop-invalid", clip(reply(m)), examples[i].source))
    return out


def reply_values(msgs: list[Msgs]) -> list[Any]:
    return [reply(m) for m in msgs if m is not None]
