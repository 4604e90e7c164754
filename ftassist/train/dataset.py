"""Training rows -> trl's conversational prompt-completion form, so loss falls only on the reply.

A row `{"messages": [system?, user, assistant, ...]}` becomes
`{"prompt": messages before the last assistant message, "completion": [last assistant message]}`.
trl then tokenizes prompt (with the generation prompt) and prompt+completion through the
tokenizer's own chat template and masks the prompt tokens (`completion_only_loss`), which works
for any template; the end-of-turn token the template puts after the reply (`<|im_end|>` for
ChatML) is part of the completion, so the model learns to stop.

    >>> to_prompt_completion({"messages": [{"role": "user", "content": "hi"},
    ...                                    {"role": "assistant", "content": "yo"}]})
    {'prompt': [{'role': 'user', 'content': 'hi'}], 'completion': [{'role': 'assistant', 'content': 'yo'}]}
"""

from __future__ import annotations

from pathlib import Path

from ftassist.errors import UserError
from ftassist.files import read_jsonl


def to_prompt_completion(row: dict) -> dict:
    """Return `{"prompt": [...], "completion": [last assistant message]}`; ValueError when there is none."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("row has no 'messages' list")
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)
    if last < 1:
        raise ValueError("row needs at least one message before an assistant reply")
    prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:last]]
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": messages[last]["content"]}]}


def load_split(data_dir: str | Path, name: str = "train") -> list[dict]:
    """Read `DATA_DIR/NAME.jsonl` as prompt-completion rows.

    Raises UserError naming the file (and every bad line, up to ten) when it is missing or malformed.
    """
    path = Path(data_dir) / f"{name}.jsonl"
    if not path.exists():
        raise UserError(f"--data {data_dir}: {path.name} is missing; build the folder with `ftassist data build`")
    try:
        rows = read_jsonl(path)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    out, problems = [], []
    for lineno, row in enumerate(rows, 1):
        try:
            out.append(to_prompt_completion(row))
        except (ValueError, KeyError, AttributeError) as exc:
            problems.append(f"{path}: row {lineno}: {exc}")
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise UserError("; ".join(problems[:10]) + more + "; fix the rows or rebuild with `ftassist data build`")
    if not out:
        raise UserError(f"{path} has no rows to train on")
    return out


def as_dataset(rows: list[dict]):
    """A `datasets.Dataset` with `prompt` and `completion` columns for SFTTrainer, from `load_split` rows."""
    from datasets import Dataset

    return Dataset.from_list(rows)
