"""Pure algorithms of landscape.linalg on dense float64 matrices with known spectra
``Q diag(lambda) Q^T`` (Q random orthogonal): every number against the exact spectrum or
trace, or against a direct computation of the same quadratic form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from landscape import linalg
from landscape.errors import LandscapeError


def _matrix(spectrum: Tensor | list[float], seed: int = 0) -> Tensor:
    lam = torch.as_tensor(spectrum, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(lam.numel(), lam.numel(), generator=g,
                                       dtype=torch.float64))
    return q @ torch.diag(lam) @ q.T


class Counted:
    """``V[K, n] -> V A`` that counts products and the blocks they came in."""

    def __init__(self, A: Tensor) -> None:
        self.A, self.products, self.calls = A, 0, 0

    def __call__(self, V: Tensor) -> Tensor:
        self.products += V.shape[0]
        self.calls += 1
        return V @ self.A.to(V.dtype)


SPECTRUM = torch.cat([torch.tensor([30.0, 12.0, 7.0, 5.0]),
                      torch.linspace(-2.0, 3.0, 116)]).double()


# ------------------------------------------------------------------------------------------
# orthogonalization and the convergence test
def test_orthogonalize_gives_orthonormal_rows_that_reconstruct_the_block() -> None:
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(50, 6, generator=g, dtype=torch.float64))
    basis = basis.T
    W = torch.randn(4, 50, generator=g, dtype=torch.float64)
    W[2] = 2 * W[0] - W[1] + 0.5 * basis[3]  # dependent on earlier rows and the basis
    Q, C, R = linalg.orthogonalize(W, basis, drop_tol=1e-10)
    kept = R.diagonal() > 0
    assert kept.tolist() == [True, True, False, True]
    assert torch.all(Q[2] == 0)
    torch.testing.assert_close(Q[kept] @ Q[kept].T, torch.eye(3, dtype=torch.float64))
    assert float((Q @ basis.T).abs().max()) < 1e-14
    torch.testing.assert_close(C @ basis + R.T @ Q, W, rtol=0, atol=1e-12)
    # a block of 20 rows, one dependent on earlier rows and the basis
    W = torch.randn(20, 50, generator=g, dtype=torch.float64)
    W[15] = W[2] - 3 * W[7] + basis[1]
    Q, C, R = linalg.orthogonalize(W, basis, drop_tol=1e-10)
    kept = R.diagonal() > 0
    assert kept.tolist() == [i != 15 for i in range(20)] and torch.all(Q[15] == 0)
    torch.testing.assert_close(Q[kept] @ Q[kept].T, torch.eye(19, dtype=torch.float64))
    assert float((Q @ basis.T).abs().max()) < 1e-14
    assert torch.equal(R, R.triu())
    torch.testing.assert_close(C @ basis + R.T @ Q, W, rtol=0, atol=1e-12)
    # projection only: W minus its components along the basis
    P, C2, none = linalg.orthogonalize(W, basis, normalize=False)
    assert none is None
    torch.testing.assert_close(P, W - (W @ basis.T) @ basis, rtol=0, atol=1e-13)
    torch.testing.assert_close(C2, W @ basis.T, rtol=0, atol=1e-13)


def test_orthogonalize_near_limits_the_first_pass_and_the_second_catches_the_rest() -> None:
    g = torch.Generator().manual_seed(1)
    basis = torch.linalg.qr(torch.randn(40, 8, generator=g, dtype=torch.float64))[0].T
    rest = torch.randn(2, 40, generator=g, dtype=torch.float64)
    rest = rest - (rest @ basis.T) @ basis
    W = torch.stack([3 * basis[6] - 2 * basis[7], basis[7]]) + rest
    W = W + 1e-9 * basis[0]  # a component the first pass (rows 6 and 7 only) does not see
    Q, C, R = linalg.orthogonalize(W, basis, drop_tol=1e-12, near=6)
    torch.testing.assert_close(Q @ Q.T, torch.eye(2, dtype=torch.float64))
    assert float((Q @ basis.T).abs().max()) < 1e-15
    torch.testing.assert_close(C @ basis + R.T @ Q, W, rtol=0, atol=1e-13)
    torch.testing.assert_close(C[:, [0, 6, 7]], torch.tensor(
        [[1e-9, 3.0, -2.0], [1e-9, 0.0, 1.0]], dtype=torch.float64), rtol=1e-6, atol=1e-15)
    P, C2, _ = linalg.orthogonalize(W, basis, normalize=False, near=6)
    torch.testing.assert_close(P, rest, rtol=0, atol=1e-13)
    torch.testing.assert_close(C2, W @ basis.T, rtol=0, atol=1e-13)


def test_convergence_is_relative_to_lambda_with_a_tolerance_below_the_floor_raised_to_it(
        ) -> None:
    res = torch.tensor([1e-7, 1e-7, 1e-3, 1e-9, 2e-6], dtype=torch.float64)
    lam = torch.tensor([1.0, 1e-3, 10.0, 1e-3, 1e-3], dtype=torch.float64)
    ok, raised = linalg.convergence(res, lam, 1e-6)
    assert ok.tolist() == [True, False, False, True, False] and not bool(raised.any())
    ok, raised = linalg.convergence(res, lam, 1e-6, floor=1e-6)
    # tol |lambda| = 1e-9 is below the floor: the tolerance is the floor there
    assert ok.tolist() == [True, True, False, True, False]
    assert raised.tolist() == [False, True, False, True, True]
    assert linalg.rounding_floor(torch.float32, 2.0) == pytest.approx(
        100 * 2.0 * torch.finfo(torch.float32).eps)


# ------------------------------------------------------------------------------------------
# Lanczos
def test_lanczos_largest_smallest_and_both_ends_match_the_known_spectrum() -> None:
    op = Counted(_matrix(SPECTRUM))
    exact = torch.sort(SPECTRUM, descending=True).values
    top = linalg.lanczos(op, 120, 4, 0, tol=1e-10)
    torch.testing.assert_close(top.values, exact[:4], rtol=1e-10, atol=0)
    assert bool(top.converged.all()) and top.n_matvecs == op.products
    low = linalg.lanczos(op, 120, 0, 2, tol=1e-9, block_size=2)
    torch.testing.assert_close(low.values, exact[-2:].flip(0), rtol=1e-8, atol=0)
    both = linalg.lanczos(op, 120, 2, 1, tol=1e-10, max_basis=16)
    torch.testing.assert_close(both.values, torch.cat([exact[:2], exact[-1:]]), rtol=1e-8,
                               atol=0)
    assert both.n_restarts > 0
    # the vectors are eigenvectors: true residuals match the reported ones
    true = torch.linalg.vector_norm(both.vectors @ op.A - both.values[:, None] * both.vectors,
                                    dim=1)
    torch.testing.assert_close(both.residuals, true, rtol=1e-2, atol=1e-12)


def test_float32_lanczos_through_restarts_keeps_orthonormal_vectors_and_honest_residuals(
        ) -> None:
    # every step's first Gram-Schmidt pass sees only the last two blocks (or, after a
    # restart, every kept Ritz vector); the second pass covers the whole basis
    res = linalg.lanczos(Counted(_matrix(SPECTRUM)), 120, 4, 0, tol=1e-5, max_basis=10,
                         dtype=torch.float32)
    assert res.n_restarts >= 2 and bool(res.converged.all())
    V = res.vectors.double()
    assert float((V @ V.T - torch.eye(4, dtype=torch.float64)).abs().max()) < 1e-5
    exact = torch.sort(SPECTRUM, descending=True).values[:4]
    assert bool(((res.values - exact).abs() <= res.residuals).all())


def test_block_lanczos_finds_a_repeated_eigenvalue_with_its_multiplicity() -> None:
    spectrum = torch.cat([torch.tensor([9.0, 9.0, 9.0, 4.0]),
                          torch.linspace(0.0, 2.0, 56)]).double()
    op = Counted(_matrix(spectrum, seed=1))
    res = linalg.lanczos(op, 60, 4, 0, tol=1e-10, block_size=3)
    torch.testing.assert_close(res.values, torch.tensor([9.0, 9.0, 9.0, 4.0],
                                                        dtype=torch.float64), rtol=1e-10, atol=0)
    assert op.calls * 3 == op.products  # every product came in a block of 3


def test_warm_start_from_a_near_eigenvector_converges_in_far_fewer_products() -> None:
    spectrum = torch.linspace(0.0, 10.0, 120, dtype=torch.float64)  # small relative gaps
    A = _matrix(spectrum, seed=2)
    u = torch.linalg.eigh(A).eigenvectors[:, -1]
    g = torch.Generator().manual_seed(5)
    near = u + 1e-7 * torch.randn(120, generator=g, dtype=torch.float64)
    cold = linalg.lanczos(Counted(A), 120, 1, 0, tol=1e-8)
    warm = linalg.lanczos(Counted(A), 120, 1, 0, tol=1e-8, v0=near)
    assert float(warm.values[0]) == pytest.approx(10.0, rel=1e-12)
    assert float(cold.values[0]) == pytest.approx(10.0, rel=1e-12)
    assert warm.n_matvecs <= cold.n_matvecs // 4
    # a warm block with fewer rows than the block size is completed at random
    block = linalg.lanczos(Counted(A), 120, 2, 0, tol=1e-8, v0=near, block_size=2)
    torch.testing.assert_close(block.values, spectrum[-2:].flip(0), rtol=1e-10, atol=0)


def test_a_float32_pair_below_the_floor_converges_at_the_floor_with_an_honest_residual(
        ) -> None:
    spectrum = torch.cat([torch.tensor([100.0]), torch.linspace(1e-3, 1.0, 59)])
    A = _matrix(spectrum, seed=3)
    res = linalg.lanczos(Counted(A), 60, 0, 1, tol=1e-9, dtype=torch.float32)
    floor = linalg.rounding_floor(torch.float32, 100.0)
    assert bool(res.converged[0]) and bool(res.at_floor[0])
    # the reported residual is never below the floor (taken at the largest Ritz value,
    # which is ||A|| = 100 to float32 rounding), and bounds the true error
    assert float(res.residuals[0]) >= floor * (1 - 1e-6)
    assert abs(float(res.values[0]) - 1e-3) <= float(res.residuals[0])
    short = linalg.lanczos(Counted(A), 60, 1, 0, tol=1e-12, max_matvecs=3)
    assert not bool(short.converged[0]) and not bool(short.at_floor[0])
    with pytest.raises(LandscapeError, match="between 1 and 60"):
        linalg.lanczos(Counted(A), 60, 61, 0)


# ------------------------------------------------------------------------------------------
# trace
@pytest.mark.parametrize("kind", linalg.PROBES)
def test_hutchinson_mean_over_seeds_is_within_standard_errors_of_the_trace(kind: str) -> None:
    op = Counted(_matrix(SPECTRUM, seed=4))
    exact = float(SPECTRUM.sum())
    runs = [linalg.hutchinson(op, 120, max_probes=20, min_probes=20, seed=s, kind=kind)
            for s in range(200)]
    est = np.array([r.estimate for r in runs])
    assert abs(est.mean() - exact) <= 3.5 * est.std(ddof=1) / np.sqrt(len(est))
    # the reported standard error is the spread over seeds
    assert 0.8 < est.std(ddof=1) / np.mean([r.stderr for r in runs]) < 1.25
    assert runs[0].n_matvecs == 20 and op.calls == 2 * 200  # rounds of 10 probes


def test_hutchinson_stops_at_rtol_or_says_it_did_not() -> None:
    op = Counted(_matrix(SPECTRUM, seed=4))
    done = linalg.hutchinson(op, 120, rtol=0.05, max_probes=1000)
    assert done.converged and done.stderr <= 0.05 * abs(done.estimate) and done.n_probes < 1000
    short = linalg.hutchinson(op, 120, rtol=1e-4, max_probes=30)
    assert not short.converged and short.n_probes == 30


def test_hutchpp_is_exact_on_a_low_rank_matrix_and_unbiased_otherwise() -> None:
    low_rank = torch.zeros(80, dtype=torch.float64)
    low_rank[:5] = torch.tensor([6.0, -4.0, 3.0, 2.0, 1.0])
    op = Counted(_matrix(low_rank, seed=5))
    est = linalg.hutchpp(op, 80, 15, seed=0)
    assert est.estimate == pytest.approx(8.0, abs=1e-10)
    assert est.n_matvecs == 15 and op.calls == 3  # three blocks of 5
    decaying = 100.0 / torch.arange(1, 121, dtype=torch.float64) ** 1.5
    full = Counted(_matrix(decaying, seed=6))
    runs = np.array([linalg.hutchpp(full, 120, 30, seed=s).estimate for s in range(200)])
    assert abs(runs.mean() - float(decaying.sum())) <= 3.5 * runs.std(ddof=1) / np.sqrt(200)
    hutch = np.array([linalg.hutchinson(full, 120, max_probes=30, min_probes=30, seed=s)
                      .estimate for s in range(200)])
    assert runs.std() < 0.5 * hutch.std()  # a decaying top: fewer products for one error


def test_hutchpp_beyond_the_rank_keeps_only_the_sketch_rows_that_span_something() -> None:
    # rank 4, a sketch of 10: the Householder QR's rows past the rank are at the rounding
    # floor and dropped (4 exact-part products, not 10); the estimate is still exact
    low_rank = torch.zeros(60, dtype=torch.float64)
    low_rank[:4] = torch.tensor([5.0, -3.0, 2.0, 0.5])
    op = Counted(_matrix(low_rank, seed=8))
    est = linalg.hutchpp(op, 60, 30, seed=1)
    assert est.estimate == pytest.approx(4.5, abs=1e-10)
    assert est.n_matvecs == 2 * 10 + 4 and op.calls == 3
    assert max(abs(v) for v in est.samples.tolist()) < 1e-10  # nothing left to deflate


def test_probes_are_seeded_per_index_whatever_the_block() -> None:
    block = linalg.probes(30, [0, 1, 2, 3], 7, 1, torch.float64, "cpu")
    assert torch.equal(block[2:3], linalg.probes(30, [2], 7, 1, torch.float64, "cpu"))
    assert set(block.unique().tolist()) == {-1.0, 1.0}
    assert not torch.equal(block[0], block[1])
    gauss = linalg.probes(4000, [0], 7, 1, torch.float64, "cpu", kind="gaussian")
    assert abs(float(gauss.mean())) < 0.1 and abs(float(gauss.std()) - 1) < 0.05


# ------------------------------------------------------------------------------------------
# stochastic Lanczos quadrature
def test_slq_density_integrates_to_one_and_its_moments_are_the_traces_of_powers() -> None:
    A = _matrix(SPECTRUM, seed=7)
    n, m, p = 120, 12, 40
    quad = linalg.slq(Counted(A), n, p, m, seed=3)
    grid, density, sigma = linalg.slq_density(quad, 0.01, 4000)
    assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0, abs=1e-8)
    assert sigma == pytest.approx(0.01 * float(quad.nodes.max() - quad.nodes.min()))
    torch.testing.assert_close(quad.weights.sum(dim=1), torch.ones(p, dtype=torch.float64))
    assert quad.n_matvecs == p * m
    Z = linalg.probes(n, list(range(p)), 3, 4, torch.float64, "cpu") / n**0.5
    for k in (1, 2, 3, 5):
        Ak = torch.linalg.matrix_power(A, k)
        moments = (quad.weights * quad.nodes**k).sum(dim=1)
        # Gauss quadrature with m nodes is exact up to degree 2m - 1: each probe's z^T A^k z
        torch.testing.assert_close(moments, ((Z @ Ak) * Z).sum(dim=1), rtol=1e-9, atol=1e-9)
        # and the mean over probes estimates tr(A^k) / n
        exact = float(torch.trace(Ak)) / n
        se = float(moments.std()) / p**0.5
        assert abs(float(moments.mean()) - exact) <= 4 * se + 1e-12
