"""Analytic test functions: convergence rates against theory, update rules by hand, noise."""

from __future__ import annotations

import json
import math

import matplotlib
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from matplotlib.figure import Figure

from landscape.cli import main
from landscape.errors import LandscapeError
from landscape.plot.style import house_style, save_figure
from landscape.plot.toy import plot_toy_losses, plot_toy_paths
from landscape.toy import (
    FUNCTIONS,
    NARROW,
    NARROW_WIDTH,
    WIDE,
    WIDE_WIDTH,
    compare_optimizers,
    load_paths,
    make_function,
    run_optimizer,
    save_paths,
)

# ------------------------------------------------------------------ rates on quadratics


def test_gradient_descent_contracts_by_kappa_rate_and_diverges_above_2_over_lmax():
    eig = [1.0, 2.0, 5.0, 10.0, 50.0]
    kappa = eig[-1] / eig[0]
    f = make_function("quadratic", eigenvalues=eig)
    start = np.ones(5)   # components on every eigenvector, both extremes included
    path = run_optimizer(f, "sgd", start=start, steps=1000, lr=2 / (eig[0] + eig[-1])).path
    err = np.linalg.norm(path, axis=1)   # the minimizer is 0
    rate = (err[1000] / err[600]) ** (1 / 400)
    per_step = err[601:] / err[600:-1]
    expected = (kappa - 1) / (kappa + 1)
    print(f"GD: measured rate {rate:.12f}, theory (kappa-1)/(kappa+1) = {expected:.12f}")
    assert abs(rate - expected) < 1e-6
    assert np.abs(per_step - expected).max() < 1e-6
    lr = 2.02 / eig[-1]   # above 2/l_max: the top component grows by |1 - lr l_max| = 1.02
    err = np.linalg.norm(run_optimizer(f, "sgd", start=start, steps=600, lr=lr).path, axis=1)
    assert err[-1] > 1e4 * err[0]
    assert abs((err[600] / err[400]) ** (1 / 200) - (lr * eig[-1] - 1)) < 1e-6


def test_heavy_ball_with_optimal_step_and_momentum_contracts_at_sqrt_kappa_rate():
    l1, ln = 1.0, 25.0
    f = make_function("quadratic", eigenvalues=[l1, 4.0, ln])
    lr = (2 / (math.sqrt(l1) + math.sqrt(ln))) ** 2
    mu = ((math.sqrt(ln) - math.sqrt(l1)) / (math.sqrt(ln) + math.sqrt(l1))) ** 2
    # torch's SGD momentum (v = mu v + g; w -= lr v) is heavy ball with the same lr and mu
    path = run_optimizer(f, "momentum", start=[1.0, 1.0, 1.0], steps=800, lr=lr,
                         momentum=mu).path
    err = np.linalg.norm(path, axis=1)
    k, big_k = 400, 800
    raw = (err[big_k] / err[k]) ** (1 / (big_k - k))
    # at the optimal parameters both extreme modes are double roots of the iteration, so
    # err_k ~ C k r^k; dividing out k leaves the rate itself
    corrected = ((err[big_k] / big_k) / (err[k] / k)) ** (1 / (big_k - k))
    kappa = ln / l1
    expected = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    print(f"heavy ball: rate over steps 400-800 {raw:.8f} (k-corrected {corrected:.8f}), "
          f"theory {expected:.8f}; GD's {(kappa - 1) / (kappa + 1):.4f}")
    assert abs(corrected - expected) < 1e-5
    assert abs(raw - expected) < 2e-3
    assert raw < (kappa - 1) / (kappa + 1) - 0.2


# ------------------------------------------------------------------ update rules by hand


def _rosenbrock_grad(w: np.ndarray) -> np.ndarray:
    x, y = w
    return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


def _by_hand(update, steps: int = 6, start=(-1.2, 1.0)) -> np.ndarray:
    w = np.array(start, dtype=float)
    state: dict = {}
    out = [w.copy()]
    for t in range(1, steps + 1):
        w = update(w, _rosenbrock_grad(w), t, state)
        out.append(w.copy())
    return np.array(out)


def _torch_path(name: str, steps: int = 6, **options) -> np.ndarray:
    return run_optimizer("rosenbrock", name, steps=steps, **options).path


