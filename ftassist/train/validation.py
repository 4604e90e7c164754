"""The task metric on the validation split, measured inside the training process.

`ValidationSet` holds the rows held out from training (carved from train.jsonl, or the user's
own val.jsonl), the task ("json" or "text") and the schema. `score_model` generates greedily
for every row in batches with the model being trained (no server needed), scores each reply
with the eval's own scorer (`ftassist.evaluation.metrics.score_reply` / `freetext.score_text`)
and computes the validation loss on the references, so a checkpoint is judged the way
`ftassist eval` will judge it:

    >>> right = {"schema_valid": True, "field_accuracy": 1.0, "exact": True, "strict": True, "fields": {"a": True, "b": True}}
    >>> half = {"schema_valid": True, "field_accuracy": 0.5, "exact": False, "strict": False, "fields": {"a": True, "b": False}}
    >>> summarize_scores([right, half], "json")
    {'schema_valid': 1.0, 'field_accuracy': 0.75, 'exact': 0.5, 'strict': 0.5, 'per_field': {'a': 1.0, 'b': 0.5}}

`TASK_METRICS` names what each task selects checkpoints by.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftassist.errors import UserError
from ftassist.evaluation.testset import Example, load_examples

# What "best" means per task, first key first; the validation loss (lower is better) breaks ties.
TASK_METRICS = {"json": ("field_accuracy", "exact", "schema_valid"), "text": ("rougeL", "exact_match")}
AUTO_VAL_MIN, AUTO_VAL_MAX, AUTO_VAL_FRACTION = 8, 32, 0.1
GENERATION_BATCH = 32  # one batch for a default-sized split: weights are read once per token for all rows


@dataclass
class ValidationSet:
    """Held-out rows scored during training: `examples` in the eval's form, and where they came from."""

    examples: list[Example]
    task: str
    schema: dict | None
    source: str
    validator: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from ftassist.evaluation.metrics import make_validator

        if self.task == "json" and self.validator is None:
            self.validator = make_validator(self.schema or {})

    def __len__(self) -> int:
        return len(self.examples)


def auto_val_count(n_rows: int) -> int:
    """How many training rows to hold out when the user gave no validation file or size.

    10% of the rows, at least 8 and at most 32; none when fewer than 32 rows would remain to train on.

    >>> auto_val_count(400), auto_val_count(48), auto_val_count(30), auto_val_count(2000)
    (32, 8, 0, 32)
    """
    count = min(AUTO_VAL_MAX, max(AUTO_VAL_MIN, round(AUTO_VAL_FRACTION * n_rows)))
    return count if n_rows - count >= 32 else 0


