"""Gradient noise of SGD at a point: covariance trace, noise scale, implicit regularizer.

Notation: ``g_i`` is the gradient of sample i's loss, ``G = (1/N) sum_i g_i`` the full-batch
gradient, and ``Gamma = (1/N) sum_i ||g_i - G||^2`` the trace of the per-sample gradient
covariance with the ``1/N`` normalization (the covariance of one uniformly drawn sample's
gradient, as in McCandlish et al. 2018's i.i.d. model and Smith et al. 2021's Gamma).

- :func:`gradient_noise`: everything exactly, from the per-sample gradient norms of one
  backward pass (Goodfellow 2015's identities, :mod:`landscape.per_sample`), or from
  per-sample gradients accumulated in chunks (Chan et al.'s pairwise update, in float64;
  never N x P in memory).
- :func:`noise_scale_two_batch`: McCandlish et al. 2018 ("An empirical model of large-batch
  training"), Appendix A: unbiased estimates of ``|G|^2`` and ``tr(Sigma)`` from gradient
  norms at two batch sizes, for models too large for per-sample gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape.analysis.results import Cost, MeasureResult, measure_point, recorded_settings
from landscape.errors import LandscapeError, check_int, check_positive, unknown_name
from landscape.objective import accepts_model

#: The per-quantity names of :meth:`NoiseResult.measures` (and ``landscape noise --json``).
NOISE_MEASURES = ("grad_norm_sq", "trace_cov", "noise_scale", "implicit_regularizer",
                  "gradient_diversity", "gradient_snr")
#: ``gradient_noise`` methods: per-sample gradient norms from one backward pass, or
#: per-sample gradients.
NOISE_METHODS = ("norms", "per_sample")


@dataclass
class NoiseResult:
    """Gradient-noise statistics at one point; ``value`` is the noise scale B_simple.

    - ``grad_norm_sq``: ``|G|^2`` (loss^2 / parameter^2).
    - ``trace_cov``: ``Gamma = tr(Sigma)`` with 1/N; ``trace_cov_unbiased`` uses 1/(N-1).
    - ``noise_scale``: ``B_simple = tr(Sigma) / |G|^2`` (McCandlish et al. 2018), in samples.
    - ``minibatch_error``: ``E||G_B - G||^2 = (N-B) / ((N-1) B) * Gamma`` for a batch of B
      samples drawn without replacement (Smith et al. 2021).
    - ``implicit_regularizer``: ``(lr/4) * minibatch_error``, the term SGD's modified loss adds
      to the full-batch one beyond gradient descent's own ``(lr/4)|G|^2`` (Smith et al. 2021,
      "On the origin of implicit regularization in stochastic gradient descent"), in loss units.
    - ``gradient_diversity``: ``sum_i ||g_i||^2 / ||sum_i g_i||^2`` (Yin et al. 2018).
    - ``gradient_snr``: ``|G|^2 / E||G_B - G||^2``, the signal-to-noise power ratio of the
      minibatch gradient at batch size B; about ``B / B_simple`` for ``B << N``, so it crosses
      1 near the noise scale (McCandlish et al. 2018, Sec. 2.2).
    """

    value: float
    stderr: float | None
    settings: dict[str, Any]
    cost: dict[str, float]
    grad_norm_sq: float
    trace_cov: float
    trace_cov_unbiased: float
    noise_scale: float
    minibatch_error: float
    implicit_regularizer: float
    gradient_diversity: float
    gradient_snr: float
    grad: Tensor | None = field(default=None, repr=False)

    def measures(self) -> dict[str, MeasureResult]:
        """Each quantity of :data:`NOISE_MEASURES` as a :class:`MeasureResult`."""
        extra = {"trace_cov": {"unbiased": self.trace_cov_unbiased},
                 "implicit_regularizer": {"minibatch_error": self.minibatch_error}}
        return {name: MeasureResult(name, float(getattr(self, name)), None, self.settings,
                                    self.cost, dict(extra.get(name, {})))
                for name in NOISE_MEASURES}


def _ratio(a: float, b: float) -> float:
    if b == 0:
        return math.inf if a > 0 else math.nan
    return a / b


@accepts_model
def gradient_noise(objective: Any, theta: Tensor | None = None, batch_size: int = 128,
                   lr: float = 0.1, chunk: int | None = None,
                   method: str = "norms") -> NoiseResult:
    """Exact gradient-noise statistics at a point (see :class:`NoiseResult`).

    ``batch_size`` (B, 1..N) and ``lr`` only enter ``minibatch_error``,
    ``implicit_regularizer`` and ``gradient_snr``. ``method``:

    - ``"norms"`` (default): every statistic needs only ``G`` and ``sum_i ||g_i||^2``, which
      one backward pass gives for Linear, Conv2d and eval-mode BatchNorm layers without
      forming per-sample gradients (``Objective.per_sample_sq_norms``; other layers' parameters
      by per-sample gradients). ``Gamma = sum_i ||g_i||^2 / N - |G|^2`` in float64; it loses
      relative accuracy when ``Gamma << |G|^2`` (noise scale far below one sample).
    - ``"per_sample"``: per-sample gradients in chunks of ``chunk`` samples (default: the
      objective's memory budget), deviations accumulated by Chan et al.'s pairwise update in
      float64 (no cancellation); memory ``chunk * P`` floats.
    """
    batch_size = check_int("batch_size", batch_size)
    check_positive("lr", lr)
    if method not in NOISE_METHODS:
        raise unknown_name("method", method, NOISE_METHODS)
    if chunk is not None and method != "per_sample":
        raise LandscapeError("chunk sets the per-sample-gradient calls of method='per_sample'")
    n = objective.n
    if batch_size > n:
        raise LandscapeError(f"batch size {batch_size} is larger than the data split "
                             f"({n} samples)")
    theta = measure_point(objective, theta)
    cost = Cost(objective)
    if method == "norms":
        g, sq = objective.per_sample_sq_norms(theta)
        mean = g.double()
        grad_norm_sq = float(mean @ mean)
        m2 = max(float(sq.sum()) - n * grad_norm_sq, 0.0)
    else:
        p = theta.numel()
        chunk = objective.per_sample_chunk(p) if chunk is None else check_int("chunk", chunk)
        mean = torch.zeros(p, dtype=torch.float64, device=objective.device)
        m2, count = 0.0, 0
        for start in range(0, n, chunk):
            idx = torch.arange(start, min(n, start + chunk), device=objective.device)
            g = objective.per_sample_grads(theta, idx).double()
            k = g.shape[0]
            mean_k = g.mean(0)
            m2_k = float(((g - mean_k) ** 2).sum())
            delta = mean_k - mean
            total = count + k
            m2 += m2_k + float(delta @ delta) * count * k / total
            mean += delta * (k / total)
            count = total
        grad_norm_sq = float(mean @ mean)
    gamma = m2 / n
    minibatch = (n - batch_size) / ((n - 1) * batch_size) * gamma if n > 1 else 0.0
    sum_sq = m2 + n * grad_norm_sq  # sum_i ||g_i||^2
    return NoiseResult(
        value=_ratio(gamma, grad_norm_sq), stderr=None,
        settings=recorded_settings(objective, batch_size=batch_size, lr=lr, covariance="1/N"),
        cost=cost.result(), grad_norm_sq=grad_norm_sq, trace_cov=gamma,
        trace_cov_unbiased=m2 / (n - 1) if n > 1 else math.nan,
        noise_scale=_ratio(gamma, grad_norm_sq), minibatch_error=minibatch,
        implicit_regularizer=lr / 4 * minibatch,
        gradient_diversity=_ratio(sum_sq, n * n * grad_norm_sq),
        gradient_snr=_ratio(grad_norm_sq, minibatch),
        grad=mean.to(objective.dtype))


@dataclass
class TwoBatchResult:
    """McCandlish et al.'s two-batch estimates; ``value`` is B_simple (ratio of averages).

    ``grad_norm_sq`` and ``trace_cov`` are unbiased (batches drawn with replacement), each with
    its standard error over the pairs; ``stderr`` of B_simple is the delta-method one.
    """

    value: float
    stderr: float | None
    settings: dict[str, Any]
    cost: dict[str, float]
    grad_norm_sq: float
    grad_norm_sq_stderr: float
    trace_cov: float
    trace_cov_stderr: float


def two_batch_estimates(small_sq: Any, big_sq: Any, b_small: int, b_big: int,
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``(|G|^2, tr Sigma)`` estimates from ``|G_small|^2`` and ``|G_big|^2`` (McCandlish App. A).

    ``|G|^2 ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)``,
    ``S ~ (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big)``; linear, so unbiased whenever
    ``E|G_B|^2 = |G|^2 + tr(Sigma) / B`` (i.i.d. samples).
    """
    small_sq, big_sq = np.asarray(small_sq, float), np.asarray(big_sq, float)
    g2 = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    s = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big)
    return g2, s


