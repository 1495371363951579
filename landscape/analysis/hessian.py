"""Curvature of the loss: Hessian (or Gauss-Newton) eigenvalues, trace, density, maps.

Everything here is matrix-free: the only access to the curvature is the engine's product
``Objective.hvp(theta, V)`` (or ``Objective.ggn_vp``) on a block ``V[K, P]``, so K vectors
share each pass over the data. Costs are reported in ``n_hvp``, the number of vectors
multiplied (one HVP costs a few forward+backward passes over the split; see
``benchmarks/hessian.py``).

This module builds the operator from an :class:`Objective` and hands it to the pure
algorithms of :mod:`landscape.linalg` (where the papers are cited):

- :func:`hessian_eigenvalues`: extreme eigenvalues by thick-restart (block) Lanczos with full
  reorthogonalization, converged on each Ritz pair's residual.
- :func:`hessian_trace`: Hutchinson's estimator or Hutch++, with a standard error.
- :func:`spectral_density`: stochastic Lanczos quadrature (as in Ghorbani, Krishnan and Xiao
  2019, "An investigation into neural net optimization via Hessian eigenvalue density").
- :func:`curvature_map`: largest and smallest eigenvalue at every point of a stored 2D
  surface (Li, Xu, Taylor, Studer and Goldstein 2018, Fig. 7).
- :func:`analyze_hessian` / :func:`load_hessian`: all of the above for one model, written to
  and read back from a ``kind="hessian"`` HDF5 file.

Operators: ``"hessian"`` (the Hessian of the mean loss) or ``"ggn"`` (the generalized
Gauss-Newton matrix, positive semi-definite; the Fisher for cross-entropy). ``params``
restricts the operator to a block of parameters (a name pattern such as ``"layer3"`` or a
boolean mask ``[P]``): the Hessian of the loss as a function of those parameters only, the
others held fixed.

Multi-process: when ``torch.distributed`` is initialized, Hutchinson and SLQ probes are split
across ranks (rank r takes probes i with ``i % world == r``); every probe is drawn from its own
seed, so the result does not depend on the number of processes. Lanczos and Hutch++ run the
same computation on every rank.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from landscape import gridfile, linalg, store
from landscape.distributed import all_gather, broadcast, rank_and_world
from landscape.errors import (
    LandscapeError,
    NotConvergedWarning,
    check_int,
    check_positive,
    unknown_name,
)
from landscape.evaluate import halving_on_oom
from landscape.hashing import sha256_hex
from landscape.objective import Objective, accepts_model
from landscape.progress import progress

OPERATORS = ("hessian", "ggn")
WHICH = ("largest", "smallest", "both")
TRACE_METHODS = ("hutchinson", "hutch++")
# the default HVP budget (max_probes) of each trace method in analyze_hessian and the CLI:
# Hutch++'s is chosen by the error-per-HVP table in benchmarks/README.md
TRACE_BUDGET = {"hutch++": 150, "hutchinson": 1000}

__all__ = [
    "EigenResult", "TraceResult", "DensityResult", "CurvatureMap", "HessianReport",
    "hessian_eigenvalues", "hessian_trace", "spectral_density", "curvature_map",
    "analyze_hessian", "hessian_of_run", "load_hessian", "OPERATORS",
]


# ------------------------------------------------------------------------------------------
# results
@dataclass
class EigenResult:
    """Extreme eigenpairs of the curvature operator.

    ``eigenvalues[k]`` (float64): the ``n_largest`` largest in descending order, then the
    smallest in ascending order (``which="both"``; otherwise only one of the two parts).
    ``eigenvectors[k, P]``: unit vectors in ``model.parameters()`` order, zero outside the
    parameter block, sign fixed so that the largest-magnitude entry is positive.
    ``residuals[k]``: ``||H v - lambda v|| / |lambda|``, an upper bound on the relative
    error of the eigenvalue: with ``verify`` measured with float64 products (a symmetric H
    has an eigenvalue within that distance), else the Lanczos estimate, never below the
    rounding floor of the working precision. ``converged[k]``: residual at most ``tol``,
    where a ``tol`` below the rounding floor ``100 eps ||H|| / |lambda|`` is raised to it
    (``at_floor[k]``: raised; a higher precision can go further). ``n_hvp``: vectors
    multiplied, the float64 verification products included.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor | None
    residuals: Tensor
    converged: Tensor
    n_hvp: int
    n_largest: int
    n_restarts: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    at_floor: Tensor | None = None

    @property
    def largest(self) -> Tensor:
        """The largest eigenvalues, descending."""
        return self.eigenvalues[: self.n_largest]

    @property
    def smallest(self) -> Tensor:
        """The smallest eigenvalues, ascending."""
        return self.eigenvalues[self.n_largest :]

    def part(self, which: str) -> EigenResult:
        """The ``"largest"`` or ``"smallest"`` pairs alone (same cost and settings)."""
        if which not in ("largest", "smallest"):
            raise unknown_name("part", which, ("largest", "smallest"))
        sl = slice(0, self.n_largest) if which == "largest" else slice(self.n_largest, None)
        vecs = None if self.eigenvectors is None else self.eigenvectors[sl]
        floor = None if self.at_floor is None else self.at_floor[sl]
        return EigenResult(self.eigenvalues[sl], vecs, self.residuals[sl], self.converged[sl],
                           self.n_hvp, self.n_largest if which == "largest" else 0,
                           self.n_restarts, dict(self.settings), floor)

    def warnings(self) -> list[str]:
        """One line per eigenvalue whose residual is above its tolerance, and one line (once)
        when ``tol`` was raised to the rounding floor of the working precision."""
        tol = self.settings.get("tol")
        out = []
        if self.at_floor is not None and bool(self.at_floor.any()):
            raised = float((self.at_floor * self.floor_tol).max())
            out.append(f"--tol {tol:g} is below the rounding floor of "
                       f"{self.settings.get('precision', 'this precision')} arithmetic: raised "
                       f"to {raised:.2g} (use --precision float64 to go further)")
        for i in range(self.eigenvalues.numel()):
            if bool(self.converged[i]):
                continue
            name = (f"top eigenvalue {i + 1}" if i < self.n_largest
                    else f"bottom eigenvalue {i + 1 - self.n_largest}")
            out.append(f"{name} {float(self.eigenvalues[i]):.6g} is not converged: relative "
                       f"residual {float(self.residuals[i]):.2g} > tolerance "
                       f"{max(tol, float(self.floor_tol[i])):.2g} (stopped at --max-iter HVPs)")
        return out

    @property
    def floor_tol(self) -> Tensor:
        """Each pair's rounding floor relative to ``|lambda|`` (``100 eps ||H||``, with
        ``||H||`` the largest eigenvalue magnitude found)."""
        dtype = torch.float64 if self.settings.get("precision") == "float64" else torch.float32
        scale = float(self.eigenvalues.abs().max()) if self.eigenvalues.numel() else 0.0
        return linalg.rounding_floor(dtype, scale) / self.eigenvalues.abs().clamp(
            min=float(torch.finfo(torch.float64).tiny))