def test_adam_first_steps_match_its_update_rule_with_bias_correction():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8

    def adam(w, g, t, s):
        s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
        m_hat, v_hat = s["m"] / (1 - b1**t), s["v"] / (1 - b2**t)
        return w - lr * m_hat / (np.sqrt(v_hat) + eps)

    expected = _by_hand(adam)
    np.testing.assert_allclose(_torch_path("adam", lr=lr), expected, rtol=0, atol=1e-12)
    # with bias correction the first step is lr * sign(g) per coordinate
    np.testing.assert_allclose(np.abs(expected[1] - expected[0]), lr, rtol=1e-6)


def test_adagrad_first_steps_match_its_update_rule():
    lr, eps = 0.05, 1e-10

    def adagrad(w, g, t, s):
        s["sum"] = s.get("sum", 0) + g * g
        return w - lr * g / (np.sqrt(s["sum"]) + eps)

    np.testing.assert_allclose(_torch_path("adagrad", lr=lr), _by_hand(adagrad), rtol=0,
                               atol=1e-12)


def test_rmsprop_first_steps_match_its_update_rule():
    lr, alpha, eps = 0.001, 0.99, 1e-8

    def rmsprop(w, g, t, s):
        s["sq"] = alpha * s.get("sq", 0) + (1 - alpha) * g * g
        return w - lr * g / (np.sqrt(s["sq"]) + eps)

    np.testing.assert_allclose(_torch_path("rmsprop", lr=lr), _by_hand(rmsprop), rtol=0,
                               atol=1e-12)


def test_adadelta_first_steps_match_zeilers_update_rule():
    lr, rho, eps = 1.0, 0.9, 1e-6

    def adadelta(w, g, t, s):
        s["g2"] = rho * s.get("g2", 0) + (1 - rho) * g * g
        delta = np.sqrt(s.get("d2", 0) + eps) / np.sqrt(s["g2"] + eps) * g
        s["d2"] = rho * s.get("d2", 0) + (1 - rho) * delta * delta
        return w - lr * delta

    expected = _by_hand(adadelta)
    np.testing.assert_allclose(_torch_path("adadelta", lr=lr), expected, rtol=0, atol=1e-12)
    assert np.abs(expected[-1] - expected[0]).max() > 1e-3   # it moved


# ------------------------------------------------------------------ noise and minima


def test_noisy_sgd_leaves_the_narrow_minimum_while_gradient_descent_stays():
    f = make_function("wide-narrow")
    start = np.tile(np.asarray(NARROW) + 0.05, (100, 1))   # 100 runs, one batched tensor
    lr, noise, steps = 0.04, 4.0, 150   # lr * curvature = 0.04 * 44.4 = 1.78 < 2: GD-stable

    def fraction_left(path: np.ndarray, center, width) -> float:
        return float((np.linalg.norm(path[-1] - center, axis=-1) > 3 * width).mean())

    noisy = run_optimizer(f, "sgd", start=start, steps=steps, lr=lr, noise=noise, seed=0)
    quiet = run_optimizer(f, "sgd", start=start, steps=steps, lr=lr)
    sgd = fraction_left(noisy.path, NARROW, NARROW_WIDTH)
    gd = fraction_left(quiet.path, NARROW, NARROW_WIDTH)
    # the same noise from the wide minimum (equal depth): most runs stay there
    wide_start = np.tile(np.asarray(WIDE), (100, 1))
    wide = fraction_left(run_optimizer(f, "sgd", start=wide_start, steps=steps, lr=lr,
                                       noise=noise, seed=0).path, WIDE, WIDE_WIDTH)
    print(f"left the narrow minimum: noisy SGD {sgd:.2f}, gradient descent {gd:.2f}; "
          f"noisy SGD left the wide one: {wide:.2f}")
    assert sgd >= 0.8
    assert gd == 0.0
    assert np.abs(quiet.path[-1] - NARROW).max() < 1e-6   # GD converged back to it
    assert wide <= 0.6


