"""Intervals over seeds, and the tests behind every verdict of a study.

A measure of a recipe is a random variable over training seeds (initialization and batch
order). Its interval is the two-sided Student-t interval of the mean over seeds; for a
positive quantity it is taken on the log scale (the geometric mean
``exp(mean log x +- t_{(1+level)/2, n-1} s_log / sqrt(n))``, never a negative bound). One
seed gives a mean and no interval.

Verdicts are tests, with multiplicity control (Holm 1979, step-down):

- two recipes in one quantity: Welch's unequal-variance t-test (Welch 1947) on the logs of a
  positive quantity (plain values otherwise); the effect size is the ratio of geometric means
  (the difference of means on the plain scale) with its Welch-Satterthwaite interval.
  Identical values on both sides (zero variance) are "not testable"; a single seed on
  either side gives "no interval". Accuracies are compared on counts of test examples:
  Fisher's exact test (two-sided) on the correct/incorrect counts pooled over seeds, every
  prediction of every seed counted as one trial;
- a trend: ordinary least squares of ``y`` on ``x`` (every seed a point), the slope with its
  t interval (n - 2 degrees of freedom) and two-sided p;
- "only the ratio matters": ``y ~ a + b_lr log lr + b_B log B`` by least squares, and the
  t-test (n - 3 degrees of freedom) of ``b_lr + b_B = 0``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as _scipy_stats

#: The interval level of every study table and figure, and the test level of every verdict.
LEVEL = 0.95
ALPHA = 0.05
#: The verdicts of a comparison beside ``">"`` and ``"<"`` (a larger / smaller than b).
NOT_SIGNIFICANT, NOT_TESTABLE, NO_INTERVAL = ("no significant difference", "not testable",
                                              "no interval")


@dataclass(frozen=True)
class Interval:
    """Mean and confidence interval of ``n`` finite values (``ci_low``/``ci_high`` are None
    for fewer than two values: one seed gives no interval). ``scale="log"``: ``mean`` is the
    geometric mean and the interval is taken on the log scale."""

    mean: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    level: float = LEVEL
    scale: str = "linear"

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n,
                "scale": self.scale}


def finite(values: Sequence[float | None]) -> np.ndarray:
    """The finite values of ``values`` (None and NaN left out) as float64."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return x[np.isfinite(x)]


def is_positive(values: Sequence[float | None]) -> bool:
    """Whether every finite value is > 0 (and there is one): such a quantity is analysed on
    the log scale."""
    x = finite(values)
    return bool(x.size) and bool((x > 0).all())


def _t(level: float, df: float) -> float:
    return float(_scipy_stats.t.ppf((1 + level) / 2, df))


def confidence_interval(values: Sequence[float | None], level: float = LEVEL,
                        log: bool = False) -> Interval:
    """Student-t interval of the mean of ``values`` (non-finite values are left out); with
    ``log`` (every value must be > 0) the interval of the geometric mean, on the log scale.

    >>> round(confidence_interval([1.0, 2.0, 3.0]).ci_high, 4)
    4.4841
    """
    x = finite(values)
    if log and (x <= 0).any():
        raise ValueError("a log-scale interval needs positive values")
    z = np.log(x) if log else x
    back = math.exp if log else float
    scale = "log" if log else "linear"
    n = int(x.size)
    if n == 0:
        return Interval(None, None, None, 0, level, scale)
    mean = float(z.mean())
    if n < 2:
        return Interval(back(mean), None, None, n, level, scale)
    half = _t(level, n - 1) * float(z.std(ddof=1)) / math.sqrt(n)
    return Interval(back(mean), back(mean - half), back(mean + half), n, level, scale)


def proportion_interval(correct: int, total: int, level: float = LEVEL) -> Interval:
    """An accuracy from counts of examples: ``correct / total`` with its exact
    (Clopper-Pearson) binomial interval.

    >>> round(proportion_interval(349, 360).ci_low, 4)
    0.946
    """
    if total <= 0:
        return Interval(None, None, None, 0, level)
    ci = _scipy_stats.binomtest(int(correct), int(total)).proportion_ci(level, method="exact")
    return Interval(correct / total, float(ci.low), float(ci.high), int(total), level,
                    "binomial")