@dataclass
class TraceResult:
    """Trace estimate of the curvature operator.

    ``stderr``: standard error of ``estimate`` (sample standard deviation of the per-probe
    values over the square root of their number; for Hutch++ that of its Hutchinson part on
    the deflated remainder, see :func:`hessian_trace`); None when it cannot be estimated
    (one probe). ``samples``: the per-probe values (Hutchinson) or the deflated remainder's
    (Hutch++). ``converged``: ``stderr <= rtol |estimate|``.
    """

    estimate: float
    stderr: float | None
    n_hvp: int
    n_probes: int
    method: str
    samples: Tensor
    settings: dict[str, Any] = field(default_factory=dict)
    converged: bool = True
    rtol: float | None = None

    def warnings(self) -> list[str]:
        """One line if the standard error is above ``rtol`` of the estimate."""
        if self.converged:
            return []
        rel = "n/a" if self.stderr is None else f"{self.stderr / abs(self.estimate):.2g}"
        return [f"trace {self.estimate:.6g} ({self.method}) is not converged: relative "
                f"standard error {rel} > --trace-rtol {self.rtol:g} after {self.n_hvp} HVPs "
                "(raise --max-probes)"]


@dataclass
class DensityResult:
    """Spectral density by stochastic Lanczos quadrature.

    ``density`` on ``grid`` (1 / eigenvalue units) integrates to 1; ``nodes[n_probes, m]`` and
    ``weights[n_probes, m]`` are each probe's Gauss quadrature (each row's weights sum to 1;
    padding entries, after an early Lanczos termination, have weight 0). ``sigma``: the
    absolute Gaussian broadening used.
    """

    grid: Tensor
    density: Tensor
    nodes: Tensor
    weights: Tensor
    sigma: float
    n_hvp: int
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class CurvatureMap:
    """Largest and smallest eigenvalue on a 2D surface grid, ``[len(y), len(x)]``."""

    x: np.ndarray
    y: np.ndarray
    hessian_max: np.ndarray
    hessian_min: np.ndarray
    done: np.ndarray
    n_hvp: int
    path: Path

    @property
    def ratio(self) -> np.ndarray:
        """``|lambda_min / lambda_max|`` (NaN where not computed or ``lambda_max <= 0``)."""
        return min_max_ratio(self.hessian_max, self.hessian_min, self.done)

    def summary(self) -> dict[str, Any]:
        """Completeness, HVPs, and the ranges of ``lambda_max`` and of the ratio (finite)."""
        def span(a: np.ndarray) -> list[float] | None:
            a = a[np.isfinite(a)]
            return [float(a.min()), float(a.max())] if a.size else None

        return {"file": str(self.path), "done": int(self.done.sum()),
                "total": int(self.done.size), "n_hvp": self.n_hvp,
                "hessian_max": span(np.where(self.done, self.hessian_max, np.nan)),
                "abs_min_over_max": span(self.ratio)}


