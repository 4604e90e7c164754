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
"""

from __future__ import annotations

import functools
import types


def can_use_plain_head(model) -> bool:
    """True for a causal LM whose logits are the plain projection (no soft-capping, no logit scale, no MoE router)."""
    text = model.config.get_text_config()
    special = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")
    return (all(getattr(text, k, None) in (None, 1.0) for k in special)
            and not getattr(text, "output_router_logits", False) and model.get_output_embeddings() is not None)


def use_plain_head(model, temperature: float = 1.0) -> bool:
    """Re-patch `model` (the base model trl patched; CPU) with the plain head; returns whether it was."""
    if next(model.parameters()).device.type != "cpu" or not can_use_plain_head(model):
        return False
    original = type(model).forward

    @functools.wraps(original)
    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head:
            extra = {k: v for k, v in (("labels", labels), ("shift_labels", shift_labels),
                                         ("num_items_in_batch", num_items_in_batch)) if v is not None}
            return original(self, *args, **kwargs, **extra)
        return plain_log_probs(self, args, kwargs, labels, shift_labels, num_items_in_batch, temperature)

    model.forward = types.MethodType(forward, model)
    return True


def plain_log_probs(model, args, kwargs, labels, shift_labels, num_items_in_batch, temperature: float):
    """trl's `FusedCausalLMOutput` computed with plain logits at the kept positions only."""
    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    kwargs["use_cache"] = False
    hidden = model.base_model(*args, **kwargs).last_hidden_state
    if shift_labels is None:
        hidden, labels = hidden[:, :-1], labels[:, 1:]
    else:
        labels = shift_labels
    mask = labels != -100
    logits = model.get_output_embeddings()(hidden[mask]).float() / temperature
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
