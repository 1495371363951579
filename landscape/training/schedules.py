"""Learning-rate schedules, evaluated per iteration (optimizer step).

A schedule maps the 0-based iteration index ``t`` (one optimizer step = one minibatch; one
epoch = ``steps_per_epoch`` iterations; full-batch L-BFGS takes one step per epoch) to a
learning rate. With ``W = warmup_epochs * steps_per_epoch`` warm-up iterations and
``T = epochs * steps_per_epoch`` iterations in all:

- warm-up (composable with every schedule): ``lr * (t + 1) / W`` for ``t < W``, so the
  last warm-up step uses the full ``lr``; the schedule below then runs on ``u = t - W``.
- ``constant``: ``lr``.
- ``step``: ``lr * gamma ** floor(u / (step_size * steps_per_epoch))``: multiplied by
  ``gamma`` every ``step_size`` epochs (after warm-up), so it changes at epoch boundaries.
- ``cosine``: ``lr * (1 + cos(pi * u / (T - W))) / 2``, decaying every iteration from ``lr``
  towards 0 at the end of training (Loshchilov & Hutter, SGDR, 2017, without restarts).

Cost: O(1) per call; schedules hold no state, so a resumed run recomputes them exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from landscape.errors import LandscapeError, check_positive, unknown_name

SCHEDULES = ("constant", "step", "cosine")


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule over iterations; call it with the iteration index ``t``."""

    name: str
    lr: float
    total_steps: int
    warmup_steps: int = 0
    step_every: int = 1      # iterations between two step decays ("step" only)
    gamma: float = 0.1

    def __call__(self, t: int) -> float:
        """The learning rate of iteration ``t`` (0-based)."""
        if t < self.warmup_steps:
            return self.lr * (t + 1) / self.warmup_steps
        u = t - self.warmup_steps
        if self.name == "constant":
            return self.lr
        if self.name == "step":
            return self.lr * self.gamma ** (u // self.step_every)
        if self.name == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1)
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(u, span) / span))
        raise unknown_name("schedule", self.name, SCHEDULES)


def epochs_dependence(name: str, step_size: int | None) -> str | None:
    """Why the learning rates of schedule ``name`` depend on the number of epochs (so a run
    cannot be extended to more epochs without changing the rates it already used), or None
    when they do not (``constant``; ``step`` with an explicit ``step_size``)."""
    if name == "cosine":
        return "the cosine schedule decays over the whole number of epochs"
    if name == "step" and step_size is None:
        return "the step schedule's step size defaults to a third of the epochs"
    return None


def make_schedule(name: str, lr: float, *, epochs: int, steps_per_epoch: int,
                  warmup_epochs: int = 0, step_size: int | None = None,
                  gamma: float = 0.1) -> Schedule:
    """Build a :class:`Schedule` from epoch-based settings.

    ``step_size`` (epochs between decays of the ``step`` schedule) defaults to a third of
    the epochs after warm-up, so the rate is multiplied by ``gamma`` twice during training.
    """
    if name not in SCHEDULES:
        raise unknown_name("schedule", name, SCHEDULES)
    check_positive("learning rate", lr)
    check_positive("steps per epoch", steps_per_epoch)
    if warmup_epochs < 0:
        raise LandscapeError(f"warmup epochs must be >= 0, got {warmup_epochs}")
    if warmup_epochs > epochs:
        raise LandscapeError(f"warmup epochs ({warmup_epochs}) exceed the epochs ({epochs})")
    if step_size is None:
        step_size = max((epochs - warmup_epochs) // 3, 1)
    check_positive("step size", step_size)
    check_positive("gamma", gamma)
    return Schedule(name=name, lr=float(lr), total_steps=epochs * steps_per_epoch,
                    warmup_steps=warmup_epochs * steps_per_epoch,
                    step_every=step_size * steps_per_epoch, gamma=float(gamma))