def min_max_ratio(hessian_max: np.ndarray, hessian_min: np.ndarray, done: np.ndarray,
                  ) -> np.ndarray:
    """``|lambda_min / lambda_max|`` per grid point, Li et al. (2018) Fig. 7: near 0 where the
    surface is locally convex; NaN where not computed or ``lambda_max <= 0``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(hessian_min / hessian_max)
    ratio[~done.astype(bool) | ~(hessian_max > 0) | ~np.isfinite(ratio)] = np.nan
    return ratio


# ------------------------------------------------------------------------------------------
# the operator
def _resolve_mask(objective: Objective, params: str | Tensor | Sequence[bool] | None,
                  ) -> Tensor | None:
    if params is None:
        return None
    if isinstance(params, str):
        return objective.space.select(params)
    mask = torch.as_tensor(params)
    if mask.dtype != torch.bool or mask.shape != (objective.space.numel,):
        raise LandscapeError(
            f"params must be a name pattern or a boolean mask of length "
            f"{objective.space.numel}, got a {mask.dtype} tensor of shape {tuple(mask.shape)}")
    if not bool(mask.any()):
        raise LandscapeError("the parameter mask selects no parameter")
    return mask.cpu()


class _Operator:
    """``V[K, n] -> A V`` for the (block of the) Hessian or GGN at ``theta``; counts vectors."""

    def __init__(self, objective: Objective, theta: Tensor | None, operator: str,
                 params: str | Tensor | Sequence[bool] | None, block_size: int) -> None:
        if operator not in OPERATORS:
            raise unknown_name("operator", operator, OPERATORS)
        block_size = check_int("block_size", block_size)
        self.objective = objective
        if theta is None:
            theta = objective.theta0
        objective.space.check(theta)
        self.theta = torch.as_tensor(theta).to(objective.device, objective.dtype)
        self.product = objective.hvp if operator == "hessian" else objective.ggn_vp
        self.operator = operator
        mask = _resolve_mask(objective, params)
        self.mask = None if mask is None else mask.to(objective.device)
        self.P = objective.space.numel
        self.n = self.P if mask is None else int(mask.sum())
        self.dtype, self.device = objective.dtype, objective.device
        self.block_size = block_size
        self.n_hvp = 0

    def embed(self, v: Tensor) -> Tensor:
        """Vectors ``[K, n]`` of the block as full vectors ``[K, P]`` (zero outside)."""
        if self.mask is None:
            return v
        full = torch.zeros(v.shape[0], self.P, dtype=v.dtype, device=v.device)
        full[:, self.mask.to(v.device)] = v
        return full

    def restrict(self, v: Tensor) -> Tensor:
        """Full vectors ``[K, P]`` restricted to the block ``[K, n]``."""
        return v if self.mask is None else v[:, self.mask]

    def _apply(self, v: Tensor) -> Tensor:
        return self.restrict(self.product(self.theta, self.embed(v)))

    def __call__(self, v: Tensor) -> Tensor:
        """``A v`` for ``v[K, n]``, in blocks of ``block_size`` (halved on out-of-memory)."""
        outs: list[Tensor] = []

        def block() -> Tensor:  # equal chunks of at most block_size vectors
            rest = v.shape[0] - start
            return self._apply(v[start : start + -(-rest // -(-rest // self.block_size))])

        def shrink() -> bool:
            if self.block_size == 1:
                return False
            self.block_size //= 2
            return True

        start = 0
        while start < v.shape[0]:
            outs.append(halving_on_oom(block, shrink))
            start += outs[-1].shape[0]
        self.n_hvp += v.shape[0]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def settings(self) -> dict[str, Any]:
        return {"operator": self.operator, "block_dim": self.n,
                "hvp_method": self.objective.hvp_method, **self.objective.settings()}


def _params_setting(params: Any) -> Any:
    if params is None or isinstance(params, str):
        return params
    mask = torch.as_tensor(params).cpu().numpy().astype(np.uint8)
    return {"mask_sha256": sha256_hex(mask.tobytes()), "size": int(mask.sum())}


def _split(objective: Objective) -> linalg.Split:
    """Probes shared among ranks, unless each rank holds a shard of the data (then every rank
    applies every probe to its shard and the products are all-reduced)."""
    rank, world = (0, 1) if objective.sharded else rank_and_world()
    return linalg.Split(rank, world, all_gather)


# ------------------------------------------------------------------------------------------
# eigenvalues
def _fix_signs(vectors: Tensor) -> Tensor:
    idx = vectors.abs().argmax(dim=1)
    signs = torch.sign(vectors.gather(1, idx[:, None]))
    signs[signs == 0] = 1
    return vectors * signs


@accepts_model
def hessian_eigenvalues(objective: Objective, theta: Tensor | None = None, k: int | tuple[
                        int, int] = 5, which: str = "largest", *, tol: float = 1e-6,
                        max_iter: int = 1000, max_basis: int | None = None, seed: int = 0,
                        operator: str = "hessian", params: str | Tensor | None = None,
                        block_size: int = 1, verify: bool | None = None,
                        return_vectors: bool = True, v0: Tensor | None = None) -> EigenResult:
    """Extreme eigenvalues and eigenvectors of the Hessian (or GGN) of the mean loss.

    :func:`landscape.linalg.lanczos` on the objective's device and in its precision. ``k``:
    the number of eigenvalues; with ``which="both"`` an int means k largest and k smallest,
    a pair ``(k_largest, k_smallest)`` sets them separately; one Krylov space serves both
    ends. A pair is ``converged`` when ``||Hv - lambda v|| <= tol * |lambda|``, where a
    ``tol`` below the rounding floor ``100 eps ||H|| / |lambda|`` of the working precision is
    raised to it (``at_floor``, said once in :meth:`EigenResult.warnings`). ``max_iter``: the
    most HVPs; ``max_basis``: the Krylov basis size that triggers a thick restart (default
    ``max(40, 4k, k + 8 * block_size)``; memory ``max_basis * P`` floats). ``block_size >
    1``: block Lanczos, whose vectors share each data pass (and which finds repeated
    eigenvalues; single-vector Lanczos returns a repeated eigenvalue or a null space once).
    ``v0``: a start vector or block ``[b, P]`` (a warm start, e.g. the previous step's
    eigenvector); otherwise random from ``seed``. ``verify``: measure the residuals of the
    returned pairs with float64 products (k more HVPs in float64, on a float64 copy of the
    model, counted in ``n_hvp``), an honest bound on each eigenvalue's error, which the
    Lanczos estimate is not (it does not see the round-off of the products); default: when
    the precision is lower than float64. The k checks are one block (one data pass, one
    float64 gradient graph); on the CPU a float64 product costs about 2.3 float32 HVPs: the 5
    checks of a top-5 call at ``tol=1e-3`` cost about 0.8x its 14 Lanczos HVPs
    (``benchmarks/README.md``). Cost: 13-20 HVPs for
    the top 5 of a trained MLP or ResNet-20 at ``tol=1e-3`` (``benchmarks/hessian.py``).
    Nothing changes the model.

    Example::

        >>> import torch, landscape
        >>> model = torch.nn.Linear(3, 2)
        >>> data = (torch.randn(16, 3), torch.randint(0, 2, (16,)))
        >>> e = landscape.hessian_eigenvalues(model, k=2, data=data)
        >>> bool(e.eigenvalues[0] >= e.eigenvalues[1])
        True
    """
    if which not in WHICH:
        raise unknown_name("which", which, WHICH)
    op = _Operator(objective, theta, operator, params, block_size)
    if isinstance(k, tuple | list):
        if which != "both" or len(k) != 2:
            raise LandscapeError("k may be a pair (k_largest, k_smallest) only with which='both'")
        k_top, k_bot = (check_int("k", int(x), 0) for x in k)
    else:
        kk = check_int("k", k, 1)
        k_top = kk if which in ("largest", "both") else 0
        k_bot = kk if which in ("smallest", "both") else 0
    k_total = k_top + k_bot
    if k_total < 1:
        raise LandscapeError("ask for at least one eigenvalue")
    if k_total > op.n:
        raise LandscapeError(f"k = {k_total} eigenvalues asked for, but the operator has only "
                             f"{op.n} (the number of parameters)")
    check_positive("tol", tol)
    max_iter = check_int("max_iter", max_iter)
    max_basis = check_int("max_basis", max_basis if max_basis is not None
                           else max(40, 4 * k_total, k_total + 8 * block_size))
    seed = int(seed)
    start = None if v0 is None else op.restrict(torch.as_tensor(v0).reshape(
        -1, op.P).to(op.device, op.dtype))
    pairs = linalg.lanczos(op, op.n, k_top, k_bot, tol=tol, max_matvecs=max_iter,
                           max_basis=max_basis, block_size=block_size, v0=start, seed=seed,
                           dtype=op.dtype, device=op.device, desc=f"lanczos ({operator})")
    values, res, conv, at_floor = pairs.values, pairs.residuals, pairs.converged, pairs.at_floor
    vectors = _fix_signs(pairs.vectors)
    if verify is None:
        verify = objective.dtype != torch.float64
    if verify:
        # (one block: the kept float64 gradient graph of the objective's float64 twin, and
        # every check in one data pass)
        check = op if op.dtype == torch.float64 else _Operator(
            objective.with_precision("float64"), op.theta, operator, params, len(vectors))
        v64 = vectors.double()
        res = torch.linalg.vector_norm(check(v64) - values.to(op.device)[:, None] * v64,
                                       dim=1).cpu()
        conv, at_floor = linalg.convergence(
            res, values, tol, linalg.rounding_floor(op.dtype, float(pairs.values.abs().max())))
        op.n_hvp += check.n_hvp if check is not op else 0
    denom = values.abs().clamp(min=float(torch.finfo(torch.float64).tiny))
    settings = {"k_largest": k_top, "k_smallest": k_bot, "tol": tol, "max_iter": max_iter,
                "max_basis": max_basis, "seed": seed, "block_size": block_size,
                "params": _params_setting(params), "verify": verify,
                "warm_start": v0 is not None, **op.settings()}
    return EigenResult(
        eigenvalues=values.clone(),
        eigenvectors=op.embed(vectors).cpu() if return_vectors else None,
        residuals=(res / denom).cpu(), converged=conv.cpu(), n_hvp=op.n_hvp,
        n_largest=k_top, n_restarts=pairs.n_restarts, settings=settings,
        at_floor=at_floor.cpu())


# ------------------------------------------------------------------------------------------
# trace
@accepts_model
def hessian_trace(objective: Objective, theta: Tensor | None = None, method: str = "hutch++",
                  *, rtol: float = 1e-2, max_probes: int | None = None,
                  min_probes: int | None = None,
                  seed: int = 0, operator: str = "hessian", params: str | Tensor | None = None,
                  block_size: int = 10, check_every: int = 10) -> TraceResult:
    """Trace of the Hessian (or GGN) by randomized probing with Rademacher probes.

    Defaults, shared with ``landscape hessian --trace``: Hutch++ with a budget of
    ``max_probes`` = :data:`TRACE_BUDGET` (150 HVPs; Hutchinson: 1,000).

    ``"hutchinson"`` (:func:`landscape.linalg.hutchinson`): rounds of ``check_every``
    probes, stopping once at least ``min_probes`` (default ``min(10, max_probes)``) are in
    and ``stderr / |estimate| <= rtol``, or at ``max_probes``. Probes are split across
    ``torch.distributed`` ranks when initialized.
    ``"hutch++"`` (:func:`landscape.linalg.hutchpp`): a fixed budget of ``max_probes`` HVPs,
    a third each for the range sketch, the exact part and Hutchinson on the deflated
    remainder; ``stderr`` is that of the remainder given the sketch (honest: the estimate is
    unbiased for every sketch). Far fewer HVPs than Hutchinson for the same error on a
    decaying spectrum (the table in ``benchmarks/README.md``).
    Either way ``converged`` says whether ``stderr <= rtol |estimate|``. Cost: ``n_hvp``
    HVPs, handed to the engine in blocks of up to ``block_size`` vectors (a Hutchinson round
    of ``check_every`` probes, a Hutch++ stage), which share each data pass.
    """
    if method not in TRACE_METHODS:
        raise unknown_name("trace method", method, TRACE_METHODS)
    check_positive("rtol", rtol)
    max_probes = check_int("max_probes", TRACE_BUDGET[method] if max_probes is None
                           else max_probes)
    min_probes = check_int("min_probes", min(10, max_probes) if min_probes is None
                            else min_probes)
    check_every = check_int("check_every", check_every)
    if min_probes > max_probes:
        raise LandscapeError(f"min_probes ({min_probes}) exceeds max_probes ({max_probes})")
    op = _Operator(objective, theta, operator, params, block_size)
    seed = int(seed)
    settings = {"method": method, "max_probes": max_probes, "seed": seed, "rtol": rtol,
                "params": _params_setting(params), **op.settings()}
    if method == "hutchinson":
        settings.update(min_probes=min_probes, check_every=check_every)
        est = linalg.hutchinson(op, op.n, rtol=rtol, min_probes=min_probes,
                                max_probes=max_probes, check_every=check_every, seed=seed,
                                dtype=op.dtype, device=op.device, split=_split(op.objective))
    else:
        est = linalg.hutchpp(op, op.n, max_probes, rtol=rtol, seed=seed, dtype=op.dtype,
                             device=op.device)
    return TraceResult(est.estimate, est.stderr, est.n_matvecs, est.n_probes, method,
                       est.samples, settings, converged=est.converged, rtol=rtol)


# ------------------------------------------------------------------------------------------
# spectral density
@accepts_model
def spectral_density(objective: Objective, theta: Tensor | None = None, *, n_probes: int = 10,
                     n_steps: int = 80, sigma: float = 0.01, grid_size: int = 1000,
                     seed: int = 0, operator: str = "hessian",
                     params: str | Tensor | None = None, block_size: int = 10) -> DensityResult:
    """Eigenvalue density of the Hessian (or GGN) by stochastic Lanczos quadrature.

    :func:`landscape.linalg.slq` with ``n_probes`` normalized Rademacher probes and
    ``n_steps`` Lanczos steps each (``block_size`` probes per data pass, split across
    ``torch.distributed`` ranks when initialized), broadened by
    :func:`landscape.linalg.slq_density`: Gaussians of standard deviation ``sigma`` times the
    spectrum width, on ``grid_size`` points (integrates to 1). Cost: ``n_probes * n_steps``
    HVPs; memory ``block_size * n_steps * P`` floats.
    """
    n_probes = check_int("n_probes", n_probes)
    n_steps = check_int("n_steps", n_steps)
    grid_size = check_int("grid_size", grid_size, 2)
    check_positive("sigma", sigma)
    op = _Operator(objective, theta, operator, params, block_size)
    quad = linalg.slq(op, op.n, n_probes, n_steps, seed=int(seed), block_size=block_size,
                      dtype=op.dtype, device=op.device, split=_split(op.objective))
    grid, density, sig = linalg.slq_density(quad, sigma, grid_size)
    settings = {"n_probes": n_probes, "n_steps": min(n_steps, op.n), "sigma": sigma,
                "grid_size": grid_size, "seed": int(seed), "params": _params_setting(params),
                **op.settings()}
    return DensityResult(grid, density, quad.nodes, quad.weights, sig, quad.n_matvecs, settings)



# ------------------------------------------------------------------------------------------
# curvature maps
SURFACE_KINDS = ("surface", "plane", "trajectory")


def _surface_buffers(f: h5py.File, path: Path, objective: Objective,
                     ) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    """The surface's buffers at its origin and their change per unit of x and y (if any):
    the datasets named for a buffer of the model, each checked (numeric, the buffer's
    shape) before it is read; other members are ignored."""
    def read(name: str) -> dict[str, Tensor]:
        group = f.get(name)
        if group is None:
            return {}
        if not isinstance(group, h5py.Group):
            raise store.damaged(path, f"'/{name}' is not a group of buffers")
        out: dict[str, Tensor] = {}
        for key, obj in store.members(group, path):  # listed first: nothing is read (or
            buffer = objective.buffers.get(key)  # raised) inside HDF5's iteration
            if buffer is None or not isinstance(obj, h5py.Dataset):
                continue
            if obj.dtype.kind not in "fiub" or obj.shape != tuple(buffer.shape):
                raise store.damaged(path, f"'{obj.name}' ({obj.dtype}, shape {obj.shape}) "
                                          f"does not fit the model's buffer of shape "
                                          f"{tuple(buffer.shape)}")
            try:
                out[key] = torch.from_numpy(np.asarray(obj[()]))
            except OSError as err:
                raise store.damaged(path, f"cannot read '{obj.name}' ({err})") from None
        return out

    origin = {**objective.buffers, **{
        k: v.to(objective.buffers[k].device, objective.buffers[k].dtype)
        for k, v in read("buffers/origin").items()}}
    steps = {axis: read(f"buffers/{axis}") for axis in ("x", "y")}
    return origin, steps


def _point_objective(objective: Objective, origin: dict[str, Tensor],
                     steps: dict[str, dict[str, Tensor]], cx: float, cy: float) -> Objective:
    """The objective with the buffers of grid point (cx, cy) (a shallow copy if they move)."""
    if not any(steps.values()) and all(origin[k] is objective.buffers[k] for k in origin):
        return objective
    buffers = dict(origin)
    for axis, c in (("x", cx), ("y", cy)):
        for k, d in steps[axis].items():
            if torch.is_floating_point(buffers[k]):  # (read: only the model's buffers)
                buffers[k] = buffers[k] + c * d.to(buffers[k].device, buffers[k].dtype)
    point = copy.copy(objective)
    point.buffers = buffers
    return point


def curvature_map(objective: Objective, surface: str | Path, *, tol: float = 1e-4,
                  max_iter: int = 300, seed: int = 0, operator: str = "hessian",
                  params: str | Tensor | None = None, block_size: int = 1,
                  overwrite: bool = False) -> CurvatureMap | None:
    """Largest and smallest eigenvalue at every point of a stored 2D surface.

    The point at grid index ``(i, j)`` is ``origin + x[j] * dx + y[i] * dy`` with the surface
    file's own float32 origin and directions (and its BatchNorm buffers, moved along the
    buffer directions when the file has them, as for planes through three models); the
    objective supplies the model and the data, and must have the same P. Results go into the
    surface file as ``hessian_max`` and ``hessian_min`` (float64 ``[len(y), len(x)]``, NaN where
    not computed) and the mask ``hessian_done``, flushed after every point; re-running
    resumes. A map with other settings already in the file is refused unless ``overwrite``.
    Li et al. (2018) plot ``|hessian_min / hessian_max|``. Cost: one Lanczos run
    (``which="both"``, k=1, to relative residual ``tol``) per point; each point of a row
    after the first starts from the sum of its left neighbour's two eigenvectors (a warm
    start; digits MLP, ``tol`` 1e-4: 0.86x the HVPs of cold starts on a 7 x 5 grid over
    [-1, 1], 0.70-0.77x at the 0.04 spacing of a 51-point axis; ``benchmarks/README.md``).

    Warm-start rule (so that a resumed map is bit-identical to an uninterrupted one): a row
    ``i`` is one chain, its first point started cold from ``seed``, and a row is the unit
    of work and of resume: its values and ``hessian_done`` are written and flushed together
    when the whole row is done, so a killed run loses at most the row in flight and a
    rerun computes each unfinished row from its first point, replaying the same sequence.
    Under ``torchrun`` the rows are split among ranks and rank 0 writes; other ranks return
    None.
    """
    path = Path(surface)
    with store.open_result(path, kind=SURFACE_KINDS, validate=gridfile.validate_grid) as f:
        for name in ("x", "y", "origin", "directions/x", "directions/y"):
            if name not in f:
                raise LandscapeError(f"{path}: curvature maps need a 2D surface (no {name!r})")
        x, y = np.asarray(f["x"][()], dtype=np.float64), np.asarray(f["y"][()], np.float64)
        origin = torch.from_numpy(np.asarray(f["origin"][()])).double()
        dx = torch.from_numpy(np.asarray(f["directions/x"][()])).double()
        dy = torch.from_numpy(np.asarray(f["directions/y"][()])).double()
        buffer_origin, buffer_steps = _surface_buffers(f, path, objective)
    if origin.numel() != objective.space.numel:
        raise LandscapeError(f"{path}: the surface has {origin.numel()} parameters, the model "
                             f"{objective.space.numel}")
    check_positive("tol", tol)
    settings = {"tol": tol, "max_iter": max_iter, "seed": int(seed), "operator": operator,
                "params": _params_setting(params), "block_size": block_size,
                "hvp_method": objective.hvp_method, "warm_start": "left neighbour, per row",
                **objective.settings()}
    shape = (len(y), len(x))
    rank, world = rank_and_world()
    f, todo, error = None, [], None
    if rank == 0:
        try:
            f = store.open_result(path, kind=SURFACE_KINDS, mode="r+",
                                  validate=gridfile.validate_grid)
            if store.claim_part(f, "hessian_done", settings, "a curvature map", overwrite):
                store.write_arrays(f, {"hessian_max": np.full(shape, np.nan),
                                       "hessian_min": np.full(shape, np.nan),
                                       "hessian_done": np.zeros(shape, dtype=bool)})
                gridfile.attach_grid_scales(f, ("hessian_max", "hessian_min", "hessian_done"))
                store.mark_part(f, "hessian_done", settings)
        except LandscapeError as err:
            error = str(err)
            if f is not None:
                f.close()
                f = None
        else:
            done = np.asarray(f["hessian_done"][()], dtype=bool)
            todo = [i for i in range(shape[0]) if not done[i].all()]  # whole rows
    error, todo = broadcast((error, todo))
    if error:
        raise LandscapeError(error)
    total_hvp = 0
    bar = progress(total=len(todo) * shape[1], desc="curvature map", unit="point",
                   disable=None if rank == 0 else True)
    try:
        for start in range(0, len(todo), world):
            row = None
            if start + rank < len(todo):
                i, v0, row = todo[start + rank], None, []
                for j in range(shape[1]):
                    obj = _point_objective(objective, buffer_origin, buffer_steps, x[j], y[i])
                    res = hessian_eigenvalues(obj, origin + x[j] * dx + y[i] * dy, k=1,
                                              which="both", tol=tol, max_iter=max_iter,
                                              seed=seed, operator=operator, params=params,
                                              block_size=block_size, verify=False, v0=v0)
                    v0 = res.eigenvectors.sum(0)
                    row.append((float(res.largest[0]), float(res.smallest[0]), res.n_hvp))
                    bar.update(1)
                row = (i, row)
            for item in all_gather(row):
                if item is None:
                    continue
                total_hvp += sum(r[2] for r in item[1])
                if f is not None:
                    f["hessian_max"][item[0], :] = [r[0] for r in item[1]]
                    f["hessian_min"][item[0], :] = [r[1] for r in item[1]]
                    f["hessian_done"][item[0], :] = True
            if f is not None:
                f.flush()
            bar.update(shape[1] * (min(world, len(todo) - start) - (row is not None)))
        if f is None:
            return None
        return CurvatureMap(x, y, f["hessian_max"][()], f["hessian_min"][()],
                            f["hessian_done"][()].astype(bool), total_hvp, path)
    finally:
        bar.close()
        if f is not None:
            f.close()


# ------------------------------------------------------------------------------------------
# one model, one file
@dataclass
class HessianReport:
    """Everything ``landscape hessian`` computes for one model (each part optional)."""

    eigen: EigenResult | None = None
    trace: TraceResult | None = None
    density: DensityResult | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def n_hvp(self) -> int:
        return sum(p.n_hvp for p in (self.eigen, self.trace, self.density) if p is not None)

    def warnings(self) -> list[str]:
        """One line per value that missed its tolerance (eigenvalue residual, trace error)."""
        return [w for part in (self.eigen, self.trace) if part is not None
                for w in part.warnings()]

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object: eigenvalues (top descending, bottom ascending), residuals,
        convergence flags, trace, a density summary and the HVP count."""
        e = self.eigen
        out: dict[str, Any] = {
            "eigenvalues_top": [] if e is None else e.largest.tolist(),
            "eigenvalues_bottom": [] if e is None else e.smallest.tolist(),
            "residuals_top": [] if e is None else e.residuals[: e.n_largest].tolist(),
            "residuals_bottom": [] if e is None else e.residuals[e.n_largest :].tolist(),
            "converged_top": [] if e is None else e.converged[: e.n_largest].tolist(),
            "converged_bottom": [] if e is None else e.converged[e.n_largest :].tolist(),
            "at_floor_top": [] if e is None or e.at_floor is None
            else e.at_floor[: e.n_largest].tolist(),
            "at_floor_bottom": [] if e is None or e.at_floor is None
            else e.at_floor[e.n_largest :].tolist(),
            "warnings": self.warnings(), "trace": None, "density": None, "n_hvp": self.n_hvp,
            "out": None if self.path is None else str(self.path)}
        if self.trace is not None:
            t = self.trace
            out["trace"] = {"estimate": t.estimate, "stderr": t.stderr, "method": t.method,
                            "n_probes": t.n_probes, "n_hvp": t.n_hvp,
                            "converged": t.converged, "rtol": t.rtol}
        if self.density is not None:
            d = self.density
            out["density"] = {"n_probes": int(d.nodes.shape[0]), "n_steps": int(d.nodes.shape[1]),
                              "sigma": d.sigma, "min_node": float(d.nodes.min()),
                              "max_node": float(d.nodes.max()), "n_hvp": d.n_hvp}
        return out


