"""Curvature: Lanczos eigenvalues, Hutchinson / Hutch++ traces, SLQ densities, curvature maps.

Every number is checked against an independent reference: the full Hessian (or GGN) of a
tiny float64 model formed with ``torch.func``, or a quadratic whose spectrum is set by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import Tensor, nn
from torch.func import functional_call, hessian, jacrev
from torch.nn.utils import parameters_to_vector

from landscape import linalg
from landscape.analysis.hessian import (
    analyze_hessian,
    curvature_map,
    hessian_eigenvalues,
    hessian_trace,
    load_hessian,
    spectral_density,
)
from landscape.cli import main
from landscape.errors import LandscapeError
from landscape.objective import Objective

os.environ.setdefault("LANDSCAPE_QUIET", "1")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread (several threads only contend on 2 shared cores)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ------------------------------------------------------------------------------------------
# tiny models and their exact curvature
def _mlp() -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)).double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    return model, x, y  # 211 parameters


def _convnet() -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Tanh(), nn.AvgPool2d(2),
                          nn.Flatten(), nn.Linear(36, 3)).double()
    bn = model[1]
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    model.eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (24,), generator=g)
    return model, x, y  # 159 parameters


def _objective(model: nn.Module, x: Tensor, y: Tensor, **kw) -> Objective:
    kw.setdefault("hvp_method", "double_backward")
    kw.setdefault("precision", "float64")
    return Objective(model, (x, y), device="cpu", **kw)


def _loss_fn(model: nn.Module, x: Tensor, y: Tensor):
    """The mean loss as a function of the flat parameters, written independently."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    buffers = dict(model.named_buffers())

    def unflatten(theta: Tensor) -> dict[str, Tensor]:
        out, offset = {}, 0
        for name, shape in zip(names, shapes):
            n = int(torch.Size(shape).numel())
            out[name] = theta[offset : offset + n].reshape(shape)
            offset += n
        return out

    def outputs(theta: Tensor) -> Tensor:
        return functional_call(model, {**unflatten(theta), **buffers}, (x,))

    def loss(theta: Tensor) -> Tensor:
        out = outputs(theta)
        if torch.is_floating_point(y):
            return F.mse_loss(out, y)
        return F.cross_entropy(out, y)

    return loss, outputs


