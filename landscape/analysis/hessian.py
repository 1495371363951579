"""Curvature of the loss: Hessian (or Gauss-Newton) eigenvalues, trace, density, maps.

Everything here is matrix-free: the only access to the curvature is the engine's product
``Objective.hvp(theta, V)`` (or ``Objective.ggn_vp``) on a block ``V[K, P]``, so K vectors
share each pass over the data. Costs are reported in ``n_hvp``, the number of vectors
multiplied (one HVP costs a few forward+backward passes over the split; see
``benchmarks/hessian.py``).

- :func:`hessian_eigenvalues`: extreme eigenvalues by thick-restart (block) Lanczos with full
  reorthogonalization (Lanczos 1950; Wu and Simon 2000, "Thick-restart Lanczos method for
  large symmetric eigenvalue problems"), converged on each Ritz pair's residual.
- :func:`hessian_trace`: Hutchinson's estimator with Rademacher probes and a standard error,
  or Hutch++ (Meyer, Musco, Musco and Woodruff 2021, "Hutch++: optimal stochastic trace
  estimation").
- :func:`spectral_density`: stochastic Lanczos quadrature (Lin, Saad and Yang 2016,
  "Approximating spectral densities of large matrices"; Ghorbani, Krishnan and Xiao 2019,
  "An investigation into neural net optimization via Hessian eigenvalue density").
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
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from landscape import store
from landscape.distributed import all_gather, broadcast, rank_and_world
from landscape.errors import LandscapeError, check_int, check_positive, unknown_name
from landscape.objective import Objective
from landscape.progress import progress

OPERATORS = ("hessian", "ggn")
WHICH = ("largest", "smallest", "both")
TRACE_METHODS = ("hutchinson", "hutch++")

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
    ``residuals[k]``: ``||H v - lambda v|| / |lambda|`` (the Lanczos estimate, or the
    explicitly recomputed value when ``verify=True``); ``converged[k]``: residual below ``tol``
    (or below the rounding floor of the working precision). ``n_hvp``: vectors multiplied.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor | None
    residuals: Tensor
    converged: Tensor
    n_hvp: int
    n_largest: int
    n_restarts: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

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
        return EigenResult(self.eigenvalues[sl], vecs, self.residuals[sl], self.converged[sl],
                           self.n_hvp, self.n_largest if which == "largest" else 0,
                           self.n_restarts, dict(self.settings))


@dataclass
class TraceResult:
    """Trace estimate of the curvature operator.

    ``stderr``: standard error of ``estimate`` (sample standard deviation of the per-probe
    values over the square root of their number; for Hutch++ that of its Hutchinson part on
    the deflated remainder, see :func:`hessian_trace`); None when it cannot be estimated
    (one probe). ``samples``: the per-probe values (Hutchinson) or the deflated remainder's
    (Hutch++).
    """

    estimate: float
    stderr: float | None
    n_hvp: int
    n_probes: int
    method: str
    samples: Tensor
    settings: dict[str, Any] = field(default_factory=dict)


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
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise LandscapeError(f"block_size must be a positive integer, got {block_size!r}")
        self.objective = objective
        self.theta = objective.theta0 if theta is None else objective._check(theta)
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

    def _apply(self, v: Tensor) -> Tensor:
        out = self.product(self.theta, self.embed(v))
        return out if self.mask is None else out[:, self.mask]

    def __call__(self, v: Tensor) -> Tensor:
        """``A v`` for ``v[K, n]``, in blocks of ``block_size`` (halved on out-of-memory)."""
        outs = []
        start = 0
        while start < v.shape[0]:
            chunk = v[start : start + self.block_size]
            try:
                outs.append(self._apply(chunk))
            except torch.cuda.OutOfMemoryError:  # (torch.OutOfMemoryError only from 2.5)
                if self.block_size == 1:
                    raise
                self.block_size = max(1, self.block_size // 2)
                torch.cuda.empty_cache()
                continue
            start += chunk.shape[0]
        self.n_hvp += v.shape[0]
        return torch.cat(outs)

    def settings(self) -> dict[str, Any]:
        return {"operator": self.operator, "block_dim": self.n,
                "hvp_method": self.objective.hvp_method, **self.objective.settings()}


def _params_setting(params: Any) -> Any:
    if params is None or isinstance(params, str):
        return params
    mask = torch.as_tensor(params).cpu().numpy().astype(np.uint8)
    return {"mask_sha256": hashlib.sha256(mask.tobytes()).hexdigest(), "size": int(mask.sum())}


# ------------------------------------------------------------------------------------------
# randomness and processes
def _generator(seed: int, *key: int) -> torch.Generator:
    """A CPU generator for (seed, key...): independent streams, same on every device."""
    words = np.random.SeedSequence([int(seed) % 2**63, *key]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(words[0]) << 31 ^ int(words[1]))


def _rademacher(n: int, seed: int, index: int, salt: int, dtype: torch.dtype,
                device: torch.device) -> Tensor:
    bits = torch.randint(0, 2, (n,), generator=_generator(seed, salt, index))
    return (bits * 2 - 1).to(device=device, dtype=dtype)


# ------------------------------------------------------------------------------------------
# Lanczos
def _orthonormal_block(W: Tensor, V: Tensor, thresh: float, limit: int,
                       ) -> tuple[Tensor, Tensor]:
    """Orthonormalize the rows of ``W[b, n]`` (already orthogonal to ``V``) among themselves.

    Returns ``Q[b', n]`` and ``R[b', b]`` (float64) with ``W[j] = sum_i R[i, j] Q[i]`` up to
    the dropped components below ``thresh`` (an invariant subspace: deflated). At most
    ``limit`` rows are kept.
    """
    qs: list[Tensor] = []
    R = torch.zeros(W.shape[0], W.shape[0], dtype=torch.float64)
    for j in range(W.shape[0]):
        w = W[j]
        for _ in range(2):
            if qs:
                Qs = torch.stack(qs)
                c = Qs @ w
                w = w - c @ Qs
                R[: len(qs), j] += c.double().cpu()
            if V.shape[0]:
                w = w - (V @ w) @ V
        norm = float(torch.linalg.vector_norm(w))
        if norm > thresh and len(qs) < limit:
            R[len(qs), j] = norm
            qs.append(w / norm)
    Q = torch.stack(qs) if qs else W[:0]
    return Q, R[: len(qs)]


def _random_orthonormal(k: int, V: Tensor, gen: torch.Generator, dtype: torch.dtype,
                        device: torch.device) -> Tensor:
    """``k`` random unit rows orthogonal to ``V`` and to each other."""
    W = torch.randn(k, V.shape[1], generator=gen, dtype=torch.float64).to(device, dtype)
    W = W - (W @ V.T) @ V
    Q, _ = _orthonormal_block(W, V, 0.0, k)
    return Q


def _keep_indices(m: int, k_top: int, k_bot: int, n_keep: int) -> list[int]:
    """Indices (into ascending Ritz values) kept at a thick restart."""
    extra = n_keep - k_top - k_bot
    if k_bot == 0:
        n_top = n_keep
    elif k_top == 0:
        n_top = 0
    else:
        n_top = k_top + (extra * k_top) // (k_top + k_bot)
    n_bot = n_keep - n_top
    return list(range(n_bot)) + list(range(m - n_top, m))


def _lanczos(op: Callable[[Tensor], Tensor], n: int, k_top: int, k_bot: int, tol: float,
             max_iter: int, max_basis: int, block: int, seed: int, dtype: torch.dtype,
             device: torch.device, desc: str = "lanczos",
             ) -> tuple[Tensor, Tensor, Tensor, Tensor, int, int]:
    """Thick-restart block Lanczos with full reorthogonalization.

    Keeps an orthonormal basis ``V[:m]`` and the Rayleigh quotient ``T = V^T A V`` (float64),
    computed from the Gram-Schmidt coefficients of each new block ``A Q`` (two passes, "twice
    is enough"), so the same code covers plain and thick-restarted steps. With the pending
    block ``Q`` and its coupling ``C`` (``A V = V T + Q^T C``), the residual of the Ritz pair
    ``(theta, V^T u)`` is ``||C u||``. When ``m`` would exceed ``max_basis``, the basis is
    replaced by ``n_keep`` Ritz vectors from the wanted ends (Wu and Simon 2000).

    Returns (values, vectors[k, n], residual norms, converged, n_matvecs, n_restarts).
    """
    k_total = k_top + k_bot
    m_max = min(n, max_basis)
    eps = torch.finfo(dtype).eps
    gen = _generator(seed, 0x1A2C)
    V = torch.zeros(m_max, n, dtype=dtype, device=device)
    T = torch.zeros(m_max, m_max, dtype=torch.float64)
    Q = _random_orthonormal(min(block, n), V[:0], gen, dtype, device)
    m, used, restarts = 0, 0, 0
    last_fill = None  # basis size when an invariant subspace was last left for random fill
    theta = torch.zeros(0, dtype=torch.float64)
    U = torch.zeros(0, 0, dtype=torch.float64)
    res = torch.zeros(0, dtype=torch.float64)
    bar = progress(total=max_iter, desc=desc, unit="hvp")
    try:
        while Q.shape[0] and used < max_iter:
            bq = Q.shape[0]
            if m + bq > m_max:  # thick restart
                n_keep = min(m_max - bq, k_total + (m_max - k_total) // 2)
                if n_keep < k_total:
                    raise LandscapeError(
                        f"max_basis {max_basis} is too small for {k_total} eigenvalues with "
                        f"block size {block}; use at least {k_total + 2 * bq}")
                keep = _keep_indices(m, k_top, k_bot, n_keep)
                Uk = U[:, keep]
                V[:n_keep] = Uk.T.to(device, dtype) @ V[:m]
                T.zero_()
                T[:n_keep, :n_keep] = torch.diag(theta[keep])
                m = n_keep
                restarts += 1
            V[m : m + bq] = Q
            W = op(Q)
            used += bq
            bar.update(bq)
            m += bq
            Vm = V[:m]
            h = Vm @ W.T
            W = W - h.T @ Vm
            h2 = Vm @ W.T
            W = W - h2.T @ Vm
            h = (h + h2).double().cpu()
            T[:m, m - bq : m] = h
            T[m - bq : m, :m] = h.T
            diag_block = T[m - bq : m, m - bq : m]
            T[m - bq : m, m - bq : m] = (diag_block + diag_block.T) / 2
            theta, U = torch.linalg.eigh(T[:m, :m])
            scale = max(float(theta.abs().max()), float(torch.finfo(torch.float64).tiny))
            Q, R = _orthonormal_block(W, Vm, 100 * eps * scale, n - m)
            if Q.shape[0] < bq and m + Q.shape[0] < n and Q.shape[0] < block:
                # invariant subspace found: continue from fresh random directions
                fill = min(block - Q.shape[0], n - m - Q.shape[0])
                basis = torch.cat([Vm, Q]) if Q.shape[0] else Vm
                Q = torch.cat([Q, _random_orthonormal(fill, basis, gen, dtype, device)])
                R = torch.cat([R, torch.zeros(fill, bq, dtype=torch.float64)])
                last_fill = m
            C = torch.zeros(Q.shape[0], m, dtype=torch.float64)
            C[:, m - bq :] = R
            res = (torch.linalg.vector_norm(C @ U, dim=0) if Q.shape[0]
                   else torch.zeros(m, dtype=torch.float64))
            # after an invariant subspace, the residuals are zero but a repeated eigenvalue
            # (or a null space) shows only once the fresh directions have grown: k more steps
            settled = last_fill is None or m - last_fill >= k_total or m + block > n
            if m >= k_total and settled:
                wanted = _wanted(m, k_top, k_bot)
                floor = 100 * eps * scale
                if bool((res[wanted] <= torch.clamp(tol * theta[wanted].abs(), min=floor)).all()):
                    break
    finally:
        bar.close()
    if m < k_total:
        raise LandscapeError(
            f"max_iter {max_iter} is too small to get {k_total} eigenvalues with block size "
            f"{block}; use at least {k_total + block}")
    wanted = _wanted(m, k_top, k_bot)
    vectors = U[:, wanted].T.to(device, dtype) @ V[:m]
    vectors = vectors / torch.linalg.vector_norm(vectors, dim=1, keepdim=True)
    floor = 100 * eps * max(float(theta.abs().max()), float(torch.finfo(torch.float64).tiny))
    conv = res[wanted] <= torch.clamp(tol * theta[wanted].abs(), min=floor)
    return theta[wanted], vectors, res[wanted], conv, used, restarts


def _wanted(m: int, k_top: int, k_bot: int) -> list[int]:
    return [m - 1 - i for i in range(k_top)] + list(range(k_bot))


def _fix_signs(vectors: Tensor) -> Tensor:
    idx = vectors.abs().argmax(dim=1)
    signs = torch.sign(vectors.gather(1, idx[:, None]))
    signs[signs == 0] = 1
    return vectors * signs


def hessian_eigenvalues(objective: Objective, theta: Tensor | None = None, k: int | tuple[
                        int, int] = 5, which: str = "largest", *, tol: float = 1e-6,
                        max_iter: int = 1000, max_basis: int | None = None, seed: int = 0,
                        operator: str = "hessian", params: str | Tensor | None = None,
                        block_size: int = 1, verify: bool = False,
                        return_vectors: bool = True) -> EigenResult:
    """Extreme eigenvalues and eigenvectors of the Hessian (or GGN) of the mean loss.

    Thick-restart Lanczos with full reorthogonalization, on the objective's device and in its
    precision (the small projected eigenproblem in float64). ``k``: the number of eigenvalues;
    with ``which="both"`` an int means k largest and k smallest, a pair ``(k_largest,
    k_smallest)`` sets them separately; one Krylov space serves both ends. A pair converges
    when its residual ``||Hv - lambda v|| <= tol * |lambda|`` (or is below the rounding floor
    ``100 eps ||H||`` of the working precision). ``max_iter``: the most HVPs; ``max_basis``:
    the Krylov basis size that triggers a thick restart (default ``max(40, 4k, k + 8 *
    block_size)``; memory ``max_basis * P`` floats). ``block_size > 1``: block Lanczos, whose
    ``block_size`` vectors share each data pass (and which finds repeated eigenvalues).
    Single-vector Lanczos sees each distinct eigenvalue once: a repeated eigenvalue or a null
    space (the GGN's smallest eigenvalues, a tiny data subset) is returned once, and the next
    reported value is the next distinct one; use ``block_size`` >= the multiplicity there.
    ``verify``: recompute the residuals explicitly (k more HVPs). ``seed``: the start block.
    Cost: 13-20 HVPs for the top 5 of a trained MLP or ResNet-20 at ``tol=1e-3`` (see
    ``benchmarks/hessian.py``); more for clustered or interior eigenvalues. Nothing changes
    the model.
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
    values, vectors, res, conv, used, restarts = _lanczos(
        op, op.n, k_top, k_bot, tol, max_iter, max_basis, block_size, seed, op.dtype, op.device,
        desc=f"lanczos ({operator})")
    vectors = _fix_signs(vectors)
    eps = torch.finfo(op.dtype).eps
    denom = values.abs().clamp(min=float(torch.finfo(torch.float64).tiny))
    if verify:
        resid = op(vectors) - values.to(op.device, op.dtype)[:, None] * vectors
        res = torch.linalg.vector_norm(resid.double(), dim=1).cpu()
        floor = 100 * eps * float(values.abs().max())
        conv = res <= torch.clamp(tol * values.abs(), min=floor)
    settings = {"k_largest": k_top, "k_smallest": k_bot, "tol": tol, "max_iter": max_iter,
                "max_basis": max_basis, "seed": seed, "block_size": block_size,
                "params": _params_setting(params), "verify": verify, **op.settings()}
    return EigenResult(
        eigenvalues=values.clone(),
        eigenvectors=op.embed(vectors).cpu() if return_vectors else None,
        residuals=(res / denom).cpu(), converged=conv.cpu(), n_hvp=op.n_hvp,
        n_largest=k_top, n_restarts=restarts, settings=settings)


# ------------------------------------------------------------------------------------------
# trace
def _hutchinson(op: _Operator, rtol: float, min_probes: int, max_probes: int, seed: int,
                check_every: int) -> tuple[list[float], int]:
    rank, world = rank_and_world()
    values: dict[int, float] = {}
    local_hvp = 0
    start = 0
    bar = progress(total=max_probes, desc="hutchinson", unit="probe")
    try:
        while start < max_probes:
            stop = min(start + check_every, max_probes)
            mine = [i for i in range(start, stop) if i % world == rank]
            local: list[tuple[int, float]] = []
            if mine:
                Z = torch.stack([_rademacher(op.n, seed, i, 1, op.dtype, op.device)
                                 for i in mine])
                vals = (Z * op(Z)).sum(dim=1, dtype=torch.float64).cpu().tolist()
                local_hvp += len(mine)
                local = list(zip(mine, vals))
            for part in all_gather(local):
                values.update(part)
            bar.update(stop - start)
            start = stop
            samples = [values[i] for i in sorted(values)]
            count = len(samples)
            if count >= min_probes and count >= 2:
                est = float(np.mean(samples))
                se = float(np.std(samples, ddof=1) / math.sqrt(count))
                if se <= rtol * abs(est):
                    break
    finally:
        bar.close()
    return [values[i] for i in sorted(values)], sum(all_gather(local_hvp))


def _hutchpp(op: _Operator, budget: int, seed: int) -> tuple[float, list[float]]:
    """Hutch++ with ``budget // 3`` vectors for each of its three stages."""
    s = budget // 3
    if s > op.n:
        s = op.n
    S = torch.stack([_rademacher(op.n, seed, i, 2, op.dtype, op.device) for i in range(s)])
    Y = op(S)
    Qm, _ = torch.linalg.qr(Y.T.double())  # [n, s], float64 for stability
    Q = Qm.T.to(op.dtype)
    low_rank = float((Q * op(Q)).sum(dtype=torch.float64))
    G = torch.stack([_rademacher(op.n, seed, i, 3, op.dtype, op.device) for i in range(s)])
    G = G - (G @ Q.T) @ Q
    G = G - (G @ Q.T) @ Q
    rest = (G * op(G)).sum(dim=1, dtype=torch.float64).cpu().tolist()
    return low_rank + float(np.mean(rest)), rest


def hessian_trace(objective: Objective, theta: Tensor | None = None, method: str = "hutchinson",
                  *, rtol: float = 1e-2, max_probes: int = 1000, min_probes: int | None = None,
                  seed: int = 0, operator: str = "hessian", params: str | Tensor | None = None,
                  block_size: int = 8, check_every: int = 10) -> TraceResult:
    """Trace of the Hessian (or GGN) by randomized probing.

    ``"hutchinson"``: the mean of ``z^T H z`` over Rademacher probes ``z`` (exact in one
    probe for a diagonal matrix), in rounds of ``check_every`` probes, stopping once at least
    ``min_probes`` (default ``min(10, max_probes)``) are in and ``stderr / |estimate| <=
    rtol``, or at ``max_probes``. The
    standard error is the sample standard deviation over ``sqrt(n_probes)``. Probes are split
    across ``torch.distributed`` ranks when initialized.

    ``"hutch++"``: Meyer et al. (2021) with a fixed budget of ``max_probes`` matrix-vector
    products (a third each for the range sketch ``H S``, the exact part ``tr(Q^T H Q)``, and
    Hutchinson on the deflated remainder ``(I - QQ^T) H (I - QQ^T)``). Its ``stderr`` is the
    standard error of the Hutchinson part given ``Q``: since the estimate is unbiased for
    every ``Q``, its variance is the mean of that conditional variance, so this is an honest
    (if itself noisy) standard error. ``rtol`` and ``min_probes`` do not apply.
    Cost: ``n_hvp`` HVPs, ``block_size`` vectors per data pass.
    """
    if method not in TRACE_METHODS:
        raise unknown_name("trace method", method, TRACE_METHODS)
    check_positive("rtol", rtol)
    max_probes = check_int("max_probes", max_probes)
    min_probes = check_int("min_probes", min(10, max_probes) if min_probes is None
                            else min_probes)
    check_every = check_int("check_every", check_every)
    if min_probes > max_probes:
        raise LandscapeError(f"min_probes ({min_probes}) exceeds max_probes ({max_probes})")
    op = _Operator(objective, theta, operator, params, block_size)
    seed = int(seed)
    settings = {"method": method, "max_probes": max_probes, "seed": seed,
                "params": _params_setting(params), **op.settings()}
    if method == "hutchinson":
        settings.update(rtol=rtol, min_probes=min_probes, check_every=check_every)
        samples, n_hvp = _hutchinson(op, rtol, min_probes, max_probes, seed, check_every)
        count = len(samples)
        stderr = float(np.std(samples, ddof=1) / math.sqrt(count)) if count > 1 else None
        return TraceResult(float(np.mean(samples)), stderr, n_hvp, count, method,
                           torch.tensor(samples, dtype=torch.float64), settings)
    if max_probes < 3:
        raise LandscapeError("hutch++ needs max_probes >= 3 (a third for each stage)")
    estimate, rest = _hutchpp(op, max_probes, seed)
    stderr = float(np.std(rest, ddof=1) / math.sqrt(len(rest))) if len(rest) > 1 else None
    return TraceResult(estimate, stderr, op.n_hvp, len(rest), method,
                       torch.tensor(rest, dtype=torch.float64), settings)


# ------------------------------------------------------------------------------------------
# spectral density
def _slq_batch(op: _Operator, Z: Tensor, m: int) -> list[tuple[Tensor, Tensor]]:
    """``m`` Lanczos steps (full reorthogonalization) from each unit row of ``Z`` at once.

    Returns each probe's tridiagonal (alphas, betas), shortened on breakdown (an invariant
    Krylov space: the quadrature is then exact).
    """
    K, n = Z.shape
    eps = torch.finfo(Z.dtype).eps
    V = torch.zeros(K, m, n, dtype=Z.dtype, device=Z.device)
    V[:, 0] = Z
    alpha = torch.zeros(K, m, dtype=torch.float64)
    beta = torch.zeros(K, m, dtype=torch.float64)
    length = [m] * K
    active = list(range(K))
    for j in range(m):
        if not active:
            break
        idx = torch.tensor(active, device=Z.device)
        v = V[idx, j]
        W = op(v)
        alpha[active, j] = (W * v).sum(dim=1, dtype=torch.float64).cpu()
        basis = V[idx, : j + 1]
        for _ in range(2):
            coef = torch.einsum("kin,kn->ki", basis, W)
            W = W - torch.einsum("ki,kin->kn", coef, basis)
        if j + 1 == m:
            break
        norms = torch.linalg.vector_norm(W, dim=1).double().cpu()
        still = []
        for row, k in enumerate(active):
            scale = max(float(alpha[k, : j + 1].abs().max()), float(beta[k].max()))
            if float(norms[row]) <= 100 * eps * max(scale, 1e-300):
                length[k] = j + 1
            else:
                beta[k, j] = norms[row]
                V[k, j + 1] = W[row] / norms[row].to(W.dtype)
                still.append(k)
        active = still
    return [(alpha[k, : length[k]], beta[k, : length[k] - 1]) for k in range(K)]


def _quadrature(alpha: Tensor, beta: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """Gauss quadrature nodes and weights of one tridiagonal, padded to ``m`` (weight 0)."""
    L = alpha.numel()
    T = torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)
    nodes, U = torch.linalg.eigh(T)
    weights = U[0] ** 2
    pad = m - L
    if pad:
        nodes = torch.cat([nodes, nodes[-1:].expand(pad)])
        weights = torch.cat([weights, torch.zeros(pad, dtype=torch.float64)])
    return nodes, weights


def _broaden(nodes: Tensor, weights: Tensor, grid: Tensor, sigma: float) -> Tensor:
    """Mean over probes of the Gaussian-broadened quadrature measures on ``grid``."""
    flat_n, flat_w = nodes.reshape(-1), weights.reshape(-1) / nodes.shape[0]
    out = torch.zeros_like(grid)
    norm = 1.0 / (math.sqrt(2 * math.pi) * sigma)
    for start in range(0, flat_n.numel(), 4096):
        d = (grid[:, None] - flat_n[None, start : start + 4096]) / sigma
        out += (torch.exp(-0.5 * d * d) * flat_w[None, start : start + 4096]).sum(dim=1)
    return out * norm


def spectral_density(objective: Objective, theta: Tensor | None = None, *, n_probes: int = 10,
                     n_steps: int = 80, sigma: float = 0.01, grid_size: int = 1000,
                     seed: int = 0, operator: str = "hessian",
                     params: str | Tensor | None = None, block_size: int = 8) -> DensityResult:
    """Eigenvalue density of the Hessian (or GGN) by stochastic Lanczos quadrature.

    For each of ``n_probes`` normalized Rademacher probes, ``n_steps`` Lanczos steps with full
    reorthogonalization give a Gauss quadrature (nodes = Ritz values, weights = squared first
    components of the Ritz vectors) of the probe's spectral measure; the density is their
    mean, broadened by Gaussians of standard deviation ``sigma`` times the spectrum width,
    on ``grid_size`` points reaching 5 broadening widths past the extreme nodes (so it
    integrates to 1). The probes run side by side, ``block_size`` per data pass, and are
    split across ``torch.distributed`` ranks when initialized. Cost: ``n_probes * n_steps``
    HVPs; memory ``block_size * n_steps * P`` floats. Runs on any torch >= 2 (no
    ``torch.eig``).
    """
    n_probes = check_int("n_probes", n_probes)
    n_steps = check_int("n_steps", n_steps)
    grid_size = check_int("grid_size", grid_size, 2)
    check_positive("sigma", sigma)
    op = _Operator(objective, theta, operator, params, block_size)
    m = min(n_steps, op.n)
    rank, world = rank_and_world()
    mine = [i for i in range(n_probes) if i % world == rank]
    per_batch = max(1, min(block_size, (2**30) // max(1, m * op.n * op.dtype.itemsize)))
    local: list[tuple[int, Tensor, Tensor]] = []
    bar = progress(total=len(mine), desc="slq", unit="probe")
    for start in range(0, len(mine), per_batch):
        batch = mine[start : start + per_batch]
        Z = torch.stack([_rademacher(op.n, seed, i, 4, op.dtype, op.device) for i in batch])
        Z = Z / math.sqrt(op.n)
        for i, (a, b) in zip(batch, _slq_batch(op, Z, m)):
            nodes, weights = _quadrature(a, b, m)
            local.append((i, nodes, weights))
        bar.update(len(batch))
    bar.close()
    parts = all_gather((local, op.n_hvp))
    rows = sorted((item for part, _ in parts for item in part), key=lambda r: r[0])
    nodes = torch.stack([r[1] for r in rows])
    weights = torch.stack([r[2] for r in rows])
    n_hvp = sum(count for _, count in parts)
    lo, hi = float(nodes.min()), float(nodes.max())
    width = hi - lo if hi > lo else max(abs(hi), 1.0)
    sig = sigma * width
    grid = torch.linspace(lo - 5 * sig, hi + 5 * sig, grid_size, dtype=torch.float64)
    if float(grid[1] - grid[0]) > sig / 2:
        need = math.ceil(2 * (hi - lo + 10 * sig) / sig) + 1
        raise LandscapeError(f"grid_size {grid_size} is too coarse for sigma {sigma}; "
                             f"use grid_size >= {need} or a larger sigma")
    density = _broaden(nodes, weights, grid, sig)
    settings = {"n_probes": n_probes, "n_steps": m, "sigma": sigma, "grid_size": grid_size,
                "seed": int(seed), "params": _params_setting(params), **op.settings()}
    return DensityResult(grid, density, nodes, weights, sig, n_hvp, settings)


# ------------------------------------------------------------------------------------------
# curvature maps
SURFACE_KINDS = ("surface", "plane", "trajectory")


def _surface_buffers(f: h5py.File, objective: Objective,
                     ) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    """The surface's buffers at its origin and their change per unit of x and y (if any)."""
    def read(group: str) -> dict[str, Tensor]:
        if group not in f:
            return {}
        out: dict[str, Tensor] = {}
        f[group].visititems(lambda name, obj: out.__setitem__(name, torch.from_numpy(
            np.asarray(obj[()]))) if isinstance(obj, h5py.Dataset) else None)
        return out

    origin = {**objective.buffers, **{
        k: v.to(objective.buffers[k].device, objective.buffers[k].dtype)
        for k, v in read("buffers/origin").items() if k in objective.buffers}}
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
            if k in buffers and torch.is_floating_point(buffers[k]):
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
    (``which="both"``, k=1, to relative residual ``tol``) per point. Under ``torchrun`` the
    points are split among ranks and rank 0 writes; other ranks return None.
    """
    path = Path(surface)
    with store.open_result(path, kind=SURFACE_KINDS) as f:
        for name in ("x", "y", "origin", "directions/x", "directions/y"):
            if name not in f:
                raise LandscapeError(f"{path}: curvature maps need a 2D surface (no {name!r})")
        x, y = np.asarray(f["x"][()], dtype=np.float64), np.asarray(f["y"][()], np.float64)
        origin = torch.from_numpy(np.asarray(f["origin"][()])).double()
        dx = torch.from_numpy(np.asarray(f["directions/x"][()])).double()
        dy = torch.from_numpy(np.asarray(f["directions/y"][()])).double()
        buffer_origin, buffer_steps = _surface_buffers(f, objective)
    if origin.numel() != objective.space.numel:
        raise LandscapeError(f"{path}: the surface has {origin.numel()} parameters, the model "
                             f"{objective.space.numel}")
    check_positive("tol", tol)
    settings = {"tol": tol, "max_iter": max_iter, "seed": int(seed), "operator": operator,
                "params": _params_setting(params), "block_size": block_size,
                "hvp_method": objective.hvp_method, **objective.settings()}
    text = json.dumps(store.jsonable(settings), sort_keys=True, default=str)
    shape = (len(y), len(x))
    rank, world = rank_and_world()
    f, todo, error = None, [], None
    if rank == 0:
        f = h5py.File(path, "r+")
        if "hessian_done" in f and not overwrite and f["hessian_done"].attrs.get(
                "settings", "") != text:
            old = json.loads(f["hessian_done"].attrs.get("settings", "") or "{}")
            error = (f"{path} holds a curvature map with other settings "
                     f"({'; '.join(store.differences(old, settings))}); "
                     "pass overwrite=True (--overwrite) to redo it")
        else:
            if "hessian_done" not in f or overwrite:
                store.write_arrays(f, {"hessian_max": np.full(shape, np.nan),
                                       "hessian_min": np.full(shape, np.nan),
                                       "hessian_done": np.zeros(shape, dtype=bool)})
                f["hessian_done"].attrs["settings"] = text
                f.flush()
            done = np.asarray(f["hessian_done"][()], dtype=bool)
            todo = [(i, j) for i in range(shape[0]) for j in range(shape[1]) if not done[i, j]]
    error, todo = broadcast((error, todo))
    if error:
        if f is not None:
            f.close()
        raise LandscapeError(error)
    total_hvp = 0
    bar = progress(total=len(todo), desc="curvature map", unit="point",
                   disable=None if rank == 0 else True)
    try:
        for start in range(0, len(todo), world):
            mine = todo[start + rank] if start + rank < len(todo) else None
            result = None
            if mine is not None:
                i, j = mine
                obj = _point_objective(objective, buffer_origin, buffer_steps, x[j], y[i])
                res = hessian_eigenvalues(obj, origin + x[j] * dx + y[i] * dy, k=1,
                                          which="both", tol=tol, max_iter=max_iter, seed=seed,
                                          operator=operator, params=params,
                                          block_size=block_size, return_vectors=False)
                result = (i, j, float(res.largest[0]), float(res.smallest[0]), res.n_hvp)
            for item in all_gather(result):
                if item is None:
                    continue
                total_hvp += item[4]
                if f is not None:
                    f["hessian_max"][item[0], item[1]] = item[2]
                    f["hessian_min"][item[0], item[1]] = item[3]
                    f["hessian_done"][item[0], item[1]] = True
            if f is not None:
                f.flush()
            bar.update(min(world, len(todo) - start))
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
            "trace": None, "density": None, "n_hvp": self.n_hvp,
            "out": None if self.path is None else str(self.path)}
        if self.trace is not None:
            t = self.trace
            out["trace"] = {"estimate": t.estimate, "stderr": t.stderr, "method": t.method,
                            "n_probes": t.n_probes, "n_hvp": t.n_hvp}
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
        if sub.eigenvectors is not None:
            arrays[f"eigenvectors_{tag}"] = sub.eigenvectors.numpy()
    store.write_arrays(f, arrays)
    store.write_attrs(f, {"eigen_done": True, "eigen_n_hvp": e.n_hvp,
                          "eigen_n_restarts": e.n_restarts, "eigen_settings": e.settings})
    f.flush()


def _read_eigen(f: h5py.File, eigenvectors: bool) -> EigenResult:
    attrs = store.read_attrs(f)
    values, res, conv, vecs = [], [], [], []
    for tag in ("top", "bottom"):
        values.append(torch.from_numpy(f[f"eigenvalues_{tag}"][()]))
        res.append(torch.from_numpy(f[f"residuals_{tag}"][()]))
        conv.append(torch.from_numpy(f[f"converged_{tag}"][()]))
        if eigenvectors:
            if f"eigenvectors_{tag}" not in f:
                raise LandscapeError(f"{f.filename} has no eigenvectors (it was computed "
                                     "without them); recompute without --no-eigenvectors")
            vecs.append(torch.from_numpy(f[f"eigenvectors_{tag}"][()]))
    return EigenResult(torch.cat(values), torch.cat(vecs) if eigenvectors else None,
                       torch.cat(res), torch.cat(conv), int(attrs["eigen_n_hvp"]),
                       int(values[0].numel()), int(attrs.get("eigen_n_restarts", 0)),
                       attrs.get("eigen_settings", {}))


def _write_trace(f: h5py.File, t: TraceResult) -> None:
    g = f.require_group("trace")
    store.write_arrays(g, {"samples": t.samples.numpy()})
    store.write_attrs(g, {"estimate": t.estimate, "stderr": t.stderr, "n_hvp": t.n_hvp,
                          "n_probes": t.n_probes, "method": t.method, "settings": t.settings})
    f.attrs["trace_done"] = True
    f.flush()


def _read_trace(f: h5py.File) -> TraceResult:
    g = f["trace"]
    a = store.read_attrs(g)
    return TraceResult(float(a["estimate"]), a.get("stderr"), int(a["n_hvp"]),
                       int(a["n_probes"]), str(a["method"]), torch.from_numpy(g["samples"][()]),
                       a.get("settings", {}))


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


def analyze_hessian(objective: Objective, theta: Tensor | None = None, *, top: int = 5,
                    bottom: int = 1, trace: bool = False, density: bool = False,
                    tol: float = 1e-6, max_iter: int = 1000, seed: int = 0,
                    operator: str = "hessian", params: str | None = None, block_size: int = 1,
                    verify: bool = False, trace_method: str = "hutchinson",
                    trace_rtol: float = 1e-2, max_probes: int = 1000, density_probes: int = 10,
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
    all_settings = {**(settings or {}), "top": top, "bottom": bottom, "trace": trace,
                    "density": density, "tol": tol, "max_iter": max_iter, "seed": int(seed),
                    "operator": operator, "params": _params_setting(params),
                    "block_size": block_size, "verify": verify,
                    "eigenvectors": eigenvectors, **objective.settings(),
                    "hvp_method": objective.hvp_method}
    if trace:
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
                **(attrs or {})}, overwrite=overwrite, memory=True)
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
    return report


def load_hessian(path: str | Path, eigenvectors: bool = False) -> HessianReport:
    """Read a ``kind="hessian"`` file back; ``eigenvectors=True`` also loads them (a
    LandscapeError if the file was written without them)."""
    with store.open_result(path, kind="hessian") as f:
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


def _weights_digest(objective: Objective) -> str:
    state = torch.cat([objective.theta0.detach().double().cpu().reshape(-1)]
                      + [b.detach().double().cpu().reshape(-1)
                         for b in objective.buffers.values()])
    return hashlib.sha256(state.numpy().tobytes()).hexdigest()[:16]


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
    from landscape.train.run import as_run

    loaded = as_run(run)
    objective = Objective.from_run(loaded, split=split, subset=subset,
                                   seed=int(options.get("seed", 0)), device=device,
                                   precision=precision, bn=bn, batch_size=batch_size)
    info = getattr(loaded, "info", {}) or {}
    settings = {"run": str(Path(loaded.path).resolve()), "model": info.get("model"),
                "dataset": getattr(loaded.data, "spec", None), "split": split,
                "subset": subset, "weights_sha256": _weights_digest(objective)}
    return analyze_hessian(objective, out=out, overwrite=overwrite, settings=settings,
                           attrs={"command": command}, **options)