def _write_eigen(f: h5py.File, e: EigenResult) -> None:
    arrays: dict[str, Any] = {}
    for part in ("largest", "smallest"):
        sub = e.part(part)
        tag = "top" if part == "largest" else "bottom"
        arrays[f"eigenvalues_{tag}"] = sub.eigenvalues.numpy()
        arrays[f"residuals_{tag}"] = sub.residuals.numpy()
        arrays[f"converged_{tag}"] = sub.converged.numpy()
        if sub.at_floor is not None:
            arrays[f"at_floor_{tag}"] = sub.at_floor.numpy()
        if sub.eigenvectors is not None:
            arrays[f"eigenvectors_{tag}"] = sub.eigenvectors.numpy()
    store.write_arrays(f, arrays)
    store.write_attrs(f, {"eigen_done": True, "eigen_n_hvp": e.n_hvp,
                          "eigen_n_restarts": e.n_restarts, "eigen_settings": e.settings})
    f.flush()


def _read_eigen(f: h5py.File, eigenvectors: bool) -> EigenResult:
    attrs = store.read_attrs(f)
    values, res, conv, floor, vecs = [], [], [], [], []
    for tag in ("top", "bottom"):
        values.append(torch.from_numpy(f[f"eigenvalues_{tag}"][()]))
        res.append(torch.from_numpy(f[f"residuals_{tag}"][()]))
        conv.append(torch.from_numpy(f[f"converged_{tag}"][()]))
        if f"at_floor_{tag}" in f:
            floor.append(torch.from_numpy(f[f"at_floor_{tag}"][()]))
        if eigenvectors:
            if f"eigenvectors_{tag}" not in f:
                raise LandscapeError(f"{f.filename} has no eigenvectors (it was computed "
                                     "without them); recompute without --no-eigenvectors")
            vecs.append(torch.from_numpy(f[f"eigenvectors_{tag}"][()]))
    return EigenResult(torch.cat(values), torch.cat(vecs) if eigenvectors else None,
                       torch.cat(res), torch.cat(conv), int(attrs["eigen_n_hvp"]),
                       int(values[0].numel()), int(attrs.get("eigen_n_restarts", 0)),
                       attrs.get("eigen_settings", {}), torch.cat(floor) if floor else None)