def welch(a: Sequence[float | None], b: Sequence[float | None], log: bool = False,
          level: float = LEVEL) -> dict[str, Any]:
    """Welch's t-test of ``a`` against ``b`` (of their logs with ``log``).

    Returns ``{"test", "ratio" (log; else None), "difference" (plain; else None), "ci_low",
    "ci_high", "p", "df", "status"}``: ``ratio`` = geometric mean of a / that of b;
    ``status`` is ``"tested"``, ``"not testable"`` (zero variance on both sides) or ``"no
    interval"`` (a side with fewer than two values), where p and the interval are None.

    >>> r = welch([1.0, 1.2, 0.9], [2.0, 2.3, 1.8], log=True)
    >>> r["ratio"] < 1 and r["p"] < 0.05
    True
    """
    x, y = finite(a), finite(b)
    za, zb = (np.log(x), np.log(y)) if log else (x, y)
    key = "ratio" if log else "difference"
    out: dict[str, Any] = {"test": "welch-log" if log else "welch", "ratio": None,
                           "difference": None, "ci_low": None, "ci_high": None, "p": None,
                           "df": None}
    if x.size == 0 or y.size == 0:
        return {**out, "status": NO_INTERVAL}
    diff = float(za.mean() - zb.mean())
    out[key] = math.exp(diff) if log else diff
    if x.size < 2 or y.size < 2:
        return {**out, "status": NO_INTERVAL}
    va, vb = float(za.var(ddof=1)) / za.size, float(zb.var(ddof=1)) / zb.size
    if va + vb == 0:
        return {**out, "status": NOT_TESTABLE}
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (za.size - 1) + vb ** 2 / (zb.size - 1))
    p = 2 * float(_scipy_stats.t.sf(abs(diff) / se, df))
    half = _t(level, df) * se
    lo, hi = diff - half, diff + half
    return {**out, "ci_low": math.exp(lo) if log else lo, "ci_high": math.exp(hi) if log else hi,
            "p": p, "df": df, "status": "tested"}


def fisher_counts(correct_a: int, total_a: int, correct_b: int, total_b: int,
                  level: float = LEVEL) -> dict[str, Any]:
    """Fisher's exact test (two-sided) of two accuracies given as counts of test examples
    (pooled over seeds); the effect size is the ratio of the accuracies with Katz's log
    interval (0.5 added to every cell when one is zero). ``status`` as in :func:`welch`.

    >>> round(fisher_counts(1047, 1080, 1050, 1080)["p"], 3)
    0.798
    """
    wrong_a, wrong_b = total_a - correct_a, total_b - correct_b
    if min(total_a, total_b) <= 0 or min(correct_a, correct_b, wrong_a, wrong_b) < 0:
        raise ValueError("counts must satisfy 0 <= correct <= total, total > 0")
    p = float(_scipy_stats.fisher_exact([[correct_a, wrong_a], [correct_b, wrong_b]])[1])
    ca, cb = correct_a, correct_b
    ta, tb = total_a, total_b
    if 0 in (ca, cb):
        ca, cb, ta, tb = ca + 0.5, cb + 0.5, ta + 1, tb + 1
    log_ratio = math.log(ca / ta) - math.log(cb / tb)
    se = math.sqrt(1 / ca - 1 / ta + 1 / cb - 1 / tb)
    half = float(_scipy_stats.norm.ppf((1 + level) / 2)) * se
    return {"test": "fisher-counts", "difference": None,
            "ratio": (correct_a / total_a) / (correct_b / total_b) if correct_b else None,
            "ci_low": math.exp(log_ratio - half),
            "ci_high": math.exp(log_ratio + half), "p": min(p, 1.0), "df": None,
            "status": "tested"}


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values of one family (None entries stay None and do not
    count in the family): the i-th smallest of m becomes ``max_{j <= i} min(1, (m - j + 1)
    p_(j))``.

    >>> holm([0.01, 0.04, None, 0.03])
    [0.03, 0.06, None, 0.06]
    """
    idx = [i for i, p in enumerate(pvalues) if p is not None and np.isfinite(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    m = len(order)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out


def _ols(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Least-squares coefficients, their covariance and the residual degrees of freedom."""
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    df = design.shape[0] - design.shape[1]
    resid = y - design @ coef
    sigma2 = float(resid @ resid) / df
    cov = sigma2 * np.linalg.inv(design.T @ design)
    return coef, cov, df


def _contrast(coef: np.ndarray, cov: np.ndarray, df: int, c: np.ndarray,
              level: float) -> dict[str, Any]:
    est = float(c @ coef)
    se = math.sqrt(max(float(c @ cov @ c), 0.0))
    if se == 0:
        return {"estimate": est, "ci_low": None, "ci_high": None, "p": None, "stderr": 0.0,
                "df": df, "status": NOT_TESTABLE}
    half = _t(level, df) * se
    p = 2 * float(_scipy_stats.t.sf(abs(est) / se, df))
    return {"estimate": est, "ci_low": est - half, "ci_high": est + half, "p": p,
            "stderr": se, "df": df, "status": "tested"}


