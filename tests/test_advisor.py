"""The decision matrix: RAG vs prompting vs fine-tuning, and reading quick replies or free text."""

from __future__ import annotations

import pytest

from ftassist.advisor import QUESTIONS, Answers, apply_answer, next_question, recommend


@pytest.mark.parametrize(
    ("answers", "approach"),
    [
        (Answers(new_facts=True, fixed_format=False, style=False, examples=500), "rag"),
        (Answers(new_facts=False, fixed_format=True, style=False, examples=500), "fine-tuning"),
        (Answers(new_facts=False, fixed_format=False, style=True, examples=300), "fine-tuning"),
        (Answers(new_facts=True, fixed_format=True, style=False, examples=500), "both"),
        (Answers(new_facts=False, fixed_format=True, style=False, examples=20), "prompting"),
        (Answers(new_facts=False, fixed_format=False, style=False, examples=1000), "prompting"),
    ],
)
def test_matrix(answers, approach):
    assert recommend(answers).approach == approach


def test_rag_is_honest_about_fine_tuning():
    rec = recommend(Answers(new_facts=True, fixed_format=False, style=False, examples=5000))
    assert not rec.fine_tuning_fits
    assert "RAG" in rec.headline and "not fine-tuning" in rec.headline
    assert any("facts" in r for r in rec.reasons)


def test_few_examples_with_style_still_fine_tunes_but_warns():
    rec = recommend(Answers(new_facts=False, fixed_format=False, style=True, examples=20))
    assert rec.approach == "fine-tuning"
    assert any("few for fine-tuning" in r for r in rec.reasons)


def test_constraints_add_reasons():
    rec = recommend(Answers(fixed_format=True, examples=500, constraints=frozenset({"privacy", "latency"})))
    text = rec.to_markdown()
    assert "Privacy" in text and "Latency" in text


def test_interview_walks_every_question_with_quick_replies():
    answers = Answers()
    asked = []
    while (q := next_question(answers)) is not None:
        asked.append(q.field)
        answers = apply_answer(answers, q, q.choices[0])
    assert asked == [q.field for q in QUESTIONS]
    assert answers == Answers(new_facts=True, fixed_format=True, style=True, examples=20,
                              constraints=frozenset({"latency"}), constraints_answered=True, examples_said="fewer than 50")


@pytest.mark.parametrize(("field", "text", "value"), [
    ("new_facts", "no, not really", False),
    ("fixed_format", "Yes: JSON", True),
    ("examples", "we have about 1,200 of them", 1200),
    ("examples", "none", 0),
    ("constraints", "it must stay private (GDPR)", frozenset({"privacy"})),
    ("constraints", "None of these", frozenset()),
])
def test_free_text_answers(field, text, value):
    q = next(q for q in QUESTIONS if q.field == field)
    got = getattr(apply_answer(Answers(), q, text), field)
    assert got == value


def test_unreadable_answer_names_the_choices():
    q = QUESTIONS[0]
    with pytest.raises(ValueError, match="yes or no"):
        apply_answer(Answers(), q, "maybe?")
    with pytest.raises(ValueError, match="number"):
        apply_answer(Answers(), QUESTIONS[3], "lots")