def _write_trace(f: h5py.File, t: TraceResult) -> None:
    g = f.require_group("trace")
    store.write_arrays(g, {"samples": t.samples.numpy()})
    store.write_attrs(g, {"estimate": t.estimate, "stderr": t.stderr, "n_hvp": t.n_hvp,
                          "n_probes": t.n_probes, "method": t.method, "settings": t.settings,
                          "converged": t.converged, "rtol": t.rtol})
    f.attrs["trace_done"] = True
    f.flush()


def _read_trace(f: h5py.File) -> TraceResult:
    g = f["trace"]
    a = store.read_attrs(g)
    return TraceResult(float(a["estimate"]), a.get("stderr"), int(a["n_hvp"]),
                       int(a["n_probes"]), str(a["method"]), torch.from_numpy(g["samples"][()]),
                       a.get("settings", {}), bool(a.get("converged", True)), a.get("rtol"))


def _write_density(f: h5py.File, d: DensityResult) -> None:
    g = f.require_group("density")
    store.write_arrays(g, {"grid": d.grid.numpy(), "density": d.density.numpy(),
                           "nodes": d.nodes.numpy(), "weights": d.weights.numpy()})
    store.write_attrs(g, {"sigma": d.sigma, "n_hvp": d.n_hvp, "settings": d.settings})
    f.attrs["density_done"] = True
    f.flush()


