"""Intervals and tests against textbook values and independent computations (scipy's own
tests, a least-squares fit reparametrized so that the tested contrast is a coefficient, Holm
by its definition)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from landscape.stats import (
    NO_INTERVAL,
    NOT_SIGNIFICANT,
    NOT_TESTABLE,
    Interval,
    confidence_interval,
    detectable,
    fisher_counts,
    holm,
    proportion_interval,
    ratio_test,
    trend,
    verdict,
    welch,
)


def test_t_interval_matches_the_textbook_computation() -> None:
    # n = 3: t_{0.975, 2} = 4.302653 (Student's t table); mean 2, s = 1
    ci = confidence_interval([1.0, 2.0, 3.0])
    half = 4.302653 * 1.0 / math.sqrt(3)
    assert ci.mean == pytest.approx(2.0)
    assert (ci.ci_low, ci.ci_high) == pytest.approx((2.0 - half, 2.0 + half), rel=1e-6)
    # n = 10, level 0.90: t_{0.95, 9} = 1.833113
    x = [4.1, 3.9, 4.4, 4.0, 4.3, 3.8, 4.2, 4.1, 3.7, 4.5]
    mean = sum(x) / 10
    s = math.sqrt(sum((v - mean) ** 2 for v in x) / 9)
    ci = confidence_interval(x, level=0.90)
    assert ci.ci_high - ci.mean == pytest.approx(1.833113 * s / math.sqrt(10),
                                                 rel=1e-6)
    assert ci.n == 10 and ci.level == 0.90


def test_log_interval_is_the_geometric_mean_interval_and_never_negative() -> None:
    x = [0.5, 8.0, 2.0]           # logs: mean log 2, so the geometric mean is exactly 2
    ci = confidence_interval(x, log=True)
    logs = np.log(x)
    half = 4.302653 * logs.std(ddof=1) / math.sqrt(3)
    assert ci.mean == pytest.approx(2.0, rel=1e-12)
    assert (ci.ci_low, ci.ci_high) == pytest.approx((2.0 * math.exp(-half),
                                                     2.0 * math.exp(half)), rel=1e-6)
    assert ci.ci_low > 0 and ci.scale == "log"
    assert confidence_interval(x).ci_low < 0   # the plain interval of the same values is not
    with pytest.raises(ValueError):
        confidence_interval([1.0, -1.0], log=True)


def test_one_seed_gives_a_mean_without_interval_and_nan_is_left_out() -> None:
    assert confidence_interval([5.0]) == Interval(5.0, None, None, 1)
    ci = confidence_interval([1.0, float("nan"), 3.0, None])
    assert ci.n == 2 and ci.mean == 2.0
    assert confidence_interval([]).mean is None


@pytest.mark.parametrize("log", [False, True])
def test_welch_matches_scipy_ttest_ind_unequal_variances(log: bool) -> None:
    rng = np.random.default_rng(0)
    for n_a, n_b in [(3, 3), (3, 5), (8, 4)]:
        a = np.exp(rng.normal(0.0, 0.3, n_a))
        b = np.exp(rng.normal(0.4, 0.8, n_b))
        za, zb = (np.log(a), np.log(b)) if log else (a, b)
        ref = sps.ttest_ind(za, zb, equal_var=False)
        ci = ref.confidence_interval(0.95)
        got = welch(a, b, log=log)
        assert got["p"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert got["df"] == pytest.approx(ref.df, rel=1e-9)
        lo, hi = (math.exp(ci.low), math.exp(ci.high)) if log else (ci.low, ci.high)
        assert (got["ci_low"], got["ci_high"]) == pytest.approx((lo, hi), rel=1e-9)
        effect = got["ratio"] if log else got["difference"]
        expected = math.exp(za.mean() - zb.mean()) if log else a.mean() - b.mean()
        assert effect == pytest.approx(expected, rel=1e-12)


def test_zero_variance_is_not_testable_and_one_seed_has_no_interval() -> None:
    assert welch([0.969, 0.969, 0.969], [0.972, 0.972, 0.972])["status"] == NOT_TESTABLE
    assert welch([1.0, 1.0], [1.0, 1.0], log=True)["status"] == NOT_TESTABLE
    one = welch([2.0], [1.0, 1.5, 1.2], log=True)
    assert one["status"] == NO_INTERVAL and one["p"] is None
    assert verdict(one, None) == NO_INTERVAL   # never "n.s."
    # one side constant, the other not: a proper Welch test (its df from the varying side)
    half = welch([1.0, 1.0, 1.0], [2.0, 2.5, 3.0])
    assert half["status"] == "tested" and half["df"] == pytest.approx(2.0)


def test_fisher_counts_match_scipy_and_one_image_in_360_is_no_difference() -> None:
    ref = sps.fisher_exact([[1047, 33], [1050, 30]])
    got = fisher_counts(1047, 1080, 1050, 1080)
    assert got["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert verdict(got, got["p"]) == NOT_SIGNIFICANT
    strong = fisher_counts(300, 360, 350, 360)
    assert strong["p"] < 1e-6 and verdict(strong, strong["p"]) == "<"
    # Katz interval of the log ratio of proportions, written out
    se = math.sqrt(1 / 300 - 1 / 360 + 1 / 350 - 1 / 360)
    log_ratio = math.log(300 / 350)
    assert strong["ci_low"] == pytest.approx(math.exp(log_ratio - 1.959964 * se), rel=1e-6)


def _holm_by_definition(p: list[float]) -> list[float]:
    """Holm's adjusted p of hypothesis i: the smallest level at which the step-down procedure
    rejects it, found by trying every candidate level (each p times a multiplier)."""
    m = len(p)
    order = np.argsort(p)
    candidates = sorted({min(1.0, k * q) for q in p for k in range(1, m + 1)} | {1.0})
    out = [1.0] * m
    for alpha in reversed(candidates):
        rejected = set()
        for rank, i in enumerate(order):
            if p[i] * (m - rank) <= alpha:   # p_(j) <= alpha / (m - j + 1)
                rejected.add(int(i))
            else:
                break
        for i in rejected:
            out[i] = alpha
    return out


def test_holm_matches_its_step_down_definition() -> None:
    rng = np.random.default_rng(1)
    for m in (1, 2, 5, 9):
        p = list(rng.uniform(0, 0.2, m))
        assert holm(p) == pytest.approx(_holm_by_definition(p), abs=1e-12)
    assert holm([0.01, None, 0.04]) == [0.02, None, 0.04]


def test_trend_matches_scipy_linregress() -> None:
    rng = np.random.default_rng(2)
    x = np.repeat(np.log([1e-4, 8e-4, 6e-3]), 3)
    y = -0.3 * x + rng.normal(0, 0.2, x.size)
    ref = sps.linregress(x, y)
    got = trend(x, y)
    t = sps.t.ppf(0.975, x.size - 2)
    assert got["slope"] == pytest.approx(ref.slope, rel=1e-12)
    assert got["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(
        (ref.slope - t * ref.stderr, ref.slope + t * ref.stderr), rel=1e-9)
    assert trend([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["status"] == NO_INTERVAL
    assert trend([1.0, 2.0], [1.0, 2.0])["status"] == NO_INTERVAL


def test_ratio_test_equals_the_coefficient_test_of_a_reparametrized_fit() -> None:
    """y ~ a + b1 log lr + b2 log B is the same model as y ~ a + c log lr + b2 (log B - log
    lr) with c = b1 + b2; the t-test of c there is scipy's t distribution on an ordinary
    coefficient (its standard error from the inverse normal matrix)."""
    rng = np.random.default_rng(3)
    lr, b = zip(*itertools.product([0.025, 0.2], [32, 256]), strict=True)
    log_lr, log_b = np.repeat(np.log(lr), 3), np.repeat(np.log(b), 3)
    y = 0.5 * log_lr - 0.2 * log_b + rng.normal(0, 0.1, log_lr.size)
    got = ratio_test(log_lr, log_b, y)
    design = np.column_stack([np.ones_like(y), log_lr, log_b - log_lr])
    coef = np.linalg.solve(design.T @ design, design.T @ y)
    resid = y - design @ coef
    df = y.size - 3
    se = math.sqrt(resid @ resid / df * np.linalg.inv(design.T @ design)[1, 1])
    assert got["sum"] == pytest.approx(coef[1], rel=1e-9)
    assert got["coef_batch"] == pytest.approx(coef[2], rel=1e-9)
    assert got["p"] == pytest.approx(2 * sps.t.sf(abs(coef[1]) / se, df), rel=1e-9)
    assert got["ci_high"] - got["sum"] == pytest.approx(sps.t.ppf(0.975, df) * se, rel=1e-9)
    # lr and B that move together (only their ratio varies): no separate test
    assert ratio_test(log_lr, log_lr, y) is None


@pytest.mark.parametrize("ratio, p_holm, expected", [
    (2.0, 0.01, ">"), (0.5, 0.01, "<"), (0.5, 0.05, NOT_SIGNIFICANT),
    (0.5, 0.2, NOT_SIGNIFICANT),
])
def test_verdict_follows_the_holm_adjusted_p(ratio, p_holm, expected) -> None:
    result = {"status": "tested", "ratio": ratio}
    assert verdict(result, p_holm) == expected


def test_accuracy_interval_is_the_exact_binomial_interval_of_the_counts() -> None:
    ci = proportion_interval(349, 360)
    # Clopper-Pearson by its definition: beta quantiles
    assert ci.ci_low == pytest.approx(sps.beta.ppf(0.025, 349, 12), rel=1e-9)
    assert ci.ci_high == pytest.approx(sps.beta.ppf(0.975, 350, 11), rel=1e-9)
    assert ci.mean == 349 / 360 and ci.ci_low < ci.mean < ci.ci_high


def test_detectable_effect_has_the_stated_power_under_the_noncentral_t() -> None:
    for df, alpha in [(10, 0.05), (10, 0.05 / 8), (30, 0.01)]:
        d = detectable(0.1, df, alpha, power=0.8)
        crit = sps.t.ppf(1 - alpha / 2, df)
        power = sps.nct.sf(crit, df, d / 0.1) + sps.nct.cdf(-crit, df, d / 0.1)
        assert power == pytest.approx(0.8, abs=1e-6)
    # the large-df limit: the normal quantiles, z_{0.975} + z_{0.8}
    assert detectable(1.0, 10**6) == pytest.approx(1.959964 + 0.841621, rel=1e-4)