def _full_hessian(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    loss, _ = _loss_fn(model, x, y)
    return hessian(loss)(parameters_to_vector(model.parameters()).detach())


def _full_ggn(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """(1/n) sum_i J_i^T (diag(p_i) - p_i p_i^T) J_i for cross-entropy."""
    _, outputs = _loss_fn(model, x, y)
    theta = parameters_to_vector(model.parameters()).detach()
    J = jacrev(outputs)(theta)  # [n, c, P]
    p = torch.softmax(outputs(theta), dim=1)
    H_out = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    return torch.einsum("ncp,ncd,ndq->pq", J, H_out, J) / x.shape[0]


MODELS = {"mlp": _mlp, "convnet_bn_eval": _convnet}


@pytest.fixture(scope="module", params=list(MODELS))
def tiny(request):
    model, x, y = MODELS[request.param]()
    H = _full_hessian(model, x, y)
    return model, x, y, H


def _quadratic(spectrum: np.ndarray, n: int = 120, outputs: int = 1, seed: int = 0):
    """Bias-free linear least squares whose Hessian has eigenvalues ``spectrum`` exactly.

    loss = (1 / (n d)) sum_i ||W x_i - y_i||^2 (the engine's mean MSE), so H = (2/n) X^T X per
    output (each eigenvalue repeated ``outputs`` times). X = U diag(sqrt(n d lambda / 2)) V^T.
    """
    rng = np.random.default_rng(seed)
    d = len(spectrum)
    U, _ = np.linalg.qr(rng.standard_normal((n, d)))
    V, _ = np.linalg.qr(rng.standard_normal((d, d)))
    X = U @ np.diag(np.sqrt(n * outputs * spectrum / 2)) @ V.T
    torch.manual_seed(seed)
    model = nn.Linear(d, outputs, bias=False).double()
    x = torch.from_numpy(X)
    y = torch.from_numpy(rng.standard_normal((n, outputs)))
    obj = Objective(model, (x, y), loss="mse", precision="float64", device="cpu",
                    hvp_method="double_backward")
    return obj, model


SPECTRUM = np.concatenate([[40.0, 25.0, 10.0, 5.0], np.linspace(0.2, 2.0, 56)])


# ------------------------------------------------------------------------------------------
# Lanczos
def test_lanczos_top5_bottom2_match_full_hessian_eigenvalues(tiny) -> None:
    model, x, y, H = tiny
    exact = torch.linalg.eigvalsh(H)
    obj = _objective(model, x, y)
    res = hessian_eigenvalues(obj, k=(5, 2), which="both", tol=1e-8)
    reference = torch.cat([exact[-5:].flip(0), exact[:2]])
    assert torch.all(res.converged)
    torch.testing.assert_close(res.eigenvalues, reference, rtol=1e-8, atol=0)
    assert torch.all(res.largest[:-1] >= res.largest[1:])  # descending
    assert torch.all(res.smallest[:-1] <= res.smallest[1:])  # ascending
    # the Ritz vectors are eigenvectors of the exact Hessian, to the tolerance
    V = res.eigenvectors
    true_res = (V @ H - res.eigenvalues[:, None] * V).norm(dim=1) / res.eigenvalues.abs()
    assert torch.all(true_res < 1e-8)
    torch.testing.assert_close(V.norm(dim=1), torch.ones(7, dtype=torch.float64))
    # the reported residuals are the true ones, never below the float64 rounding floor
    floor = linalg.rounding_floor(torch.float64, float(exact.abs().max()))
    torch.testing.assert_close(res.residuals, torch.clamp(
        true_res, min=floor / res.eigenvalues.abs()), rtol=1e-3, atol=1e-14)


def test_smallest_and_largest_alone_equal_the_both_ends_run(tiny) -> None:
    model, x, y, H = tiny
    exact = torch.linalg.eigvalsh(H)
    obj = _objective(model, x, y)
    low = hessian_eigenvalues(obj, k=2, which="smallest", tol=1e-9, block_size=2)
    torch.testing.assert_close(low.eigenvalues, exact[:2], rtol=1e-8, atol=0)
    high = hessian_eigenvalues(obj, k=3, which="largest", tol=1e-9, max_basis=12)
    torch.testing.assert_close(high.eigenvalues, exact[-3:].flip(0), rtol=1e-8, atol=0)
    assert high.n_restarts > 0  # thick restart with a 12-vector basis


def test_float32_lanczos_through_restarts_is_within_its_residuals_of_the_exact_hessian(
        tiny) -> None:
    # float32 products, a 10-vector basis (thick restarts: the first Gram-Schmidt pass then
    # sees every kept Ritz vector, later ones only the last two blocks), float64 checks
    model, x, y, H = tiny
    exact = torch.linalg.eigvalsh(H)
    obj = _objective(model, x, y, precision="float32")
    res = hessian_eigenvalues(obj, k=3, tol=1e-4, max_basis=10)
    assert res.n_restarts > 0 and bool(res.converged.all()) and res.settings["verify"]
    truth = exact[-3:].flip(0)
    assert bool(((res.eigenvalues - truth).abs() / truth.abs() <= res.residuals).all())
    assert float(((res.eigenvalues - truth).abs() / truth.abs()).max()) < 1e-4


def test_verify_recomputes_true_residuals_below_tolerance() -> None:
    model, x, y = _mlp()
    obj = _objective(model, x, y)
    res = hessian_eigenvalues(obj, k=3, tol=1e-7, verify=True)
    H = _full_hessian(model, x, y)
    V = res.eigenvectors
    true_res = (V @ H - res.eigenvalues[:, None] * V).norm(dim=1) / res.eigenvalues.abs()
    torch.testing.assert_close(res.residuals, true_res, rtol=1e-6, atol=1e-16)
    assert torch.all(res.residuals < 1e-7) and torch.all(res.converged)


def test_float64_checks_of_a_call_read_the_data_once_and_bound_the_true_error() -> None:
    # float32 Lanczos on data in 3 chunks: its k float64 checks are one block, so the float64
    # twin reads the data once for all of them; the bounds hold against the exact Hessian
    model, x, y = _mlp()
    obj = _objective(model, x, y, precision="float32", batch_size=14)
    # (the exact Hessian where the float32 engine works: parameters and inputs rounded)
    H = _full_hessian(model.float().double(), x.float().double(), y)
    twin, reads = obj.with_precision("float64"), []
    batches = twin.batches

    def counted():
        reads.append(1)
        yield from batches()

    twin.batches = counted
    res = hessian_eigenvalues(obj, k=3, tol=1e-4)
    assert len(reads) == 1 and res.settings["verify"]
    truth = torch.linalg.eigvalsh(H)[-3:].flip(0)
    assert bool(((res.eigenvalues - truth).abs() / truth.abs() <= res.residuals).all())
    V = res.eigenvectors.double()
    true_res = (V @ H - res.eigenvalues[:, None] * V).norm(dim=1) / res.eigenvalues.abs()
    torch.testing.assert_close(res.residuals, true_res, rtol=1e-6, atol=1e-12)


def test_lanczos_on_quadratic_with_known_spectrum_and_fwd_rev_hvp() -> None:
    obj, _ = _quadratic(SPECTRUM)
    obj.hvp_method = "fwd_rev"
    res = hessian_eigenvalues(obj, k=(4, 2), which="both", tol=1e-10)
    expected = torch.tensor([40.0, 25.0, 10.0, 5.0, 0.2, 0.2 + 1.8 / 55], dtype=torch.float64)
    torch.testing.assert_close(res.eigenvalues, expected, rtol=1e-10, atol=0)


def test_block_lanczos_finds_repeated_eigenvalues_and_shares_data_passes() -> None:
    # two outputs: every eigenvalue of the quadratic appears twice
    obj, _ = _quadratic(SPECTRUM[:20], outputs=2)
    res = hessian_eigenvalues(obj, k=4, tol=1e-10, block_size=2)
    expected = torch.tensor([40.0, 40.0, 25.0, 25.0], dtype=torch.float64)
    torch.testing.assert_close(res.eigenvalues, expected, rtol=1e-10, atol=0)
    assert torch.all(res.converged)
    assert obj.counts["hvp"] == res.n_hvp


def test_lanczos_is_seeded_and_reproducible() -> None:
    model, x, y = _mlp()
    obj = _objective(model, x, y)
    a = hessian_eigenvalues(obj, k=2, tol=1e-4, seed=3)
    b = hessian_eigenvalues(obj, k=2, tol=1e-4, seed=3)
    assert torch.equal(a.eigenvalues, b.eigenvalues) and a.n_hvp == b.n_hvp
    assert torch.equal(a.eigenvectors, b.eigenvectors)


def test_ggn_eigenvalues_are_nonnegative_and_equal_the_full_ggn() -> None:
    model, x, y = _mlp()
    G = _full_ggn(model, x, y)
    exact = torch.linalg.eigvalsh(G)
    obj = _objective(model, x, y)
    res = hessian_eigenvalues(obj, k=(4, 1), which="both", tol=1e-9, operator="ggn")
    torch.testing.assert_close(res.largest, exact[-4:].flip(0), rtol=1e-8, atol=0)
    assert float(res.smallest[0]) >= -1e-10 * float(exact[-1])  # positive semi-definite
    assert float(exact[0]) >= -1e-12 * float(exact[-1])


def test_per_block_eigenvalues_equal_those_of_the_hessian_sub_block(tiny) -> None:
    model, x, y, H = tiny
    obj = _objective(model, x, y)
    name = [n for n, _ in model.named_parameters()][0]  # the first layer's weight
    mask = obj.space.select(name)
    exact = torch.linalg.eigvalsh(H[mask][:, mask])
    res = hessian_eigenvalues(obj, k=(3, 1), which="both", tol=1e-9, params=name)
    torch.testing.assert_close(res.eigenvalues, torch.cat([exact[-3:].flip(0), exact[:1]]),
                               rtol=1e-8, atol=0)
    assert torch.all(res.eigenvectors[:, ~mask] == 0)
    # a boolean mask gives the same block
    same = hessian_eigenvalues(obj, k=(3, 1), which="both", tol=1e-9, params=mask)
    torch.testing.assert_close(same.eigenvalues, res.eigenvalues, rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------------------
# trace
def test_hutchinson_is_exact_with_one_probe_on_a_diagonal_hessian() -> None:
    class Scale(nn.Module):  # out = x * w elementwise: a diagonal Hessian under MSE
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.linspace(-1.0, 2.0, 7, dtype=torch.float64))

        def forward(self, x: Tensor) -> Tensor:
            return x * self.w

    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 7, generator=g, dtype=torch.float64)
    y = torch.randn(30, 7, generator=g, dtype=torch.float64)
    obj = Objective(Scale(), (x, y), precision="float64", device="cpu")
    exact = float((2 * (x**2).sum(0) / (30 * 7)).sum())
    for seed in range(3):
        res = hessian_trace(obj, method="hutchinson", max_probes=1, min_probes=1, seed=seed)
        assert res.n_probes == 1 and res.n_hvp == 1 and res.stderr is None
        assert res.estimate == pytest.approx(exact, rel=1e-13)


def test_hutchinson_on_quadratic_is_within_three_standard_errors() -> None:
    obj, _ = _quadratic(SPECTRUM)
    exact = float(SPECTRUM.sum())
    res = hessian_trace(obj, method="hutchinson", rtol=0.03, max_probes=2000, seed=0)
    assert res.stderr <= 0.03 * abs(res.estimate) or res.n_probes == 2000
    assert abs(res.estimate - exact) <= 3 * res.stderr
    assert res.n_hvp == res.n_probes and res.n_probes % 10 == 0
    # the standard error is honest: the spread over seeds matches it
    runs = [hessian_trace(obj, method="hutchinson", max_probes=20, min_probes=20, seed=s)
            for s in range(30)]
    spread = np.std([r.estimate for r in runs], ddof=1)
    mean_se = np.mean([r.stderr for r in runs])
    assert 0.6 < spread / mean_se < 1.6


def test_hutchpp_is_unbiased_within_stderr_and_beats_hutchinson_on_a_decaying_spectrum() -> None:
    obj, _ = _quadratic(SPECTRUM)
    exact = float(SPECTRUM.sum())
    pp = hessian_trace(obj, method="hutch++", max_probes=30, seed=0)
    assert pp.n_hvp == 30
    assert abs(pp.estimate - exact) <= 3 * pp.stderr
    hutch = hessian_trace(obj, method="hutchinson", max_probes=30, min_probes=30, seed=0)
    assert pp.stderr < 0.5 * hutch.stderr
    # unbiased, and its standard error is honest: over seeds, the mean is within 3 standard
    # errors of the mean, and the spread matches the reported standard errors
    runs = [hessian_trace(obj, method="hutch++", max_probes=30, seed=s) for s in range(100)]
    estimates = np.array([r.estimate for r in runs])
    assert abs(estimates.mean() - exact) <= 3 * estimates.std(ddof=1) / np.sqrt(len(runs))
    assert 0.6 < estimates.std(ddof=1) / np.mean([r.stderr for r in runs]) < 1.6
    # a budget that covers the whole space makes Hutch++ exact
    full = hessian_trace(obj, method="hutch++", max_probes=3 * len(SPECTRUM), seed=1)
    assert full.estimate == pytest.approx(exact, rel=1e-10)


# ------------------------------------------------------------------------------------------
# density
def test_slq_density_integrates_to_one_and_matches_the_known_spectrum() -> None:
    obj, _ = _quadratic(SPECTRUM)
    d = spectral_density(obj, n_probes=8, n_steps=30, sigma=0.01, grid_size=2000)
    assert d.nodes.shape == (8, 30) and d.weights.shape == (8, 30)
    torch.testing.assert_close(d.weights.sum(dim=1), torch.ones(8, dtype=torch.float64))
    assert float(torch.trapezoid(d.density, d.grid)) == pytest.approx(1.0, abs=1e-6)
    assert d.n_hvp == 8 * 30
    width = SPECTRUM.max() - SPECTRUM.min()
    w_density = scipy.stats.wasserstein_distance(d.grid.numpy(), SPECTRUM, d.density.numpy())
    w_nodes = scipy.stats.wasserstein_distance(d.nodes.reshape(-1).numpy(), SPECTRUM,
                                               d.weights.reshape(-1).numpy())
    assert w_nodes < 0.02 * width
    assert w_density < 0.03 * width
    # the extreme nodes are the extreme eigenvalues (Lanczos converges there first)
    assert float(d.nodes.max()) == pytest.approx(40.0, rel=1e-8)


def test_slq_on_a_small_space_is_exact_quadrature() -> None:
    # n_steps >= P: the Krylov space is the whole space and the nodes are the eigenvalues
    spectrum = np.array([3.0, 2.0, 1.0, 0.5, -0.5])
    obj, _ = _quadratic(np.abs(spectrum))
    d = spectral_density(obj, n_probes=3, n_steps=20, sigma=0.01)
    assert d.nodes.shape == (3, 5)
    for row_n, row_w in zip(d.nodes, d.weights):
        keep = row_w > 1e-12
        assert np.allclose(np.sort(row_n[keep].numpy()), np.sort(np.abs(spectrum))[-keep.sum():])


# ------------------------------------------------------------------------------------------
# nothing changes the model; bad input
def test_model_parameters_and_buffers_are_unchanged_by_every_analysis(tmp_path: Path) -> None:
    model, x, y = _convnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    obj = _objective(model, x, y)
    theta0 = obj.theta0.clone()
    hessian_eigenvalues(obj, k=(1, 1), which="both", tol=1e-4)
    hessian_eigenvalues(obj, k=1, tol=1e-4, operator="ggn", params="1.")
    hessian_trace(obj, method="hutchinson", max_probes=4, min_probes=2)
    hessian_trace(obj, method="hutch++", max_probes=6)
    spectral_density(obj, n_probes=2, n_steps=5)
    analyze_hessian(obj, top=1, bottom=1, trace=True, density=True, tol=1e-3, max_probes=4,
                    density_probes=2, density_steps=4, out=tmp_path / "h.h5")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(obj.theta0, theta0)


def test_bad_input_raises_one_line_errors(tmp_path: Path) -> None:
    model, x, y = _mlp()
    obj = _objective(model, x, y)
    P = obj.space.numel
    cases = [
        lambda: hessian_eigenvalues(obj, k=P + 1),
        lambda: hessian_eigenvalues(obj, k=2, tol=0.0),
        lambda: hessian_eigenvalues(obj, k=2, tol=-1e-3),
        lambda: hessian_eigenvalues(obj, k=2, which="middle"),
        lambda: hessian_eigenvalues(obj, k=2, operator="fisherx"),
        lambda: hessian_eigenvalues(obj, k=2, params="no_such_layer"),
        lambda: hessian_eigenvalues(obj, k=0),
        lambda: hessian_trace(obj, rtol=0),
        lambda: hessian_trace(obj, method="hutch+"),
        lambda: hessian_trace(obj, min_probes=5, max_probes=2),
        lambda: spectral_density(obj, sigma=-1.0),
        lambda: spectral_density(obj, sigma=1e-4, grid_size=100, n_probes=1, n_steps=5),
    ]
    messages = []
    for case in cases:
        with pytest.raises(LandscapeError) as err:
            case()
        messages.append(str(err.value))
    assert all(m and "\n" not in m for m in messages)
    assert "parameters" in messages[0]
    # k larger than a parameter block
    with pytest.raises(LandscapeError, match="only 16"):
        hessian_eigenvalues(obj, k=17, params="0.bias")
    # an eigenvector request on a file without them
    out = tmp_path / "noeig.h5"
    analyze_hessian(obj, top=1, bottom=0, tol=1e-3, eigenvectors=False, out=out)
    assert load_hessian(out).eigen.eigenvalues.shape == (1,)
    with pytest.raises(LandscapeError, match="no eigenvectors") as err:
        load_hessian(out, eigenvectors=True)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------
# files: write, read back, resume
def test_hessian_file_round_trips_and_resumes_without_recomputing(tmp_path: Path) -> None:
    model, x, y = _mlp()
    obj = _objective(model, x, y)
    out = tmp_path / "hessian.h5"
    kw = dict(top=3, bottom=1, trace=True, density=True, tol=1e-8, max_probes=20,
              density_probes=3, density_steps=10, out=out)
    first = analyze_hessian(obj, **kw)
    used = obj.counts["hvp"]
    assert used == first.n_hvp
    again = analyze_hessian(obj, **kw)
    assert obj.counts["hvp"] == used  # every part read back from the file
    loaded = load_hessian(out, eigenvectors=True)
    for report in (again, loaded):
        assert torch.equal(report.eigen.eigenvalues, first.eigen.eigenvalues)
        assert torch.equal(report.eigen.eigenvectors, first.eigen.eigenvectors)
        assert report.trace.estimate == first.trace.estimate
        assert torch.equal(report.density.density, first.density.density)
        assert report.n_hvp == first.n_hvp
    exact = torch.linalg.eigvalsh(_full_hessian(model, x, y))
    torch.testing.assert_close(loaded.eigen.largest, exact[-3:].flip(0), rtol=1e-8, atol=0)
    with h5py.File(out) as f:
        assert f.attrs["kind"] == "hessian"
        assert f["eigenvectors_top"].shape == (3, obj.space.numel)
        assert {"grid", "density", "nodes", "weights"} <= set(f["density"])
    with pytest.raises(LandscapeError, match="other settings"):
        analyze_hessian(obj, **{**kw, "tol": 1e-6})


# ------------------------------------------------------------------------------------------
# curvature maps on a stored surface
def test_curvature_map_matches_the_full_hessian_at_each_point_and_resumes(tmp_path: Path,
                                                                          ) -> None:
    from landscape.surface import compute_surface, random_direction

    model, x, y = _mlp()
    obj = _objective(model, x, y)
    dirs = [random_direction(obj.space, obj.theta0, s) for s in (0, 1)]
    out = tmp_path / "surface.h5"
    compute_surface(obj, out, "-0.5:0.5:3", "-0.4:0.4:2", directions=dirs, show_progress=False)
    loss, _ = _loss_fn(model, x, y)
    with h5py.File(out) as f:
        xs, ys = f["x"][()], f["y"][()]
        origin = torch.from_numpy(f["origin"][()]).double()
        dx, dy = (torch.from_numpy(f[f"directions/{a}"][()]).double() for a in ("x", "y"))
    first = curvature_map(obj, out, tol=1e-10)
    assert first.done.all()
    for i in range(len(ys)):
        for j in range(len(xs)):
            exact = torch.linalg.eigvalsh(hessian(loss)(origin + xs[j] * dx + ys[i] * dy))
            assert first.hessian_max[i, j] == pytest.approx(float(exact[-1]), rel=1e-8)
            assert first.hessian_min[i, j] == pytest.approx(float(exact[0]), rel=1e-8)
    with h5py.File(out, "r+") as f:  # as if killed before the second row: resume does it
        f["hessian_done"][1, :] = False
        f["hessian_max"][1, :] = np.nan
    resumed = curvature_map(obj, out, tol=1e-10)
    assert resumed.n_hvp < first.n_hvp and resumed.n_hvp > 0
    np.testing.assert_array_equal(resumed.hessian_max, first.hessian_max)
    # a row is one warm-started chain: an unfinished row is redone from its first point,
    # so the resumed values are the same bits as the uninterrupted ones
    with h5py.File(out, "r+") as f:
        f["hessian_done"][0, 1:] = False
    again = curvature_map(obj, out, tol=1e-10)
    assert 0 < again.n_hvp < first.n_hvp
    for name in ("hessian_max", "hessian_min"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    with h5py.File(out) as f:
        assert f["train_loss"].shape == f["hessian_max"].shape == f["hessian_min"].shape
    with pytest.raises(LandscapeError, match="other settings"):
        curvature_map(obj, out, tol=1e-3)


# ------------------------------------------------------------------------------------------
# two processes
DIST_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    import torch.distributed as dist
    from torch import nn
    from landscape.objective import Objective
    from landscape.analysis.hessian import hessian_trace, spectral_density

    def build():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 2)).double()
        g = torch.Generator().manual_seed(1)
        x = torch.randn(20, 5, generator=g, dtype=torch.float64)
        y = torch.randint(0, 2, (20,), generator=g)
        return Objective(model, (x, y), precision="float64", device="cpu")

    def measure():
        obj = build()
        t = hessian_trace(obj, method="hutchinson", rtol=1e-12, max_probes=25, min_probes=25,
                          check_every=10)
        d = spectral_density(obj, n_probes=5, n_steps=8)
        return {"trace": t.estimate, "stderr": t.stderr, "samples": t.samples,
                "trace_hvp": t.n_hvp, "nodes": d.nodes, "weights": d.weights,
                "density": d.density, "density_hvp": d.n_hvp, "local_hvp": obj.counts["hvp"]}

    if __name__ == "__main__":
        rank, store, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=2)
        torch.save(measure(), out)
        dist.destroy_process_group()
