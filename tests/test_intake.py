"""Free-text intake: what a person's own description of the task fills in, and what it leaves unknown."""

from __future__ import annotations

import pytest

from ftassist.advisor import Answers, next_question
from ftassist.intake import examples_count, read_task

REVIEWS = ("I want my model to turn customer reviews into a JSON object with sentiment, rating and issues; "
           "I have about 240 labelled examples in a CSV.")


@pytest.mark.parametrize(("text", "expected"), [
    (REVIEWS, dict(fixed_format=True, new_facts=False, examples=240)),
    ("Answer questions about our internal documentation, which changes every week.", dict(new_facts=True)),
    ("Classify support tickets into one of 5 categories. Around two thousand five hundred tickets. "
     "Data must stay on-prem.", dict(fixed_format=True, examples=2500, constraints=frozenset({"privacy"}))),
    ("It doesn't need new facts, just the format. A few hundred examples.",
     dict(new_facts=False, fixed_format=True, examples=300)),
    ("Write replies in our brand voice, free text, no fixed format. We have 1.2k emails.",
     dict(fixed_format=False, style=True, examples=1200)),
    ("Summarise meeting notes. No particular style. I don't have any examples yet.", dict(style=False, examples=0)),
    ('Extract invoice fields from the text: "vendor", "total", "due_date". It must be fast.',
     dict(fixed_format=True, new_facts=False, constraints=frozenset({"latency"}))),
    ("Turn product descriptions into YAML with keys name, price and tags. twelve examples",
     dict(fixed_format=True, new_facts=False, examples=12)),
    ("no fixed format, no special tone, no constraints",
     dict(fixed_format=False, style=False, constraints=frozenset(), constraints_answered=True)),
    ("Needs today's stock prices in the answer, as JSON", dict(new_facts=True, fixed_format=True)),
    ("rating from 1 to 5 and about 240 examples", dict(examples=240)),
    ("a dozen examples, cheap per request", dict(examples=12, constraints=frozenset({"cost"}))),
])
def test_phrasings(text, expected):
    answers = read_task(text).answers
    got = {k: getattr(answers, k) for k in expected}
    assert got == expected


@pytest.mark.parametrize("text", ["hello", "I have a csv file with reviews", "can you help me?"])
def test_nothing_readable_changes_nothing(text):
    reading = read_task(text)
    assert reading.answers == Answers() and reading.understood == ()


def test_fields_and_sentences_then_only_the_unknown_is_asked():
    reading = read_task(REVIEWS)
    assert reading.fields == ("sentiment", "rating", "issues")
    assert any("`sentiment`, `rating` and `issues`" in u for u in reading.understood)
    assert any("about 240" in u for u in reading.understood)
    # format, facts and examples are known: the next question is the style one
    assert next_question(reading.answers).field == "style"


def test_known_answers_are_kept_when_a_message_does_not_mention_them():
    known = Answers(new_facts=True, examples=50)
    assert read_task("the replies must be JSON", known).answers == Answers(new_facts=True, fixed_format=True, examples=50)


@pytest.mark.parametrize(("text", "n"), [("two hundred and forty examples", 240), ("one thousand two hundred rows", 1200),
                                         ("we got 3,000 labelled records", 3000), ("a couple of hundred samples", 200),
                                         ("no examples", 0), ("5 fields and a schema", None)])
def test_numbers_written_out(text, n):
    assert examples_count(text) == n
