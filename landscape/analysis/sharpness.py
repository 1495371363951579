"""Sharpness and flatness of a minimum, each measured one careful way on an :class:`Objective`.

- :func:`epsilon_sharpness`: Keskar et al. 2017 ("On large-batch training for deep learning:
  generalization gap and sharp minima"), Metric 2.1, in the full space or a random subspace.
- :func:`adaptive_sharpness`: worst- and average-case (adaptive) sharpness, Andriushchenko et
  al. 2023 ("A modern look at the relationship between sharpness and generalization"); the
  adaptive scaling by ``|theta|`` is ASAM's (Kwon et al. 2021).
- :func:`sam_sharpness`: the one-step SAM sharpness ``L(theta + rho g/||g||) - L(theta)``
  (Foret et al. 2021).
- :func:`pac_bayes_flatness`: the largest Gaussian weight noise the training error (or loss)
  tolerates, reported as ``1/sigma^2`` (Jiang et al. 2020, "Fantastic generalization
  measures and where to find them").
- :func:`fisher_rao_norm`: the empirical Fisher-Rao norm (Liang et al. 2019, "Fisher-Rao
  metric, geometry, and complexity of neural networks").

All perturbations apply to the parameters only; BatchNorm layers use their running statistics
(the Objective's ``bn="eval"``), and the model itself is never touched (the Objective holds a
copy). Every function returns a :class:`MeasureResult` whose ``cost`` counts passes over the
Objective's data split (``forward``, ``grad``, ``hvp``, ``per_sample``, ``jvp``); a pass over
a subset of m samples counts ``m / n``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import Bounds, minimize
from torch import Tensor
from torch.func import jvp, vmap

from landscape.errors import LandscapeError, check_int, check_positive, unknown_name
from landscape.objective import Objective

NORMS = ("l2", "linf")
KINDS = ("worst", "average")
CRITERIA = ("error", "loss")

#: The measures that :func:`compute_sharpness` (and ``landscape sharpness``) knows.
MEASURES = ("epsilon_sharpness", "adaptive_worst_l2", "adaptive_worst_linf",
            "adaptive_average_l2", "sam_sharpness", "pac_bayes_flatness", "fisher_rao_norm")

#: Default radii of the rho-type measures (adaptive ones are relative to ``|theta|``).
DEFAULT_RHO = {"adaptive_worst_l2": 0.1, "adaptive_worst_linf": 2e-3,
               "adaptive_average_l2": 0.05, "sam_sharpness": 0.05}

# Auto-PGD (Croce & Hein 2020) constants, as used by Andriushchenko et al. 2023.
_APGD_MOMENTUM = 0.75
_APGD_MIN_UPDATE_RATIO = 0.75


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


# ------------------------------------------------------------------------------------ helpers
class _Cost:
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


def _theta(objective: Any, theta: Tensor | None) -> Tensor:
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


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


def _point_chunk(numel: int) -> int:
    """Perturbed points materialized at once: at most 64 and ``2**24`` floats."""
    return max(1, min(64, 2**24 // max(1, numel)))


def _scale(theta: Tensor, adaptive: bool, offset: float) -> Tensor:
    """Per-coordinate scale of a perturbation: ``|theta| + offset`` if adaptive, else 1."""
    if adaptive:
        return theta.abs() + offset
    return torch.ones_like(theta)


def _batches(objective: Any, batch_size: int | None, n_batches: int | None,
             seed: int) -> list[Tensor | None]:
    """Disjoint random batches of ``batch_size`` samples (``[None]``: the whole split)."""
    if batch_size is None:
        if n_batches not in (None, 1):
            raise LandscapeError("n_batches needs a batch_size")
        return [None]
    batch_size = check_int("batch_size", batch_size)
    if batch_size > objective.n:
        raise LandscapeError(
            f"batch size {batch_size} is larger than the data split ({objective.n} samples)")
    most = objective.n // batch_size
    n_batches = most if n_batches is None else check_int("n_batches", n_batches)
    if n_batches > most:
        raise LandscapeError(f"{n_batches} disjoint batches of {batch_size} need "
                             f"{n_batches * batch_size} samples; the split has {objective.n}")
    perm = torch.randperm(objective.n, generator=torch.Generator().manual_seed(seed))
    return [perm[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)]


def _settings(objective: Any, **kwargs: Any) -> dict[str, Any]:
    return {**kwargs, "objective": objective.settings()}


# --------------------------------------------------------------------------- Keskar et al.
def subspace_basis(numel: int, dim: int, seed: int = 0) -> Tensor:
    """The ``[P, dim]`` float64 CPU matrix of i.i.d. N(0, 1) entries of the subspace variant."""
    gen = _generator(torch.device("cpu"), seed)
    return torch.randn(numel, dim, generator=gen, dtype=torch.float64)


def epsilon_sharpness(objective: Any, theta: Tensor | None = None, eps: float = 1e-3,
                      subspace_dim: int | None = None, maxiter: int = 10, seed: int = 0,
                      n_starts: int = 1) -> MeasureResult:
    """Keskar et al.'s epsilon-sharpness (Metric 2.1), in percent of ``1 + f(theta)``.

    ``100 * (max_{z in C} f(theta + A z) - f(theta)) / (1 + f(theta))`` where, in the full
    space (``A = I``), ``C = {|z_i| <= eps (|theta_i| + 1)}``; with ``subspace_dim = p``,
    ``A`` is a ``[P, p]`` matrix of standard Gaussian entries (the paper says only "randomly
    generated") and ``C = {|y_i| <= eps (|(A^+ theta)_i| + 1)}``. The maximum is sought with
    scipy's L-BFGS-B under these box bounds for ``maxiter`` iterations (10 in the paper),
    started at a uniformly random point of the box (at an exact minimizer the gradient
    vanishes and L-BFGS-B would stop at once); the largest loss seen at any evaluated point
    (``theta`` itself included) is kept. ``n_starts > 1`` restarts from further random points.
    Cost: about ``maxiter`` to ``2 maxiter`` gradient passes per start.
    """
    check_positive("eps", eps)
    maxiter = check_int("maxiter", maxiter)
    n_starts = check_int("n_starts", n_starts)
    theta = _theta(objective, theta)
    cost = _Cost(objective)
    f0 = objective.loss(theta)
    if subspace_dim is None:
        basis = None
        bound = (eps * (theta.double().abs() + 1.0)).cpu().numpy()
    else:
        subspace_dim = check_int("subspace_dim", subspace_dim)
        basis = subspace_basis(theta.numel(), subspace_dim, seed).to(objective.device)
        coords = torch.linalg.lstsq(basis, theta.double()[:, None]).solution[:, 0]  # A^+ theta
        bound = (eps * (coords.abs() + 1.0)).cpu().numpy()
    best = {"loss": f0, "evals": 0}

    def negative(y: np.ndarray) -> tuple[float, np.ndarray]:
        z = torch.as_tensor(y, dtype=torch.float64, device=objective.device)
        delta = z if basis is None else basis @ z
        loss, grad = objective.loss_and_grad(theta + delta.to(objective.dtype))
        best["evals"] += 1
        if math.isfinite(loss) and loss > best["loss"]:
            best["loss"] = loss
        grad = grad.double()
        grad = grad if basis is None else basis.T @ grad
        return -loss, -grad.cpu().numpy()

    rng = np.random.default_rng(seed)
    for _ in range(n_starts):
        start = rng.uniform(-bound, bound)
        minimize(negative, start, jac=True, method="L-BFGS-B", bounds=Bounds(-bound, bound),
                  options={"maxiter": maxiter})
    value = 100.0 * (best["loss"] - f0) / (1.0 + f0)
    return MeasureResult(
        "epsilon_sharpness", float(value), None,
        _settings(objective, eps=eps, subspace_dim=subspace_dim, maxiter=maxiter, seed=seed,
                  n_starts=n_starts),
        cost.result(), {"loss": f0, "max_loss": best["loss"], "evaluations": best["evals"]})


# ------------------------------------------------------------- Andriushchenko et al. 2023
def _project(u: Tensor, rho: float, norm: str) -> Tensor:
    if norm == "linf":
        return u.clamp(-rho, rho)
    length = float(u.norm())
    return u * (rho / length) if length > rho else u


def _apgd_checkpoints(n_iters: int) -> set[int]:
    """Iterations where Auto-PGD may halve its step (Croce & Hein 2020, Sec. 3.1)."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return {math.ceil(q * n_iters) for q in p[1:] if math.ceil(q * n_iters) < n_iters}


def _worst_case(sub: Any, theta: Tensor, scale: Tensor, rho: float, norm: str, n_iters: int,
                gen: torch.Generator) -> tuple[float, float]:
    """Largest loss over Auto-PGD iterates in ``{theta + scale * u : ||u||_p <= rho}``."""
    f0 = sub.loss(theta)
    if norm == "linf":
        u = (2 * torch.rand(theta.shape, generator=gen, device=theta.device,
                            dtype=theta.dtype) - 1) * rho
    else:
        u = torch.randn(theta.shape, generator=gen, device=theta.device, dtype=theta.dtype)
        u = u * (rho / float(u.norm()))
    best_loss, best_u = f0, torch.zeros_like(u)
    u_prev = u.clone()
    step = 2.0 * rho
    checkpoints = _apgd_checkpoints(n_iters)
    updates, last_cp, step_at_cp, best_at_cp = 0, 0, step, best_loss
    for i in range(n_iters):
        loss, grad = sub.loss_and_grad(theta + scale * u)
        if loss > best_loss:
            best_loss, best_u = loss, u.clone()
            updates += 1
        g = grad * scale  # gradient with respect to u
        if norm == "linf":
            direction = g.sign()
        else:
            length = float(g.norm())
            direction = g / length if length > 0 else torch.zeros_like(g)
        z = _project(u + step * direction, rho, norm)
        if i == 0:
            new = z
        else:
            new = _project(u + _APGD_MOMENTUM * (z - u) + (1 - _APGD_MOMENTUM) * (u - u_prev),
                           rho, norm)
        u_prev, u = u, new
        if i + 1 in checkpoints:
            too_few = updates < _APGD_MIN_UPDATE_RATIO * (i + 1 - last_cp)
            stalled = step == step_at_cp and best_loss == best_at_cp
            step_at_cp, best_at_cp, last_cp, updates = step, best_loss, i + 1, 0
            if too_few or stalled:
                step /= 2.0
                u, u_prev = best_u.clone(), best_u.clone()
    final = sub.loss(theta + scale * u)
    return f0, max(best_loss, final)


def adaptive_sharpness(objective: Any, theta: Tensor | None = None, rho: float | None = None,
                       norm: str = "l2", adaptive: bool = True, kind: str = "worst",
                       n_iters: int = 20, batch_size: int | None = None,
                       n_batches: int | None = None, n_samples: int = 64, offset: float = 0.0,
                       seed: int = 0) -> MeasureResult:
    """Worst- or average-case (adaptive) sharpness, an increase of the mean loss.

    Perturbations ``delta = c * u`` with ``c = |theta| + offset`` (adaptive; ASAM's
    normalization, scale-invariant for ``offset = 0``) or ``c = 1``, and ``||u||_p <= rho``.

    - ``kind="worst"``: ``max_delta L_B(theta + delta) - L_B(theta)``, maximized for each
      batch B of ``batch_size`` samples (None: the whole split as one batch) by Auto-PGD
      (Croce & Hein 2020) on u as Andriushchenko et al. do: ``n_iters`` steps (default 20),
      initial step ``2 rho`` halved at Auto-PGD's checkpoints when fewer than 75% of the
      steps improved or nothing changed (restarting from the best point), momentum 0.75,
      normalized-gradient steps and projection onto the ball ``||u||_2 <= rho`` (the
      ellipsoid ``||delta / c||_2 <= rho``) for l2, sign steps and clipping for linf, from a
      random start on the sphere (l2) or in the box (linf). The largest loss over the
      iterates counts; the increases are averaged over ``n_batches`` disjoint random batches
      (default: as many as fit), with the standard error over batches when there are several.
      Cost: ``n_iters`` gradient passes and 2 forward passes per batch.
    - ``kind="average"``: ``E_u L(theta + c u) - L(theta)`` with ``u ~ N(0, rho^2 I)`` (l2)
      or uniform in ``[-rho, rho]^P`` (linf), by Monte Carlo over ``n_samples`` draws, each
      used antithetically (``(L(+) + L(-))/2``, which cancels the gradient term's noise),
      evaluated on the union of the batches (in expectation the same as averaging per batch).
      ``stderr`` is the Monte Carlo standard error. Cost: ``2 n_samples + 1`` forward passes.

    ``rho`` defaults to :data:`DEFAULT_RHO` of the matching measure.
    """
    if norm not in NORMS:
        raise unknown_name("norm", norm, NORMS)
    if kind not in KINDS:
        raise unknown_name("sharpness kind", kind, KINDS)
    if rho is None:
        rho = DEFAULT_RHO[f"adaptive_{kind}_{norm}" if f"adaptive_{kind}_{norm}" in DEFAULT_RHO
                          else f"adaptive_worst_{norm}"]
    check_positive("rho", rho)
    if offset < 0:
        raise LandscapeError(f"offset must be >= 0, got {offset}")
    n_iters = check_int("n_iters", n_iters)
    n_samples = check_int("n_samples", n_samples, minimum=2)
    theta = _theta(objective, theta)
    cost = _Cost(objective)
    batches = _batches(objective, batch_size, n_batches, seed)
    scale = _scale(theta, adaptive, offset)
    name = f"{'adaptive' if adaptive else 'plain'}_{kind}_{norm}"
    settings = _settings(objective, rho=rho, norm=norm, adaptive=adaptive, kind=kind,
                         offset=offset, seed=seed, batch_size=batch_size,
                         n_batches=len(batches) if batch_size else None,
                         **({"n_iters": n_iters} if kind == "worst" else
                            {"n_samples": n_samples, "antithetic": True}))
    gen = _generator(objective.device, seed)
    if kind == "worst":
        increases = []
        for idx in batches:
            sub = objective if idx is None else objective.subset(idx)
            f0, worst = _worst_case(sub, theta, scale, rho, norm, n_iters, gen)
            cost.add_subset(sub)
            increases.append(worst - f0)
        inc = np.asarray(increases)
        stderr = float(inc.std(ddof=1) / math.sqrt(inc.size)) if inc.size > 1 else None
        return MeasureResult(name, float(inc.mean()), stderr, settings, cost.result(),
                             {"batches": int(inc.size)})
    sub = objective if batches == [None] else objective.subset(torch.cat(batches))
    f0 = sub.loss(theta)
    diffs = []
    chunk = _point_chunk(theta.numel())
    for start in range(0, n_samples, chunk):
        k = min(chunk, n_samples - start)
        if norm == "l2":
            u = torch.randn((k, theta.numel()), generator=gen, device=theta.device,
                            dtype=theta.dtype) * rho
        else:
            u = (2 * torch.rand((k, theta.numel()), generator=gen, device=theta.device,
                                dtype=theta.dtype) - 1) * rho
        delta = u * scale
        losses = sub.evaluate(torch.cat([theta + delta, theta - delta]))["loss"]
        diffs.append(((losses[:k] + losses[k:]) / 2 - f0).numpy())
    d = np.concatenate(diffs)
    cost.add_subset(sub)
    return MeasureResult(name, float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size)),
                         settings, cost.result(), {"loss": f0})


