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
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.optimize import Bounds, minimize
from torch import Tensor
from torch.func import jvp

from landscape.analysis.results import Cost, MeasureResult, measure_point, recorded_settings
from landscape.errors import LandscapeError, check_int, check_positive, unknown_name
from landscape.objective import accepts_model

NORMS = ("l2", "linf")
KINDS = ("worst", "average")
CRITERIA = ("error", "loss")
INITS = ("zero", "random")

#: Samples per batch of the adaptive measures (Andriushchenko et al. 2023's m).
BATCH_SIZE = 128

#: Default radii of the rho-type measures (adaptive ones are relative to ``|theta|``).
DEFAULT_RHO = {"adaptive_worst_l2": 0.1, "adaptive_worst_linf": 2e-3,
               "adaptive_average_l2": 0.05, "sam_sharpness": 0.05}

# Auto-PGD (Croce & Hein 2020) constants, as used by Andriushchenko et al. 2023.
_APGD_MOMENTUM = 0.75
_APGD_MIN_UPDATE_RATIO = 0.75


# ------------------------------------------------------------------------------------ helpers
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
    """Disjoint random batches of ``min(batch_size, n)`` samples (``[None]``: the whole split).

    A split smaller than one batch is one batch, as in Andriushchenko et al.'s loader.
    """
    if batch_size is None:
        if n_batches not in (None, 1):
            raise LandscapeError("n_batches needs a batch_size")
        return [None]
    batch_size = min(check_int("batch_size", batch_size), objective.n)
    most = objective.n // batch_size
    n_batches = most if n_batches is None else check_int("n_batches", n_batches)
    if n_batches > most:
        raise LandscapeError(f"{n_batches} disjoint batches of {batch_size} need "
                             f"{n_batches * batch_size} samples; the split has {objective.n}")
    perm = torch.randperm(objective.n, generator=torch.Generator().manual_seed(seed))
    return [perm[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)]


# --------------------------------------------------------------------------- Keskar et al.
def subspace_basis(numel: int, dim: int, seed: int = 0) -> Tensor:
    """The ``[P, dim]`` float64 CPU matrix of i.i.d. N(0, 1) entries of the subspace variant."""
    gen = _generator(torch.device("cpu"), seed)
    return torch.randn(numel, dim, generator=gen, dtype=torch.float64)


def _box_search(probe: Callable[[np.ndarray], tuple[float, np.ndarray]], y: np.ndarray,
                f: float, g: np.ndarray, bound: np.ndarray, ascent_steps: int,
                maxiter: int) -> dict[str, Any]:
    """Maximize over ``|y| <= bound`` from ``y`` (loss f, gradient g): projected sign-gradient
    ascent, then L-BFGS-B; the best point's ``loss``, ``y``, ``g`` and ``solver``."""
    top: dict[str, Any] = {"loss": f, "y": y, "g": g, "solver": "start"}

    def consider(y: np.ndarray, f: float, g: np.ndarray, solver: str) -> bool:
        if f <= top["loss"]:
            return False
        top.update(loss=f, y=y, g=g, solver=solver)
        return True

    step = 2.0
    for _ in range(ascent_steps):
        new = np.clip(top["y"] + step * bound * np.sign(top["g"]), -bound, bound)
        if np.array_equal(new, top["y"]):
            break  # a vertex where every gradient component points out of the box
        if not consider(new, *probe(new), "ascent"):
            step /= 2

    def negative(y: np.ndarray) -> tuple[float, np.ndarray]:
        if np.array_equal(y, top["y"]):  # L-BFGS-B's first call: known already
            return -top["loss"], -top["g"]
        f, g = probe(y)
        consider(y.copy(), f, g, "lbfgsb")
        return -f, -g

    if maxiter:
        minimize(negative, top["y"], jac=True, method="L-BFGS-B", bounds=Bounds(-bound, bound),
                 options={"maxiter": maxiter})
    return top


