"""One validation pass, two ways, side by side: `model.generate` against ftassist's decoding loop.

    python bench/validation_pass.py --model RUN/model --data RUN/val.jsonl      # a trained model and its split
    python bench/validation_pass.py                                             # SmolLM2, purchase_orders test rows

(generate) transformers' `generate`, greedy, one left-padded batch sorted by length, and the
           validation loss over whole rows (every row's whole prompt, logits at every position): how
           validation ran before `ftassist.train.prefix`.
(ftassist) `ftassist.train.validation.generate_replies` and `validation_loss`: the prompt prefix every
           row starts with runs once, finished rows leave the batch, logits only where a reply token
           is predicted.

Both answer the same rows with the same model in this one process; the replies are compared (they
should be identical: same greedy tokens) and the loss values printed. Run on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def generate_baseline(model, tok, prompts, budget: int) -> list[str]:
    """`model.generate` over one left-padded batch, as validation did before."""
    import torch

    from ftassist.train.validation import _eos_ids, _ids

    enc = [_ids(tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)) for p in prompts]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    width = max(len(e) for e in enc)
    ids = torch.tensor([[pad] * (width - len(enc[i])) + enc[i] for i in order])
    mask = torch.tensor([[0] * (width - len(enc[i])) + [1] * len(enc[i]) for i in order])
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=budget, eos_token_id=_eos_ids(tok, model),
                         pad_token_id=pad, do_sample=False)
    replies = [""] * len(enc)
    for row, i in enumerate(order):
        replies[i] = tok.decode(out[row, width:], skip_special_tokens=True)
    return replies


def loss_baseline(model, tok, examples) -> float:
    """Mean reply cross-entropy from one forward over whole right-padded rows, logits everywhere."""
    import torch

    from ftassist.train.validation import _ids

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    rows = []
    for e in examples:
        prompt = _ids(tok.apply_chat_template(e.prompt, add_generation_prompt=True, tokenize=True, return_dict=False))
        full = _ids(tok.apply_chat_template(e.prompt + [{"role": "assistant", "content": e.reference_text}],
                                            tokenize=True, return_dict=False))
        rows.append((full, len(prompt)))
    width = max(len(f) for f, _ in rows)
    ids = torch.tensor([f + [pad] * (width - len(f)) for f, _ in rows])
    mask = torch.tensor([[1] * len(f) + [0] * (width - len(f)) for f, _ in rows])
    labels = torch.tensor([[-100] * p + f[p:] + [-100] * (width - len(f)) for f, p in rows])
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    return float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                                                   ignore_index=-100))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Model folder (default: SmolLM2-135M-Instruct, untrained).")
    parser.add_argument("--data", default=str(ROOT / "examples" / "purchase_orders" / "test.jsonl"))
    parser.add_argument("--rows", type=int, default=32)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftassist.evaluation.testset import load_examples
    from ftassist.model import resolve_model
    from ftassist.train.validation import generate_replies, max_reply_tokens, validation_loss

    path = resolve_model(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    examples = load_examples(args.data)[0][: args.rows]
    prompts = [e.prompt for e in examples]
    budget = max_reply_tokens(tok, examples)
    print(f"model {path}; {len(examples)} rows of {args.data}; reply budget {budget} tokens; "
          f"{torch.get_num_threads()} torch threads; load average {os.getloadavg()[0]:.1f}", flush=True)
    figures = {}
    with torch.no_grad():
        for name, gen, loss in (("generate", generate_baseline, lambda: loss_baseline(model, tok, examples)),
                                ("ftassist", generate_replies, lambda: validation_loss(model, tok, examples))):
            t0 = time.perf_counter()
            replies = gen(model, tok, prompts, budget)
            t1 = time.perf_counter()
            value = loss()
            t2 = time.perf_counter()
            figures[name] = (replies, t1 - t0, t2 - t1, value)
            print(f"({name}) generation {t1 - t0:.1f} s, validation loss {t2 - t1:.1f} s (loss {value:.5f}), "
                  f"pass {t2 - t0:.1f} s", flush=True)
    (a, ga, la, va), (b, gb, lb, vb) = figures["generate"], figures["ftassist"]
    same = sum(x == y for x, y in zip(a, b))
    print(f"same replies: {same}/{len(a)}; loss difference {abs(va - vb):.2e}")
    print(f"ratio (generate)/(ftassist): generation {ga / gb:.2f}x, validation loss {la / lb:.2f}x, "
          f"whole pass {(ga + la) / (gb + lb):.2f}x faster")
    print(f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
