"""The reward stages' per-token log-probabilities on CPU: plain logits at the reply positions, not trl's tiled head.

trl 1.16's `DPOTrainer` and `GRPOTrainer` patch the model (`add_fused_lm_head`) so that
`model(..., labels=..., fused_lm_head=True)` returns per-token log-probabilities without building
the logits. Without Triton (CPU) that head scores *every* position, prompt and padding included,
in tiles recomputed in the backward - the path `ftassist.train.loss` measured ~4x slower than plain
logits for SFT. `use_plain_head` patches the model again, on CPU only: the backbone's hidden states
at the positions whose next-token label is kept (the replies) go through the LM head at once, and
log-softmax gives the same fields trl's head returns (log-probabilities, entropy, mean logit, top-1,
log of the summed squared probabilities), zero elsewhere; the loss is the same sum over the kept
labels. tests/test_train_stages.py checks both agree. Models trl's head treats specially
(soft-capped or scaled logits, MoE router losses) keep trl's head.

With `share_prefix` (`--share-prefix`, the default) the tokens every row of a batch starts with run once, as in
SFT (`ftassist.train.prefix`): DPO's rows share the system prompt, and each GRPO micro-batch is one prompt's group
of replies, which share the whole (left-padded) prompt. The first such batch (one with padding in its prefix and
one without) is scored both ways (no dropout, no gradient) and the plain forward kept for good when any token's
log-probability differs by more than `prefix.TOKEN_TOLERANCE`.
"""

from __future__ import annotations

import functools
import logging
import types


def can_use_plain_head(model) -> bool:
    """True for a causal LM whose logits are the plain projection (no soft-capping, no logit scale, no MoE router)."""
    text = model.config.get_text_config()
    special = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")
    return (all(getattr(text, k, None) in (None, 1.0) for k in special)
            and not getattr(text, "output_router_logits", False) and model.get_output_embeddings() is not None)


def use_plain_head(model, temperature: float = 1.0, share_prefix: bool = False) -> bool:
    """Re-patch `model` (the base model trl patched; CPU) with the plain head; returns whether it was. `share_prefix`:
    run the tokens a batch's rows start with once (not with gradient checkpointing, which turns the cache off)."""
    from ftassist.train.prefix import PrefixCheck

    if next(model.parameters()).device.type != "cpu" or not can_use_plain_head(model):
        return False
    original = type(model).forward
    # One verdict for prefixes with padding (a GRPO group's left-padded prompt), one for those without: the two run
    # the prefix pass differently (with and without its mask), so neither vouches for the other.
    check = {True: PrefixCheck(), False: PrefixCheck()} if share_prefix else None

    @functools.wraps(original)
    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head:
            extra = {k: v for k, v in (("labels", labels), ("shift_labels", shift_labels),
                                         ("num_items_in_batch", num_items_in_batch)) if v is not None}
            return original(self, *args, **kwargs, **extra)
        return plain_log_probs(self, args, kwargs, labels, shift_labels, num_items_in_batch, temperature, check)

    model.forward = types.MethodType(forward, model)
    return True


def plain_log_probs(model, args, kwargs, labels, shift_labels, num_items_in_batch, temperature: float, check=None):
    """trl's `FusedCausalLMOutput` computed with plain logits at the kept positions only (`check`: the `PrefixCheck`s
    of `backbone_states` when the shared prefix may be run once)."""
    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    kwargs["use_cache"] = False
    labels = labels[:, 1:] if shift_labels is None else shift_labels  # aligned with the positions that predict them
    mask = labels != -100
    hidden, offset = backbone_states(model, args, kwargs, labels, check, temperature)
    if shift_labels is None:
        hidden = hidden[:, :-1]
    logits = model.get_output_embeddings()(hidden[mask[:, offset:]]).float() / temperature
    logp = logits.log_softmax(-1)
    target = labels[mask]
    picked = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    with torch.no_grad():
        mean_logits = logits.mean(-1)
        is_top1 = logits.argmax(-1) == target
        log_sum_sq = torch.logsumexp(2 * logp, dim=-1)

    def spread(x):
        return x.new_zeros(mask.shape).masked_scatter(mask, x)

    log_probs = spread(picked)
    loss = -log_probs.sum() / (mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
    return FusedCausalLMOutput(loss=loss, log_probs=log_probs, entropy=spread(entropy), log_sum_sq_probs=spread(log_sum_sq),
                               mean_logits=spread(mean_logits), is_top1=spread(is_top1), label_mask=mask)


def backbone_states(model, args, kwargs, labels, checks, temperature: float):
    """(hidden states, offset): the backbone's last hidden states from position `offset` on. `offset` is 0, or the
    tokens every row starts with (ids and padding alike) when `checks` (a `PrefixCheck` for padded prefixes and one
    for unpadded ones) allow sharing them, capped below the first position that predicts a kept label (`labels`,
    aligned with the positions that predict them; -100 not kept)."""
    import torch

    from ftassist.train.prefix import attends_fully, forward_shared, shared_prefix_length

    backbone = model.base_model
    ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
    kept = labels != -100
    prefix, check = 0, None
    if (checks is not None and not args and ids is not None and mask is not None
            and not {k for k, v in kwargs.items() if v is not None} - {"input_ids", "attention_mask", "use_cache"}
            and bool(kept.any()) and attends_fully(model, ids.size(1))):
        first = int(kept.any(dim=0).float().argmax())
        prefix = shared_prefix_length(ids, mask, limit=first, same_padding=True)
        check = checks[not bool(mask[:, :prefix].all())] if prefix else None
        if check is not None and check.verdict is False:
            prefix = 0
    if not prefix or check is None:
        return backbone(*args, **kwargs).last_hidden_state, 0
    if check.verdict is None:  # the first such batch: both ways, without dropout or gradients (no random draws)
        training = model.training
        model.eval()
        try:
            with torch.no_grad():
                shared, plain = (token_log_probs(model, states, labels, prefix, temperature)
                                 for states in (forward_shared(backbone, ids, mask, prefix, states_only=True).last_hidden_state,
                                                backbone(**kwargs).last_hidden_state[:, prefix:]))
                largest = float((shared - plain).abs().max())
        finally:
            model.train(training)
        if not check.decide_tokens(largest):
            return backbone(*args, **kwargs).last_hidden_state, 0
        logging.getLogger("ftassist.train").info(
            "the %d prompt tokens this batch's rows start with run once (per-token log-probabilities within %.2g nats "
            "of every row run whole)", prefix, largest)
    return forward_shared(backbone, ids, mask, prefix, states_only=True).last_hidden_state, prefix


def token_log_probs(model, states, labels, offset: int, temperature: float):
    """The log-probability of each kept label given hidden `states` that start at position `offset`."""
    kept = labels != -100
    logits = model.get_output_embeddings()(states[:, :labels.size(1) - offset][kept[:, offset:]]).float() / temperature
    return logits.log_softmax(-1).gather(-1, labels[kept].unsqueeze(-1)).squeeze(-1)
