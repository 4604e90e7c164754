"""The shared prompt prefix: computed once per batch instead of once per row.

Most training sets repeat one system prompt (the task's instructions, the format) on every row;
after the chat template, every row of a batch starts with the same tokens (purchase_orders: 97
of ~260). A causal model's states over those tokens do not depend on what follows, so a batch
can run them once (`model(prefix)` with the cache on), hand the resulting keys and values to
every row (`batch_repeat_interleave`) and run only each row's own tokens over that cache. The
loss, its gradient (the copies' gradients sum back into the one prefix pass) and the greedy
replies are those of the plain forward up to float rounding; on SmolLM2-135M, 8 purchase-order
rows, a LoRA step's forward + backward took ~20% less time (bench/train_throughput.py measures it
side by side). With LoRA dropout the prefix rows share one dropout mask (they are one row).

`shared_prefix_length` finds the prefix; `forward_shared` runs a batch over it. Whether a model
handles a cache handed in this way (position ids continued, the padding mask over prefix + rows)
is checked on its first batch against the plain forward (`PrefixCheck`), and the plain forward is
kept for a model where the two disagree; models with sliding-window or linear-attention layers never
share (`attends_fully`).

    >>> import torch
    >>> ids = torch.tensor([[1, 2, 3, 4, 9], [1, 2, 3, 5, 0]])
    >>> mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    >>> shared_prefix_length(ids, mask, minimum=2)
    3
    >>> shared_prefix_length(ids, mask, minimum=4)
    0
"""

from __future__ import annotations

import logging

log = logging.getLogger("ftassist.train")

MIN_SHARED_PREFIX = 16  # tokens: below this the second forward's fixed cost outweighs what is saved
CHECK_TOLERANCE = 1e-2  # relative, shared against plain loss on the first batch: bf16 autocast rounds at ~4e-3;
# a wrong position or mask moves the loss by far more (a random model: tens of percent)


def shared_prefix_length(input_ids, attention_mask=None, *, minimum: int = MIN_SHARED_PREFIX, limit: int | None = None,
                         same_padding: bool = False) -> int:
    """Tokens every row of the batch starts with (all unmasked; with `same_padding`, masked alike in every row, as a
    group of GRPO replies to one left-padded prompt is), capped at `limit`; 0 when fewer than `minimum` or the batch
    has a single row (nothing to share).

    >>> import torch
    >>> ids, mask = torch.tensor([[0, 1, 2, 7], [0, 1, 2, 8]]), torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1]])
    >>> shared_prefix_length(ids, mask, minimum=2), shared_prefix_length(ids, mask, minimum=2, same_padding=True)
    (0, 3)
    """
    import torch

    if input_ids.dim() != 2 or input_ids.size(0) < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(dim=0)
    if attention_mask is not None:
        same &= (attention_mask == attention_mask[:1]).all(dim=0) if same_padding else (attention_mask == 1).all(dim=0)
    length = int(torch.cumprod(same.long(), dim=0).sum())
    if limit is not None:
        length = min(length, int(limit))
    return length if length >= minimum else 0


def attends_fully(model, length: int) -> bool:
    """True when every layer of `model` attends to all of a `length`-token sequence: full attention, or a sliding
    window at least that long (its config's `layer_types`, where it has them). A shorter window or a linear-attention
    (state-space) layer keeps a cache this module does not reason about."""
    config = getattr(model, "config", None)
    if config is None:
        return False
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "is_encoder_decoder", False):
        return False
    window = getattr(text, "sliding_window", None) or 0
    types = getattr(text, "layer_types", None) or ()
    return all(t == "full_attention" or (t == "sliding_attention" and window >= length) for t in types)


def prefix_cache(model, prefix_ids, rows: int, prefix_mask=None):
    """The key/value cache of `prefix_ids` (shape 1 x P; `prefix_mask` its attention mask when it holds padding),
    repeated for `rows` rows (gradients flow back)."""
    from transformers import DynamicCache

    config = getattr(model, "config", None)
    cache = DynamicCache(config=config) if config is not None else DynamicCache()
    masked = {} if prefix_mask is None or bool(prefix_mask.all()) else {"attention_mask": prefix_mask}
    cache = model(input_ids=prefix_ids, past_key_values=cache, use_cache=True, **masked).past_key_values
    cache.batch_repeat_interleave(rows)
    return cache


def forward_shared(model, input_ids, attention_mask, prefix: int, *, logits_to_keep=None, position_ids=None,
                   states_only: bool = False):
    """`model(input_ids, attention_mask)` with the first `prefix` tokens (the same in every row) run once.

    `logits_to_keep` (indices into the whole sequence, all >= `prefix`, or None for every position after
    the prefix) and the returned logits cover only positions from `prefix` on. `states_only`: `model` is a
    backbone (no LM head), whose `last_hidden_state` covers the positions from `prefix` on."""
    import torch

    cache = prefix_cache(model, input_ids[:1, :prefix], input_ids.size(0),
                         None if attention_mask is None else attention_mask[:1, :prefix])
    if position_ids is None:
        position_ids = torch.arange(prefix, input_ids.size(1), device=input_ids.device).expand(input_ids.size(0), -1)
    else:
        position_ids = position_ids[:, prefix:]
    keep = {} if states_only else {"logits_to_keep": 0 if logits_to_keep is None else logits_to_keep - prefix}
    return model(input_ids=input_ids[:, prefix:], attention_mask=attention_mask, position_ids=position_ids,
                 past_key_values=cache, use_cache=True, **keep)


TOKEN_TOLERANCE = 5e-2  # nats, the largest per-token log-probability difference shared against plain on the first
# batch (the reward stages): bf16 rounding stays well below it, a wrong position or mask moves tokens by far more


class PrefixCheck:
    """Whether sharing the prefix gives this model's plain answer: decided on the first batch it is tried on."""

    def __init__(self) -> None:
        self.verdict: bool | None = None

    def decide(self, shared_loss: float, plain_loss: float) -> bool:
        """Record the first comparison (the losses of one batch both ways) and return the verdict."""
        if self.verdict is None:
            scale = max(abs(plain_loss), 1e-6)
            self.verdict = abs(shared_loss - plain_loss) / scale <= CHECK_TOLERANCE
            if not self.verdict:
                log.warning("sharing the prompt prefix changed this model's loss (%.6f against %.6f): "
                            "every row runs its whole prompt", shared_loss, plain_loss)
        return self.verdict

    def decide_tokens(self, largest_difference: float) -> bool:
        """As `decide`, from the largest per-token log-probability difference (nats) between the two ways."""
        if self.verdict is None:
            self.verdict = largest_difference <= TOKEN_TOLERANCE
            if not self.verdict:
                log.warning("sharing the prompt prefix changed this model's log-probabilities (by up to %.4f nats a "
                            "token): every row runs its whole prompt", largest_difference)
        return self.verdict
