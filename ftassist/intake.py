"""Reading what a person writes about their task: the advisor's answers from their own words.

The first thing people type is what they want, not an answer to a form. `read_task` takes such a
message and returns what could be read from it (the `Answers` it fills, the output fields it
names) and one plain sentence per thing understood, so the assistant can say what it took in and
ask only what is still unknown. Rules, not a model: every reading is traceable to the words.

    >>> r = read_task("I want my model to turn customer reviews into a JSON object with sentiment, "
    ...               "rating and issues; I have about 240 labelled examples in a CSV.")
    >>> r.answers.fixed_format, r.answers.new_facts, r.answers.examples, r.fields
    (True, False, 240, ('sentiment', 'rating', 'issues'))
    >>> read_task("two hundred and forty examples").answers.examples
    240
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from ftassist.advisor import Answers

# Words that say the replies have a fixed shape (JSON, a label set, a template).
_FORMAT = (r"\bjson\b", r"\bschema\b", r"\bstructured\b", r"\bfixed (output )?format\b", r"\btemplate\b",
           r"\bkeys\b", r"\bfields?\b", r"\blabels?\b", r"\bclassif(y|ies|ication)\b", r"\bcategori[sz]e\b",
           r"\bextract(s|ing|ion)?\b", r"\byaml\b", r"\bxml\b", r"\bcsv format\b", r"\bsame format\b",
           r"\bformat\b")
_FREE_TEXT = (r"\bfree[- ]?(text|form)\b", r"\bno (fixed |particular )?format\b", r"\bany format\b")
# Words that say the model needs knowledge it does not have, or data that changes.
_FACTS = (r"\b(latest|up[- ]to[- ]date|real[- ]time)\b", r"\bchang(e|es|ing)\b",
          r"\b(our|my|internal|company) (docs|documents|documentation|wiki|knowledge base|policies|manuals?)\b",
          r"\bknowledge base\b", r"\blook (things |it )?up\b", r"\bretriev\w*\b",
          r"\brag\b", r"\bfacts?\b", r"\bnew (information|knowledge)\b", r"\bdoes ?n[o']t know\b")
# Weaker cues: they mean outside facts only when the task is not reading them from its input.
_FACTS_WEAK = (r"\b(current|today'?s?)\b", r"\bprices?\b", r"\bstock\b")
# The answer comes from the input itself: extraction or transformation needs no outside facts.
_FROM_INPUT = (r"\b(turn|turns|convert|converts|map|maps|transform|transforms)\b.*\binto\b",
               r"\b(triage|classify|categori[sz]e|sort|route|tag)\b.*\b(into|as)\b",
               r"\bextract(s|ing)?\b.*\bfrom\b", r"\bfrom the (text|input|message|review|email|ticket)s?\b",
               r"\b(everything|all) (it needs )?is in the (input|text|message|prompt)\b",
               r"\bknows? enough\b")
_STYLE = (r"\b(tone|style|voice|brand|jargon|vocabulary|persona|register|wording)\b", r"\bsound(s)? like\b",
          r"\bconcise\b", r"\bformal\b", r"\bfriendly\b")
_CONSTRAINTS = {
    "latency": (r"\blatency\b", r"\bfast\b", r"\bquick(ly)?\b", r"\bmilliseconds?\b", r"\blow delay\b"),
    "cost": (r"\bcost\w*\b", r"\bcheap(er)?\b", r"\bbudget\b", r"\bexpensive\b", r"\bper request\b"),
    "privacy": (r"\bprivate\b", r"\bprivacy\b", r"\bgdpr\b", r"\bhipaa\b", r"\bon[- ]prem\w*\b",
                r"\bconfidential\b", r"\bsensitive\b", r"\b(must|can ?not|can't|cannot) leave\b", r"\bno cloud\b"),
}
_NO_CONSTRAINTS = (r"\bno (hard |particular |special )?constraints?\b", r"\bnone of these\b", r"\bno limits?\b")
_NEGATION = re.compile(r"\b(no|not|never|without|nothing|neither|nor|doesn'?t|don'?t|isn'?t|aren'?t|won'?t|"
                       r"needn'?t|dont|doesnt|does not|do not|is not|are not)\b(\W+\w+){0,4}\W*$")
_EXAMPLE_WORDS = r"(labell?ed |annotated |good |training |gold |hand[- ]written |example )?" \
                 r"(examples?|rows?|samples?|pairs?|records?|lines?|items?|reviews?|tickets?|emails?|conversations?)"

_UNITS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
          "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
          "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
          "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
          "ninety": 90, "few": 3, "couple": 2}
_SCALES = {"dozen": 12, "hundred": 100, "thousand": 1000, "k": 1000, "million": 1_000_000}


@dataclass(frozen=True)
class Reading:
    """What one message said: the advisor `answers` it fills (merged over what was known), the output
    `fields` it names, and `understood`: one sentence per thing read, in the user's terms."""

    answers: Answers
    fields: tuple[str, ...] = ()
    understood: tuple[str, ...] = ()


_LEAD = {"fixed_format": "Output:", "new_facts": "Knowledge:", "style": "Style:", "examples": "Examples:",
         "constraints": "Constraints:"}