def _read_density(f: h5py.File) -> DensityResult:
    g = f["density"]
    a = store.read_attrs(g)
    arrays = {k: torch.from_numpy(g[k][()]) for k in ("grid", "density", "nodes", "weights")}
    return DensityResult(sigma=float(a["sigma"]), n_hvp=int(a["n_hvp"]),
                         settings=a.get("settings", {}), **arrays)


def validate_hessian(f: h5py.File, path: Path, attrs: Mapping[str, Any]) -> None:
    """The validator of a ``hessian`` file (:data:`landscape.store.Validator`): each part
    marked done (``eigen_done``, ``trace_done``, ``density_done``) holds what its reader above
    takes, with consistent shapes (one residual and flag per eigenvalue, one eigenvector row
    per eigenvalue of one length, a density per grid point, a weight per node)."""
    done = {}
    for part in ("eigen", "trace", "density"):
        value = attrs.get(f"{part}_done", False)
        if not isinstance(value, bool | int):
            raise store.damaged(path, f"attribute '{part}_done' is {value!r}, not true or "
                                      "false")
        done[part] = bool(value)
    if done["eigen"]:
        store.check_number(attrs, "eigen_n_hvp", path, integer=True)
        store.check_number(attrs, "eigen_n_restarts", path, integer=True, optional=True)
        store.check_mapping(attrs, "eigen_settings", path)
        if len({f"at_floor_{tag}" in f for tag in ("top", "bottom")}) > 1:
            raise store.damaged(path, "'at_floor' is stored for one end of the spectrum only")
        width = None
        for tag in ("top", "bottom"):
            k = store.dataset(f, f"eigenvalues_{tag}", path, ndim=1).shape
            store.dataset(f, f"residuals_{tag}", path, shape=k)
            for name in ("converged", "at_floor"):
                store.dataset(f, f"{name}_{tag}", path, dtype="biu", shape=k,
                              optional=name != "converged")
            vectors = store.dataset(f, f"eigenvectors_{tag}", path, ndim=2, limit=None,
                                    optional=True)
            if vectors is not None:
                if vectors.shape[0] != k[0] or width not in (None, vectors.shape[1]):
                    raise store.damaged(path, f"eigenvectors_{tag} of shape {vectors.shape} "
                                              f"do not match {k[0]} eigenvalues of one "
                                              "parameter count")
                width = vectors.shape[1]
    if done["trace"]:
        group = store.subgroup(f, "trace", path)
        store.dataset(group, "samples", path, ndim=1)
        group_attrs = store.read_attrs(group)
        store.check_mapping(group_attrs, "settings", path, " of 'trace'")
        store.check_number(group_attrs, "estimate", path, " of 'trace'")
        for key in ("stderr", "rtol"):
            store.check_number(group_attrs, key, path, " of 'trace'", optional=True)
        for key in ("n_hvp", "n_probes"):
            store.check_number(group_attrs, key, path, " of 'trace'", integer=True)
        if not isinstance(group_attrs.get("method"), str) or not isinstance(
                group_attrs.get("converged", True), bool | int):
            raise store.damaged(path, "the trace's 'method' or 'converged' attribute is "
                                      "damaged")
    if done["density"]:
        group = store.subgroup(f, "density", path)
        n = store.dataset(group, "grid", path, ndim=1).shape
        if n == (0,):
            raise store.damaged(path, "the density grid is empty")
        store.dataset(group, "density", path, shape=n)
        nodes = store.dataset(group, "nodes", path, ndim=2).shape
        store.dataset(group, "weights", path, shape=nodes)
        group_attrs = store.read_attrs(group)
        store.check_mapping(group_attrs, "settings", path, " of 'density'")
        store.check_number(group_attrs, "sigma", path, " of 'density'")
        store.check_number(group_attrs, "n_hvp", path, " of 'density'", integer=True)


