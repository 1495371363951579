"""Matrix-free algorithms on a symmetric operator, knowing nothing of models.

An operator is a callable ``op(V[K, n]) -> A V[K, n]`` on a BLOCK of flat vectors, so every
algorithm here hands it as many vectors at once as the algorithm allows (a Hutchinson round,
a Hutch++ stage, all SLQ probes of a step, a Lanczos block). Small projected problems run in
float64 on the CPU; vectors stay on the operator's device and in its dtype.

- :func:`orthogonalize`: the one (block, two-pass) Gram-Schmidt of this module.
- :func:`convergence`: the one convergence test of Ritz pairs.
- :func:`lanczos`: thick-restart (block) Lanczos with full reorthogonalization for the
  largest and/or smallest eigenvalues (Lanczos 1950; Wu and Simon 2000, "Thick-restart
  Lanczos method for large symmetric eigenvalue problems"), optionally warm-started.
- :func:`hutchinson`, :func:`hutchpp`: trace estimators (Hutchinson 1989; Meyer, Musco,
  Musco and Woodruff 2021, "Hutch++: optimal stochastic trace estimation").
- :func:`slq`, :func:`slq_density`: stochastic Lanczos quadrature of the spectral density
  (Lin, Saad and Yang 2016, "Approximating spectral densities of large matrices").

Probes are drawn on the operator's device from one generator per probe, seeded from
``(seed, salt, index)``, so a probe does not depend on which process or block draws it;
:class:`Split` shares independent probes among processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from landscape.errors import LandscapeError
from landscape.progress import progress

Operator = Callable[[Tensor], Tensor]
Array = TypeVar("Array", Tensor, np.ndarray)
PROBES = ("rademacher", "gaussian")
_TINY = float(torch.finfo(torch.float64).tiny)


# ------------------------------------------------------------------------------------------
# randomness and processes
def generator(seed: int, *key: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` for (seed, key...): independent streams per key."""
    words = np.random.SeedSequence([int(seed) % 2**63, *key]).generate_state(2, np.uint32)
    return torch.Generator(device=device).manual_seed(int(words[0]) << 31 ^ int(words[1]))


def probes(n: int, indices: list[int], seed: int, salt: int, dtype: torch.dtype,
           device: torch.device | str, kind: str = "rademacher") -> Tensor:
    """Probe vectors ``[len(indices), n]``: probe ``i`` drawn from its own generator
    ``(seed, salt, i)`` on ``device``; Rademacher (+-1) or standard Gaussian entries."""
    if kind not in PROBES:
        raise LandscapeError(f"unknown probe kind {kind!r}; choose from {', '.join(PROBES)}")
    rademacher = kind == "rademacher"
    out = torch.empty(len(indices), n, dtype=dtype if rademacher else torch.float64,
                      device=device)
    for row, i in zip(out, indices):  # (each row drawn in place: no stack)
        gen = generator(seed, salt, i, device=device)
        if rademacher:
            torch.randint(0, 2, (n,), generator=gen, device=device, out=row)
        else:
            torch.randn(n, generator=gen, device=device, dtype=torch.float64, out=row)
    return out.mul_(2).sub_(1) if rademacher else out.to(dtype)


def _one_process(obj: Any) -> list[Any]:
    return [obj]


@dataclass(frozen=True)
class Split:
    """Independent probes shared among processes: this one takes probes ``i`` with
    ``i % world == rank``; ``gather(obj)`` returns every process's ``obj`` (rank order)."""

    rank: int = 0
    world: int = 1
    gather: Callable[[Any], list[Any]] = _one_process

    def mine(self, indices: range) -> list[int]:
        return [i for i in indices if i % self.world == self.rank]


