"""Should this task use RAG, prompting, fine-tuning, or both? The decision matrix as a pure function.

The app's assistant asks `QUESTIONS` one at a time (quick replies are each question's `choices`)
and then shows `recommend(answers)`. The matrix, in short:

- new knowledge or real-time data           -> RAG (fine-tuning does not teach facts reliably)
- a fixed output format, a style, a vocabulary -> fine-tuning
- both needs at once                          -> both (fine-tune the format, retrieve the facts)
- few examples and a simple format            -> prompting first (few-shot, structured outputs)

    >>> rec = recommend(Answers(new_facts=False, fixed_format=True, examples=500))
    >>> rec.approach
    'fine-tuning'
    >>> recommend(Answers(new_facts=True, fixed_format=False, style=False)).approach
    'rag'
"""

from __future__ import annotations

import dataclasses
from typing import Any
import re
from dataclasses import dataclass, field

# Below this many examples a LoRA run rarely beats a good few-shot prompt on a simple format.
FEW_EXAMPLES = 50
# From about this many examples fine-tuning reliably fixes a format or a style.
ENOUGH_EXAMPLES = 200

APPROACHES = ("rag", "prompting", "fine-tuning", "both")


@dataclass(frozen=True)
class Question:
    """One question of the interview: `field` of `Answers` it fills and the quick-reply choices."""

    field: str
    text: str
    choices: tuple[str, ...]


QUESTIONS: tuple[Question, ...] = (
    Question("new_facts", "Does the model need **facts it does not know**, or data that **changes** (prices, tickets, documents, today's stock)?",
             ("Yes, new or changing facts", "No, it knows enough")),
    Question("fixed_format", "Must every reply follow a **fixed output format** (JSON with set keys, a template, a label set)?",
             ("Yes, a fixed format", "No, free text")),
    Question("style", "Does it need a particular **style, tone or vocabulary** (your brand voice, domain jargon, short answers)?",
             ("Yes, a style or vocabulary", "No")),
    Question("examples", "How many **good examples** (input -> ideal reply) do you have?",
             ("Fewer than 50", "50-200", "200-1000", "More than 1000")),
    Question("constraints", "Any hard **constraints**? Pick the one that matters most.",
             ("Low latency", "Low cost per request", "Data must stay private", "None of these")),
)

_EXAMPLE_CHOICES = {"Fewer than 50": 20, "50-200": 100, "200-1000": 500, "More than 1000": 2000}
_CONSTRAINT_CHOICES = {"Low latency": "latency", "Low cost per request": "cost", "Data must stay private": "privacy"}


@dataclass(frozen=True)
class Answers:
    """What the user told the advisor; None means not asked (or not answered) yet."""

    new_facts: bool | None = None
    fixed_format: bool | None = None
    style: bool | None = None
    examples: int | None = None
    constraints: frozenset[str] = field(default_factory=frozenset)
    constraints_answered: bool = False
    examples_said: str = ""  # how the user put the number ("200-1000", "about 240"); "" when exact


@dataclass(frozen=True)
class Recommendation:
    """The advice: `approach` is one of APPROACHES; `reasons` say why, `next_steps` what to do."""

    approach: str
    headline: str
    reasons: tuple[str, ...]
    next_steps: tuple[str, ...]
    fine_tuning_fits: bool

    def to_markdown(self) -> str:
        lines = [f"**Recommendation: {self.headline}**", "", "Why:"]
        lines += [f"- {r}" for r in self.reasons]
        lines += ["", "Next:"] + [f"- {s}" for s in self.next_steps]
        return "\n".join(lines)


def next_question(answers: Answers) -> Question | None:
    """The first question not answered yet, or None when the interview is complete."""
    for q in QUESTIONS:
        if q.field == "constraints":
            if not answers.constraints_answered:
                return q
        elif getattr(answers, q.field) is None:
            return q
    return None