def require_finite(objective: Objective, theta: Tensor | None, what: str) -> None:
    """A one-line LandscapeError when the parameters at ``theta`` (default: the model's) or
    the loss there are NaN or infinite (a diverged run), where ``what`` is undefined; checked
    before any heavy work. Cost: one forward pass."""
    theta = objective.theta0 if theta is None else theta
    bad = int((~torch.isfinite(theta)).sum())
    if bad:
        raise LandscapeError(f"the model has {bad} NaN or infinite parameters (a diverged "
                             f"run?): {what} is undefined there")
    loss = float(objective.evaluate(theta[None])["loss"][0])
    if not math.isfinite(loss):
        raise LandscapeError(f"the model's loss is {loss} (a diverged run?): {what} is "
                             "undefined there")


@accepts_model
def analyze_hessian(objective: Objective, theta: Tensor | None = None, *, top: int = 5,
                    bottom: int = 1, trace: bool = False, density: bool = False,
                    tol: float = 1e-6, max_iter: int = 1000, seed: int = 0,
                    operator: str = "hessian", params: str | None = None, block_size: int = 1,
                    verify: bool | None = None, trace_method: str = "hutch++",
                    trace_rtol: float = 1e-2, max_probes: int | None = None,
                    density_probes: int = 10,
                    density_steps: int = 80, sigma: float = 0.01, grid_size: int = 1000,
                    eigenvectors: bool = True, out: str | Path | None = None,
                    overwrite: bool = False, settings: dict[str, Any] | None = None,
                    attrs: dict[str, Any] | None = None) -> HessianReport:
    """Top/bottom eigenvalues, trace and density of one model, optionally saved to ``out``.

    ``out``: a ``kind="hessian"`` HDF5 file whose settings are ``settings`` (what identifies
    the model and data: run, split, subset, weights hash) plus every option here; each part
    is written as soon as it is done, and a re-run with the same settings reuses the parts
    already in the file. ``eigenvectors=False`` keeps them out of the file (and the result).
    Under ``torchrun`` rank 0 writes (and alone returns the parts read back from the file);
    trace and density probes are split among the ranks.
    """
    check_int("top", top, 0)
    check_int("bottom", bottom, 0)
    if density:
        check_positive("sigma", sigma)  # before any Lanczos
    require_finite(objective, theta, "its Hessian")
    all_settings = {**(settings or {}), "top": top, "bottom": bottom, "trace": trace,
                    "density": density, "tol": tol, "max_iter": max_iter, "seed": int(seed),
                    "operator": operator, "params": _params_setting(params),
                    "block_size": block_size, "verify": verify,
                    "eigenvectors": eigenvectors, **objective.settings(),
                    "hvp_method": objective.hvp_method}
    if trace:
        if max_probes is None:
            if trace_method not in TRACE_BUDGET:
                raise unknown_name("trace method", trace_method, TRACE_METHODS)
            max_probes = TRACE_BUDGET[trace_method]
        all_settings.update(trace_method=trace_method, trace_rtol=trace_rtol,
                            max_probes=max_probes)
    if density:
        all_settings.update(density_probes=density_probes, density_steps=density_steps,
                            sigma=sigma, grid_size=grid_size)
    rank, _ = rank_and_world()
    f, done, error = None, {}, None
    if out is not None and rank == 0:
        try:
            f = store.create(out, "hessian", all_settings, attrs={
                "layout": objective.space.layout(), "device": str(objective.device),
                **(attrs or {})}, overwrite=overwrite, memory=True, validate=validate_hessian)
        except LandscapeError as err:
            error = str(err)
        else:
            done = {part: bool(f.attrs.get(f"{part}_done", False))
                    for part in ("eigen", "trace", "density")}
    error, done = broadcast((error, done))  # every rank skips the same parts
    if error:
        raise LandscapeError(error)
    report = HessianReport(settings=all_settings, path=None if out is None else Path(out))
    try:
        if top + bottom:
            if done.get("eigen"):
                report.eigen = None if f is None else _read_eigen(f, eigenvectors)
            else:
                report.eigen = hessian_eigenvalues(
                    objective, theta, (top, bottom), "both", tol=tol, max_iter=max_iter,
                    seed=seed, operator=operator, params=params, block_size=block_size,
                    verify=verify, return_vectors=eigenvectors)
                if f is not None:
                    _write_eigen(f, report.eigen)
                    store.commit(f, out)
        if trace:
            if done.get("trace"):
                report.trace = None if f is None else _read_trace(f)
            else:
                report.trace = hessian_trace(
                    objective, theta, trace_method, rtol=trace_rtol, max_probes=max_probes,
                    seed=seed, operator=operator, params=params)
                if f is not None:
                    _write_trace(f, report.trace)
                    store.commit(f, out)
        if density:
            if done.get("density"):
                report.density = None if f is None else _read_density(f)
            else:
                report.density = spectral_density(
                    objective, theta, n_probes=density_probes, n_steps=density_steps,
                    sigma=sigma, grid_size=grid_size, seed=seed, operator=operator,
                    params=params)
                if f is not None:
                    _write_density(f, report.density)
                    store.commit(f, out)
    finally:
        store.close_quietly(f)
    for line in report.warnings():
        warnings.warn(line, NotConvergedWarning, stacklevel=2)
    return report