@accepts_model
def epsilon_sharpness(objective: Any, theta: Tensor | None = None, eps: float = 1e-3,
                      subspace_dim: int | None = None, maxiter: int = 10, seed: int = 0,
                      patience: int = 8, max_starts: int = 32, ascent_steps: int = 15,
                      return_maximizer: bool = False) -> MeasureResult:
    """Keskar et al.'s epsilon-sharpness (Metric 2.1), in percent of ``1 + f(theta)``: a
    LOWER BOUND on the maximum over the box (a search of a non-concave function, like every
    solver's, including Keskar's).

    ``100 * (max_{z in C} f(theta + A z) - f(theta)) / (1 + f(theta))`` where, in the full
    space (``A = I``), ``C = {|z_i| <= b_i}``, ``b = eps (|theta| + 1)``; with
    ``subspace_dim = p``, ``A`` is a ``[P, p]`` matrix of standard Gaussian entries (the paper
    says only "randomly generated") and ``b = eps (|A^+ theta| + 1)``.

    Keskar et al. run L-BFGS-B for 10 iterations. From a random start in the box that stops
    far below the maximum near low-loss minima (23-100x below 10 sign-gradient steps on the
    digits MLP), and one ascent from ``z = 0`` can stop at a local maximum 10% below another
    (a demo model: 3 of 16 random vertices reach a maximum 11% higher), so the maximum is
    sought here by

    1. projected sign-gradient ascent, ``z <- clip(z + s b sign(grad_z f), -b, b)``, at most
       ``ascent_steps`` steps, from the best point so far; ``s`` starts at 2 (so the first
       step from ``z = 0`` lands on the vertex ``b sign(g)``) and halves after each step that
       does not raise the loss; it stops early at a vertex where every gradient component
       points out of the box. Start 0 is ``z = 0``, the others random vertices of the box
       (signs from ``seed``), restarting until ``patience`` consecutive starts raise the
       best value by no more than 0.5% of it (or ``max_starts`` ran);
    2. scipy's L-BFGS-B under the box bounds for ``maxiter`` iterations (Keskar's solver and
       count) from the best point of all starts.

    The largest loss at any evaluated point (``theta`` included) is reported. ``extra``:
    ``loss``, ``max_loss``, ``solver`` (``"ascent"``, ``"lbfgsb"``, or ``"start"`` when nothing
    beat a start point) and ``start`` (its index) of the maximum, ``starts`` (how many ran),
    ``start_values`` (each start's best value), ``spread`` (max - min of ``start_values``),
    ``evaluations`` (gradient passes); with ``return_maximizer``, ``maximizer``: the best
    ``z`` (float64 CPU tensor, box coordinates; not JSON-able). Cost: per start at most
    ``ascent_steps + 1`` gradient passes, at least ``patience + 1`` starts, then L-BFGS-B's
    evaluations (about 150 passes in all on the digits MLP).
    """
    check_positive("eps", eps)
    maxiter = check_int("maxiter", maxiter)
    patience = check_int("patience", patience)
    max_starts = check_int("max_starts", max_starts)
    ascent_steps = check_int("ascent_steps", ascent_steps, minimum=0)
    theta = measure_point(objective, theta)
    cost = Cost(objective)
    if subspace_dim is None:
        basis = None
        bound = (eps * (theta.double().abs() + 1.0)).cpu().numpy()
    else:
        subspace_dim = check_int("subspace_dim", subspace_dim)
        basis = subspace_basis(theta.numel(), subspace_dim, seed).to(objective.device)
        coords = torch.linalg.lstsq(basis, theta.double()[:, None]).solution[:, 0]  # A^+ theta
        bound = (eps * (coords.abs() + 1.0)).cpu().numpy()
    evaluations = 0

    def probe(y: np.ndarray) -> tuple[float, np.ndarray]:
        """Loss at ``theta + A y`` and its gradient with respect to y (float64 numpy)."""
        nonlocal evaluations
        z = torch.as_tensor(y, dtype=torch.float64, device=objective.device)
        delta = z if basis is None else basis @ z
        loss, grad = objective.loss_and_grad(theta + delta.to(objective.dtype))
        evaluations += 1
        grad = grad.double()
        grad = grad if basis is None else basis.T @ grad
        return (loss if math.isfinite(loss) else -math.inf), grad.cpu().numpy()

    center = np.zeros_like(bound)
    f0, g0 = probe(center)
    best = {"loss": f0, "y": center, "g": g0, "solver": "start", "start": 0}
    start_values: list[float] = []
    rng = np.random.default_rng(seed)
    last_gain = 0
    for start in range(max_starts):
        if start - last_gain > patience:
            break
        y = center if start == 0 else bound * rng.choice([-1.0, 1.0], size=bound.shape)
        top = _box_search(probe, y, *((f0, g0) if start == 0 else probe(y)), bound,
                          ascent_steps, 0)
        start_values.append(100.0 * (top["loss"] - f0) / (1.0 + f0))
        if top["loss"] > best["loss"]:
            if top["loss"] - best["loss"] > 5e-3 * (best["loss"] - f0):
                last_gain = start
            best = {**top, "start": start}
    polished = _box_search(probe, best["y"], best["loss"], best["g"], bound, 0, maxiter)
    if polished["solver"] == "lbfgsb":
        best = {**polished, "start": best["start"]}
    value = 100.0 * (best["loss"] - f0) / (1.0 + f0)
    extra: dict[str, Any] = {"loss": f0, "max_loss": best["loss"], "solver": best["solver"],
                             "start": best["start"], "starts": len(start_values),
                             "start_values": start_values,
                             "spread": max(start_values) - min(start_values),
                             "evaluations": evaluations}
    if return_maximizer:
        extra["maximizer"] = torch.as_tensor(best["y"], dtype=torch.float64)
    return MeasureResult(
        "epsilon_sharpness", float(value), None,
        recorded_settings(objective, eps=eps, subspace_dim=subspace_dim, maxiter=maxiter,
                          seed=seed, patience=patience, max_starts=max_starts,
                          ascent_steps=ascent_steps),
        cost.result(), extra)


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
                gen: torch.Generator | None) -> tuple[float, float]:
    """Largest loss over Auto-PGD iterates in ``{theta + scale * u : ||u||_p <= rho}``, from
    ``u = 0`` (``gen`` None) or a random point of the sphere (l2) or box (linf)."""
    f0 = sub.loss(theta)
    if gen is None:
        u = torch.zeros_like(theta)
    elif norm == "linf":
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


