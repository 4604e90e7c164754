"""The shared prompt prefix and the shrinking batch in validation's generation and loss (`ftassist.train.prefix`,
`ftassist.train.validation.decode_batch`): the same replies and loss as the plain computation, for less work.

Compared in float64 on the tiny random model, so that the batch's changing shape (rows leave as they finish)
cannot flip a near-tie between two tokens by rounding; the training loss side is in tests/test_train_loss.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from ftassist.train.prefix import MIN_SHARED_PREFIX
from ftassist.train.validation import _eos_ids, _ids, decode_batch, generate_replies, validation_loss


@pytest.fixture()
def model_and_tok(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float64).eval()
    with torch.no_grad():  # larger weights: the untrained model's replies then depend on the prompt (and differ in length)
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return model, tok


def _prompts(small_data, n=6):
    rows = [json.loads(line) for line in (small_data / "train.jsonl").read_text().splitlines()][:n]
    return [r["messages"][:-1] for r in rows], rows


def _hf_generate(model, tok, encoded, budget, eos, processors=None):
    """What `model.generate` answers: one left-padded batch."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    width = max(len(e) for e in encoded)
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    extra = {"logits_processor": processors} if processors else {}
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=budget, eos_token_id=eos, pad_token_id=pad,
                         do_sample=False, **extra)
    replies = []
    for row in out[:, width:].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        replies.append(row[:cut])
    return replies


def _calls(model):
    seen: list[torch.Size] = []
    hook = model.register_forward_pre_hook(lambda mod, args, kw: seen.append(kw["input_ids"].shape), with_kwargs=True)
    return seen, hook


def test_greedy_replies_equal_generate_with_the_prefix_run_once_and_finished_rows_leaving(model_and_tok, small_data):
    model, tok = model_and_tok
    prompts, _ = _prompts(small_data)
    encoded = [_ids(tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)) for p in prompts]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    first = _hf_generate(model, tok, encoded, 20, _eos_ids(tok, model))
    # make one row finish early: a token the untrained model writes at its 4th step is an end token here
    eos = _eos_ids(tok, model) + [first[0][3]]
    expected = _hf_generate(model, tok, encoded, 20, eos)
    assert len({len(r) for r in expected}) > 1  # rows of different lengths: some finish before others
    seen, hook = _calls(model)
    try:
        with torch.no_grad():
            got = decode_batch(model, encoded, 20, eos=eos, pad=pad)
    finally:
        hook.remove()
    assert got == expected
    shared = seen[0][1]
    assert seen[0][0] == 1 and shared >= MIN_SHARED_PREFIX  # the system prompt, once
    assert all(e[:shared] == encoded[0][:shared] for e in encoded)
    assert seen[1] == torch.Size([len(encoded), max(len(e) for e in encoded) - shared])  # then each row's rest
    rows_per_step = [s[0] for s in seen[2:]]
    assert rows_per_step[0] == len(encoded) and min(rows_per_step) < len(encoded)  # finished rows left the batch
    assert rows_per_step == sorted(rows_per_step, reverse=True)
    assert len(seen) - 2 == max(len(r) for r in expected) - 1  # no step after the last row ended


def test_generate_replies_decodes_in_prompt_order_like_generate(model_and_tok, small_data):
    model, tok = model_and_tok
    prompts, _ = _prompts(small_data, n=5)
    encoded = [_ids(tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)) for p in prompts]
    eos = _eos_ids(tok, model)
    with torch.no_grad():
        got = generate_replies(model, tok, prompts, 12, batch_size=2)  # batches of two, sorted by length
    expected = [tok.decode(r, skip_special_tokens=True) for r in
                (_hf_generate(model, tok, [e], 12, eos)[0] for e in encoded)]  # each alone
    assert got == expected and all(got)


def test_with_a_grammar_rows_stay_in_place_and_answer_like_generate(model_and_tok):
    from ftassist.evidence import schema_constraint

    model, tok = model_and_tok
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer"}},
              "required": ["ok", "n"], "additionalProperties": False}
    prompts = [[{"role": "system", "content": "Answer with a JSON object with the keys ok and n, nothing else at all."},
                {"role": "user", "content": text}] for text in ("hi", "a longer one", "x y z w")]
    encoded = [_ids(tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)) for p in prompts]
    factory = schema_constraint(tok, model, schema)
    eos = _eos_ids(tok, model)
    expected = _hf_generate(model, tok, encoded, 40, eos, processors=factory())
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    with torch.no_grad():
        got = decode_batch(model, encoded, 40, eos=eos, pad=pad, processors=factory())
    assert got == expected
    assert [set(json.loads(tok.decode(r, skip_special_tokens=True))) for r in got] == [{"ok", "n"}] * 3


def test_sampling_follows_the_seed_and_the_budget(model_and_tok, small_data):
    model, tok = model_and_tok
    prompts, _ = _prompts(small_data, n=4)
    encoded = [_ids(tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)) for p in prompts]
    eos, pad = _eos_ids(tok, model), tok.pad_token_id
    runs = []
    with torch.no_grad():
        for _ in range(2):
            torch.manual_seed(3)
            runs.append(decode_batch(model, encoded, 10, eos=eos, pad=pad, do_sample=True, temperature=1.5))
        greedy = decode_batch(model, encoded, 10, eos=eos, pad=pad)
    assert runs[0] == runs[1] and runs[0] != greedy
    assert all(1 <= len(r) <= 10 for r in runs[0])


def test_validation_loss_with_the_shared_prefix_equals_the_plain_mean(model_and_tok, small_data):
    from ftassist.evaluation.testset import Example

    model, tok = model_and_tok
    prompts, rows = _prompts(small_data)
    examples = [Example(row=i + 1, prompt=p, reference_text=r["messages"][-1]["content"])
                for i, (p, r) in enumerate(zip(prompts, rows))]
    total, count = 0.0, 0
    with torch.no_grad():
        for e in examples:  # one row at a time over its whole sequence: nothing shared, no padding
            prompt = _ids(tok.apply_chat_template(e.prompt, add_generation_prompt=True, tokenize=True, return_dict=False))
            full = _ids(tok.apply_chat_template(e.prompt + [{"role": "assistant", "content": e.reference_text}],
                                                tokenize=True, return_dict=False))
            logits = model(input_ids=torch.tensor([full])).logits[0, len(prompt) - 1:-1]
            total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(full[len(prompt):]), reduction="sum"))
            count += len(full) - len(prompt)
        got = validation_loss(model, tok, examples)
    assert got == pytest.approx(total / count, rel=1e-6)  # its cross-entropy runs in float32 and got > 1.0


def test_only_models_that_attend_to_the_whole_sequence_share_the_prefix(model_and_tok):
    from types import SimpleNamespace

    from transformers import Qwen2Config

    from ftassist.train.prefix import attends_fully

    model, _ = model_and_tok
    assert attends_fully(model, 4096)  # the tiny Llama: full attention everywhere
    window = Qwen2Config(num_hidden_layers=2, sliding_window=64, use_sliding_window=True, max_window_layers=1)
    assert window.layer_types == ["full_attention", "sliding_attention"]
    assert attends_fully(SimpleNamespace(config=window), 64)  # a window as long as the sequence sees all of it
    assert not attends_fully(SimpleNamespace(config=window), 65)
    hybrid = Qwen2Config(num_hidden_layers=2, layer_types=["full_attention", "linear_attention"])
    assert not attends_fully(SimpleNamespace(config=hybrid), 8)