def test_functions_have_documented_minima_and_autograd_matches_finite_differences():
    for name in FUNCTIONS:
        f = make_function(name)
        minima = torch.tensor(f.minima, dtype=torch.float64)
        np.testing.assert_allclose(f(minima).numpy(), f.f_min, atol=1e-9)
        assert f.grad(minima).abs().max() < 1e-4, name   # Himmelblau's are given to 1e-6
        w = torch.tensor(f.start, dtype=torch.float64) + 0.1
        h = 1e-6
        fd = torch.stack([(f(w + h * e) - f(w - h * e)) / (2 * h)
                          for e in torch.eye(f.dim, dtype=torch.float64)])
        torch.testing.assert_close(f.grad(w), fd, rtol=1e-6, atol=1e-6)
        assert float(f(torch.tensor(f.start))) > f.f_min


def test_wide_and_narrow_minima_have_equal_depth_and_the_stated_curvatures():
    f = make_function("wide-narrow")
    depth = f(torch.tensor([WIDE, NARROW], dtype=torch.float64))
    assert abs(float(depth[0] - depth[1])) < 1e-9
    for center, width in ((WIDE, WIDE_WIDTH), (NARROW, NARROW_WIDTH)):
        hess = torch.autograd.functional.hessian(f, torch.tensor(center, dtype=torch.float64))
        torch.testing.assert_close(hess, torch.eye(2, dtype=torch.float64) / width**2,
                                   rtol=1e-6, atol=1e-6)


def test_variance_reduced_methods_remove_the_toy_gradient_noise():
    f = make_function("quadratic", kappa=10)
    gaps = {name: run_optimizer(f, name, steps=400, lr=0.5, noise=0.5, seed=3).losses[-1]
            for name in ("sgd", "sag", "svrg")}
    assert gaps["sag"] < 1e-10 and gaps["svrg"] < 1e-10
    assert gaps["sgd"] > 1e-3


def test_run_optimizer_rejects_bad_input():
    with pytest.raises(LandscapeError, match="did you mean 'rosenbrock'"):
        make_function("rosenbrok")
    with pytest.raises(LandscapeError, match="elementwise"):
        run_optimizer("quadratic", "sam", start=np.zeros((3, 2)), steps=1)
    with pytest.raises(LandscapeError, match="learning rate must be positive"):
        run_optimizer("quadratic", "adam", steps=1, lr=0)
    with pytest.raises(LandscapeError, match="shape"):
        run_optimizer("beale", "sgd", start=[1.0, 2.0, 3.0], steps=1)


# ------------------------------------------------------------------ figures, files, CLI


def test_plot_toy_paths_draws_one_labelled_line_per_optimizer_with_finite_data():
    f = make_function("quadratic", kappa=20)
    paths = compare_optimizers(f, ["sgd", "momentum", "adam"], steps=40)
    fig = plot_toy_paths(f, paths)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert ax.get_xlabel() and ax.get_ylabel()
    lines = [line for line in ax.lines if line.get_label() in paths]
    assert sorted(line.get_label() for line in lines) == sorted(paths)
    assert len({line.get_color() for line in lines}) == 3
    for line in lines:
        assert np.isfinite(line.get_xydata()).all() and len(line.get_xydata()) == 41
    assert {t.get_text() for t in fig.legends[0].get_texts()} >= set(paths)
    fig2 = plot_toy_losses(f, paths)
    assert len(fig2.axes[0].lines) == 3 and fig2.axes[0].get_yscale() == "log"


def test_save_figure_embeds_truetype_fonts_and_refuses_unknown_suffixes(tmp_path):
    f = make_function("himmelblau")
    fig = plot_toy_paths(f, compare_optimizers(f, ["sgd"], steps=5))
    before = dict(matplotlib.rcParams)
    pdf = save_figure(fig, tmp_path / "a.pdf").read_bytes()
    assert b"/FontFile2" in pdf and b"/FontFile3" not in pdf   # TrueType, not Type 3
    png = save_figure(fig, tmp_path / "sub" / "a.png")
    from PIL import Image

    with Image.open(png) as image:
        assert image.size[0] == round(3.4 * 300)
    with pytest.raises(LandscapeError, match=r"\.jpg"):
        save_figure(fig, tmp_path / "a.jpg")
    with house_style():
        assert matplotlib.rcParams["pdf.fonttype"] == 42
    assert dict(matplotlib.rcParams) == before   # no global state changed