@accepts_model
def adaptive_sharpness(objective: Any, theta: Tensor | None = None, rho: float | None = None,
                       norm: str = "l2", adaptive: bool = True, kind: str = "worst",
                       n_iters: int = 20, batch_size: int | None = BATCH_SIZE,
                       n_batches: int | None = None, n_samples: int = 20, offset: float = 0.0,
                       seed: int = 0, init: str = "zero") -> MeasureResult:
    """Worst- or average-case (adaptive) sharpness, a mean over batches of loss increases.

    Perturbations ``delta = c * u`` with ``c = |theta| + offset`` (adaptive; ASAM's
    normalization, scale-invariant for ``offset = 0``) or ``c = 1``, and ``||u||_p <= rho``.
    Batches: ``n_batches`` (default: as many as fit) disjoint batches of ``m = min(batch_size,
    n)`` samples (default 128, the authors'), consecutive slices of ``torch.randperm(n)``
    seeded with ``seed``; ``batch_size=None``: the whole split as one batch. Batch k's
    random draws come from ``seed + k``. The authors (``eval_sharpness.py``) use the first
    1024 training samples in order (8 batches); ``n_batches=8`` takes 8 random batches.

    - ``kind="worst"``: per batch B, ``max_u L_B(theta + c u) - L_B(theta)`` over
      ``||u||_p <= rho``, by ``n_iters`` (default 20, as theirs) Auto-PGD steps on u (Croce &
      Hein 2020): step ``2 rho`` halved at Auto-PGD's checkpoints (after 5, 9, 12, 15, 16,
      18, 19 of 20 steps; theirs one step later) when fewer than 75% of the steps since the
      last one raised the loss or nothing changed, then resuming from the best point
      (iterate and momentum); the largest loss over the iterates counts. ``init="zero"``
      starts at ``u = 0`` (their script's default, so the first step is the (A)SAM point);
      ``"random"``: uniform on the sphere (l2) or in the box (linf). l2: steps along the
      normalized gradient with respect to u, ``c g / ||c g||``, projection by rescaling onto
      ``||u||_2 <= rho``, momentum as Auto-PGD's (``u + 0.75 (z - u) + 0.25 (u - u_prev)``,
      projected). linf: sign steps and clipping.
      Where the authors' code differs: its l2 step in u is ``g / ||g||`` (not ``c g``), its
      adaptive projection is the Euclidean one onto the ellipsoid ``||delta / c||_2 <= rho``
      (by bisection), its momentum is ``0.75 z + 0.25 u_prev`` (not Auto-PGD's formula its
      docstring states), and on a halving it reloads the best weights but keeps the current
      perturbation. ``stderr``: the standard error over batches. Cost: per batch
      ``n_iters`` gradient and 2 forward passes on m samples (about ``n_iters`` passes over
      the split in all).
    - ``kind="average"``: per batch B, ``E_u L_B(theta + c u) - L_B(theta)`` with ``u ~ N(0,
      rho^2 I)`` (l2) or uniform in ``[-rho, rho]^P`` (linf), by ``n_samples`` fresh draws
      per batch (default 20, as their scripts), each used antithetically (``(L_B(+) +
      L_B(-))/2``, which cancels the gradient term's noise; theirs are not). The
      expectation does not depend on m. ``stderr``: the Monte Carlo standard error. Cost:
      ``2 n_samples + 1`` forward passes over the batches' samples.

    Andriushchenko et al. 2023, "A modern look at the relationship between sharpness and
    generalization" (reference code: github.com/tml-epfl/sharpness-vs-generalization).
    ``rho`` defaults to :data:`DEFAULT_RHO` of the matching measure.
    """
    if norm not in NORMS:
        raise unknown_name("norm", norm, NORMS)
    if kind not in KINDS:
        raise unknown_name("sharpness kind", kind, KINDS)
    if init not in INITS:
        raise unknown_name("init", init, INITS)
    if rho is None:
        rho = DEFAULT_RHO[f"adaptive_{kind}_{norm}" if f"adaptive_{kind}_{norm}" in DEFAULT_RHO
                          else f"adaptive_worst_{norm}"]
    check_positive("rho", rho)
    if offset < 0:
        raise LandscapeError(f"offset must be >= 0, got {offset}")
    n_iters = check_int("n_iters", n_iters)
    n_samples = check_int("n_samples", n_samples, minimum=2)
    theta = measure_point(objective, theta)
    cost = Cost(objective)
    batches = _batches(objective, batch_size, n_batches, seed)
    scale = _scale(theta, adaptive, offset)
    name = f"{'adaptive' if adaptive else 'plain'}_{kind}_{norm}"
    m = objective.n if batches == [None] else int(batches[0].numel())
    settings = recorded_settings(objective, rho=rho, norm=norm, adaptive=adaptive, kind=kind,
                                 offset=offset, seed=seed, batch_size=m, n_batches=len(batches),
                                 **({"n_iters": n_iters, "init": init} if kind == "worst" else
                                    {"n_samples": n_samples, "antithetic": True}))
    values, mc_vars = [], []
    for k, idx in enumerate(batches):
        sub = objective if idx is None else objective.subset(idx)
        gen = _generator(objective.device, seed + k)
        if kind == "worst":
            f0, worst = _worst_case(sub, theta, scale, rho, norm, n_iters,
                                    gen if init == "random" else None)
            values.append(worst - f0)
        else:
            d = _average_increases(sub, theta, scale, rho, norm, n_samples, gen)
            values.append(float(d.mean()))
            mc_vars.append(float(d.var(ddof=1)) / d.size)
        cost.add_subset(sub)
    v = np.asarray(values)
    if kind == "average":
        stderr: float | None = math.sqrt(sum(mc_vars)) / v.size
    else:
        stderr = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else None
    return MeasureResult(name, float(v.mean()), stderr, settings, cost.result(),
                         {"batches": int(v.size), "batch_values": v.tolist()})