# ------------------------------------------------------------------------------------------
# the one orthogonalization and the one convergence test
def _rows(W: Tensor, drop: float | Tensor) -> tuple[Tensor, Tensor]:
    """The rows of ``W[..., b, n]`` orthonormalized among themselves, in order (each row two
    passes against the rows before it), a row whose remainder has norm ``<= drop`` set to
    zero: ``(Q, R)``, ``W = R^T Q`` with ``R[..., b, b]`` upper triangular, in float64 on
    ``W``'s device (each row's two passes summed in float64; one row: on the host)."""
    b = W.shape[-2]
    if b == 0:
        return W, torch.zeros(*W.shape[:-1], 0, dtype=torch.float64, device=W.device)
    if W.shape == (1, W.shape[-1]) and isinstance(drop, float):  # one vector: a host norm
        norm = float(torch.linalg.vector_norm(W))
        keep = norm > drop and norm > 0
        return (W / norm if keep else torch.zeros_like(W)), torch.tensor(
            [[norm if keep else 0.0]], dtype=torch.float64)
    tiny = torch.finfo(W.dtype).tiny
    Q = torch.empty_like(W) if b > 1 else None
    cols: list[Tensor] = []  # the columns of R, each [..., 1, b]
    for j in range(b):
        w = W[..., j : j + 1, :]
        parts = []
        if j:
            S = Q[..., :j, :]
            c = w @ S.mT
            w = _minus(w, c, S)
            c2 = w @ S.mT
            w = _minus(w, c2, S)
            parts.append(c.double() + c2.double())
        norm = torch.linalg.vector_norm(w, dim=-1, keepdim=True)  # [..., 1, 1]
        if isinstance(drop, float) and drop == 0.0:  # (zero rows stay zero)
            w = w / norm.clamp(min=tiny)
        else:
            keep = norm > drop
            w = w * (keep / norm.clamp(min=tiny))
            norm = norm * keep
        if Q is None:
            Q = w
        else:
            Q[..., j : j + 1, :] = w
        parts.append(norm.double())
        if j + 1 < b:
            parts.append(torch.zeros(*norm.shape[:-1], b - j - 1, dtype=torch.float64,
                                     device=W.device))
        cols.append(torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0])
    return Q, cols[0] if b == 1 else torch.cat(cols, dim=-2).mT


def orthogonalize(W: Tensor, basis: Tensor | None = None, *, normalize: bool = True,
                  drop_tol: float | Tensor = 0.0, near: int = 0,
                  ) -> tuple[Tensor, Tensor, Tensor | None]:
    """Block Gram-Schmidt of the rows of ``W[..., b, n]`` against the orthonormal rows of
    ``basis[..., m, n]``, two passes ("twice is enough"), each one matrix-matrix product
    with the basis for the whole block; leading dimensions are a batch. Everything stays on
    ``W``'s device until the coefficients are returned (one copy to the host, none on the
    CPU).

    Returns ``(Q, C, R)``. ``C[..., b, m]`` (float64, CPU): the coefficients removed along
    the basis. With ``normalize=False``, ``Q`` is ``W`` minus those components and ``R`` is
    None. Otherwise the rows are then orthonormalized among themselves, in order (a block
    of several rows also between the two passes: BCGS2, Barlow and Smoktunowicz 2013,
    "Reorthogonalized block classical Gram-Schmidt"): ``Q[..., b, n]`` has unit rows, or
    zero rows where what remains (of a single row after both passes, of a block's rows
    after the first) has norm ``<= drop_tol`` (the row lies in the span already: an
    invariant subspace), and ``R[..., b, b]`` (float64, CPU, upper triangular) gives
    ``W = C basis + R^T Q``. ``near``: the first pass runs against ``basis[..., near:, :]``
    only, for rows whose components along the earlier basis rows are known to be at
    rounding level (a Lanczos step: only the last blocks couple); the second pass always
    covers the whole basis. Cost: ``2 b (2m - near) n + 4 b^2 n`` flops.
    """
    if isinstance(drop_tol, Tensor):
        drop_tol = drop_tol.to(W.device, W.dtype)[..., None]
    else:
        drop_tol = float(drop_tol)
    m = 0 if basis is None else basis.shape[-2]
    if m == 0:
        C = torch.zeros(*W.shape[:-1], 0, dtype=torch.float64)
        if not normalize:
            return W, C, None
        Q, R = _rows(W, drop_tol)
        return Q, C, R.cpu()
    first = basis[..., near:, :]
    c = W @ first.mT
    W = _minus(W, c, first)
    R1 = None
    if normalize and W.shape[-2] > 1:  # (BCGS2: the block orthonormalized between passes)
        W, R1 = _rows(W, drop_tol)
    c2 = W @ basis.mT
    W = _minus(W, c2, basis)
    # the coefficients on the host, in float64 (NumPy: a few small products)
    C = c2.cpu().numpy().astype(np.float64)
    if R1 is not None:
        R1 = R1.cpu().numpy()
        C = R1.swapaxes(-1, -2) @ C
    C[..., near:] += c.cpu().numpy()
    if not normalize:
        return W, torch.from_numpy(C), None
    Q, R = _rows(W, drop_tol if R1 is None else 0.0)
    R = R.cpu().numpy()
    return Q, torch.from_numpy(C), torch.from_numpy(R if R1 is None else R @ R1)