""")


def test_two_gloo_processes_split_probes_and_match_one_process(tmp_path: Path) -> None:
    script = tmp_path / "dist.py"
    script.write_text(DIST_SCRIPT)
    env = {**os.environ, "LANDSCAPE_QUIET": "1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), str(tmp_path / "store"),
                               str(tmp_path / f"rank{rank}.pt")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    namespace: dict = {"__name__": "reference"}
    exec(DIST_SCRIPT, namespace)  # the same measurement in this single process
    single = namespace["measure"]()
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    for rank in (0, 1):
        multi = torch.load(tmp_path / f"rank{rank}.pt")
        assert multi["trace"] == pytest.approx(single["trace"], rel=1e-12)
        assert multi["stderr"] == pytest.approx(single["stderr"], rel=1e-10)
        torch.testing.assert_close(multi["samples"], single["samples"], rtol=1e-12, atol=0)
        torch.testing.assert_close(multi["nodes"], single["nodes"], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(multi["weights"], single["weights"], rtol=1e-8, atol=1e-12)
        torch.testing.assert_close(multi["density"], single["density"], rtol=1e-8, atol=1e-10)
        assert multi["trace_hvp"] == single["trace_hvp"] == 25
        assert multi["density_hvp"] == single["density_hvp"] == 5 * 8
        # each rank did only its share of the probes (13 + 12 trace, 3 + 2 SLQ probes)
        assert multi["local_hvp"] == [13 + 3 * 8, 12 + 2 * 8][rank]


# ------------------------------------------------------------------------------------------
# command line
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from landscape.training import train

    out = tmp_path_factory.mktemp("run") / "mlp"
    train(model="mlp", model_options={"widths": [6]}, dataset="digits", train_size=60,
          epochs=1, device="cpu", out=out, progress=False)
    return out


def test_cli_hessian_json_has_the_documented_keys_and_values(run_dir: Path,
                                                             tmp_path: Path) -> None:
    from landscape.runs import load_run

    out = tmp_path / "h.h5"
    args = ["hessian", "--run", str(run_dir), "--top", "3", "--bottom", "1", "--trace",
            "--max-probes", "20", "--density", "--density-probes", "2", "--density-steps",
            "6", "--precision", "float64", "--device", "cpu", "--tol", "1e-8",
            "--out", str(out), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("eigenvalues_top", "eigenvalues_bottom", "residuals_top", "residuals_bottom",
                "converged_top", "converged_bottom", "trace", "density", "n_hvp"):
        assert key in data
    assert set(data["trace"]) >= {"estimate", "stderr"}
    top, bottom = data["eigenvalues_top"], data["eigenvalues_bottom"]
    assert len(top) == 3 and len(bottom) == 1 and top == sorted(top, reverse=True)
    assert all(data["converged_top"]) and all(r < 1e-8 for r in data["residuals_top"])
    # the same numbers as the Python API on the same run
    run = load_run(run_dir)
    obj = Objective.from_run(run, precision="float64", device="cpu")
    api = hessian_eigenvalues(obj, k=(3, 1), which="both", tol=1e-8)
    np.testing.assert_allclose(top + bottom, api.eigenvalues.numpy(), rtol=1e-7)
    assert load_hessian(out).eigen.eigenvalues.tolist() == top + bottom
    # bad input: one line on stderr, exit status 1
    bad_args = [*args[:4], "100000", *args[5:-3], "--out", str(tmp_path / "bad.h5")]
    bad = CliRunner().invoke(main, bad_args)
    assert bad.exit_code == 1 and "parameters" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_lanczos_continues_past_an_invariant_subspace_to_repeated_eigenvalues() -> None:
    """A low-rank operator makes the Krylov space invariant after a few steps; the fresh random
    directions must be grown before stopping, so the second copy of -3 is found."""
    from landscape.linalg import lanczos

    n = 40
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(0)))
    spectrum = torch.zeros(n, dtype=torch.float64)
    spectrum[:3] = torch.tensor([5.0, -3.0, -3.0], dtype=torch.float64)
    h = q @ torch.diag(spectrum) @ q.T
    pairs = lanczos(lambda v: v @ h, n, 1, 2, tol=1e-8, max_matvecs=500, max_basis=500)
    torch.testing.assert_close(pairs.values, torch.tensor([5.0, -3.0, -3.0], dtype=torch.float64))
    assert bool(pairs.converged.all())


# ------------------------------------------------------------------------------------------
# honest values: what missed its tolerance says so in the JSON, the file and on stderr
def _run_hessian(run_dir: Path) -> tuple[Tensor, Tensor, Tensor]:
    """The exact Hessian of a run's mean train loss, its eigenvalues, and the flat point."""
    from landscape.runs import load_run

    run = load_run(run_dir)
    model = run.model.double().eval()
    x, y = run.data.split("train")
    loss, _ = _loss_fn(model, x.double(), y)
    theta = parameters_to_vector(model.parameters()).detach()
    H = hessian(loss)(theta)
    return H, torch.linalg.eigvalsh(H), theta