def read_task(text: str, known: Answers | None = None) -> Reading:
    """Read the task description `text`; what it does not mention keeps its value from `known`.

    Never raises: a message with nothing readable returns `known` unchanged and no sentences.
    """
    answers = known or Answers()
    low = " " + re.sub(r"\s+", " ", text.lower().replace("’", "'")) + " "
    clauses = [c for c in re.split(r"[.;!?\n]|\bbut\b", low) if c.strip()]
    said: list[str] = []
    updates: dict = {}

    fields = _fields(text)
    free = _matches(clauses, _FREE_TEXT)
    fmt = _matches(clauses, _FORMAT)
    if free is True or fmt is False:
        updates["fixed_format"] = False
        said.append(f"{_LEAD['fixed_format']} free text, no fixed format.")
    elif fmt is True or fields:
        updates["fixed_format"] = True
        shape = "a JSON object" if "json" in low else "a fixed format"
        said.append(f"{_LEAD['fixed_format']} {shape}" + (f" with {_join(fields)}." if fields else "."))

    from_input = any(re.search(p, c) for c in clauses for p in _FROM_INPUT)
    facts = _matches(clauses, _FACTS)
    if facts is None and not from_input:
        facts = _matches(clauses, _FACTS_WEAK)
    if facts is True:
        updates["new_facts"] = True
        said.append(f"{_LEAD['new_facts']} it needs facts it does not have, or that change.")
    elif facts is False or from_input:
        updates["new_facts"] = False
        said.append(f"{_LEAD['new_facts']} the answer comes from the input itself; no outside facts needed.")

    style = _matches(clauses, _STYLE)
    if style is not None:
        updates["style"] = style
        said.append(f"{_LEAD['style']} " + ("a particular style or vocabulary." if style else "no particular style."))

    n = examples_count(low)
    if n is not None:
        updates["examples"] = n
        said.append(f"{_LEAD['examples']} about {n:,}." if n else f"{_LEAD['examples']} none yet.")

    found = {name for name, pats in _CONSTRAINTS.items() if _matches(clauses, pats) is True}
    if found or any(re.search(p, low) for p in _NO_CONSTRAINTS):
        updates["constraints"] = answers.constraints | frozenset(found)
        updates["constraints_answered"] = True
        said.append(f"{_LEAD['constraints']} " + (", ".join(sorted(found)) + "." if found else "none in particular."))
    return Reading(dataclasses.replace(answers, **updates), tuple(fields), tuple(said))


def _matches(clauses: list[str], patterns: tuple[str, ...]) -> bool | None:
    """True when a clause has one of `patterns` un-negated, False when only negated ones, None when none."""
    seen: bool | None = None
    for clause in clauses:
        for p in patterns:
            for m in re.finditer(p, clause):
                if _NEGATION.search(clause[:m.start()]):
                    seen = False if seen is None else seen
                else:
                    return True
    return seen


def examples_count(low: str) -> int | None:
    """The number of examples a message states ("about 240", "1.2k rows", "two hundred and forty
    examples", "a few hundred", "no examples"), or None when it states none.

    >>> examples_count("we have 1,200 labelled rows"), examples_count("a few hundred examples")
    (1200, 300)
    >>> examples_count("i don't have any examples yet"), examples_count("my reviews are in a csv")
    (0, None)
    """
    low = low.lower()
    if re.search(r"\b(no|zero|don'?t have any|do not have any|without any) " + _EXAMPLE_WORDS, low):
        return 0
    between = r"(?:(?!and\b|or\b|to\b|of\b)[a-z]+\s+){0,2}?"
    for m in re.finditer(r"(\d[\d,_]*(?:\.\d+)?)\s*(k|thousand|hundred)?\s+" + between + _EXAMPLE_WORDS + r"\b", low):
        return _digits(m.group(1), m.group(2))
    words = "|".join(sorted([*_UNITS, *_SCALES, "and", "of"], key=len, reverse=True))
    for m in re.finditer(rf"\b((?:(?:{words})[\s-]+)+)" + between + _EXAMPLE_WORDS + r"\b", low):
        value = _spelled(m.group(1))
        if value is not None:
            return value
    return None


def _digits(number: str, scale: str | None) -> int | None:
    try:
        value = float(number.replace(",", "").replace("_", ""))
    except ValueError:
        return None
    return int(round(value * (_SCALES[scale] if scale else 1)))


def _spelled(words: str) -> int | None:
    """ "two hundred and forty" -> 240, "a few hundred" -> 300, "a dozen" -> 12; None for a bare "a"."""
    total, current, seen = 0, 0, False
    for w in re.split(r"[\s-]+", words.strip()):
        if w in ("and", "of", "a", "an", ""):
            continue
        seen = True
        if w in _UNITS:
            current += _UNITS[w]
        elif w in _SCALES:
            current = (current or 1) * _SCALES[w]
            if _SCALES[w] >= 1000:
                total, current = total + current, 0
    return total + current if seen else None


def _fields(text: str) -> tuple[str, ...]:
    """Output field names a message lists: "with sentiment, rating and issues", "fields: a, b", `quoted`."""
    quoted = re.findall(r"[`\"']([A-Za-z_][\w.-]{0,40})[`\"']", text)
    m = re.search(r"\b(?:with|fields?|keys|containing|holding|having)\b:?\s+(?:the\s+)?(?:fields?\s+|keys\s+)?"
                  r"([\w\s,/-]+?)(?:[;.:!?\n(]|\bi have\b|\bwe have\b|$)", text, re.IGNORECASE)
    listed: list[str] = []
    if m:
        parts = re.split(r",\s*|\s+and\s+|\s+or\s+|/", m.group(1).strip())
        listed = [p.strip().lower().replace(" ", "_") for p in parts if p.strip()]
        if not (len(listed) >= 2 and all(1 <= len(p.split("_")) <= 3 and len(p) <= 30 for p in listed)):
            listed = []
    return tuple(dict.fromkeys(quoted + listed))


def _join(names: tuple[str, ...] | list[str]) -> str:
    names = [f"`{n}`" for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
