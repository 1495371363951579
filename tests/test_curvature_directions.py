"""Surfaces along Hessian eigenvectors and grids whose extent is a stated loss rise.

References: the exact Hessian of a tiny float64 model (``torch.func.hessian`` of a loss written
here, ``eigvalsh``), the second difference of the stored curve (with its truncation error
falling as h^2), and the closed form ``T = sqrt(2 rise / d^T H d)`` of a least-squares fit.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _helpers import flat_loss, invoke
from torch import nn

from landscape import train
from landscape.errors import LandscapeError
from landscape.objective import Objective
from landscape.surface import load_surface, random_surface
from landscape.surface.curvature import extent_for_rise, hessian_directions


def _tanh_net() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 3, generator=g).double(), torch.randint(0, 3, (30,), generator=g)
    return model, (x, y)


def _exact_eigenvalues(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
    loss = flat_loss(model, *data)
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return torch.linalg.eigvalsh(torch.func.hessian(loss)(theta)).numpy()[::-1]


def _second_differences(values: np.ndarray, x: np.ndarray) -> list[float]:
    """``(f(h) - 2 f(0) + f(-h)) / h^2`` of a curve symmetric about its centre, for the grid's
    k-th point from the centre (k = 1, 2, ...)."""
    c = len(x) // 2
    return [float((values[c + k] - 2 * values[c] + values[c - k]) / x[c + k] ** 2)
            for k in range(1, c + 1)]


def test_second_difference_along_top_eigenvector_is_the_exact_top_eigenvalue(
        tmp_path: Path) -> None:
    model, data = _tanh_net()
    exact = _exact_eigenvalues(model, data)
    s = random_surface(model, data=data, x="-0.02:0.02:5", directions="hessian",
                       precision="float64", out=tmp_path / "h.h5", show_progress=False)
    with h5py.File(s.path) as f:
        attrs = dict(f["directions/x"].attrs)
        d = f["directions/x"][()]
    assert attrs["kind"] == "hessian" and attrs["index"] == 0
    assert "L2 length 1" in attrs["unit"]
    np.testing.assert_allclose(np.linalg.norm(d.astype(np.float64)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(attrs["eigenvalue"]), exact[0], rtol=1e-6)
    d2 = _second_differences(s.values["train_loss"], s.x)
    err = [abs(v - exact[0]) for v in d2]  # at h = 0.01 and h = 0.02
    assert err[0] < 1e-4 * exact[0]
    # the error is the grid's truncation error: it falls as h^2 (4x from h = 0.02 to 0.01)
    assert 3.0 < err[1] / err[0] < 5.0


def test_top_eigenvector_curve_is_the_steepest_stored_direction(tmp_path: Path) -> None:
    model, data = _tanh_net()
    exact = _exact_eigenvalues(model, data)
    grid = "-0.01:0.01:3"
    both = random_surface(model, data=data, x=grid, y=grid, directions="hessian",
                          precision="float64", out=tmp_path / "hh.h5", show_progress=False)
    mixed = random_surface(model, data=data, x=grid, y=grid, directions="hessian,random",
                           precision="float64", out=tmp_path / "hr.h5", show_progress=False)
    curvatures = []
    for s in (both, mixed):
        z = s.values["train_loss"]
        with h5py.File(s.path) as f:
            norms = [float(f[f"directions/{a}"].attrs["norm_l2"]) for a in "xy"]
        # curvature per unit L2 step along each stored axis: the second difference / |d|^2
        curvatures.append([(z[1, 2] - 2 * z[1, 1] + z[1, 0]) / 1e-4 / norms[0] ** 2,
                           (z[2, 1] - 2 * z[1, 1] + z[0, 1]) / 1e-4 / norms[1] ** 2])
    np.testing.assert_allclose(curvatures[0], exact[:2], rtol=1e-3)  # lambda_1, lambda_2
    assert mixed.attrs["directions"] == ["hessian", "random"]
    top = curvatures[0][0]
    assert top == max(top, *curvatures[0][1:], *curvatures[1][1:])
    assert curvatures[1][1] < exact[0] * (1 - 1e-3)  # the random one is strictly less steep


def test_eigenvector_directions_are_unit_and_sign_fixed() -> None:
    model, data = _tanh_net()
    dirs, attrs = hessian_directions(Objective(model, data, precision="float64"), 2, tol=1e-10)
    gram = torch.stack(dirs) @ torch.stack(dirs).T
    np.testing.assert_allclose(gram.numpy(), np.eye(2), atol=1e-8)
    assert [a["index"] for a in attrs] == [0, 1]
    assert all(float(d[d.abs().argmax()]) > 0 for d in dirs)


def _least_squares() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor], np.ndarray]:
    """A linear model at its least-squares minimum and the Hessian of its MSE loss."""
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(40, 3, generator=g).double(), torch.randn(40, 2, generator=g).double()
    model = nn.Linear(3, 2).double()
    xa = torch.cat([x, torch.ones(40, 1, dtype=x.dtype)], 1)
    sol = torch.linalg.lstsq(xa, y).solution  # [4, 2]
    with torch.no_grad():
        model.weight.copy_(sol[:3].T)
        model.bias.copy_(sol[3])
    # mean over samples and outputs of (pred - y)^2: H = 2/(N*2) * kron(I_2, xa^T xa), in the
    # parameter order weight (row-major, [2, 3]) then bias [2]
    gram = (xa.T @ xa).numpy() / 40.0
    hessian = np.zeros((8, 8))
    for o in range(2):
        idx = [o * 3, o * 3 + 1, o * 3 + 2, 6 + o]
        hessian[np.ix_(idx, idx)] = gram
    return model, (x, y), hessian


def test_extent_for_rise_matches_the_quadratic_closed_form() -> None:
    model, data, hessian = _least_squares()
    obj = Objective(model, data, loss="mse", precision="float64")
    d = torch.randn(8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for rise in (0.1, 1.0, 30.0):
        expected = np.sqrt(2 * rise / (d.numpy() @ hessian @ d.numpy()))
        t = extent_for_rise(obj, d, rise, rtol=1e-6)
        np.testing.assert_allclose(t, expected, rtol=1.1e-6)
        assert t >= expected * (1 - 1e-12)  # the bracket's upper end: the rise is reached


def test_rise_sets_each_axis_and_is_recorded(tmp_path: Path) -> None:
    model, data, hessian = _least_squares()
    s = random_surface(model, data=data, loss="mse", x="-1:1:5", y="-1:1:3", rise=0.5,
                       directions="hessian,random", norm="none", precision="float64",
                       out=tmp_path / "r.h5", show_progress=False)
    lam = np.linalg.eigvalsh(hessian)[-1]
    with h5py.File(s.path) as f:
        dy = f["directions/y"][()].astype(np.float64)
        t_x, t_y = (float(f[f"directions/{a}"].attrs["extent"]) for a in "xy")
    np.testing.assert_allclose(t_x, np.sqrt(2 * 0.5 / lam), rtol=1e-3)
    np.testing.assert_allclose(t_y, np.sqrt(2 * 0.5 / (dy @ hessian @ dy)), rtol=2e-3)
    np.testing.assert_allclose(s.x, np.linspace(-t_x, t_x, 5))
    np.testing.assert_allclose(s.y, np.linspace(-t_y, t_y, 3))
    assert s.attrs["rise"] == 0.5 and s.attrs["rise_metric"] == "train_loss"
    # at the ends of each axis the loss has risen by the stated amount (quadratic: exactly)
    z, c = s.values["train_loss"], s.attrs["center_train_loss"]
    np.testing.assert_allclose([z[1, 0] - c, z[0, 2] - c], [0.5, 0.5], rtol=3e-3)


def test_rise_that_is_never_reached_is_one_error() -> None:
    model, data, _ = _least_squares()
    obj = Objective(model, data, loss="mse", precision="float64")
    flat = torch.zeros(8, dtype=torch.float64)  # moving along nothing: the loss never rises
    with pytest.raises(LandscapeError, match="does not cross a rise"):
        extent_for_rise(obj, flat, 1.0, max_doublings=8)


def test_cli_reads_eigenvectors_of_the_same_run_and_refuses_another(tmp_path: Path) -> None:
    runs = []
    for seed in (0, 1):  # logistic regression: smooth, so the second difference is clean
        runs.append(tmp_path / f"run{seed}")
        train(model="mlp", model_options={"widths": []}, dataset="spirals", train_size=40,
              epochs=1, batch_size=20, seed=seed, out=runs[-1], progress=False)
    hfile = tmp_path / "h.h5"
    r = invoke("hessian", "--run", str(runs[0]), "--top", "1", "--bottom", "0", "--precision",
               "float64", "--tol", "1e-10", "--out", str(hfile))
    assert r.exit_code == 0, r.output
    out = tmp_path / "s.h5"
    r = invoke("surface", "--run", str(runs[0]), "--directions", "hessian", "--hessian",
               str(hfile), "--x", "-0.01:0.01:3", "--precision", "float64", "--out", str(out),
               "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["train_loss"]["center"] is not None
    with h5py.File(hfile) as f:
        lam = float(f["eigenvalues_top"][0])
    s = load_surface(out)
    with h5py.File(out) as f:
        assert f["directions/x"].attrs["source"] == str(hfile)
    z = s.values["train_loss"]
    np.testing.assert_allclose((z[2] - 2 * z[1] + z[0]) / 1e-4, lam, rtol=1e-3)
    r = invoke("surface", "--run", str(runs[1]), "--directions", "hessian", "--hessian",
               str(hfile), "--x", "-1:1:3", "--out", str(tmp_path / "other.h5"))
    assert r.exit_code == 1 and "not the same run" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_curves_on_a_distance_axis_scale_each_by_its_direction_length(tmp_path: Path) -> None:
    from landscape.plot import plot_curve

    model, data = _tanh_net()
    files = {}
    for kind in ("hessian", "random"):
        files[kind] = random_surface(model, data=data, x="-1:1:5", directions=kind,
                                     precision="float64", out=tmp_path / f"{kind}.h5",
                                     show_progress=False).path
    fig = plot_curve(files, distance=True, accuracy=False)
    lines = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata())]
    assert len(lines) == 2
    for line, path in zip(lines, files.values()):
        with h5py.File(path) as f:
            length = np.linalg.norm(f["directions/x"][()].astype(np.float64))
            x = f["x"][()]
        np.testing.assert_allclose(line.get_xdata(), x * length, rtol=1e-6)
    assert "distance" in fig.axes[0].get_xlabel()
