"""The learning-rate schedule that fits the budget: it ends at the step budget or the time budget, whichever comes first.

A linear schedule planned for the step budget alone never decays when the wall-clock budget is what
ends the run (on 2 CPU cores a 30-minute budget may hold one epoch of a seven-epoch plan): the model
stops at nearly its peak learning rate and never gets the low-rate steps at the end that settle it.
Here progress is the larger of the share of steps done and the share of the time budget spent
(`Clock`, which counts the training of earlier sessions of a resumed run, and keeps the time the last
evaluation takes inside the budget): the rate warms up over the first `warmup` of it and decays
linearly to zero at its end.

    >>> clock = Clock(budget_s=0)
    >>> f = budget_lambda(100, 0.1, clock)
    >>> [round(f(s), 2) for s in (0, 5, 10, 55, 100)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    >>> late = Clock(budget_s=100, elapsed_before_s=77.5)  # three quarters of the time spent at step 10 of 100
    >>> round(budget_lambda(100, 0.1, late)(10), 2)
    0.25
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Clock:
    """Wall-clock seconds a run has trained, earlier sessions of a resumed run included, against its budget."""

    def __init__(self, budget_s: float = 0.0, elapsed_before_s: float = 0.0, reserve_s: float = 0.0):
        self.budget_s, self.elapsed_before_s = budget_s, elapsed_before_s
        self.reserve_s = reserve_s  # kept at the end for the last evaluation (the task-metric callback sets it)
        self._t0: float | None = None  # counting starts with training, not while the model loads

    def restart(self) -> None:
        """Count this session from now (the start of training)."""
        self._t0 = time.time()

    @property
    def started(self) -> bool:
        return self._t0 is not None

    def elapsed(self) -> float:
        return self.elapsed_before_s + (time.time() - self._t0 if self._t0 is not None else 0.0)

    def training_s(self) -> float:
        """The seconds of the budget that training may use: the budget less the reserve for the last evaluation
        (never less than half of it)."""
        return max(self.budget_s - self.reserve_s, 0.5 * self.budget_s)

    def share(self) -> float:
        """The share of the training time spent (0 without a budget).

        >>> c = Clock(budget_s=100, elapsed_before_s=40, reserve_s=20); (c.share(), c.over())
        (0.5, False)
        >>> c.elapsed_before_s = 80; (c.share(), c.over())
        (1.0, True)
        """
        return min(1.0, self.elapsed() / self.training_s()) if self.budget_s > 0 else 0.0

    def over(self) -> bool:
        """True once training has used its time: what is left of the budget is the last evaluation's."""
        return self.budget_s > 0 and self.elapsed() >= self.training_s()

    def no_room_for(self, seconds: float) -> bool:
        """True when an evaluation of `seconds` now would leave training no time before the last one."""
        return self.budget_s > 0 and self.elapsed() + seconds >= self.training_s()


def budget_lambda(total_steps: int, warmup: float, clock: Clock) -> Callable[[int], float]:
    """The multiplier of the peak learning rate at optimizer step `step` (for `torch.optim.lr_scheduler.LambdaLR`)."""
    total = max(1, total_steps)

    def factor(step: int) -> float:
        progress = max(min(1.0, step / total), clock.share())
        if progress < warmup:
            return progress / warmup
        return max(0.0, (1.0 - progress) / (1.0 - warmup)) if warmup < 1 else 0.0

    return factor


def describe_schedule(total_steps: int, warmup: float, budget_s: float) -> str:
    """One sentence for the plan.

    >>> describe_schedule(287, 0.05, 1800)
    'The learning rate warms up over the first 5% and decays linearly to zero at step 287 or at the end of the 30 min budget, whichever comes first.'
    """
    end = f"at step {total_steps} or at the end of the {budget_s / 60:g} min budget, whichever comes first" if budget_s \
        else f"at step {total_steps}"
    return f"The learning rate warms up over the first {100 * warmup:g}% and decays linearly to zero {end}."


class BudgetScheduleMixin:
    """For a transformers `Trainer`: the `budget_lambda` schedule instead of `lr_scheduler_type`'s.

    Set `budget_clock` (the `Clock` the task-metric callback stops by) and `warmup_share` before training."""

    budget_clock: Clock | None = None
    warmup_share: float = 0.05

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        from torch.optim.lr_scheduler import LambdaLR

        trainer: Any = self  # a transformers Trainer (this mixin comes before it in the class's bases)
        if getattr(trainer, "lr_scheduler", None) is None:
            trainer.lr_scheduler = LambdaLR(optimizer or trainer.optimizer,
                                            budget_lambda(num_training_steps, self.warmup_share, self.budget_clock or Clock()))
            trainer._created_lr_scheduler = True
        return trainer.lr_scheduler


def budget_stop(clock: Clock):
    """A transformers callback that ends training (with a checkpoint) once `clock` is over: the time budget of a run
    that has no validation split to stop it (the task-metric callback stops the others, after their last score).
    A resumed run's clock starts from the seconds its last kept metrics row counted."""
    from transformers import TrainerCallback

    class BudgetStop(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock.restart()

        def on_step_end(self, args, state, control, **kwargs):
            if clock.over():
                control.should_training_stop = control.should_save = True

    return BudgetStop()
