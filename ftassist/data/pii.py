"""Personal data in text: emails, phone numbers, card numbers (Luhn), IBANs (mod 97), US SSNs.

    >>> [m.kind for m in find_pii("Mail jo@example.com, card 4111 1111 1111 1111")]
    ['email', 'card']
    >>> mask_pii("call +44 20 7946 0958 now")
    ('call [PHONE] now', 1)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

KINDS = ("email", "phone", "card", "iban", "ssn")
PLACEHOLDER = {k: f"[{k.upper()}]" for k in KINDS}

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8}\b")
SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,5}){1,4}(?![\w])")
MANY_DIGITS = re.compile(r"(?:\d[ .()+-]?){9}")


@dataclass(frozen=True)
class PiiMatch:
    kind: str
    start: int
    end: int
    value: str


def luhn_ok(digits: str) -> bool:
    """True when `digits` passes the Luhn checksum used by payment cards."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """True when `iban` (no spaces) passes the ISO 13616 mod-97 check."""
    if not 15 <= len(iban) <= 34:
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _iban_span(m: re.Match) -> tuple[int, str] | None:
    # The pattern may swallow a following upper-case word: try shorter prefixes too.
    parts = m.group(0).split(" ")
    for n in range(len(parts), 0, -1):
        cand = " ".join(parts[:n])
        if iban_ok(cand.replace(" ", "")):
            return m.start() + len(cand), cand
    return None


@lru_cache(maxsize=8192)
def find_pii(text: str) -> tuple[PiiMatch, ...]:
    """Every piece of personal data in `text`, in order, without overlaps (cards and IBANs win)."""
    found: list[PiiMatch] = []
    has_digits = MANY_DIGITS.search(text) is not None
    if has_digits:
        for m in CARD.finditer(text):
            digits = re.sub(r"\D", "", m.group(0))
            if 13 <= len(digits) <= 19 and luhn_ok(digits) and len(set(digits)) > 1:
                found.append(PiiMatch("card", m.start(), m.end(), m.group(0)))
        for m in IBAN.finditer(text):
            hit = _iban_span(m)
            if hit:
                found.append(PiiMatch("iban", m.start(), hit[0], hit[1]))
        for m in SSN.finditer(text):
            found.append(PiiMatch("ssn", m.start(), m.end(), m.group(0)))
    if "@" in text:
        found.extend(PiiMatch("email", m.start(), m.end(), m.group(0)) for m in EMAIL.finditer(text))
    if has_digits:
        for m in PHONE.finditer(text):
            n_digits = sum(c.isdigit() for c in m.group(0))
            if 9 <= n_digits <= 15 and (m.group(0).startswith("+") or re.search(r"[ .()-]", m.group(0))):
                found.append(PiiMatch("phone", m.start(), m.end(), m.group(0)))
    found.sort(key=lambda p: (p.start, -(p.end - p.start)))
    out: list[PiiMatch] = []
    for p in found:
        if not out or p.start >= out[-1].end:
            out.append(p)
    return tuple(out)


def mask_pii(text: str) -> tuple[str, int]:
    """`text` with each piece of personal data replaced by its placeholder; returns (text, count)."""
    matches = find_pii(text)
    if not matches:
        return text, 0
    parts, pos = [], 0
    for m in matches:
        parts.append(text[pos:m.start])
        parts.append(PLACEHOLDER[m.kind])
        pos = m.end
    parts.append(text[pos:])
    return "".join(parts), len(matches)
