"""Trainer callbacks: metrics.jsonl + status heartbeat, the NaN/zero-loss guard, test hooks.

`MetricsCallback` appends one JSON line per logged step (step, loss, grad_norm, lr,
tokens_per_s counted over non-padding tokens, eta_s, epoch, tokens, time) and moves `status.json` forward.
`GuardCallback` stops a run whose loss or gradient norm is NaN/inf (at once) or exactly zero
for `zero_patience` logged steps in a row, and records why, so the run is marked failed and
not mergeable. `NanInjectionCallback` poisons the adapter at a chosen step so tests can prove
the guard works without waiting for a real divergence.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from transformers import TrainerCallback


def check_health(history: list[dict], zero_patience: int = 3) -> str | None:
    """Return why a run must stop, given its logged rows so far (newest last), or None.

    >>> check_health([{"loss": 1.0, "grad_norm": 2.0}])
    >>> check_health([{"loss": float("nan"), "grad_norm": 1.0}])
    'loss is nan at step ?'
    >>> check_health([{"loss": 0.0, "grad_norm": 0.0, "step": s} for s in (1, 2, 3)])
    'loss and grad_norm exactly 0 for 3 logged steps (to step 3): nothing is being learned'
    """
    if not history:
        return None
    last = history[-1]
    for key in ("loss", "grad_norm"):
        value = last.get(key)
        if value is not None and not math.isfinite(value):
            return f"{key} is {value} at step {last.get('step', '?')}"
    tail = history[-zero_patience:]
    if len(tail) == zero_patience and all(r.get("loss") == 0.0 and r.get("grad_norm") in (0.0, None) for r in tail):
        return (f"loss and grad_norm exactly 0 for {zero_patience} logged steps (to step {last.get('step', '?')}): "
                "nothing is being learned")
    return None


class MetricsCallback(TrainerCallback):
    """Writes metrics.jsonl rows and status updates; optional tqdm bar in the foreground."""

    def __init__(self, run_dir: str | Path, status=None, progress: bool = False, log=None, clock=None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.clock = clock  # a schedule.Clock: each row records the training seconds it has counted (resume reads it)
        self.status = status
        self.progress = progress
        self.log = log
        self.bar = None
        self._t0 = self._last_t = 0.0
        self._last_tokens: float | None = None
        self._start_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = self._last_t = time.time()
        if self.clock is not None and not self.clock.started:
            self.clock.restart()
        self._start_step = state.global_step
        self._last_tokens = None
        if self.status is not None:
            self.status.update(state="running", step=state.global_step, total_steps=state.max_steps)
        if self.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step")

    def on_step_end(self, args, state, control, **kwargs):
        if self.status is not None:
            self.status.update(step=state.global_step, total_steps=state.max_steps)
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        now = time.time()
        tokens = logs.get("num_tokens")
        tps = None
        if tokens is not None:
            base = self._last_tokens if self._last_tokens is not None and tokens >= self._last_tokens else 0.0
            span = now - (self._last_t if self._last_tokens is not None else self._t0)
            tps = (tokens - base) / span if span > 0 else None
            self._last_tokens = tokens
        self._last_t = now
        done = state.global_step - self._start_step
        eta = (now - self._t0) / done * (state.max_steps - state.global_step) if done > 0 else None
        row = {
            "step": state.global_step,
            "loss": _num(logs.get("loss")),
            "grad_norm": _num(logs.get("grad_norm")),
            "lr": logs.get("learning_rate"),
            "tokens_per_s": round(tps, 2) if tps is not None else None,
            "eta_s": round(eta, 1) if eta is not None else None,
            "tokens": int(tokens) if tokens is not None else None,  # non-padding tokens trained so far (this session)
            "epoch": round(logs.get("epoch", state.epoch or 0.0), 4),
            "elapsed_s": round(self.clock.elapsed(), 1) if self.clock is not None and self.clock.started else None,
            "time": round(now, 3),
            **stage_metrics(logs),
        }
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.log is not None:
            self.log.info("step %s/%s loss %s grad_norm %s lr %.3g tokens/s %s eta %ss", row["step"], state.max_steps,
                          row["loss"], row["grad_norm"], row["lr"] or 0.0, row["tokens_per_s"], row["eta_s"])
        if self.bar is not None:
            self.bar.set_postfix(loss=row["loss"], tok_s=row["tokens_per_s"])

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class GuardCallback(TrainerCallback):
    """Stops training on NaN/inf or a dead (all-zero) loss; `reason` says why, else None.

    `zero_patience` None turns the dead-loss check off: GRPO's loss is exactly 0 whenever every reply to a
    prompt earns the same reward, which is no fault."""

    def __init__(self, zero_patience: int | None = 3):
        self.zero_patience = zero_patience
        self.history: list[dict] = []
        self.reason: str | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        self.history.append({"step": state.global_step, "loss": logs.get("loss"), "grad_norm": logs.get("grad_norm")})
        reason = check_health(self.history, self.zero_patience or 10**9)
        if reason:
            self.reason = reason
            control.should_training_stop = True
            control.should_save = False  # never checkpoint poisoned weights


class NanInjectionCallback(TrainerCallback):
    """Testing hook: fills the first trainable tensor with NaN before optimizer step `at_step`."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if model is not None and state.global_step + 1 == self.at_step:
            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))


# What DPO and GRPO log beside the loss (trl's names): the reward and each of its parts, the KL to the SFT
# adapter, the preference margins and log-probabilities, reply lengths.
STAGE_KEYS = ("reward", "reward_std", "kl", "entropy", "frac_reward_zero_std", "skipped_groups")
STAGE_PREFIXES = ("rewards/", "logps/", "completions/mean_length")


def stage_metrics(logs: dict) -> dict:
    """The DPO/GRPO figures in `logs`, as metrics.jsonl keys ("rewards/fields/mean" -> "rewards_fields_mean").

    >>> stage_metrics({"loss": 1.0, "kl": 0.5, "rewards/fields/mean": 0.25, "rewards/margins": 2.0})
    {'kl': 0.5, 'rewards_fields_mean': 0.25, 'rewards_margins': 2.0}
    """
    return {k.replace("/", "_"): _num(v) for k, v in logs.items()
            if isinstance(v, (int, float)) and (k in STAGE_KEYS or k.startswith(STAGE_PREFIXES))}


def _num(value):
    """A float for JSON: NaN/inf become strings ("nan", "inf") so every line stays valid JSON."""
    if value is None:
        return None
    value = float(value)
    return round(value, 6) if math.isfinite(value) else str(value)