def test_toy_paths_round_trip_through_hdf5(tmp_path):
    f = make_function("rosenbrock")
    paths = compare_optimizers(f, ["adam", "lbfgs"], steps=20)
    save_paths(paths, tmp_path / "p.h5", f)
    g, loaded = load_paths(tmp_path / "p.h5")
    assert g.spec == f.spec and list(loaded) == ["adam", "lbfgs"]
    for label, p in paths.items():
        np.testing.assert_array_equal(loaded[label].path, p.path)
        np.testing.assert_array_equal(loaded[label].losses, p.losses)
        assert loaded[label].steps_to_tol == p.steps_to_tol
    with pytest.raises(LandscapeError, match="other settings"):
        save_paths(compare_optimizers(f, ["adam"], steps=5), tmp_path / "p.h5", f)


def test_cli_toy_writes_paths_and_figures_and_prints_json(tmp_path):
    out = tmp_path / "toy"
    result = CliRunner().invoke(main, [
        "toy", "--function", "quadratic", "--kappa", "50", "--optimizer", "sgd,momentum,adam",
        "--steps", "60", "--out", str(out), "--format", "png", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert list(summary["optimizers"]) == ["sgd", "momentum", "adam"]
    for s in summary["optimizers"].values():
        assert {"final_point", "final_loss", "steps_to_tol", "lr"} <= set(s)
        assert len(s["final_point"]) == 2 and s["final_loss"] < 1.0
    assert {p.name for p in out.iterdir()} == {"paths.h5", "paths.png", "losses.png"}
    _, loaded = load_paths(out / "paths.h5")
    np.testing.assert_allclose(loaded["adam"].path[-1], summary["optimizers"]["adam"]
                               ["final_point"])
    bad = CliRunner().invoke(main, ["toy", "--optimizer", "sgd,adamm", "--out", str(out)])
    assert bad.exit_code == 1 and "did you mean 'adam'" in bad.output


def test_cli_plot_draws_a_toy_result_paths_for_2d_losses_otherwise(tmp_path, monkeypatch):
    """``landscape plot DIR/paths.h5``: the stored paths over the contours of a 2D function,
    the suboptimality curves with --kind toy-losses and by default for a 3-D function."""
    import landscape.plot.style as style

    runner = CliRunner()
    for name, dim in (("flat", "2"), ("deep", "3")):
        result = runner.invoke(main, ["toy", "--function", "quadratic", "--dim", dim,
                                      "--optimizer", "sgd,adam", "--steps", "15", "--out",
                                      str(tmp_path / name), "--format", "png"])
        assert result.exit_code == 0, result.output
    png = tmp_path / "x.png"
    result = runner.invoke(main, ["plot", str(tmp_path / "flat" / "paths.h5"), "--out", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    drawn: list = []
    monkeypatch.setattr(style, "save_figure", lambda fig, out: drawn.append(fig) or out)
    f, stored = load_paths(tmp_path / "flat" / "paths.h5")
    for args in ([], ["--kind", "toy-losses"]):
        result = runner.invoke(main, ["plot", str(tmp_path / "flat" / "paths.h5"), *args,
                                      "--out", str(png)])
        assert result.exit_code == 0, result.output
    paths_ax, losses_ax = drawn[0].axes[0], drawn[1].axes[0]
    lines = {ln.get_label(): ln for ln in paths_ax.get_lines()}
    for label, p in stored.items():
        np.testing.assert_allclose(np.c_[lines[label].get_xdata(), lines[label].get_ydata()],
                                   p.path)
    assert losses_ax.get_yscale() == "log"
    lines = {ln.get_label(): ln for ln in losses_ax.get_lines()}
    for label, p in stored.items():
        gap = p.losses - f.f_min
        ok = gap > 0
        np.testing.assert_allclose(np.asarray(lines[label].get_ydata())[ok], gap[ok])
    result = runner.invoke(main, ["plot", str(tmp_path / "deep" / "paths.h5"), "--out", str(png)])
    assert result.exit_code == 0, result.output
    assert drawn[2].axes[0].get_ylabel() == r"$f(w_k) - f^\star$"
    result = runner.invoke(main, ["plot", str(tmp_path / "deep" / "paths.h5"), "--kind",
                                  "toy-paths", "--out", str(png)])
    assert result.exit_code == 1 and "2D functions" in result.output