def apply_answer(answers: Answers, question: Question, reply: str) -> Answers:
    """Return `answers` with `reply` (a quick-reply label or free text) recorded for `question`.

    Free text is read leniently ("yes", "no", "about 300", "privacy"). Raises ValueError with a
    hint when the reply cannot be read as an answer to this question.

    >>> q = QUESTIONS[3]
    >>> apply_answer(Answers(), q, "we have about 300").examples
    300
    """
    text = reply.strip()
    low = text.lower()
    if question.field in ("new_facts", "fixed_format", "style"):
        value = _parse_yes_no(low)
        if value is None:
            raise ValueError(f"I could not read {text!r} as yes or no; pick one of: {', '.join(question.choices)}")
        changes: dict[str, Any] = {question.field: value}
        return dataclasses.replace(answers, **changes)
    if question.field == "examples":
        if text in _EXAMPLE_CHOICES:
            return dataclasses.replace(answers, examples=_EXAMPLE_CHOICES[text], examples_said=text.lower())
        numbers = re.findall(r"\d[\d,_]*", text)
        if numbers:
            return dataclasses.replace(answers, examples=int(re.sub(r"[,_]", "", numbers[0])))
        if low in ("none", "no", "zero"):
            return dataclasses.replace(answers, examples=0)
        raise ValueError(f"I could not read {text!r} as a number of examples; type a number such as 300")
    if question.field == "constraints":
        found = {v for k, v in _CONSTRAINT_CHOICES.items() if k == text}
        found |= {c for c in ("latency", "cost", "privacy") if c in low}
        if "private" in low or "gdpr" in low or "on-prem" in low:
            found.add("privacy")
        return dataclasses.replace(answers, constraints=answers.constraints | frozenset(found), constraints_answered=True)
    raise ValueError(f"unknown question {question.field!r}")


def _parse_yes_no(low: str) -> bool | None:
    if low.startswith(("yes", "y ", "yeah", "yep", "true", "sure")) or low in ("y", "1"):
        return True
    if low.startswith(("no", "n ", "nope", "false", "not")) or low in ("n", "0"):
        return False
    return None


def recommend(answers: Answers) -> Recommendation:
    """The decision matrix applied to `answers` (unanswered questions count as "no").

    Returns a Recommendation whose `fine_tuning_fits` is False when fine-tuning is the wrong
    tool; the app still lets the user go on, but says so.
    """
    needs_facts = bool(answers.new_facts)
    needs_behaviour = bool(answers.fixed_format) or bool(answers.style)
    n = answers.examples
    reasons: list[str] = []
    steps: list[str] = []

    if needs_facts:
        reasons.append("New or changing facts belong in retrieval (RAG): fine-tuning teaches behaviour, "
                       "not knowledge, and a tuned model cannot know what changed after training.")
    if answers.fixed_format:
        reasons.append("A fixed output format is what fine-tuning does best: the model learns to answer "
                       "in exactly that shape without long instructions in every prompt.")
    if answers.style:
        reasons.append("A style or vocabulary is learned from examples far more reliably than described in a prompt.")

    simple = needs_behaviour and not answers.style and n is not None and n < FEW_EXAMPLES
    if needs_facts and needs_behaviour:
        approach, headline = "both", "RAG + fine-tuning"
        steps += ["Fine-tune the format/style on examples that include retrieved context in the prompt.",
                  "Serve the tuned model behind your retrieval step."]
    elif needs_facts:
        approach, headline = "rag", "RAG, not fine-tuning"
        steps += ["Index your documents and put the retrieved passages into the prompt.",
                  "Come back to fine-tuning if the replies also need a fixed format or style."]
    elif simple:
        approach, headline = "prompting", "prompting first"
        reasons.append(f"With only about {n} examples and a simple format, a few-shot prompt (or structured "
                       "outputs with a JSON schema) usually gets there without training.")
        steps += ["Try a few-shot prompt or `response_format` json_schema on the base model first.",
                  f"Collect {ENOUGH_EXAMPLES}+ examples, then fine-tune if the prompt is not reliable enough."]
    elif needs_behaviour:
        approach, headline = "fine-tuning", "fine-tuning (LoRA)"
        steps += ["Upload your examples; I will check them and build train/test splits.",
                  "Train a LoRA adapter, then compare base vs tuned and measure JSON compliance."]
    else:
        approach, headline = "prompting", "prompting — fine-tuning is not needed here"
        reasons.append("No new facts, no fixed format and no special style: a good prompt on the base model "
                       "is the cheapest thing that works.")
        steps.append("Write a clear system prompt with two or three examples.")

    if approach in ("fine-tuning", "both") and n is not None:
        said = answers.examples_said or f"{n:,}"
        if n < FEW_EXAMPLES:
            reasons.append(f"{said[0].upper() + said[1:]} examples is few for fine-tuning: expect a modest gain; "
                           f"aim for {ENOUGH_EXAMPLES}+.")
        elif n >= ENOUGH_EXAMPLES:
            reasons.append(f"{said[0].upper() + said[1:]} examples is enough for a LoRA adapter to learn the pattern.")
    if "latency" in answers.constraints or "cost" in answers.constraints:
        reasons.append("Latency/cost: a small fine-tuned model needs short prompts (no long instructions or "
                       "few-shot examples), which is cheaper and faster per request than prompting a large model.")
    if "privacy" in answers.constraints:
        reasons.append("Privacy: training and serving here run on your own machine; no data leaves it.")

    return Recommendation(approach=approach, headline=headline, reasons=tuple(reasons), next_steps=tuple(steps),
                          fine_tuning_fits=approach in ("fine-tuning", "both"))