def test_a_trace_stopped_at_max_probes_above_rtol_says_so(run_dir: Path, tmp_path: Path,
                                                          ) -> None:
    out = tmp_path / "t.h5"
    result = CliRunner().invoke(main, [
        "hessian", "--run", str(run_dir), "--top", "1", "--bottom", "0", "--trace",
        "--trace-method", "hutchinson", "--trace-rtol", "1e-6", "--max-probes", "12",
        "--precision", "float64", "--device", "cpu", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    trace = json.loads(result.stdout)["trace"]
    assert trace["n_probes"] == 12 and trace["converged"] is False
    with h5py.File(out) as f:
        samples = f["trace/samples"][()]
        assert not f["trace"].attrs["converged"]
    # independently: the standard error of the stored samples is above the tolerance
    assert samples.std(ddof=1) / np.sqrt(12) > 1e-6 * abs(samples.mean())
    assert "trace" in result.stderr and "not converged" in result.stderr
    H, _, _ = _run_hessian(run_dir)
    assert abs(trace["estimate"] - float(torch.trace(H))) < 5 * trace["stderr"]
    # within its tolerance: no flag, no warning
    ok = CliRunner().invoke(main, [
        "hessian", "--run", str(run_dir), "--top", "0", "--bottom", "0", "--trace",
        "--trace-method", "hutchinson", "--trace-rtol", "0.5", "--max-probes", "40",
        "--precision", "float64", "--device", "cpu", "--out", str(tmp_path / "ok.h5"),
        "--json"])
    assert json.loads(ok.stdout)["trace"]["converged"] is True and "warn" not in ok.stderr


def test_an_eigenvalue_above_tol_is_not_reported_converged(run_dir: Path, tmp_path: Path,
                                                           ) -> None:
    H, exact, _ = _run_hessian(run_dir)
    out = tmp_path / "float64.h5"
    result = CliRunner().invoke(main, [
        "hessian", "--run", str(run_dir), "--top", "2", "--bottom", "1", "--tol", "1e-9",
        "--max-iter", "4", "--precision", "float64", "--device", "cpu", "--out", str(out),
        "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    load = load_hessian(out, eigenvectors=True).eigen
    V = load.eigenvectors.double()
    true = (V @ H - load.eigenvalues[:, None] * V).norm(dim=1) / load.eigenvalues.abs()
    flags = data["converged_top"] + data["converged_bottom"]
    # a pair is reported converged exactly when its true residual is below tol
    assert flags == (true <= 1e-9).tolist() == load.converged.tolist()
    assert not all(flags)
    assert len(data["warnings"]) == flags.count(False)
    assert "--max-iter" in result.stderr and "not converged" in result.stderr
    with h5py.File(out) as f:
        assert f["converged_top"][()].tolist() == data["converged_top"]


def test_float32_residuals_bound_the_true_error_and_a_tol_below_the_floor_is_raised(
        run_dir: Path, tmp_path: Path) -> None:
    H, exact, _ = _run_hessian(run_dir)
    out = tmp_path / "float32.h5"
    result = CliRunner().invoke(main, [
        "hessian", "--run", str(run_dir), "--top", "2", "--bottom", "1", "--tol", "1e-9",
        "--precision", "float32", "--device", "cpu", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    values = torch.tensor(data["eigenvalues_top"] + data["eigenvalues_bottom"])
    truth = torch.cat([exact[-2:].flip(0), exact[:1]])
    residuals = torch.tensor(data["residuals_top"] + data["residuals_bottom"])
    # the reported relative residual bounds the true relative error of every eigenvalue
    assert ((values - truth).abs() / values.abs() <= residuals).all()
    # tol 1e-9 is below the float32 floor: raised once, and the pairs converge there
    assert data["at_floor_top"] == [True, True] and data["at_floor_bottom"] == [True]
    assert all(data["converged_top"] + data["converged_bottom"])
    assert len(data["warnings"]) == 1 and "raised" in data["warnings"][0]
    assert result.stderr.count("rounding floor") == 1 and "not converged" not in result.stderr


def test_cli_default_trace_is_hutchpp_with_150_hvps_near_the_exact_trace(run_dir: Path,
                                                                        tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "hessian", "--run", str(run_dir), "--top", "0", "--bottom", "0", "--trace",
        "--precision", "float64", "--device", "cpu", "--out", str(tmp_path / "d.h5"), "--json"])
    assert result.exit_code == 0, result.output
    trace = json.loads(result.stdout)["trace"]
    assert trace["method"] == "hutch++" and trace["n_hvp"] == 150
    H, _, _ = _run_hessian(run_dir)
    exact = float(torch.trace(H))
    assert abs(trace["estimate"] - exact) <= 4 * trace["stderr"]
    assert abs(trace["estimate"] - exact) <= 0.05 * abs(exact)
