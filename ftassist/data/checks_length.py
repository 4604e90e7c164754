"""Token lengths with the real tokenizer and chat template of the model to be trained.

Check ids (severity): too_long (warning: the end would be truncated at max_length),
fully_masked (error: the prompt alone fills max_length, so no reply token is trained on),
template_error (error: the model's chat template refuses the example).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ftassist.data.findings import DataRow, Finding, clip

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