@accepts_model
def noise_scale_two_batch(objective: Any, theta: Tensor | None = None, b_small: int = 32,
                          b_big: int = 256, n_pairs: int = 32, seed: int = 0) -> TwoBatchResult:
    """Gradient noise scale from minibatch gradient norms at two batch sizes.

    Each of ``n_pairs`` pairs draws ``b_big`` samples uniformly with replacement (so the
    samples are i.i.d. and the estimators are exactly unbiased for ``|G|^2`` and
    ``Gamma = tr(Sigma)``, 1/N normalization); its first ``b_small`` form the small batch (as a
    data-parallel worker's share, McCandlish et al. 2018). B_simple = mean S / mean |G|^2.
    Cost: ``n_pairs`` gradients of ``b_big`` samples (``n_pairs * b_big / N`` passes).
    """
    b_small = check_int("b_small", b_small)
    b_big = check_int("b_big", b_big)
    n_pairs = check_int("n_pairs", n_pairs, minimum=2)
    if b_small >= b_big:
        raise LandscapeError(f"b_small ({b_small}) must be smaller than b_big ({b_big})")
    if b_big > objective.n:
        raise LandscapeError(f"batch size {b_big} is larger than the data split "
                             f"({objective.n} samples)")
    theta = measure_point(objective, theta)
    cost = Cost(objective)
    gen = torch.Generator().manual_seed(seed)
    small_sq, big_sq = [], []
    for _ in range(n_pairs):
        idx = torch.randint(objective.n, (b_big,), generator=gen)
        first = objective.subset(idx[:b_small])
        rest = objective.subset(idx[b_small:])
        g_small = first.grad(theta).double()
        g_big = (b_small * g_small + (b_big - b_small) * rest.grad(theta).double()) / b_big
        cost.add_subset(first)
        cost.add_subset(rest)
        small_sq.append(float(g_small @ g_small))
        big_sq.append(float(g_big @ g_big))
    g2, s = two_batch_estimates(small_sq, big_sq, b_small, b_big)
    g2_mean, s_mean = float(g2.mean()), float(s.mean())
    se = math.sqrt(n_pairs)
    ratio = _ratio(s_mean, g2_mean)
    # delta method for the ratio of two means
    cov = np.cov(np.stack([s, g2]))
    var = (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / n_pairs / g2_mean**2
    return TwoBatchResult(
        value=ratio, stderr=float(math.sqrt(max(var, 0.0))),
        settings=recorded_settings(objective, b_small=b_small, b_big=b_big, n_pairs=n_pairs,
                                  seed=seed, sampling="with replacement"),
        cost=cost.result(), grad_norm_sq=g2_mean,
        grad_norm_sq_stderr=float(g2.std(ddof=1) / se), trace_cov=s_mean,
        trace_cov_stderr=float(s.std(ddof=1) / se))
