"""Intervals over seeds against textbook computations, and the non-overlap rule."""

from __future__ import annotations

import math

import pytest

from landscape.stats import Interval, compare, confidence_interval


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


def test_one_seed_gives_a_mean_without_interval_and_nan_is_left_out() -> None:
    assert confidence_interval([5.0]) == Interval(5.0, None, None, 1)
    ci = confidence_interval([1.0, float("nan"), 3.0, None])
    assert ci.n == 2 and ci.mean == 2.0
    assert confidence_interval([]).mean is None


@pytest.mark.parametrize("a, b, verdict", [
    ((2.0, 1.5, 2.5), (1.0, 0.5, 1.4), ">"),
    ((1.0, 0.5, 1.4), (2.0, 1.5, 2.5), "<"),
    ((2.0, 1.5, 2.5), (1.2, 0.5, 1.5), "no significant difference"),  # touching
    ((2.0, 1.0, 3.0), (2.5, 2.0, 3.5), "no significant difference"),
    ((2.0, None, None), (9.0, 8.0, 10.0), "no significant difference"),  # one seed
])
def test_difference_is_called_only_where_intervals_do_not_overlap(a, b, verdict) -> None:
    assert compare(Interval(*a, 3), Interval(*b, 3)) == verdict
