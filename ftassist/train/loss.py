"""The training loss on CPU: the model's own cross-entropy over full logits, not trl's tiled LM head.

trl 1.16's `SFTTrainer.compute_loss` patches the model with a fused LM head (`add_fused_lm_head`)
that never builds the (tokens x vocab) logits: it projects tiles of 4096 tokens x 32768 vocabulary
entries, folds each into online log-sum-exp, entropy and top-1 statistics, and recomputes every
tile in the backward. On CUDA that runs as Triton kernels and saves memory. Without Triton (CPU)
each tile is folded with ~10 full-tile torch ops (log-probs, plus entropy and top-1 for trl's logged
metrics, which ftassist does not read) and the projection runs twice (forward and backward
recompute). Measured for SmolLM2's head (vocab 49152) at 8 x 212 tokens, forward + backward on 2
cores: 4.4 s against 1.1-1.3 s for plain logits + cross-entropy (10.6-14.1 s against 2.8-3.3 s on
a busier machine), and 1.7 GiB peak against 0.9 GiB. Both score every position, prompt and padding
included (trl skips them only on Triton devices).

`PlainCausalLossMixin` therefore computes the loss on CPU the way `transformers.Trainer` does,
with logits only at the positions that predict a reply token (`reply_positions`, passed as the
model's `logits_to_keep`), i.e. the sum of the next-token
negative log-likelihood over the non-ignored labels divided by their count over the accumulated
batch (`num_items_in_batch`; this micro-batch's count when it is None), which is the very
quantity trl's head returns (tests/test_train_loss.py checks both agree to 1e-5). It keeps trl's
`num_tokens` count (non-padding tokens seen), which `MetricsCallback` turns into tokens/s; trl's
`entropy` and `mean_token_accuracy` are not logged on this path. The tokens every row of the batch
starts with (the system prompt) run once and their cache serves every row (`ftassist.train.prefix`;
`--no-share-prefix` turns it off), checked against the plain forward on the first batch. Everything trl's path does that
this one does not (MoE aux loss, DFT loss, label smoothing, a custom `compute_loss_func`, sequence
parallelism) keeps trl's path; so does CUDA.
"""

from __future__ import annotations

from ftassist.train.prefix import PrefixCheck, attends_fully, forward_shared, shared_prefix_length


class PlainCausalLossMixin:
    """Mix in before `SFTTrainer`: on CPU, loss from the model's own forward over full logits.

    `plain_loss` (set at construction, may be switched off) says whether this path is used.
    """

    plain_loss: bool = False
    share_prefix: bool = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.plain_loss = uses_plain_loss(self)
        self.prefix_check = PrefixCheck()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.plain_loss:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        import torch

        labels = inputs.pop("labels")
        inputs["use_cache"] = False
        # Only positions that predict a kept label get logits: the prompt (system message and question) is most of
        # each row, and the LM head over all of it was ~a fifth of a SmolLM2 step for nothing.
        keep = reply_positions(labels)
        target = labels[:, keep + 1]
        prefix = self._shared_prefix(inputs, keep)
        if prefix:
            outputs = forward_shared(model, inputs["input_ids"], inputs["attention_mask"], prefix,
                                     logits_to_keep=keep, position_ids=inputs.get("position_ids"))
            loss = _summed_nll(outputs.logits, target)
            if self.prefix_check.verdict is None and not self._prefix_agrees(model, inputs, keep, target, prefix):
                outputs = model(**inputs, logits_to_keep=keep)
                loss = _summed_nll(outputs.logits, target)
        else:
            outputs = model(**inputs, logits_to_keep=keep)
            loss = _summed_nll(outputs.logits, target)
        # The sum of next-token NLL over the kept labels divided by their count over the accumulated batch
        # (`num_items_in_batch`; this micro-batch's count when None): what the model's own ForCausalMLoss returns.
        denom = num_items_in_batch if num_items_in_batch is not None else (target != -100).sum()
        loss = loss / (denom.to(loss.device) if torch.is_tensor(denom) else denom)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())  # as Trainer.compute_loss scales it
        result = (loss, outputs) if return_outputs else loss
        if self.model.training:
            count_trained_tokens(self, inputs)
        self._metrics["train" if self.model.training else "eval"]["num_tokens"] = [self._total_train_tokens]
        return result

    def _prefix_agrees(self, model, inputs, keep, target, prefix) -> bool:
        """The first shared batch: is it this model's plain answer? Both ways without dropout and without
        gradients, so the check draws no random numbers: a resumed run (which checks again on its first batch)
        trains on the same dropout masks as an uninterrupted one."""
        import torch

        training = model.training
        model.eval()
        try:
            with torch.no_grad():
                shared = _summed_nll(forward_shared(model, inputs["input_ids"], inputs["attention_mask"], prefix,
                                                    logits_to_keep=keep, position_ids=inputs.get("position_ids")).logits,
                                     target)
                plain = _summed_nll(model(**inputs, logits_to_keep=keep).logits, target)
        finally:
            model.train(training)
        return self.prefix_check.decide(float(shared), float(plain))

    def _shared_prefix(self, inputs, keep):
        """Tokens this batch's rows share at the start, to run once (0: run every row whole; `ftassist.train.prefix`).

        Not with gradient checkpointing (it turns the cache off), several processes (DDP expects one forward a
        step) or inputs beyond ids, mask and positions, nor once the first batch showed this model disagrees."""
        if (not self.share_prefix or self.prefix_check.verdict is False or self.args.gradient_checkpointing
                or not attends_fully(self.model, inputs["input_ids"].size(1))
                or self.accelerator.num_processes > 1 or "attention_mask" not in inputs
                or set(inputs) - {"input_ids", "attention_mask", "position_ids", "use_cache"} or not len(keep)):
            return 0
        return shared_prefix_length(inputs["input_ids"], inputs["attention_mask"], limit=int(keep.min()))


def _summed_nll(logits, target):
    import torch

    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), target.reshape(-1),
                                             ignore_index=-100, reduction="sum")


def reply_positions(labels):
    """Sequence positions whose next token is a kept label in any row (those the loss needs logits for).

    >>> import torch
    >>> reply_positions(torch.tensor([[-100, -100, 5, 6], [-100, -100, -100, 7]])).tolist()
    [1, 2]
    """
    import torch

    return torch.nonzero((labels[:, 1:] != -100).any(dim=0)).flatten()


def uses_plain_loss(trainer) -> bool:
    """Whether `trainer` (an SFTTrainer) should take the plain loss path: CPU, and nothing only trl's path does."""
    args = trainer.args
    pc = getattr(trainer.accelerator, "parallelism_config", None)
    return (args.device.type == "cpu" and args.loss_type == "nll" and not getattr(trainer, "aux_loss_enabled", False)
            and trainer.compute_loss_func is None and trainer.label_smoother is None
            and trainer.model_accepts_loss_kwargs and not (pc is not None and getattr(pc, "sp_enabled", False)))


def count_trained_tokens(trainer, inputs: dict) -> None:
    """Add the batch's non-padding tokens (all ranks) to trl's `_total_train_tokens`, as trl's compute_loss does."""
    import torch

    if "attention_mask" in inputs:
        local = inputs["attention_mask"].sum()
    elif "position_ids" in inputs:  # padding-free batches carry no attention mask
        local = torch.tensor(inputs["position_ids"].size(1), device=inputs["position_ids"].device)
    else:
        raise ValueError("Expected 'attention_mask' or 'position_ids' in inputs.")
    trainer._total_train_tokens += trainer.accelerator.gather_for_metrics(local).sum().item() // trainer._tp_size