def sam_sharpness(objective: Any, theta: Tensor | None = None, rho: float = 0.05,
                  adaptive: bool = False, offset: float = 0.0) -> MeasureResult:
    """One-step SAM sharpness ``L(theta + delta) - L(theta)``, ``delta = rho g / ||g||``.

    With ``adaptive`` (ASAM, Kwon et al. 2021) ``delta = rho c^2 g / ||c g||``,
    ``c = |theta| + offset``. Zero when the gradient is exactly zero. Cost: one gradient pass
    and one forward pass.
    """
    check_positive("rho", rho)
    theta = _theta(objective, theta)
    cost = _Cost(objective)
    f0, grad = objective.loss_and_grad(theta)
    c = _scale(theta, adaptive, offset)
    length = float((c * grad).norm())
    value = 0.0
    if length > 0:
        value = objective.loss(theta + rho * c * c * grad / length) - f0
    return MeasureResult("sam_sharpness", float(value), None,
                         _settings(objective, rho=rho, adaptive=adaptive, offset=offset),
                         cost.result(), {"loss": f0, "grad_norm": float(grad.norm())})


# ------------------------------------------------------------------ Jiang et al. PAC-Bayes
def pac_bayes_flatness(objective: Any, theta: Tensor | None = None, target: float = 0.1,
                       magnitude_aware: bool = False, eps_offset: float = 1e-3,
                       criterion: str = "error", n_samples: int = 32, seed: int = 0,
                       sigma_init: float = 1e-2, rtol: float = 1e-3,
                       sigma_range: tuple[float, float] = (1e-10, 1e3)) -> MeasureResult:
    """PAC-Bayes flatness ``1/sigma^2`` (Jiang et al. 2020), in units of 1/parameter^2.

    ``sigma`` is the largest noise level for which Gaussian weight noise raises the training
    error (``criterion="error"``, classification only) or the mean loss (``"loss"``) by at most
    ``target``, in expectation: ``u_i ~ N(0, sigma^2)``, or magnitude-aware
    ``N(0, sigma^2 theta_i^2 + eps_offset^2)`` (then sigma is relative). The expectation is a
    Monte Carlo mean over ``n_samples`` fixed standard-normal draws, each used antithetically,
    scaled by sigma (common random numbers, so every bisection step sees the same noise and the
    result is reproducible); sigma is bracketed by factors of 4 from ``sigma_init`` and then
    bisected on log sigma until the bracket's ratio is below ``1 + rtol``; the lower end is
    reported. ``extra``: ``sigma``, the ``increase`` at sigma and its Monte Carlo
    ``increase_stderr``. Cost: ``2 n_samples`` forward passes per step (about 15 steps).
    """
    if criterion not in CRITERIA:
        raise unknown_name("criterion", criterion, CRITERIA)
    if criterion == "error" and not objective.is_classification:
        raise LandscapeError("criterion 'error' needs a classification task; use 'loss'")
    check_positive("target", target)
    check_positive("sigma_init", sigma_init)
    check_positive("rtol", rtol)
    if eps_offset < 0:
        raise LandscapeError(f"eps_offset must be >= 0, got {eps_offset}")
    n_samples = check_int("n_samples", n_samples, minimum=2)
    theta = _theta(objective, theta)
    cost = _Cost(objective)
    base_stats = objective.evaluate(theta[None])
    key = "loss" if criterion == "loss" else "acc"

    def crit(stats: dict[str, Tensor]) -> Tensor:
        return stats["loss"] if key == "loss" else 1.0 - stats["acc"]

    base = float(crit(base_stats)[0])
    chunk = _point_chunk(theta.numel())

    def increase(sigma: float) -> tuple[float, float]:
        if magnitude_aware:
            std = torch.sqrt(sigma**2 * theta**2 + eps_offset**2)
        else:
            std = torch.full_like(theta, sigma)
        diffs = []
        for j, start in enumerate(range(0, n_samples, chunk)):
            k = min(chunk, n_samples - start)
            gen = _generator(objective.device, seed * 1_000_003 + j)
            z = torch.randn((k, theta.numel()), generator=gen, device=theta.device,
                            dtype=theta.dtype)
            delta = z * std
            values = crit(objective.evaluate(torch.cat([theta + delta, theta - delta])))
            diffs.append(((values[:k] + values[k:]) / 2 - base).numpy())
        d = np.concatenate(diffs)
        return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))

    low_limit, high_limit = sigma_range
    seen: dict[float, tuple[float, float]] = {}

    def h(sigma: float) -> float:
        seen[sigma] = increase(sigma)
        return seen[sigma][0]

    sigma = sigma_init
    if h(sigma) <= target:
        lo = sigma
        while True:
            hi = lo * 4
            if hi > high_limit:
                raise LandscapeError(
                    f"weight noise up to sigma={high_limit:g} never raised the training "
                    f"{criterion} by {target}; PAC-Bayes flatness is unbounded here")
            if h(hi) > target:
                break
            lo = hi
    else:
        hi = sigma
        while True:
            lo = hi / 4
            if lo < low_limit:
                raise LandscapeError(
                    f"even sigma={low_limit:g} raises the training {criterion} by more than "
                    f"{target}" + (" (eps_offset alone may be too large)"
                                   if magnitude_aware else ""))
            if h(lo) <= target:
                break
            hi = lo
    while hi / lo > 1 + rtol:
        mid = math.sqrt(lo * hi)
        if h(mid) <= target:
            lo = mid
        else:
            hi = mid
    inc, inc_se = seen[lo]
    settings = _settings(objective, target=target, magnitude_aware=magnitude_aware,
                         eps_offset=eps_offset if magnitude_aware else None,
                         criterion=criterion, n_samples=n_samples, seed=seed, rtol=rtol,
                         antithetic=True)
    return MeasureResult("pac_bayes_flatness", 1.0 / lo**2, None, settings, cost.result(),
                         {"sigma": lo, "increase": inc, "increase_stderr": inc_se,
                          f"base_{criterion}": base, "steps": len(seen)})


