"""The optional phrasing model (`--assistant-url`): a served model that may word the assistant's
replies more warmly; it never decides.

The rules (`ftassist.intake`, `ftassist.advisor`) decide what was understood, what is asked next
and what is recommended, and their text is always shown as they wrote it. The model, given that
text, writes one short opening sentence above it, marked as its own; when it is unreachable or
answers badly the reply goes out without it, and the chat says why once.
"""

from __future__ import annotations

from ftassist.errors import UserError
from ftassist_app.settings import AppSettings

INSTRUCTION = ("You are the friendly voice of a fine-tuning assistant. Below is what the assistant's rules "
               "decided to tell the user. Write ONE short, warm opening sentence for it (at most 30 words). "
               "Do not add facts, numbers, advice or questions, and do not change any decision.")
MAX_WORDS = 40


def lead(settings: AppSettings, text: str) -> tuple[str | None, str | None]:
    """(the model's opening sentence, None) or (None, why there is none) for the rules' `text`;
    (None, None) when no phrasing model is configured."""
    if not settings.assistant_url:
        return None, None
    from ftassist.endpoint import Endpoint

    endpoint = Endpoint(settings.assistant_url, settings.assistant_key or "EMPTY", timeout=30.0,
                        fix_url="--assistant-url", fix_key="--assistant-key")
    try:
        model = settings.assistant_model or (endpoint.served_models() or [""])[0]
        reply = endpoint.chat(model, [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": text}],
                              temperature=0.0, max_tokens=60)
    except UserError as exc:
        return None, f"the phrasing model did not answer ({exc})"
    sentence = " ".join((reply.text or "").split())
    if reply.error or not sentence:
        return None, f"the phrasing model did not answer ({reply.error or 'an empty reply'})"
    words = sentence.split()
    if len(words) > MAX_WORDS:
        sentence = " ".join(words[:MAX_WORDS]) + "…"
    return sentence, None


def phrased(settings: AppSettings, text: str) -> str:
    """`text` as the chat shows it: the model's opening line above it when there is one (marked as the
    model's), the rules' text unchanged below."""
    sentence, why = lead(settings, text)
    if sentence:
        return f"{sentence}\n\n{text}\n\n_(first line worded by the model at {settings.assistant_url}; the rules decided the rest)_"
    if why:
        return f"{text}\n\n_({why}; the reply is the rules' own)_"
    return text