def _average_increases(sub: Any, theta: Tensor, scale: Tensor, rho: float, norm: str,
                       n_samples: int, gen: torch.Generator) -> np.ndarray:
    """``(L(theta + c u) + L(theta - c u))/2 - L(theta)`` on ``sub`` for n_samples draws of u."""
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
    return np.concatenate(diffs)


@accepts_model
def sam_sharpness(objective: Any, theta: Tensor | None = None, rho: float = 0.05,
                  adaptive: bool = False, offset: float = 0.0) -> MeasureResult:
    """One-step SAM sharpness ``L(theta + delta) - L(theta)``, ``delta = rho g / ||g||``.

    With ``adaptive`` (ASAM, Kwon et al. 2021) ``delta = rho c^2 g / ||c g||``,
    ``c = |theta| + offset``. Zero when the gradient is exactly zero. Cost: one gradient pass
    and one forward pass.
    """
    check_positive("rho", rho)
    theta = measure_point(objective, theta)
    cost = Cost(objective)
    f0, grad = objective.loss_and_grad(theta)
    c = _scale(theta, adaptive, offset)
    length = float((c * grad).norm())
    value = 0.0
    if length > 0:
        value = objective.loss(theta + rho * c * c * grad / length) - f0
    return MeasureResult("sam_sharpness", float(value), None,
                         recorded_settings(objective, rho=rho, adaptive=adaptive, offset=offset),
                         cost.result(), {"loss": f0, "grad_norm": float(grad.norm())})