def load_hessian(path: str | Path, eigenvectors: bool = False) -> HessianReport:
    """Read a ``kind="hessian"`` file back; ``eigenvectors=True`` also loads them (a
    LandscapeError if the file was written without them)."""
    with store.open_result(path, kind="hessian", validate=validate_hessian) as f:
        report = HessianReport(settings=store.read_settings(f), path=Path(path))
        if f.attrs.get("eigen_done", False):
            report.eigen = _read_eigen(f, eigenvectors)
        elif eigenvectors:
            raise LandscapeError(f"{path} has no eigenvectors (no eigenvalues were computed)")
        if f.attrs.get("trace_done", False):
            report.trace = _read_trace(f)
        if f.attrs.get("density_done", False):
            report.density = _read_density(f)
    return report


def hessian_of_run(run: Any, *, split: str = "train", subset: int | None = None,
                   device: str = "auto", precision: str = "float32", bn: str = "eval",
                   batch_size: int | None = None, out: str | Path | None = None,
                   overwrite: bool = False, command: str | None = None,
                   **options: Any) -> HessianReport:
    """:func:`analyze_hessian` on a run's final model (``run``: a directory or a loaded run).

    ``subset``: a fixed random subset of the split, drawn from ``options["seed"]``. The file
    settings identify the run (path, model and dataset specs, a digest of the weights and
    buffers), the split and the subset, plus every analysis option.
    """
    from landscape.runs import as_run

    loaded = as_run(run)
    objective = Objective.from_run(loaded, split=split, subset=subset,
                                   seed=int(options.get("seed", 0)), device=device,
                                   precision=precision, bn=bn, batch_size=batch_size)
    info = getattr(loaded, "info", {}) or {}
    settings = {"run": str(Path(loaded.path).resolve()), "model": info.get("model"),
                "dataset": getattr(loaded.data, "spec", None), "split": split,
                "subset": subset, "weights_sha256": store.values_digest(
                    [objective.theta0, *objective.buffers.values()])}
    return analyze_hessian(objective, out=out, overwrite=overwrite, settings=settings,
                           attrs={"command": command}, **options)