def carve_validation(rows: list[dict], size: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Split `rows` into (train, validation): `size` a fraction (0-1), a count (>= 1), or 0 for `auto_val_count`.

    The split is a seeded shuffle, so a resumed run holds out the same rows. Raises UserError
    when the count leaves nothing to train on.
    """
    count = auto_val_count(len(rows)) if size == 0 else (round(size * len(rows)) if size < 1 else int(size))
    return hold_out(rows, count, seed, f"--val-size {size:g}", "use a smaller --val-size or pass --val-data")


def hold_out(rows: list[dict], count: int, seed: int, what: str, fix: str) -> tuple[list[dict], list[dict]]:
    """(kept, held): `count` of `rows` held out by a seeded shuffle (the same rows every time), the rest kept in
    their order. Raises UserError naming `what` asked for it, and `fix`, when nothing would be left."""
    n = len(rows)
    if count <= 0:
        return list(rows), []
    if count >= n:
        raise UserError(f"{what} holds out {count} of {n} training rows, leaving none to train on; {fix}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def load_validation(path: Path | str, schema_path: Path | None, source: str) -> ValidationSet:
    """A ValidationSet from a JSONL file in messages form (the eval's test-set reader)."""
    from ftassist.schema import infer_schema, load_schema

    examples, task = load_examples(path)
    schema = None
    if task == "json":
        schema = load_schema(schema_path) if schema_path is not None and schema_path.is_file() else \
            infer_schema([e.reference for e in examples])
    return ValidationSet(examples, task, schema, source)


def summarize_scores(scores: list[dict], task: str) -> dict:
    """Mean of each task metric over the rows, plus per-field accuracy for JSON tasks."""
    n = len(scores) or 1
    keys = ("schema_valid", "field_accuracy", "exact", "strict") if task == "json" else ("exact_match", "rougeL")
    out: dict[str, Any] = {k: round(sum(float(s[k]) for s in scores) / n, 6) for k in keys}
    if task == "json":
        names = list(dict.fromkeys(k for s in scores for k in s["fields"]))
        out["per_field"] = {k: round(sum(s["fields"].get(k, False) for s in scores) / n, 6) for k in names}
    return out


def selection_key(row: dict, task: str) -> tuple:
    """The sort key of one validation row (bigger is better): the task metrics in order, then -loss."""
    loss = row.get("val_loss")
    loss = loss if isinstance(loss, (int, float)) and math.isfinite(loss) else math.inf
    return tuple(round(float(row.get(f"val_{m}", 0.0)), 6) for m in TASK_METRICS[task]) + (-loss,)


def _eos_ids(tokenizer, model) -> list[int]:
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    ids.update(extra if isinstance(extra, list) else [extra])
    return sorted(i for i in ids if i is not None)


def max_reply_tokens(tokenizer, examples: list[Example]) -> int:
    """Generation budget: the longest reference reply in tokens, plus a quarter and 16 tokens of slack."""
    longest = max((len(tokenizer(e.reference_text, add_special_tokens=False)["input_ids"]) for e in examples), default=16)
    return int(longest * 1.25) + 16


def generate_replies(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int,
                     batch_size: int = GENERATION_BATCH, logits_processors=None, do_sample: bool = False,
                     temperature: float = 1.0) -> list[str]:
    """Replies of `model` to chat `prompts`, greedy (or sampled at `temperature` with `do_sample`), in batches of
    similar length, in prompt order (`decode_batch`).

    `logits_processors`, when given, is called once per batch for a fresh list of logits processors
    (e.g. `ftassist.evidence.schema_constraint`: structured outputs)."""
    encoded = [_ids(tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False))
               for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = _eos_ids(tokenizer, model)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    replies: list[str] = [""] * len(encoded)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        processors = logits_processors() if logits_processors is not None else None
        tokens = decode_batch(model, [encoded[i] for i in idx], max_new_tokens, eos=eos, pad=pad, processors=processors,
                              do_sample=do_sample, temperature=temperature)
        for i, reply in zip(idx, tokens):
            replies[i] = tokenizer.decode(reply, skip_special_tokens=True)
    return replies


def decode_batch(model, prompts: list[list[int]], max_new_tokens: int, *, eos: list[int], pad: int, processors=None,
                 do_sample: bool = False, temperature: float = 1.0) -> list[list[int]]:
    """The reply tokens (up to and including an end token) of `model` to tokenized `prompts`, one batch.

    What it saves over `model.generate` on a CPU: the prompt prefix every row starts with (the system
    prompt) runs once (`ftassist.train.prefix`), and a row that has finished leaves the batch, so the
    decoding steps cost what the rows still running need rather than the longest reply times the batch.
    With `processors` (logits processors that keep per-row state, e.g. a grammar) rows stay in place and
    a finished row is fed padding, as `generate` does. Layout: [shared prefix][left padding][each row's
    rest]; positions count only real tokens, so every row sees the positions it would see alone.
    """
    import torch
    from transformers import DynamicCache

    from ftassist.train.prefix import MIN_SHARED_PREFIX, attends_fully, prefix_cache

    device = next(model.parameters()).device
    rows = len(prompts)
    shared = _common_prefix(prompts, limit=min(len(p) for p in prompts) - 1)
    shared = shared if rows > 1 and shared >= MIN_SHARED_PREFIX and \
        attends_fully(model, max(len(p) for p in prompts) + max_new_tokens) else 0
    rests = [p[shared:] for p in prompts]
    width = max(len(r) for r in rests)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rests], device=device)
    mask = torch.tensor([[1] * shared + [0] * (width - len(r)) + [1] * len(r) for r in rests], device=device)
    positions = (shared + mask[:, shared:].cumsum(-1) - 1).clamp(min=0)
    config = getattr(model, "config", None)
    cache = prefix_cache(model, torch.tensor([prompts[0][:shared]], device=device), rows) if shared else \
        DynamicCache(config=config) if config is not None else DynamicCache()
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
                   logits_to_keep=1).logits[:, -1]
    history = torch.tensor([[pad] * (width + shared - len(p)) + p for p in prompts], device=device) if processors else None
    position = positions[:, -1] + 1
    running = list(range(rows))  # which prompt each batch row answers
    replies: list[list[int]] = [[] for _ in prompts]
    done = [False] * rows
    stops = torch.tensor(eos, device=device)
    for _ in range(max_new_tokens):
        scores = logits.float()
        if processors:
            for proc in processors:
                scores = proc(history, scores)
        if do_sample:
            token = torch.multinomial(torch.softmax(scores / temperature, dim=-1), 1).squeeze(-1)
        else:
            token = scores.argmax(dim=-1)
        values, ended = token.tolist(), torch.isin(token, stops).tolist()  # one transfer a step, not one a row
        for row, prompt in enumerate(running):
            if not done[prompt]:
                replies[prompt].append(values[row])
                done[prompt] = ended[row] or len(replies[prompt]) >= max_new_tokens
        if all(done):
            break
        if history is not None:  # a grammar's processors: rows stay; finished ones are fed padding
            token = torch.where(torch.tensor([done[p] for p in running], device=device), torch.full_like(token, pad), token)
            history = torch.cat([history, token[:, None]], dim=-1)
        else:
            keep = [row for row, prompt in enumerate(running) if not done[prompt]]
            if len(keep) < len(running):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, position, token = mask[index], position[index], token[index]
                running = [running[row] for row in keep]
        mask = torch.cat([mask, mask.new_ones(len(running), 1)], dim=-1)
        logits = model(input_ids=token[:, None], attention_mask=mask, position_ids=position[:, None],
                       past_key_values=cache, use_cache=True).logits[:, -1]
        position = position + 1
    return replies