def detectable(stderr: float, df: int, alpha: float = ALPHA, power: float = 0.8) -> float:
    """The smallest effect a two-sided t-test at level ``alpha`` detects with probability
    ``power``, for an estimate of standard error ``stderr`` with ``df`` degrees of freedom:
    ``delta stderr`` where the noncentral t with noncentrality ``delta`` exceeds the
    critical value with probability ``power`` (solved exactly).

    >>> round(detectable(1.0, 1000), 2)
    2.8
    """
    from scipy.optimize import brentq

    crit = float(_scipy_stats.t.ppf(1 - alpha / 2, df))

    def gap(delta: float) -> float:
        nct = _scipy_stats.nct
        lower = np.nan_to_num(nct.cdf(-crit, df, delta))  # NaN where it underflows
        return float(nct.sf(crit, df, delta) + lower) - power

    high = 2 * (crit + abs(float(_scipy_stats.t.ppf(power, df)))) + 1   # power there > 0.99
    return brentq(gap, 0.0, high, xtol=1e-10) * stderr


def _regressors(columns: Sequence[Sequence[float]], y: Sequence[float | None]
                ) -> tuple[np.ndarray, np.ndarray]:
    """The rows with a finite ``y``: the design (intercept first) and ``y``."""
    y = np.asarray([np.nan if v is None else v for v in y], dtype=np.float64)
    keep = np.isfinite(y)
    design = np.column_stack([np.ones(keep.sum())] +
                             [np.asarray(c, dtype=np.float64)[keep] for c in columns])
    return design, y[keep]


def trend(x: Sequence[float], y: Sequence[float | None], level: float = LEVEL
          ) -> dict[str, Any]:
    """Least-squares line of ``y`` on ``x`` (non-finite ``y`` left out): ``{"slope",
    "ci_low", "ci_high", "p", "intercept", "stderr", "df", "n", "status"}``. Fewer than 3
    points or a constant ``x``: ``"no interval"``; a perfect fit (zero residual): ``"not
    testable"``.

    >>> round(trend([0, 1, 2, 3], [0.1, 1.9, 4.2, 5.8])["slope"], 3)
    1.94
    """
    design, yy = _regressors([x], y)
    out: dict[str, Any] = {"slope": None, "ci_low": None, "ci_high": None, "p": None,
                           "intercept": None, "stderr": None, "df": None, "n": int(yy.size)}
    if yy.size < 3 or np.ptp(design[:, 1]) == 0:
        return {**out, "status": NO_INTERVAL}
    coef, cov, df = _ols(design, yy)
    t = _contrast(coef, cov, df, np.array([0.0, 1.0]), level)
    return {**out, "slope": t["estimate"], "ci_low": t["ci_low"], "ci_high": t["ci_high"],
            "p": t["p"], "intercept": float(coef[0]), "stderr": t["stderr"], "df": df,
            "status": t["status"]}


def ratio_test(log_lr: Sequence[float], log_batch: Sequence[float],
               y: Sequence[float | None], level: float = LEVEL) -> dict[str, Any] | None:
    """``y ~ a + b_lr log lr + b_B log B`` by least squares, and the t-test of ``b_lr + b_B =
    0`` (the "only lr/B matters" hypothesis predicts it): ``{"coef_lr", "coef_batch",
    "sum", "ci_low", "ci_high", "p", "n", "status"}`` (the interval is the sum's). None when
    lr and B do not vary separately (the design has rank < 3 or no residual degree of
    freedom)."""
    design, yy = _regressors([log_lr, log_batch], y)
    if yy.size < 4 or np.linalg.matrix_rank(design) < 3:
        return None
    coef, cov, df = _ols(design, yy)
    t = _contrast(coef, cov, df, np.array([0.0, 1.0, 1.0]), level)
    return {"coef_lr": float(coef[1]), "coef_batch": float(coef[2]), "sum": t["estimate"],
            "ci_low": t["ci_low"], "ci_high": t["ci_high"], "p": t["p"], "n": int(yy.size),
            "status": t["status"]}


def verdict(result: dict[str, Any], p_holm: float | None) -> str:
    """``">"``/``"<"`` (a larger / smaller than b) where the Holm-adjusted p < 1 - LEVEL, else
    "no significant difference"; "not testable" and "no interval" pass through."""
    if result["status"] != "tested":
        return result["status"]
    if p_holm is None or not p_holm < ALPHA:
        return NOT_SIGNIFICANT
    effect = result.get("ratio")
    sign = (effect - 1) if effect is not None else result.get("difference", 0.0)
    return ">" if sign > 0 else "<"


__all__ = ["ALPHA", "LEVEL", "NOT_SIGNIFICANT", "NOT_TESTABLE", "NO_INTERVAL", "Interval",
           "confidence_interval", "detectable", "finite", "fisher_counts", "holm", "is_positive",
           "proportion_interval",
           "ratio_test", "trend", "verdict", "welch"]