# When prompting alone already gets this right on the user's rows, training is optional.
PROMPTING_ENOUGH = {"schema_valid": 0.99, "field_accuracy": 0.90, "exact": 0.60}


def advise_from_evidence(evidence, answers: Answers) -> Recommendation:
    """The recommendation once the base model was measured on the user's own rows (`ftassist.evidence.Evidence`).

    It cites the figures. Prompting (with structured outputs where a schema exists) is recommended
    when it already meets every `PROMPTING_ENOUGH` rate; otherwise fine-tuning, saying whether
    the format, the content or both are what prompting misses. New facts still point to RAG.
    """
    from ftassist.evidence import PROMPTING, STRUCTURED

    plain, best = evidence.arm(PROMPTING), evidence.arm(STRUCTURED) or evidence.arm(PROMPTING)
    measured = [f"Measured on {evidence.rows} of your test rows with the base model ({evidence.shots} examples in the "
                "prompt), scored like the eval:"] + [f"{a.sentence()}." for a in evidence.arms]
    enough = all(getattr(best, k) >= v for k, v in PROMPTING_ENOUGH.items())
    reasons = [" ".join(measured)]
    steps: list[str] = []
    if enough:
        approach, headline = "prompting", f"{best.name} is enough here"
        reasons.append(f"That already meets the bar ({_bar()}): fine-tuning would mostly buy shorter prompts and "
                       "lower latency, not better answers.")
        steps += ["Use the instruction and examples above with the base model" +
                  (", with `response_format` json_schema." if best.name == STRUCTURED else "."),
                  "Fine-tune anyway if the long prompt costs too much per request; the eval will show the difference."]
    else:
        approach, headline = "fine-tuning", "fine-tuning (LoRA)"
        format_ok = best.schema_valid >= PROMPTING_ENOUGH["schema_valid"]
        if format_ok:
            reasons.append(f"The shape can be forced ({100 * best.schema_valid:.0f}% schema-valid with {best.name}), "
                           f"but only {100 * best.field_accuracy:.0f}% of the fields are right: fine-tuning is needed "
                           "for the content.")
        elif plain is not None and plain.schema_valid < PROMPTING_ENOUGH["schema_valid"]:
            reasons.append(f"Prompting gets the format right {100 * plain.schema_valid:.0f}% of the time and "
                           f"{100 * best.field_accuracy:.0f}% of the fields: fine-tuning is needed for both the "
                           "format and the content.")
        weakest = min(best.per_field.items(), key=lambda kv: kv[1], default=None)
        if weakest is not None:
            reasons.append(f"The weakest field without training: `{weakest[0]}` ({100 * weakest[1]:.0f}% right).")
        steps += ["Train a LoRA adapter on your training split; it is judged on the fields, not the loss.",
                  "Then compare base, tuned and tuned + structured outputs in the eval."]
    if answers.new_facts:
        reasons.append("You also said it needs facts it does not have: put those in the prompt by retrieval (RAG).")
        approach, headline = ("both", "RAG + fine-tuning") if approach == "fine-tuning" else ("rag", "RAG + prompting")
    if evidence.rows < 30:
        reasons.append(f"{evidence.rows} rows is a small sample (one row moves a rate by {100 / evidence.rows:.0f} "
                       "points); the eval after training uses the whole test split.")
    return Recommendation(approach=approach, headline=headline, reasons=tuple(reasons), next_steps=tuple(steps),
                          fine_tuning_fits=approach in ("fine-tuning", "both"))


def _bar() -> str:
    return ", ".join(f"{k.replace('_', ' ')} >= {100 * v:.0f}%" for k, v in PROMPTING_ENOUGH.items())
