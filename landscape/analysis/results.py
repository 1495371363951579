"""What every measure of :mod:`landscape.analysis` shares: its result record, its cost
counter, the point it is measured at, and the settings it records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from landscape.errors import LandscapeError


@dataclass
class MeasureResult:
    """One number with its provenance.

    ``value``: the measure (units in each function's docstring); ``stderr``: its Monte Carlo
    standard error, None when the number is not a Monte Carlo estimate; ``settings``: the
    arguments and the Objective's settings; ``cost``: passes over the data split;
    ``extra``: by-products (e.g. PAC-Bayes ``sigma``).
    """

    name: str
    value: float
    stderr: float | None
    settings: dict[str, Any]
    cost: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able ``{"value", "stderr"?, **extra}`` (what ``--json`` prints)."""
        out: dict[str, Any] = {"value": self.value}
        if self.stderr is not None:
            out["stderr"] = self.stderr
        out.update(self.extra)
        return out


class Cost:
    """Counts delta of an Objective, plus passes over its subsets (weighted m / n)."""

    def __init__(self, objective: Any) -> None:
        self.objective = objective
        self.start = dict(objective.counts)
        self.extra: dict[str, float] = {}

    def add(self, key: str, passes: float) -> None:
        self.extra[key] = self.extra.get(key, 0.0) + passes

    def add_subset(self, sub: Any) -> None:
        if sub is self.objective:
            return
        for key, value in sub.counts.items():
            self.add(key, value * sub.n / self.objective.n)

    def result(self) -> dict[str, float]:
        out = {k: v - self.start.get(k, 0.0) for k, v in self.objective.counts.items()}
        for k, v in self.extra.items():
            out[k] = out.get(k, 0.0) + v
        return {k: float(v) for k, v in out.items() if v}


def measure_point(objective: Any, theta: Tensor | None) -> Tensor:
    """The point to measure at (default: the model's own parameters), checked.

    bf16 is refused: these measures subtract losses from the float32 gradient path and
    losses evaluated under autocast, and bf16's loss error (6e-3 relative, benchmarks/
    README.md) is larger than the increases measured near a minimum.
    """
    if getattr(objective, "precision", None) == "bf16":
        raise LandscapeError("sharpness measures need float32 or float64 precision: bf16's "
                             "loss error is larger than the increases they measure")
    if theta is None:
        return objective.theta0.clone()
    theta = torch.as_tensor(theta)
    objective.space.check(theta)
    if theta.dim() != 1:
        raise LandscapeError(f"theta must be one flat vector, got shape {tuple(theta.shape)}")
    return theta.to(objective.device, objective.dtype)


def recorded_settings(objective: Any, **kwargs: Any) -> dict[str, Any]:
    """A measure's arguments plus the Objective's settings (what a result records)."""
    return {**kwargs, "objective": objective.settings()}
