"""Intervals over seeds, and the rule by which the study calls two results different.

A measure of a recipe is a random variable over training seeds (initialization and batch
order); the study reports its mean and a two-sided Student-t confidence interval over the
seeds, ``mean +- t_{(1+level)/2, n-1} s / sqrt(n)`` with ``s`` the sample standard deviation
(ddof = 1). Two recipes differ in a measure only where their intervals do not overlap, a
conservative rule (non-overlapping 95% intervals imply a difference at well below 5%).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

#: The interval level of every study table and figure.
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """Mean and confidence interval of ``n`` finite values (``ci_low``/``ci_high`` are None
    for fewer than two values: one seed gives no interval)."""

    mean: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    level: float = LEVEL

    def to_dict(self) -> dict[str, float | int | None]:
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n}


def confidence_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Student-t interval of the mean of ``values`` (non-finite values are left out)."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return Interval(None, None, None, 0, level)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, None, None, n, level)
    half = float(_scipy_stats.t.ppf((1 + level) / 2, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level)


def compare(a: Interval, b: Interval) -> str:
    """``">"`` or ``"<"`` when the intervals of ``a`` and ``b`` do not overlap, else
    ``"no significant difference"`` (also when either has no interval)."""
    if None in (a.ci_low, a.ci_high, b.ci_low, b.ci_high):
        return "no significant difference"
    if a.ci_low > b.ci_high:
        return ">"
    if a.ci_high < b.ci_low:
        return "<"
    return "no significant difference"


__all__ = ["LEVEL", "Interval", "compare", "confidence_interval"]
