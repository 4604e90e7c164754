"""Every check on a data set's rows: `validate_records` returns every finding, sorted by row.

    findings, lengths = validate_records(load_records(["a.jsonl"]).examples, tokenizer=tok)

Format: OpenAI's seven chat-format errors, role order, empty fields, oversized records. Check ids (severity): not_a_dict, missing_messages, message_missing_key, unknown_key,
unknown_role, missing_content, no_assistant_message (the seven, all errors); role_order (error,
or warning for two turns of one role in a row); empty_content (error); record_too_large (error).

Content, on structurally valid examples. Check ids (severity): duplicate_exact (warning), duplicate_near (info), train_test_leak (error),
label_imbalance (warning), mojibake (warning), binary_text (error), formula_injection (warning),
invalid_json_output (error), schema_mismatch (error), schema_minority (warning: breaks the
schema inferred from the majority of the replies), pii_email / pii_phone / pii_card /
pii_iban / pii_ssn (warning).

Lengths, with the real tokenizer and chat template of the model to be trained. Check ids (severity): too_long (warning: the end would be truncated at max_length),
fully_masked (error: the prompt alone fills max_length, so no reply token is trained on),
template_error (error: the model's chat template refuses the example).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ftassist.data.findings import DataRow, Finding, clip
from ftassist.data.loaders import MAX_RECORD_CHARS
from ftassist.data.pii import PLACEHOLDER, find_pii
from ftassist.schema import parse_json_reply

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def validate_records(examples: list[DataRow], *, schema: dict | None = None, tokenizer: Any = None,
                     max_length: int = 1024, schema_inferred: bool = False) -> tuple[list[Finding], Lengths]:
    """Every finding for `examples` (format, content, JSON/schema when `schema` is given, personal
    data, and token lengths when a `tokenizer` is given), sorted by row; and the token lengths.
    A reply that breaks a `schema_inferred` from the majority is a schema_minority warning, not an
    error. Never raises for bad data: problems are findings."""
    findings = check_format(examples)
    broken = {f.row for f in findings if f.severity == "error"}
    msgs = [None if i in broken else valid_messages(ex) for i, ex in enumerate(examples)]
    findings += check_duplicates(examples, msgs)
    findings += check_leakage(examples, msgs)
    findings += check_labels(examples, msgs)
    findings += check_text(examples, msgs)
    findings += check_formulas(examples)
    findings += check_json(examples, msgs, schema, schema_inferred)
    lengths = Lengths([None] * len(examples), [None] * len(examples))
    if tokenizer is not None:
        found, lengths = check_lengths(examples, msgs, tokenizer, max_length)
        findings += found
    findings.sort(key=lambda f: (f.row if f.row is not None else -1, SEVERITY_ORDER[f.severity], f.check))
    return findings, lengths


def usable_messages(examples: list[DataRow], findings: list[Finding]) -> list[list[dict] | None]:
    """Per example, its [{role, content}] messages, or None when it has a format error."""
    broken = {f.row for f in findings if f.severity == "error" and f.check in FORMAT_ERRORS}
    return [None if i in broken else valid_messages(ex) for i, ex in enumerate(examples)]


FORMAT_ERRORS = {"not_a_dict", "missing_messages", "message_missing_key", "unknown_key", "unknown_role", "missing_content",
                 "no_assistant_message", "role_order", "empty_content", "record_too_large"}


ROLES = ("system", "user", "assistant", "tool", "function")
MESSAGE_KEYS = {"role", "content", "name", "weight", "function_call", "tool_calls", "tool_call_id"}
FIX_DROP = "or pass --drop-invalid to leave the example out"


def _field(ex: DataRow, j: int) -> str:
    cols = ex.meta.get("column_map")
    if cols and isinstance(ex.messages, list) and j < len(ex.messages):
        role = ex.messages[j].get("role") if isinstance(ex.messages[j], dict) else None
        col = {"system": cols.get("system"), "user": cols.get("instruction"), "assistant": cols.get("output")}.get(role or "")
        if col:
            return f"column {col!r}"
    return f"messages[{j}]"


def check_format(examples: list[DataRow]) -> list[Finding]:
    """Findings for every structural problem of every example (all of them, not the first)."""
    out: list[Finding] = []
    for i, ex in enumerate(examples):
        out.extend(check_example(i, ex))
    return out


def check_example(i: int, ex: DataRow) -> list[Finding]:
    """Structural findings for one example (row index `i`)."""
    def add(check: str, field: str | None, message: str, example: Any = "", severity: str = "error") -> None:
        out.append(Finding(check, severity, i, field, message, clip(example), ex.source))

    out: list[Finding] = []
    if ex.fmt != "document" and not isinstance(ex.raw, dict):
        add("not_a_dict", None, f"the record is a JSON {type(ex.raw).__name__}, not an object; "
            f'write it as {{"messages": [...]}} {FIX_DROP}', ex.raw)
        return out
    msgs = ex.messages
    if not isinstance(msgs, list) or not msgs:
        what = "missing" if msgs is None else ("empty" if msgs == [] else f"a {type(msgs).__name__}")
        key = "conversations" if ex.fmt == "sharegpt" else "messages"
        add("missing_messages", key, f"`{key}` is {what}; it must be a non-empty list of {{role, content}} messages {FIX_DROP}", ex.raw)
        return out
    roles: list[str] = []
    broken = False  # a message without role or content: its place in the order is unknown
    for j, m in enumerate(msgs):
        field = _field(ex, j)
        if not isinstance(m, dict) or "role" not in m or ("content" not in m and "function_call" not in m and "tool_calls" not in m):
            missing = "is not an object" if not isinstance(m, dict) else "has no " + " or ".join(k for k in ("role", "content") if k not in m)
            add("message_missing_key", field, f"the message {missing}; give every message a role and content {FIX_DROP}", m)
            broken = True
            if not isinstance(m, dict):
                continue
        extra = sorted(set(map(str, m)) - MESSAGE_KEYS)
        if extra:
            add("unknown_key", field, f"unknown key(s) {', '.join(extra)}; keep only role and content {FIX_DROP}", m)
        role = m.get("role")
        if "role" in m and role not in ROLES:
            add("unknown_role", f"{field}.role", f"unknown role {role!r}; use system, user or assistant {FIX_DROP}", role)
        if role in ROLES:
            roles.append(role)
        content = m.get("content")
        if "content" in m and not isinstance(content, str):
            if content is None and (m.get("function_call") or m.get("tool_calls")):
                pass
            else:
                what = "missing" if content is None else f"a {type(content).__name__}, not text"
                add("missing_content", f"{field}.content", f"the {role or 'message'} content is {what}; fill it in {FIX_DROP}", m)
        elif isinstance(content, str):
            if not content.strip():
                add("empty_content", f"{field}.content", f"the {role or 'message'} content is empty or only whitespace; "
                    f"fill it in {FIX_DROP}", content)
            elif len(content) > MAX_RECORD_CHARS:
                add("record_too_large", f"{field}.content", f"{len(content):,} characters, over the {MAX_RECORD_CHARS:,} limit; "
                    f"split or shorten it {FIX_DROP}", content[:200])
    if "assistant" not in roles:
        add("no_assistant_message", None, f"no assistant message: nothing to learn from; add the reply {FIX_DROP}",
            [m.get("role") if isinstance(m, dict) else m for m in msgs])
        return out
    if not broken:
        out.extend(check_role_order(i, ex, roles))
    return out


def check_role_order(i: int, ex: DataRow, roles: list[str]) -> list[Finding]:
    """role_order findings: system only first, user before the first reply, last message the reply."""
    out = []
    order = " -> ".join(roles)
    if "system" in roles[1:]:
        out.append(Finding("role_order", "error", i, "messages", "a system message after the first position; "
                           f"move it to the start {FIX_DROP}", order, ex.source))
    convo = [r for r in roles if r != "system"]
    if convo and convo[0] == "assistant":
        out.append(Finding("role_order", "error", i, "messages", "the conversation starts with the assistant; "
                           f"put the user's message first {FIX_DROP}", order, ex.source))
    if roles[-1] != "assistant":
        out.append(Finding("role_order", "error", i, "messages", f"the last message is the {roles[-1]}'s; the example "
                           f"must end with the assistant's reply, drop the trailing turn {FIX_DROP}", order, ex.source))
    if any(a == b and a in ("user", "assistant") for a, b in zip(convo, convo[1:])):
        out.append(Finding("role_order", "warning", i, "messages", "two messages of one role in a row; merge them "
                           "so user and assistant alternate", order, ex.source))
    return out


def valid_messages(ex: DataRow) -> list[dict] | None:
    """The example's messages as [{role, content}] when they are structurally usable, else None."""
    msgs = ex.messages
    if not isinstance(msgs, list) or not msgs:
        return None
    out = []
    for m in msgs:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            return None
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "assistant":
        return None
    return out


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


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of two texts' word 3-grams after `norm`: what `duplicate_near` (>= NEAR_JACCARD) measures.

    >>> similarity("Flood in Leeds, roads closed!", "flood in leeds roads closed"), similarity("a b c", "x y z")
    (1.0, 0.0)
    """
    s1, s2 = _shingles(norm(a)), _shingles(norm(b))
    return len(s1 & s2) / len(s1 | s2) if s1 | s2 else 1.0


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


BATCH = 4096


@dataclass
class Lengths:
    """Per-example token counts (None where the example is invalid; prompt only where total > max_length)."""

    total: list[int | None] = field(default_factory=list)
    prompt: list[int | None] = field(default_factory=list)

    def known(self) -> list[int]:
        return [n for n in self.total if n is not None]


def load_tokenizer(model: str | None) -> Any:
    """The fast tokenizer of `model` (default model when None); UserError when it has no chat template."""
    from transformers import AutoTokenizer

    from ftassist.errors import UserError
    from ftassist.model import resolve_model

    path = resolve_model(model)
    tok = AutoTokenizer.from_pretrained(path)
    if not getattr(tok, "chat_template", None):
        raise UserError(f"--model {model or path}: its tokenizer has no chat template; use an instruct/chat model")
    return tok


def measure(msgs: list[list[dict] | None], tokenizer: Any, max_length: int | None = None) -> tuple[Lengths, dict[int, str]]:
    """Token counts of each full conversation, rendered by the chat template and tokenized in batches,
    and, for those over `max_length`, of the prompt (all before the last reply, with the generation prompt).
    Returns (lengths, {row: template error message})."""
    full_texts, rows = [], []
    errors: dict[int, str] = {}
    for i, m in enumerate(msgs):
        if m is None:
            continue
        try:
            full_texts.append(tokenizer.apply_chat_template(m, tokenize=False))
        except Exception as exc:  # jinja2 templates raise their own errors (e.g. "roles must alternate")
            errors[i] = f"{exc.__class__.__name__}: {exc}"
            continue
        rows.append(i)
    lengths = Lengths([None] * len(msgs), [None] * len(msgs))
    for start in range(0, len(rows), BATCH):
        ids = tokenizer(full_texts[start:start + BATCH], add_special_tokens=False)["input_ids"]
        for i, f in zip(rows[start:start + BATCH], ids):
            lengths.total[i] = len(f)
    # The prompt's length matters only where the whole example is too long: measure it there.
    long_rows = [i for i in rows if max_length is not None and lengths.total[i] > max_length]  # type: ignore[operator]
    if long_rows:
        prompts = [tokenizer.apply_chat_template(msgs[i][:-1], tokenize=False, add_generation_prompt=True) for i in long_rows]  # type: ignore[index]
        for i, p in zip(long_rows, tokenizer(prompts, add_special_tokens=False)["input_ids"]):
            lengths.prompt[i] = len(p)
    return lengths, errors


def check_lengths(examples: list[DataRow], msgs: list[list[dict] | None], tokenizer: Any, max_length: int) -> tuple[list[Finding], Lengths]:
    """too_long / fully_masked / template_error findings and the measured lengths."""
    lengths, errors = measure(msgs, tokenizer, max_length)
    out = [Finding("template_error", "error", i, "messages", f"the model's chat template refuses this example ({clip(e, 120)}); "
                   "fix the roles or pass --drop-invalid", "", examples[i].source) for i, e in errors.items()]
    for i, (n, p) in enumerate(zip(lengths.total, lengths.prompt)):
        if n is None or n <= max_length:
            continue
        if p is not None and p >= max_length:
            out.append(Finding("fully_masked", "error", i, "messages", f"the prompt alone is {p} tokens, at or over max_length "
                               f"{max_length}: truncation removes the whole reply, so the example teaches nothing; shorten the "
                               "prompt, raise --max-length, or pass --drop-overlength", clip(msgs[i][-1]["content"]), examples[i].source))  # type: ignore[index]
        else:
            out.append(Finding("too_long", "warning", i, "messages", f"{n} tokens, over max_length {max_length}: the last "
                               f"{n - max_length} tokens of the reply would be cut; shorten it, raise --max-length, or pass "
                               "--drop-overlength", clip(msgs[i][-1]["content"]), examples[i].source))  # type: ignore[index]
    return out, lengths