# ------------------------------------------------------------------ Jiang et al. PAC-Bayes
@accepts_model
def pac_bayes_flatness(objective: Any, theta: Tensor | None = None, target: float = 0.1,
                       magnitude_aware: bool = False, eps_offset: float = 1e-3,
                       criterion: str = "error", n_samples: int = 32, seed: int = 0,
                       sigma_init: float = 1e-2, rtol: float = 1e-2,
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
    reported (rtol 1e-2: 2% in 1/sigma^2, below the Monte Carlo error of 32 antithetic
    samples, about 5% on the demo's models; 1e-3 took 3 more steps for nothing).
    ``extra``: ``sigma``, the ``increase`` at sigma and its Monte Carlo ``increase_stderr``.
    Cost: ``2 n_samples`` forward passes per step (about 11 steps).
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
    theta = measure_point(objective, theta)
    cost = Cost(objective)
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
    settings = recorded_settings(objective, target=target, magnitude_aware=magnitude_aware,
                                 eps_offset=eps_offset if magnitude_aware else None,
                                 criterion=criterion, n_samples=n_samples, seed=seed, rtol=rtol,
                                 antithetic=True)
    return MeasureResult("pac_bayes_flatness", 1.0 / lo**2, None, settings, cost.result(),
                         {"sigma": lo, "increase": inc, "increase_stderr": inc_se,
                          f"base_{criterion}": base, "steps": len(seen)})


# ----------------------------------------------------------------------- Liang et al. 2019
@accepts_model
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
    theta = measure_point(objective, theta)
    cost = Cost(objective)
    total = 0.0
    if method == "per_sample":
        chunk = max(1, min(objective.n, 2**22 // max(1, theta.numel())))
        for start in range(0, objective.n, chunk):
            idx = torch.arange(start, min(objective.n, start + chunk), device=objective.device)
            g = objective.per_sample_grads(theta, idx)
            total += float(((g @ theta).double() ** 2).sum())
    else:
        losses = objective.sample_losses
        with objective.precision_context(derivative=True):  # as every derivative of the engine
            for x, y in objective.batches():
                _, directional = jvp(lambda t, x=x, y=y: losses(t, x, y), (theta,), (theta,))
                total += float((directional.double() ** 2).sum())
        total = float(objective.all_reduce(torch.tensor(total, dtype=torch.float64,
                                                        device=objective.device)))
        cost.add("jvp", 1.0)
    value = total / objective.n
    return MeasureResult("fisher_rao_norm", value, None,
                         recorded_settings(objective, method=method), cost.result(),
                         {"norm": math.sqrt(value)})


__all__ = ["DEFAULT_RHO", "MeasureResult", "adaptive_sharpness", "epsilon_sharpness",
           "fisher_rao_norm", "pac_bayes_flatness", "sam_sharpness", "subspace_basis"]