# ----------------------------------------------------------------------- Liang et al. 2019
def fisher_rao_norm(objective: Any, theta: Tensor | None = None,
                    method: str = "jvp") -> MeasureResult:
    """Squared empirical Fisher-Rao norm ``mean_i <theta, grad_theta loss_i(theta)>^2``.

    For a bias-free ReLU network with L+1 layers the output is (L+1)-homogeneous, so
    ``<theta, grad loss_i> = (L+1) <d loss_i / d f, f(x_i)>`` and this equals Liang et al.'s
    ``(L+1)^2 E[<d loss / d f, f>^2]`` (with the training labels: the empirical version, as
    in Jiang et al. 2020's ``fisher-rao`` measure). Reported squared (``extra["norm"]`` is its
    square root); all parameters, biases included, enter ``theta``. ``method="jvp"``: one
    forward-mode pass (the directional derivative of every sample's loss along theta);
    ``"per_sample"``: from per-sample gradients (P times the memory; a cross-check).
    """
    if method not in ("jvp", "per_sample"):
        raise unknown_name("method", method, ("jvp", "per_sample"))
    theta = _theta(objective, theta)
    cost = _Cost(objective)
    total = 0.0
    if method == "per_sample":
        chunk = max(1, min(objective.n, 2**22 // max(1, theta.numel())))
        for start in range(0, objective.n, chunk):
            idx = torch.arange(start, min(objective.n, start + chunk), device=objective.device)
            g = objective.per_sample_grads(theta, idx)
            total += float(((g @ theta).double() ** 2).sum())
    else:
        def losses(t: Tensor, x: Tensor, y: Tensor) -> Tensor:
            return vmap(lambda xi, yi: objective.batch_loss(t, xi[None], yi[None]))(x, y)

        step = objective.batch_size
        with objective._precision(derivative=True):  # as every derivative of the engine
            for start in range(0, objective.n, step):
                x, y = objective.x[start:start + step], objective.y[start:start + step]
                _, directional = jvp(lambda t, x=x, y=y: losses(t, x, y), (theta,), (theta,))
                total += float((directional.double() ** 2).sum())
        cost.add("jvp", 1.0)
    value = total / objective.n
    return MeasureResult("fisher_rao_norm", value, None, _settings(objective, method=method),
                         cost.result(), {"norm": math.sqrt(value)})


# ------------------------------------------------------------------------- all at once
def _rho_for(name: str, rho: float | Mapping[str, float] | None) -> float:
    if rho is None:
        return DEFAULT_RHO[name]
    if isinstance(rho, Mapping):
        unknown = set(rho) - set(DEFAULT_RHO)
        if unknown:
            raise unknown_name("rho measure", sorted(unknown)[0], DEFAULT_RHO)
        return float(rho.get(name, DEFAULT_RHO[name]))
    return float(rho)


def parse_measures(measures: str | Iterable[str], choices: Sequence[str] = MEASURES,
                   ) -> list[str]:
    """``"all"`` or comma-separated names (or a list) -> validated list in canonical order."""
    if isinstance(measures, str):
        names = [m.strip() for m in measures.split(",") if m.strip()]
    else:
        names = list(measures)
    if not names:
        raise LandscapeError("no measures given")
    if names == ["all"]:
        return list(choices)
    for name in names:
        if name not in choices:
            raise unknown_name("measure", name, choices)
    return [m for m in choices if m in names]


def compute_sharpness(objective: Any, theta: Tensor | None = None,
                      measures: str | Iterable[str] = "all", eps: float = 1e-3,
                      rho: float | Mapping[str, float] | None = None,
                      batch_size: int | None = None, seed: int = 0,
                      ) -> dict[str, MeasureResult]:
    """The named measures (:data:`MEASURES`) with default settings, keyed by name.

    ``rho``: one radius for every rho-type measure, a ``{measure: rho}`` mapping, or None
    (:data:`DEFAULT_RHO`). ``batch_size``: the batch size m of the worst-case measures.
    PAC-Bayes uses the error criterion for classification and the loss (target 0.1) else;
    when no noise level meets the target its value is NaN and ``extra["error"]`` says why.
    """
    from landscape.progress import progress

    names = parse_measures(measures)
    for name in names:
        if name in DEFAULT_RHO:
            check_positive(f"rho of {name}", _rho_for(name, rho))
    check_positive("eps", eps)
    out: dict[str, MeasureResult] = {}
    for name in progress(names, desc="sharpness", unit="measure"):
        if name == "epsilon_sharpness":
            res = epsilon_sharpness(objective, theta, eps=eps, seed=seed)
        elif name.startswith("adaptive_"):
            _, kind, norm = name.split("_")
            res = adaptive_sharpness(objective, theta, rho=_rho_for(name, rho), norm=norm,
                                     kind=kind, batch_size=batch_size if kind == "worst"
                                     else None, seed=seed)
        elif name == "sam_sharpness":
            res = sam_sharpness(objective, theta, rho=_rho_for(name, rho))
        elif name == "pac_bayes_flatness":
            criterion = "error" if objective.is_classification else "loss"
            try:
                res = pac_bayes_flatness(objective, theta, seed=seed, criterion=criterion)
            except LandscapeError as err:  # no sigma reaches the target: report NaN and why
                res = MeasureResult(name, math.nan, None,
                                    _settings(objective, criterion=criterion, seed=seed), {},
                                    {"error": str(err)})
        else:
            res = fisher_rao_norm(objective, theta)
        res.name = name
        out[name] = res
    return out


# ------------------------------------------------------------------- display and storage
def format_table(results: Mapping[str, Any]) -> str:
    """An aligned text table: measure, value, standard error, cost."""
    rows = [("measure", "value", "stderr", "cost (passes)")]
    for name, res in results.items():
        stderr = "" if res.stderr is None else f"{res.stderr:.4g}"
        cost = ", ".join(f"{k} {v:.4g}" for k, v in res.cost.items())
        rows.append((name, f"{res.value:.6g}", stderr, cost))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join([r[0].ljust(widths[0]), r[1].rjust(widths[1]), r[2].rjust(widths[2]),
                        r[3]]).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def save_results(path: Any, kind: str, results: Mapping[str, Any], settings: Mapping[str, Any],
                 attrs: Mapping[str, Any] | None = None, overwrite: bool = False) -> None:
    """Write each result as a scalar dataset ``name`` (attrs: stderr, settings, cost, extra).

    The file's root ``settings`` are ``settings`` (its hash decides resume versus refusal,
    see :func:`landscape.store.create`).
    """
    from landscape import store

    with store.create(path, kind, settings, attrs=attrs, overwrite=overwrite,
                      memory=True) as f:
        arrays = {name: np.float64(res.value) for name, res in results.items()}
        meta = {name: {"stderr": res.stderr, "settings": res.settings, "cost": res.cost,
                       "extra": res.extra} for name, res in results.items()}
        store.write_arrays(f, arrays, attrs=meta)
        store.commit(f, path)


# ------------------------------------------------------------------------------ runs (CLI)
def parse_rho(text: str | None) -> float | dict[str, float] | None:
    """``"0.05"`` (every rho-type measure) or ``"adaptive_worst_l2=0.1,sam_sharpness=0.02"``."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    try:
        if "=" not in text:
            return float(text)
        out = {}
        for part in text.split(","):
            name, _, value = part.partition("=")
            name = name.strip()
            if name not in DEFAULT_RHO:
                raise unknown_name("rho measure", name, DEFAULT_RHO)
            out[name] = float(value)
        return out
    except ValueError:
        raise LandscapeError(f"--rho must be a number or name=number pairs, got {text!r}") from None


def sharpness_of_run(run: Any, *, measures: str | Iterable[str] = "all", eps: float = 1e-3,
                     rho: float | Mapping[str, float] | None = None, split: str = "train",
                     subset: int | None = None, batch_size: int | None = None, seed: int = 0,
                     device: str = "auto", precision: str = "float32", out: Any = None,
                     overwrite: bool = False, command: str | None = None,
                     ) -> dict[str, MeasureResult]:
    """:func:`compute_sharpness` on a run's final model; ``out``: keep them in an HDF5 file
    (kind ``"sharpness"``) with their settings."""
    from pathlib import Path

    names = parse_measures(measures)
    objective = Objective.from_run(run, split, subset=subset, seed=seed, device=device,
                                   precision=precision)
    results = compute_sharpness(objective, measures=names, eps=eps, rho=rho,
                                batch_size=batch_size, seed=seed)
    if out is not None:
        run_path = str(Path(run).resolve()) if not hasattr(run, "model") else str(run.path)
        settings = {"run": run_path, "measures": names, "eps": eps,
                    "rho": {n: _rho_for(n, rho) for n in names if n in DEFAULT_RHO},
                    "split": split, "subset": subset, "batch_size": batch_size, "seed": seed,
                    "objective": objective.settings()}
        save_results(out, "sharpness", results, settings,
                     attrs={"command": command, "device": str(objective.device)},
                     overwrite=overwrite)
    return results