def _minus(W: Tensor, c: Tensor, basis: Tensor) -> Tensor:
    """``W - c basis`` in one fused product."""
    return torch.baddbmm(W, c, basis, alpha=-1) if W.dim() > 2 else torch.addmm(
        W, c, basis, alpha=-1)


def rounding_floor(dtype: torch.dtype, scale: float) -> float:
    """The smallest residual a product in ``dtype`` resolves: ``100 eps ||A||``."""
    return 100 * torch.finfo(dtype).eps * max(scale, _TINY)


def convergence(residuals: Array, values: Array, tol: float, floor: float = 0.0,
                ) -> tuple[Array, Array]:
    """The one convergence test of Ritz pairs (float64 tensors or NumPy arrays):
    ``(converged, raised)``.

    A residual below the rounding ``floor`` of the working precision is not resolved, so a
    tolerance ``tol |lambda|`` below the floor is raised to it: ``converged`` is
    ``||A v - lambda v|| <= max(tol |lambda|, floor)``, and ``raised`` marks the pairs whose
    tolerance was raised (a higher precision can go further; more iterations cannot).
    """
    target = tol * abs(values)
    return residuals <= target.clip(min=floor), target < floor


# ------------------------------------------------------------------------------------------
# Lanczos
@dataclass
class Eigenpairs:
    """Extreme eigenpairs: ``values`` (float64; the largest descending, then the smallest
    ascending), ``vectors[k, n]`` (unit rows, operator dtype and device), ``residuals``
    (``max(||A v - lambda v||, floor)``, float64: the Krylov residual, which does not see the
    operator's own round-off, is never reported below the rounding floor),
    ``converged`` (:func:`convergence`), ``at_floor`` (the tolerance was raised to the
    rounding floor of the working precision), ``n_matvecs``, ``n_restarts``."""

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    converged: Tensor
    at_floor: Tensor
    n_matvecs: int
    n_restarts: int


def _keep_indices(m: int, k_top: int, k_bot: int, n_keep: int) -> list[int]:
    """Indices (into ascending Ritz values) kept at a thick restart."""
    extra = n_keep - k_top - k_bot
    if k_bot == 0:
        n_top = n_keep
    elif k_top == 0:
        n_top = 0
    else:
        n_top = k_top + (extra * k_top) // (k_top + k_bot)
    return list(range(n_keep - n_top)) + list(range(m - n_top, m))


def _wanted(m: int, k_top: int, k_bot: int) -> list[int]:
    return [m - 1 - i for i in range(k_top)] + list(range(k_bot))


