"""Curvature directions and self-chosen grid extents for surfaces.

Directions along the top Hessian eigenvectors at the centre, as PyHessian plots them (Yao,
Gholami, Keutzer & Mahoney 2020, "PyHessian: Neural Networks Through the Lens of the
Hessian"): unit vectors in parameter space, so one unit of the grid coordinate is a step of
Euclidean (L2) length 1 in parameter space, and the curve's second derivative at the centre
is the eigenvalue. They are computed here by Lanczos or read from a ``landscape hessian`` file
of the same weights.

The extent search (:func:`extent_for_rise`) picks, per direction, the half-width ``T`` of a
symmetric grid ``[-T, T]`` at which the loss first rises by a stated amount above the centre.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from landscape import store
from landscape.analysis.hessian import hessian_eigenvalues, load_hessian
from landscape.errors import LandscapeError, unknown_name
from landscape.objective import Objective

KINDS = ("random", "hessian")
#: what one unit of a grid coordinate means, per direction kind (stored with each direction)
UNITS = {"hessian": "a step of L2 length 1 in parameter space (unit eigenvector)",
         "random": "the direction's own norm (filter-normalized: each filter moves by its "
                   "own weight norm)"}


def parse_kinds(spec: str | list[str] | tuple[str, ...], n: int) -> list[str]:
    """``"hessian,random"`` -> one direction kind per axis; one name serves every axis."""
    kinds = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise unknown_name("direction", bad[0], KINDS)
    if len(kinds) == 1:
        kinds = kinds * n
    if len(kinds) != n:
        raise LandscapeError(f"{len(kinds)} direction kinds ({','.join(kinds)}) for a "
                             f"{n}D grid: give one per axis or one for all")
    return kinds


def weights_digest(objective: Objective) -> str:
    """The digest of weights and buffers that ``landscape hessian`` files record."""
    return store.values_digest([objective.theta0, *objective.buffers.values()])


def hessian_directions(objective: Objective, k: int, *, hessian_file: str | Path | None = None,
                       tol: float = 1e-6, max_iter: int = 1000, seed: int = 0,
                       ) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """The top ``k`` Hessian eigenvectors at the objective's parameters, with their attributes.

    Computed by :func:`landscape.analysis.hessian.hessian_eigenvalues` (Lanczos, ``tol``,
    ``max_iter``, start vector from ``seed``), or read from ``hessian_file`` (a ``landscape
    hessian`` file with eigenvectors), which must hold at least ``k`` top eigenvectors of the
    same weights and buffers (checked by digest). Each attribute dict has the ``eigenvalue``,
    its relative ``residual``, the ``index`` (0 = largest) and the ``source``. Cost: Lanczos
    HVPs (about 15-20 at ``tol=1e-3`` for a trained MLP), or one file read.

    >>> from landscape.objective import Objective
    >>> _ = torch.manual_seed(0); model = torch.nn.Linear(3, 1)
    >>> obj = Objective(model, (torch.randn(20, 3), torch.randn(20, 1)), loss="mse")
    >>> dirs, attrs = hessian_directions(obj, 1)
    >>> round(float(dirs[0].norm()), 4), attrs[0]["index"]
    (1.0, 0)
    """
    if hessian_file is None:
        eig = hessian_eigenvalues(objective, k=k, which="largest", tol=tol, max_iter=max_iter,
                                  seed=seed)
        source, settings = "computed", eig.settings
    else:
        report = load_hessian(hessian_file, eigenvectors=True)
        mine, theirs = weights_digest(objective), report.settings.get("weights_sha256")
        if theirs != mine:
            raise LandscapeError(f"{hessian_file}: computed for other weights (digest "
                                 f"{theirs}, this model's is {mine}); not the same run")
        eig = report.eigen.part("largest")
        if eig.eigenvalues.numel() < k:
            raise LandscapeError(f"{hessian_file}: holds {eig.eigenvalues.numel()} top "
                                 f"eigenvector(s), {k} needed (recompute with --top {k})")
        source, settings = str(hessian_file), {
            key: report.settings.get(key) for key in ("split", "subset", "operator", "tol")}
    dirs = [eig.eigenvectors[i].to(objective.device, objective.dtype) for i in range(k)]
    attrs = [{"kind": "hessian", "index": i, "eigenvalue": float(eig.eigenvalues[i]),
              "residual": float(eig.residuals[i]), "converged": bool(eig.converged[i]),
              "source": source, "hessian_settings": settings, "unit": UNITS["hessian"]}
             for i in range(k)]
    return dirs, attrs


def extent_for_rise(objective: Objective, direction: Tensor, rise: float, *,
                    origin: Tensor | None = None, rtol: float = 1e-3,
                    max_doublings: int = 60) -> float:
    """Half-width ``T`` at which ``max(L(o + T d), L(o - T d)) - L(o)`` equals ``rise``.

    A line search before the grid: doubling (or halving) from ``T = 1`` until the rise is
    bracketed, then bisection to relative width ``rtol``; a non-finite loss counts as risen.
    Returns the upper end of the final bracket (so the rise is reached). ``rise`` is in the
    loss's units (nats for cross-entropy). For a quadratic with minimum at ``o`` the answer is
    ``sqrt(2 rise / d^T H d)``. Cost: about ``2 (|log2 T| + log2(1 / rtol) + 2)`` forward
    passes.
    """
    if not (rise > 0 and math.isfinite(rise)):
        raise LandscapeError(f"the rise must be a positive number, got {rise}")
    origin = objective.theta0 if origin is None else origin
    origin = origin.to(objective.device, objective.dtype)
    d = direction.to(objective.device, objective.dtype)[None]
    f0 = float(objective.evaluate(origin[None])["loss"][0])

    def risen(t: float) -> bool:
        coords = torch.tensor([[t], [-t]], dtype=objective.dtype)
        values = objective.evaluate_plane(origin, d, coords)["loss"]
        return bool((~torch.isfinite(values)).any() or values.max() - f0 >= rise)

    lo, hi, t = 0.0, None, 1.0
    for _ in range(max_doublings):
        if risen(t):
            hi = t
            if lo > 0:
                break
            t /= 2
        else:
            lo = t
            if hi is not None:
                break
            t *= 2
    else:
        where = f"up to T = {t / 2:.3g}" if hi is None else f"down to T = {t * 2:.3g}"
        raise LandscapeError(f"the loss does not cross a rise of {rise:g} above the centre "
                             f"({where}) along this direction")
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if risen(mid) else (mid, hi)
    return hi