def _common_prefix(seqs: list[list[int]], limit: int) -> int:
    """How many leading tokens all of `seqs` share, at most `limit`.

    >>> _common_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]], limit=10)
    2
    """
    first = seqs[0]
    n = 0
    while n < limit and n < len(first) and all(len(s) > n and s[n] == first[n] for s in seqs):
        n += 1
    return n


def validation_loss(model, tokenizer, examples: list[Example], batch_size: int = GENERATION_BATCH) -> float:
    """Mean cross-entropy of the reference replies given their prompts (reply tokens only, as in training; the
    shared prompt prefix runs once per batch and logits are taken only where a reply token is predicted)."""
    import torch

    from ftassist.train.loss import reply_positions
    from ftassist.train.prefix import attends_fully, forward_shared, shared_prefix_length

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    rows = []
    for e in examples:
        prompt = _ids(tokenizer.apply_chat_template(e.prompt, add_generation_prompt=True, tokenize=True, return_dict=False))
        full = _ids(tokenizer.apply_chat_template(e.prompt + [{"role": "assistant", "content": e.reference_text}],
                                                  tokenize=True, return_dict=False))
        rows.append((full, len(prompt) if full[:len(prompt)] == prompt else 0))
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = max(len(f) for f, _ in chunk)
        ids = torch.tensor([f + [pad] * (width - len(f)) for f, _ in chunk], device=device)
        mask = torch.tensor([[1] * len(f) + [0] * (width - len(f)) for f, _ in chunk], device=device)
        labels = torch.tensor([[-100] * p + f[p:] + [-100] * (width - len(f)) for f, p in chunk], device=device)
        keep = reply_positions(labels)
        if not len(keep):
            continue
        shared = shared_prefix_length(ids, mask, limit=int(keep.min())) if attends_fully(model, width) else 0
        if shared:
            logits = forward_shared(model, ids, mask, shared, logits_to_keep=keep).logits
        else:
            logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
        target = labels[:, keep + 1]
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), target.reshape(-1),
                                                 ignore_index=-100, reduction="sum")
        total += float(loss)
        count += int((target != -100).sum())
    return total / count if count else math.nan


def _ids(value) -> list[int]:
    if hasattr(value, "keys"):
        value = value["input_ids"]
    return list(value)


def measuring_copy(model):
    """What to measure with: on CPU, a copy of a LoRA model with the adapter folded into the weights
    (measured on SmolLM2-135M, 32 rows of ~120-token replies: 135 s instead of 195 s to generate),
    when the machine has the memory for the copy; else the model itself. The trained weights are
    never touched (no merge/unmerge round trip, whose rounding would drift them)."""
    import copy

    if not hasattr(model, "merge_and_unload") or next(model.parameters()).device.type != "cpu":
        return model
    if any(getattr(p, "quant_state", None) is not None for p in model.parameters()):
        return model  # 4-bit weights cannot be merged exactly
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    try:
        import psutil

        if psutil.virtual_memory().available < 3 * size:
            return model
    except ImportError:
        return model
    twin = copy.deepcopy(model)
    for p in twin.parameters():
        p.grad = None
        p.requires_grad_(False)
    return twin.merge_and_unload()


def score_model(model, tokenizer, val: ValidationSet, max_new_tokens: int | None = None) -> tuple[dict, list[dict]]:
    """(metrics, per-row scores) of `model` on `val`: replies greedy, scored like `ftassist eval`.

    Metrics: each task metric averaged over the rows (`summarize_scores`) and `loss`. The model is
    measured in eval mode (through `measuring_copy`) and handed back in the mode it came in.
    """
    import torch

    from ftassist.evaluation.freetext import score_text
    from ftassist.evaluation.metrics import score_reply

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            measured = measuring_copy(model)
            measured.eval()
            budget = max_new_tokens or max_reply_tokens(tokenizer, val.examples)
            replies = generate_replies(measured, tokenizer, [e.prompt for e in val.examples], budget)
            loss = validation_loss(measured, tokenizer, val.examples)
            del measured
    finally:
        if was_training:
            model.train()
    if val.task == "json":
        scores = [score_reply(r, e.reference, val.validator) for r, e in zip(replies, val.examples)]
    else:
        scores = [score_text(r, e.reference_text) for r, e in zip(replies, val.examples)]
    for s, r in zip(scores, replies):
        s["reply"] = r
    return {**summarize_scores(scores, val.task), "loss": round(loss, 6) if math.isfinite(loss) else None}, scores