def lanczos(op: Operator, n: int, k_largest: int = 1, k_smallest: int = 0, *,
            tol: float = 1e-6, max_matvecs: int = 1000, max_basis: int | None = None,
            block_size: int = 1, v0: Tensor | None = None, seed: int = 0,
            dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu",
            desc: str = "lanczos") -> Eigenpairs:
    """Extreme eigenpairs of a symmetric ``n x n`` operator by thick-restart block Lanczos.

    Keeps an orthonormal basis ``V[:m]`` (preallocated) and the Rayleigh quotient
    ``T = V^T A V`` (float64, NumPy on the host) built from the Gram-Schmidt coefficients of
    each new block ``A Q`` (full reorthogonalization by :func:`orthogonalize`: a first pass
    against the blocks ``A Q`` couples to, the last two, or every kept Ritz vector after a
    restart, then one pass against the whole basis, each one matrix product), so plain and
    restarted steps are the same code. The projected problem is solved once per step, only
    once ``k`` Ritz pairs exist; no host copy of a vector is made in the loop. With the pending
    block ``Q`` and its coupling ``R`` (``A V = V T + Q^T R``), the residual of the Ritz
    pair ``(theta, V^T u)`` is ``||R u||``. When ``m`` would exceed ``max_basis`` (default
    ``max(40, 4k, k + 8 block_size)``), the basis is replaced by Ritz vectors from the
    wanted ends. After an invariant subspace, fresh random directions are grown ``k`` more
    steps before stopping, so repeated eigenvalues and null spaces show. Stops when every
    wanted pair passes :func:`convergence` (its tolerance raised to the rounding floor), or after
    ``max_matvecs`` products. ``v0[b, n]`` (or ``[n]``): the start block (a warm start, e.g.
    the previous eigenvectors), completed with random rows up to ``block_size``; otherwise
    random from ``seed``. Memory: ``max_basis * n`` numbers.
    """
    k_total = k_largest + k_smallest
    if k_total < 1 or k_total > n:
        raise LandscapeError(f"ask for between 1 and {n} eigenvalues, not {k_total}")
    m_max = min(n, max_basis if max_basis is not None
                else max(40, 4 * k_total, k_total + 8 * block_size))
    gen = generator(seed, 0x1A2C, device=device)
    empty = torch.zeros(0, n, dtype=dtype, device=device)

    def random_rows(k: int, basis: Tensor) -> Tensor:
        # (drawn in float32 whatever the precision: 5x cheaper than float64 on the CPU, and
        # float32 and float64 runs start from the same rows)
        W = torch.randn(k, n, generator=gen, dtype=torch.float32, device=device).to(dtype)
        Q, _, R = orthogonalize(W, basis)
        return Q[R.diagonal() > 0]

    if v0 is not None:
        v0 = v0.reshape(-1, n).to(device, dtype)[:block_size]
        Q, _, R = orthogonalize(v0, drop_tol=0.0)
        Q = Q[R.diagonal() > 0]
        if Q.shape[0] < min(block_size, n):
            Q = torch.cat([Q, random_rows(min(block_size, n) - Q.shape[0], Q)])
    else:
        Q = random_rows(min(block_size, n), empty)
    V = torch.empty(m_max, n, dtype=dtype, device=device)
    T = np.zeros((m_max, m_max))  # the small problem: float64 NumPy on the host
    m, used, restarts, last_fill, top = 0, 0, 0, None, 0.0
    last = 0  # where the last block starts: with the pending one, the rows A Q couples to
    R = np.zeros((0, 0))  # the coupling of the pending block Q to the last block of V
    ritz: tuple[tuple[int, int], np.ndarray, np.ndarray] = ((-1, 0), np.zeros(0),
                                                            np.zeros((0, 0)))

    def solve() -> tuple[np.ndarray, np.ndarray]:
        """Ritz values and vectors of ``T[:m, :m]``, solved once per state of ``T`` (its
        products and restarts so far)."""
        nonlocal ritz, top
        if ritz[0] != (used, restarts):  # (torch's eigh: NumPy's OpenBLAS spins threads)
            ritz = ((used, restarts),
                    *(a.numpy() for a in torch.linalg.eigh(torch.from_numpy(T[:m, :m]))))
            top = max(top, -float(ritz[1][0]), float(ritz[1][-1]))  # (ascending)
        return ritz[1], ritz[2]

    def residuals(U: np.ndarray) -> np.ndarray:
        return np.linalg.norm(R @ U[m - R.shape[1] : m], axis=0) if R.size else \
            np.zeros(U.shape[1])

    bar = progress(total=max_matvecs, desc=desc, unit="hvp")
    try:
        while Q.shape[0] and used < max_matvecs:
            bq = Q.shape[0]
            if m + bq > m_max:  # thick restart
                n_keep = min(m_max - bq, k_total + (m_max - k_total) // 2)
                if n_keep < k_total:
                    raise LandscapeError(
                        f"max_basis {m_max} is too small for {k_total} eigenvalues with "
                        f"block size {block_size}; use at least {k_total + 2 * bq}")
                theta, U = solve()
                keep = _keep_indices(m, k_largest, k_smallest, n_keep)
                V[:n_keep] = torch.from_numpy(U[:, keep].T.copy()).to(device, dtype) @ V[:m]
                T[:] = 0.0
                T[:n_keep, :n_keep] = np.diag(theta[keep])
                m, last = n_keep, 0  # (the kept Ritz vectors all couple to Q)
                restarts += 1
            V[m : m + bq] = Q
            W = op(Q)
            used += bq
            bar.update(bq)
            near, last, m = last, m, m + bq
            # the scale of the rounding floor: the largest Ritz value (once there is one)
            top = top or float(torch.linalg.vector_norm(W, dim=1).max())
            Q, C, Rt = orthogonalize(W, V[:m], drop_tol=rounding_floor(dtype, top), near=near)
            C, R = C.numpy(), Rt.numpy()
            T[:m, m - bq : m] = C.T
            T[m - bq : m, :m] = C
            if bq > 1:
                diag = T[m - bq : m, m - bq : m]
                T[m - bq : m, m - bq : m] = (diag + diag.T) / 2
            kept = np.diagonal(R) > 0
            if not (kept.all() and Q.shape[0] <= n - m):  # (else no copies)
                rows = np.flatnonzero(kept)[: n - m]
                Q, R = Q[torch.from_numpy(rows).to(device)], R[rows]
            if Q.shape[0] < bq and m + Q.shape[0] < n and Q.shape[0] < block_size:
                # invariant subspace: continue from fresh random directions
                fill = min(block_size - Q.shape[0], n - m - Q.shape[0])
                fresh = random_rows(fill, torch.cat([V[:m], Q]))
                Q = torch.cat([Q, fresh])
                R = np.concatenate([R, np.zeros((fresh.shape[0], bq))])
                last_fill = m
            # after a fill the residuals are zero, but a repeated eigenvalue shows only
            # once the fresh directions have grown
            settled = last_fill is None or m - last_fill >= k_total or m + block_size > n
            if m >= k_total and settled:
                theta, U = solve()
                wanted = _wanted(m, k_largest, k_smallest)
                ok = convergence(residuals(U[:, wanted]), theta[wanted], tol,
                                 rounding_floor(dtype, top))[0]
                if ok.all():
                    break
    finally:
        bar.close()
    if m < k_total:
        raise LandscapeError(
            f"max_iter {max_matvecs} is too small to get {k_total} eigenvalues with block "
            f"size {block_size}; use at least {k_total + block_size}")
    theta, U = solve()
    wanted = _wanted(m, k_largest, k_smallest)
    vectors = torch.from_numpy(U[:, wanted].T.copy()).to(device, dtype) @ V[:m]
    vectors = vectors / torch.linalg.vector_norm(vectors, dim=1, keepdim=True)
    floor = rounding_floor(dtype, top)
    values = torch.from_numpy(theta[wanted].copy())
    res = torch.from_numpy(residuals(U[:, wanted])).clamp(min=floor)
    ok, raised = convergence(res, values, tol, floor)
    return Eigenpairs(values, vectors, res, ok, raised, used, restarts)


# ------------------------------------------------------------------------------------------
# trace
@dataclass
class TraceEstimate:
    """``estimate`` of ``tr(A)``, its standard error (None from one probe), the per-probe
    values ``samples`` (for Hutch++: of the deflated remainder), ``n_matvecs``, ``n_probes``
    and ``converged``: ``stderr <= rtol |estimate|``."""

    estimate: float
    stderr: float | None
    samples: Tensor
    n_matvecs: int
    n_probes: int
    converged: bool


def _mean_stderr(samples: list[float]) -> tuple[float, float | None]:
    mean = float(np.mean(samples))
    if len(samples) < 2:
        return mean, None
    return mean, float(np.std(samples, ddof=1) / math.sqrt(len(samples)))


def _within(estimate: float, stderr: float | None, rtol: float) -> bool:
    return stderr is not None and stderr <= rtol * abs(estimate)


def hutchinson(op: Operator, n: int, *, rtol: float = 1e-2, min_probes: int = 10,
               max_probes: int = 1000, check_every: int = 10, seed: int = 0,
               kind: str = "rademacher", dtype: torch.dtype = torch.float64,
               device: torch.device | str = "cpu", split: Split | None = None,
               ) -> TraceEstimate:
    """Hutchinson's estimator, the mean of ``z^T A z`` over probes ``z``, in rounds of
    ``check_every`` probes (one block each), stopping once ``min_probes`` are in and the
    standard error is ``<= rtol |estimate|``, or at ``max_probes``. Its variance per probe is
    ``2 (||A||_F^2 - sum_i A_ii^2)`` for Rademacher probes. Cost: ``n_probes`` products."""
    split = split or Split()
    values: dict[int, float] = {}
    local = 0
    bar = progress(total=max_probes, desc="hutchinson", unit="probe")
    try:
        for start in range(0, max_probes, check_every):
            stop = min(start + check_every, max_probes)
            mine = split.mine(range(start, stop))
            found: list[tuple[int, float]] = []
            if mine:
                Z = probes(n, mine, seed, 1, dtype, device, kind)
                found = list(zip(mine, (Z * op(Z)).sum(dim=1, dtype=torch.float64)
                                 .cpu().tolist()))
                local += len(mine)
            for part in split.gather(found):
                values.update(part)
            bar.update(stop - start)
            if len(values) >= min_probes and _within(
                    *_mean_stderr(list(values.values())), rtol):
                break
    finally:
        bar.close()
    samples = [values[i] for i in sorted(values)]
    estimate, stderr = _mean_stderr(samples)
    return TraceEstimate(estimate, stderr, torch.tensor(samples, dtype=torch.float64),
                         sum(split.gather(local)), len(samples),
                         _within(estimate, stderr, rtol))


def hutchpp(op: Operator, n: int, budget: int, *, rtol: float = 1e-2, seed: int = 0,
            kind: str = "rademacher", dtype: torch.dtype = torch.float64,
            device: torch.device | str = "cpu") -> TraceEstimate:
    """Hutch++: with ``s = budget // 3`` (at most ``n``), the range sketch ``Q = orth(A S)``,
    the exact part ``tr(Q^T A Q)`` and Hutchinson on the deflated remainder
    ``(I - QQ^T) A (I - QQ^T)`` with ``s`` probes (``Q``: Householder QR of ``A S``, its
    rows with a remainder above the rounding floor). Unbiased for every orthonormal ``Q``;
    ``stderr`` is that of the remainder's mean given ``Q`` (whose mean over ``Q`` is the
    variance).
    Exact once ``s`` reaches the rank of ``A``. Cost: at most ``budget`` products, in three
    blocks."""
    s = min(budget // 3, n)
    if s < 1:
        raise LandscapeError("hutch++ needs a budget of at least 3 products (a third per stage)")
    Y = op(probes(n, list(range(s)), seed, 2, dtype, device, kind))
    scale = float(torch.linalg.vector_norm(Y, dim=1).max())
    # (Householder QR, blocked: orthonormal rows whatever the rank, 2x cheaper than the rows
    # one at a time; a row whose remainder is at the rounding floor spans nothing of A S)
    Q, R = torch.linalg.qr(Y.mT)
    Q = Q.mT[R.diagonal().abs() > rounding_floor(dtype, scale)]
    low_rank = float((Q * op(Q)).sum(dtype=torch.float64)) if Q.shape[0] else 0.0
    # (one projection pass: Q is orthonormal and a random G keeps most of its norm, so what
    # is left along Q is at the rounding level)
    G = probes(n, list(range(s)), seed, 3, dtype, device, kind)
    G = _minus(G, G @ Q.mT, Q)
    rest = (G * op(G)).sum(dim=1, dtype=torch.float64).cpu().tolist()
    mean, stderr = _mean_stderr(rest)
    return TraceEstimate(low_rank + mean, stderr, torch.tensor(rest, dtype=torch.float64),
                         2 * s + Q.shape[0], s, _within(low_rank + mean, stderr, rtol))


# ------------------------------------------------------------------------------------------
# stochastic Lanczos quadrature
@dataclass
class Quadrature:
    """Each probe's Gauss quadrature of its spectral measure: ``nodes[p, m]``,
    ``weights[p, m]`` (rows sum to 1; padding after an early breakdown has weight 0)."""

    nodes: Tensor
    weights: Tensor
    n_matvecs: int
    probe_ids: list[int] = field(default_factory=list)


def _tridiagonals(op: Operator, Z: Tensor, m: int) -> list[tuple[Tensor, Tensor]]:
    """``m`` Lanczos steps with full reorthogonalization from each unit row of ``Z`` at
    once (one block product per step). Each probe's (alphas, betas), shortened on breakdown
    (an invariant Krylov space: the quadrature is then exact)."""
    K, n = Z.shape
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
        if j + 1 == m:
            break
        scale = torch.maximum(alpha[active, : j + 1].abs().amax(dim=1), beta[active].amax(dim=1))
        floor = torch.tensor([rounding_floor(Z.dtype, float(c)) for c in scale])
        Q, _, R = orthogonalize(W[:, None], V[idx, : j + 1], drop_tol=floor[:, None])
        still = []
        for row, k in enumerate(active):
            norm = float(R[row, 0, 0])
            if norm > 0:
                beta[k, j] = norm
                V[k, j + 1] = Q[row, 0]
                still.append(k)
            else:
                length[k] = j + 1
        active = still
    return [(alpha[k, : length[k]], beta[k, : length[k] - 1]) for k in range(K)]


def _gauss(alpha: Tensor, beta: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """Nodes and weights of one tridiagonal's Gauss quadrature, padded to ``m``."""
    T = torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)
    nodes, U = torch.linalg.eigh(T)
    weights = U[0] ** 2
    pad = m - alpha.numel()
    if pad:
        nodes = torch.cat([nodes, nodes[-1:].expand(pad)])
        weights = torch.cat([weights, torch.zeros(pad, dtype=torch.float64)])
    return nodes, weights


def slq(op: Operator, n: int, n_probes: int = 10, n_steps: int = 80, *, seed: int = 0,
        kind: str = "rademacher", block_size: int = 10, dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu", split: Split | None = None) -> Quadrature:
    """Stochastic Lanczos quadrature: for each normalized probe, ``min(n_steps, n)`` Lanczos
    steps give a Gauss quadrature (nodes: Ritz values; weights: squared first components of
    the Ritz vectors) of ``z^T f(A) z``; ``mean_probes sum_j w_j f(theta_j)`` estimates
    ``tr f(A) / n``. ``block_size`` probes advance together, one block product per step.
    Cost: ``n_probes * n_steps`` products; memory ``block_size * n_steps * n`` numbers."""
    split = split or Split()
    m = min(n_steps, n)
    mine = split.mine(range(n_probes))
    per_batch = max(1, min(block_size, 2**30 // max(1, m * n * dtype.itemsize)))
    local: list[tuple[int, Tensor, Tensor]] = []
    bar = progress(total=len(mine), desc="slq", unit="probe")
    used = 0
    for start in range(0, len(mine), per_batch):
        batch = mine[start : start + per_batch]
        Z = probes(n, batch, seed, 4, dtype, device, kind)
        Z = Z / torch.linalg.vector_norm(Z, dim=1, keepdim=True)
        for i, (a, b) in zip(batch, _tridiagonals(op, Z, m)):
            used += a.numel()
            local.append((i, *_gauss(a, b, m)))
        bar.update(len(batch))
    bar.close()
    parts = split.gather((local, used))
    rows = sorted((row for part, _ in parts for row in part), key=lambda r: r[0])
    return Quadrature(torch.stack([r[1] for r in rows]), torch.stack([r[2] for r in rows]),
                      sum(count for _, count in parts), [r[0] for r in rows])


def slq_density(quad: Quadrature, sigma: float = 0.01, grid_size: int = 1000,
                ) -> tuple[Tensor, Tensor, float]:
    """The mean quadrature measure broadened by Gaussians of standard deviation ``sigma``
    times the node range, on ``grid_size`` points reaching 5 widths past the extreme nodes:
    ``(grid, density, absolute sigma)``; the density integrates to 1."""
    nodes, weights = quad.nodes, quad.weights
    lo, hi = float(nodes.min()), float(nodes.max())
    width = hi - lo if hi > lo else max(abs(hi), 1.0)
    sig = sigma * width
    grid = torch.linspace(lo - 5 * sig, hi + 5 * sig, grid_size, dtype=torch.float64)
    if float(grid[1] - grid[0]) > sig / 2:
        need = math.ceil(2 * (hi - lo + 10 * sig) / sig) + 1
        raise LandscapeError(f"grid_size {grid_size} is too coarse for sigma {sigma}; "
                             f"use grid_size >= {need} or a larger sigma")
    flat_n, flat_w = nodes.reshape(-1), weights.reshape(-1) / nodes.shape[0]
    density = torch.zeros_like(grid)
    for start in range(0, flat_n.numel(), 4096):
        d = (grid[:, None] - flat_n[None, start : start + 4096]) / sig
        density += (torch.exp(-0.5 * d * d) * flat_w[None, start : start + 4096]).sum(dim=1)
    return grid, density / (math.sqrt(2 * math.pi) * sig), sig
