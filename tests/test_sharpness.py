"""Sharpness and flatness measures against closed forms, brute force and invariances.

The quadratic ``f(w) = 1/2 (w - w*)^T A (w - w*) + f_min`` is realised through the real
Objective: a bias-free linear model with the MSE loss on data built so that
``(2/n) X^T X = A`` and the targets' residual is orthogonal to X's columns.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from landscape.analysis.measures import MeasureSettings, compute_measures, names_of
from landscape.analysis.sharpness import (
    adaptive_sharpness,
    epsilon_sharpness,
    fisher_rao_norm,
    pac_bayes_flatness,
    sam_sharpness,
    subspace_basis,
)
from landscape.errors import LandscapeError
from landscape.objective import Objective


def quadratic_objective(a: np.ndarray, w_star: np.ndarray, n_extra: int = 3, seed: int = 0,
                        at: np.ndarray | None = None) -> tuple[Objective, float]:
    """Objective whose loss is exactly 1/2 (w - w*)^T A (w - w*) + f_min; returns f_min too."""
    d = a.shape[0]
    n = d + n_extra
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    evals, vecs = np.linalg.eigh(a)
    root = (vecs * np.sqrt(evals)) @ vecs.T
    x = q[:, :d] @ (math.sqrt(n / 2) * root)
    residual = q[:, d:] @ rng.standard_normal(n_extra)
    y = x @ w_star + residual
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor(w_star if at is None else at)[None])
    obj = Objective(model, (torch.tensor(x), torch.tensor(y)[:, None]), loss="mse",
                    precision="float64", device="cpu")
    return obj, float(residual @ residual / n)


def random_spd(d: int, seed: int) -> np.ndarray:
    m = np.random.default_rng(seed).standard_normal((d, d))
    return m @ m.T + 0.5 * np.eye(d)


def vertex_max(a: np.ndarray, bound: np.ndarray) -> float:
    """max of 1/2 z^T A z over the box |z_i| <= bound_i, by enumerating its vertices."""
    return max(0.5 * (np.array(s) * bound) @ a @ (np.array(s) * bound)
               for s in itertools.product([-1.0, 1.0], repeat=len(bound)))


W_STAR = np.array([0.7, -1.3, 0.2, 2.1])


def test_quadratic_objective_is_the_quadratic() -> None:
    a = random_spd(4, 0)
    obj, f_min = quadratic_objective(a, W_STAR)
    w = W_STAR + np.array([0.1, -0.2, 0.3, 0.05])
    expected = 0.5 * (w - W_STAR) @ a @ (w - W_STAR) + f_min
    assert obj.loss(torch.tensor(w)) == pytest.approx(expected, rel=1e-12)
    assert f_min > 0.1


def test_epsilon_sharpness_diagonal_quadratic_matches_closed_form() -> None:
    a = np.array([1.0, 2.0, 3.0, 5.0])
    obj, f_min = quadratic_objective(np.diag(a), W_STAR)
    eps = 1e-2
    res = epsilon_sharpness(obj, eps=eps)
    expected = 50 * eps**2 * np.sum(a * (np.abs(W_STAR) + 1) ** 2) / (1 + f_min)
    assert res.value == pytest.approx(expected, rel=1e-9)
    assert res.stderr is None and res.cost["grad"] == res.extra["evaluations"]


def test_epsilon_sharpness_nondiagonal_quadratic_reaches_the_best_box_vertex() -> None:
    a = random_spd(4, 1)
    obj, f_min = quadratic_objective(a, W_STAR)
    eps = 1e-2
    best = 100 * vertex_max(a, eps * (np.abs(W_STAR) + 1)) / (1 + f_min)
    one = epsilon_sharpness(obj, eps=eps)
    assert one.value <= best * (1 + 1e-9)  # a maximum over the box never exceeds the true one
    several = epsilon_sharpness(obj, eps=eps, patience=4, seed=1)
    assert several.value == pytest.approx(best, rel=1e-9)


def test_epsilon_sharpness_random_subspace_matches_brute_force_in_the_subspace() -> None:
    a = random_spd(4, 2)
    obj, f_min = quadratic_objective(a, W_STAR)
    eps, p = 1e-2, 2
    basis = subspace_basis(4, p, seed=3).numpy()
    coords = np.linalg.pinv(basis) @ W_STAR
    bound = eps * (np.abs(coords) + 1)
    best = 100 * vertex_max(basis.T @ a @ basis, bound) / (1 + f_min)
    res = epsilon_sharpness(obj, eps=eps, subspace_dim=p, seed=3, patience=3,
                            return_maximizer=True)
    assert res.value == pytest.approx(best, rel=1e-8)
    y = res.extra["maximizer"].numpy()
    assert y.shape == (p,) and np.all(np.abs(y) <= bound * (1 + 1e-12))  # pinv vs lstsq
    z = basis @ y
    assert 0.5 * z @ a @ z + f_min == pytest.approx(res.extra["max_loss"], rel=1e-12)


def test_epsilon_sharpness_is_exact_on_a_separable_quadratic_away_from_its_minimum() -> None:
    a = np.array([0.5, 2.0, 3.0, 7.0])
    theta = W_STAR + np.array([0.004, -0.03, 0.0005, -0.002])  # inside and outside the box
    obj, f_min = quadratic_objective(np.diag(a), W_STAR, at=theta)
    eps = 1e-2
    bound = eps * (np.abs(theta) + 1)
    d = theta - W_STAR
    f_theta = 0.5 * np.sum(a * d**2) + f_min
    # per coordinate, 1/2 a_i (d_i + z_i)^2 over |z_i| <= b_i peaks at z_i = b_i sign(d_i)
    f_max = 0.5 * np.sum(a * (np.abs(d) + bound) ** 2) + f_min
    res = epsilon_sharpness(obj, eps=eps, return_maximizer=True)
    assert res.extra["loss"] == pytest.approx(f_theta, rel=1e-12)
    assert res.value == pytest.approx(100 * (f_max - f_theta) / (1 + f_theta), rel=1e-12)
    np.testing.assert_allclose(res.extra["maximizer"].numpy(), bound * np.sign(d), rtol=1e-12)
    assert res.extra["start"] == 0 and res.extra["solver"] == "ascent"


@pytest.fixture(scope="module")
def low_loss_mlp(tmp_path_factory) -> Objective:
    """A digits MLP trained to a train loss of about 1e-3 (300 samples, float64 Objective):
    the regime where 10 L-BFGS-B iterations from a random start stop short."""
    from landscape.training import train

    run = train(model_options={"widths": [32]}, train_size=300, optimizer="sgd", lr=0.3,
                batch_size=16, epochs=80, out=tmp_path_factory.mktemp("low_loss") / "run",
                progress=False, device="cpu",
                save_every=1000)
    return Objective.from_run(run, "train", device="cpu", precision="float64")


def _sign_ascent(obj: Objective, bound: torch.Tensor, step: float, steps: int) -> float:
    """Largest loss over ``steps`` fixed-size projected sign-gradient steps from theta."""
    theta = obj.theta0
    z = torch.zeros_like(theta)
    best = obj.loss(theta)
    for _ in range(steps):
        z = (z + step * bound * obj.grad(theta + z).sign()).clamp(-bound, bound)
        best = max(best, obj.loss(theta + z))
    return best


def _keskar_lbfgsb(obj: Objective, bound: np.ndarray, seed: int) -> float:
    """Keskar et al.'s own procedure: 10 L-BFGS-B iterations from a random point of the box."""
    from scipy.optimize import minimize

    theta = obj.theta0
    seen = [obj.loss(theta)]

    def negative(z: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grad = obj.loss_and_grad(theta + torch.as_tensor(z))
        seen.append(loss)
        return -loss, -grad.numpy()

    start = np.random.default_rng(seed).uniform(-bound, bound)
    minimize(negative, start, jac=True, method="L-BFGS-B", bounds=list(zip(-bound, bound)),
             options={"maxiter": 10})
    return max(seen)


def test_epsilon_sharpness_is_never_below_the_sign_vertex_or_projected_ascent_on_an_mlp(
        low_loss_mlp: Objective) -> None:
    obj, eps = low_loss_mlp, 1e-3
    theta = obj.theta0
    f0 = obj.loss(theta)
    bound = eps * (theta.abs() + 1)

    def percent(loss: float) -> float:
        return 100 * (loss - f0) / (1 + f0)

    res = epsilon_sharpness(obj, eps=eps, return_maximizer=True)
    vertex = percent(obj.loss(theta + bound * obj.grad(theta).sign()))
    assert vertex > 0 and res.value >= vertex
    for step in (1.0, 0.25):
        assert res.value >= percent(_sign_ascent(obj, bound, step, 10)), step
    assert res.value >= percent(_keskar_lbfgsb(obj, bound.numpy(), seed=0))
    z = res.extra["maximizer"]
    assert torch.all(z.abs() <= bound)  # feasible, and the reported loss is attained there
    assert obj.loss(theta + z) == pytest.approx(res.extra["max_loss"], rel=1e-12)
    assert res.value == pytest.approx(max(res.extra["start_values"]), rel=1e-12)
    assert res.cost["grad"] == res.extra["evaluations"]


def test_adaptive_sharpness_with_m_128_is_the_mean_over_the_same_batches_of_a_brute_force_loop(
        low_loss_mlp: Objective) -> None:
    obj, seed = low_loss_mlp, 5
    worst = adaptive_sharpness(obj, seed=seed)
    average = adaptive_sharpness(obj, kind="average", seed=seed)
    perm = torch.randperm(obj.n, generator=torch.Generator().manual_seed(seed))
    n_batches = obj.n // 128
    model = obj.model
    per_worst, per_average = [], []
    for k in range(n_batches):
        idx = perm[k * 128:(k + 1) * 128]
        batch = Objective(model, (obj.x[idx], obj.y[idx]), precision="float64", device="cpu")
        one = adaptive_sharpness(batch, batch_size=None)
        assert one.extra["batches"] == 1
        # the worst case starts at the ASAM point of its batch, so it is never below it
        assert one.value >= sam_sharpness(batch, rho=0.1, adaptive=True).value
        per_worst.append(one.value)
        per_average.append(adaptive_sharpness(batch, kind="average", batch_size=None,
                                              seed=seed + k).value)
    assert n_batches == 2 and worst.settings["batch_size"] == 128
    assert worst.extra["batches"] == average.extra["batches"] == n_batches
    np.testing.assert_allclose(worst.extra["batch_values"], per_worst, rtol=1e-9)
    assert worst.value == pytest.approx(np.mean(per_worst), rel=1e-9)
    assert average.value == pytest.approx(np.mean(per_average), rel=1e-9)
    # one batch of the whole split is another (smaller) number: the batch size matters
    whole = adaptive_sharpness(obj, seed=seed, batch_size=None)
    assert whole.extra["batches"] == 1 and whole.value < worst.value


@pytest.mark.parametrize("adaptive", [False, True])
def test_worst_case_l2_sharpness_is_half_rho_squared_lambda_max(adaptive: bool) -> None:
    a = random_spd(4, 4)
    obj, _ = quadratic_objective(a, W_STAR)
    rho = 0.1
    d = np.diag(np.abs(W_STAR)) if adaptive else np.eye(4)
    expected = 0.5 * rho**2 * np.linalg.eigvalsh(d @ a @ d).max()
    res = adaptive_sharpness(obj, rho=rho, norm="l2", adaptive=adaptive, kind="worst")
    assert res.value == pytest.approx(expected, rel=1e-4)
    assert res.cost["grad"] == 20
    # one batch holding every sample (in another order) is the same problem
    batched = adaptive_sharpness(obj, rho=rho, adaptive=adaptive, batch_size=obj.n)
    assert batched.value == pytest.approx(expected, rel=1e-4)
    assert batched.extra["batches"] == 1 and batched.cost["grad"] == pytest.approx(20)


def test_worst_case_linf_sharpness_is_the_best_box_vertex() -> None:
    v = np.array([1.0, -2.0, 0.5, 1.5])
    a = np.outer(v, v) + 0.1 * np.eye(4)
    obj, _ = quadratic_objective(a, W_STAR)
    rho = 0.05
    for adaptive in (False, True):
        scale = np.abs(W_STAR) if adaptive else np.ones(4)
        res = adaptive_sharpness(obj, rho=rho, norm="linf", adaptive=adaptive, kind="worst")
        assert res.value == pytest.approx(vertex_max(a, rho * scale), rel=1e-9)


@pytest.mark.parametrize("adaptive", [False, True])
def test_average_case_gaussian_sharpness_is_half_rho_squared_trace(adaptive: bool) -> None:
    a = random_spd(5, 5)
    w_star = np.array([0.5, -1.0, 2.0, 0.3, -0.8])
    obj, _ = quadratic_objective(a, w_star)
    rho = 0.2
    d = np.diag(np.abs(w_star)) if adaptive else np.eye(5)
    expected = 0.5 * rho**2 * np.trace(d @ a @ d)
    res = adaptive_sharpness(obj, rho=rho, adaptive=adaptive, kind="average", n_samples=400)
    assert res.stderr is not None and 0 < res.stderr < 0.1 * expected
    assert abs(res.value - expected) < 3 * res.stderr
    assert res.cost["forward"] == 2 * 400 + 1


def test_sam_sharpness_matches_the_quadratic_closed_form() -> None:
    a = random_spd(4, 6)
    w = W_STAR + np.array([0.3, -0.1, 0.2, 0.4])
    obj, _ = quadratic_objective(a, W_STAR, at=w)
    rho = 0.05
    g = a @ (w - W_STAR)
    unit = g / np.linalg.norm(g)
    expected = rho * np.linalg.norm(g) + 0.5 * rho**2 * unit @ a @ unit
    assert sam_sharpness(obj, rho=rho).value == pytest.approx(expected, rel=1e-10)


def test_pac_bayes_sigma_squared_is_two_d_over_trace_for_a_loss_increase() -> None:
    a = random_spd(6, 7)
    w_star = np.linspace(-1, 1, 6)
    obj, _ = quadratic_objective(a, w_star)
    target, k = 0.01, 1024
    res = pac_bayes_flatness(obj, target=target, criterion="loss", n_samples=k)
    expected = 2 * target / np.trace(a)
    # sigma^2 = 2 d / (mean z^T A z): Monte Carlo relative error sqrt(2 tr A^2) / (tr A sqrt(k))
    rel = math.sqrt(2 * np.trace(a @ a)) / np.trace(a) / math.sqrt(k)
    assert res.extra["sigma"] ** 2 == pytest.approx(expected, rel=4 * rel)
    assert res.value == pytest.approx(1 / res.extra["sigma"] ** 2)
    assert res.extra["increase"] <= target


def test_pac_bayes_error_criterion_noise_gives_the_target_error_in_closed_form() -> None:
    torch.manual_seed(0)
    x = torch.randn(60, 5, dtype=torch.float64)
    y = (x[:, 0] > 0).long()
    model = nn.Linear(5, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-2.0, 0, 0, 0, 0], [2.0, 0, 0, 0, 0]]))
        model.bias.zero_()
    obj = Objective(model, (x, y), precision="float64", device="cpu")
    small = pac_bayes_flatness(obj, target=0.05, n_samples=16)
    large = pac_bayes_flatness(obj, target=0.2, n_samples=16)
    assert large.extra["sigma"] > small.extra["sigma"]

    def expected_error(sigma: float) -> float:
        """Closed form: with N(0, sigma^2) noise on all 12 parameters the score difference
        of the two classes is (4 e_0 + n) . x + m, n ~ N(0, 2 sigma^2 I), m ~ N(0, 2 sigma^2),
        so a sample is misclassified with probability
        Phi(-4 |x_0| / (sigma sqrt(2 (|x|^2 + 1))))."""
        from scipy.stats import norm

        xs = x.numpy()
        scale = sigma * np.sqrt(2 * ((xs**2).sum(1) + 1))
        return float(norm.cdf(-4 * np.abs(xs[:, 0]) / scale).mean())

    for res, target in ((small, 0.05), (large, 0.2)):  # Monte Carlo: 16 draws x 60 samples
        assert abs(expected_error(res.extra["sigma"]) - target) < 0.03
    assert small.extra["increase"] <= 0.05 and small.extra["base_error"] == 0.0
    mag = pac_bayes_flatness(obj, target=0.05, n_samples=16, magnitude_aware=True)
    assert mag.extra["sigma"] > 0


# --------------------------------------------------------------- bias-free ReLU networks
def relu_net(seed: int = 0, widths: tuple[int, ...] = (5, 4)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    prev = 3
    for w in widths:
        layers += [nn.Linear(prev, w, bias=False), nn.ReLU()]
        prev = w
    layers.append(nn.Linear(prev, 2, bias=False))
    return nn.Sequential(*layers).double()


def relu_data(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    return x, (x[:, 0] + x[:, 1] > 0).long()


def test_fisher_rao_norm_is_layers_squared_times_output_term_on_bias_free_relu_net() -> None:
    model = relu_net()
    x, y = relu_data()
    obj = Objective(model, (x, y), precision="float64", device="cpu")
    out = model(x).detach().requires_grad_(True)
    per_sample = nn.functional.cross_entropy(out, y, reduction="none")
    (dl_df,) = torch.autograd.grad(per_sample.sum(), out)
    n_layers = 3  # L + 1 weight matrices: the output is 3-homogeneous in theta
    expected = n_layers**2 * float(((dl_df * out.detach()).sum(1) ** 2).mean())
    assert fisher_rao_norm(obj).value == pytest.approx(expected, rel=1e-10)
    assert fisher_rao_norm(obj, method="per_sample").value == pytest.approx(expected, rel=1e-10)


def _rescaled(model: nn.Sequential, alpha: float) -> nn.Sequential:
    """Dinh et al. 2017: alpha W1, W2 / alpha (same function for a bias-free ReLU net)."""
    new = relu_net(widths=(5,))
    new.load_state_dict(model.state_dict())
    with torch.no_grad():
        new[0].weight.mul_(alpha)
        new[2].weight.div_(alpha)
    return new


def test_dinh_rescaling_leaves_adaptive_measures_unchanged_but_not_keskar_or_trace() -> None:
    model = relu_net(widths=(5,))
    x, y = relu_data()
    scaled = _rescaled(model, 4.0)
    objs = [Objective(m, (x, y), precision="float64", device="cpu") for m in (model, scaled)]
    assert objs[0].loss(objs[0].theta0) == pytest.approx(objs[1].loss(objs[1].theta0), rel=1e-12)

    def both(fn, **kw):
        return [fn(o, **kw).value for o in objs]

    fr = both(fisher_rao_norm)
    assert fr[1] == pytest.approx(fr[0], rel=1e-9)
    for kw in ({"norm": "l2"}, {"norm": "linf", "rho": 0.01},
               {"kind": "average", "n_samples": 16}):
        values = both(adaptive_sharpness, **kw)
        assert values[0] > 0
        assert values[1] == pytest.approx(values[0], rel=1e-7), kw
    mag = both(pac_bayes_flatness, magnitude_aware=True, eps_offset=0.0, criterion="loss",
               n_samples=8, target=0.05)
    assert mag[1] == pytest.approx(mag[0], rel=1e-6)
    keskar = both(epsilon_sharpness, eps=1e-2)
    assert abs(keskar[1] - keskar[0]) > 0.05 * keskar[0]

    def trace(obj: Objective) -> float:
        h = torch.func.hessian(lambda t: obj.batch_loss(t, obj.x, obj.y))(obj.theta0)
        return float(torch.diagonal(h).sum())

    traces = [trace(o) for o in objs]
    assert abs(traces[1] - traces[0]) > 0.05 * traces[0]


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, 4) * 2 + 1)
    return model.eval()


def test_every_measure_leaves_the_model_bit_identical() -> None:
    from landscape.analysis.noise import gradient_noise, noise_scale_two_batch

    model = _bn_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(40, 4)
    y = torch.randint(0, 3, (40,))
    obj = Objective(model, (x, y), device="cpu")
    compute_measures(obj, [m for m in names_of("sharpness") if m != "pac_bayes_flatness"])
    pac_bayes_flatness(obj, criterion="loss", n_samples=4, target=0.5)
    adaptive_sharpness(obj, batch_size=10, n_iters=3)
    gradient_noise(obj, batch_size=8)
    noise_scale_two_batch(obj, b_small=4, b_big=8, n_pairs=3)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("call", [
    lambda o: epsilon_sharpness(o, eps=0.0),
    lambda o: epsilon_sharpness(o, eps=-1e-3),
    lambda o: adaptive_sharpness(o, rho=0.0),
    lambda o: adaptive_sharpness(o, rho=-1.0, kind="average"),
    lambda o: sam_sharpness(o, rho=0.0),
    lambda o: adaptive_sharpness(o, batch_size=2, n_batches=4),  # 7 samples: 3 batches
    lambda o: adaptive_sharpness(o, init="ones"),
    lambda o: epsilon_sharpness(o, ascent_steps=-1),
    lambda o: adaptive_sharpness(o, norm="l3"),
    lambda o: adaptive_sharpness(o, kind="best"),
    lambda o: pac_bayes_flatness(o, target=0.0),
    lambda o: pac_bayes_flatness(o, criterion="error"),  # regression: no error rate
    lambda o: compute_measures(o, "epsilon,sam_sharpness"),
    lambda o: compute_measures(o, "sam_sharpness", settings=MeasureSettings(rho_sam=0.0)),
])
def test_bad_settings_raise_a_one_line_error(call) -> None:
    obj, _ = quadratic_objective(np.eye(4), W_STAR)
    with pytest.raises(LandscapeError) as err:
        call(obj)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from landscape.training import train

    out = tmp_path_factory.mktemp("run") / "digits"
    train(model_options={"widths": [16]}, train_size=150, epochs=10, out=out, progress=False,
          device="cpu", save_every=100)
    return out


def test_cli_sharpness_json_has_every_measure_and_keeps_a_result_file(tiny_run, tmp_path):
    from landscape import formats, store
    from landscape.cli import main

    out = tmp_path / "sharp.h5"
    result = CliRunner().invoke(main, ["sharpness", "--run", str(tiny_run), "--subset", "100",
                                       "--json", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data) == names_of("sharpness")
    assert all(math.isfinite(v["value"]) for v in data.values())
    assert "stderr" in data["adaptive_average_l2"] and "stderr" not in data["sam_sharpness"]
    with formats.open_result(out, kind="sharpness") as f:
        assert float(f["fisher_rao_norm"][()]) == pytest.approx(data["fisher_rao_norm"]["value"])
        assert store.read_settings(f)["subset"] == 100
    table = CliRunner().invoke(main, ["sharpness", "--run", str(tiny_run), "--subset", "50",
                                      "--measures", "sam_sharpness,fisher_rao_norm"])
    assert table.exit_code == 0 and "fisher_rao_norm" in table.stdout
    bad = CliRunner().invoke(main, ["sharpness", "--run", str(tiny_run), "--eps", "0",
                                    "--measures", "epsilon_sharpness"])
    assert bad.exit_code == 1 and "eps must be positive" in bad.output


def test_pac_bayes_measure_reports_nan_when_no_noise_reaches_its_target() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(50, 4), torch.randint(0, 10, (50,))
    obj = Objective(nn.Linear(4, 10), (x, y), device="cpu")  # chance level: error ~0.9 already
    res = compute_measures(obj, "pac_bayes_flatness")["pac_bayes_flatness"]
    assert math.isnan(res.value) and "never raised" in res.extra["error"]


@pytest.mark.parametrize("measure", [epsilon_sharpness, sam_sharpness, pac_bayes_flatness,
                                     fisher_rao_norm])
def test_bf16_precision_is_refused_since_its_loss_error_exceeds_the_increases(measure) -> None:
    model = nn.Linear(3, 2)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    obj = Objective(model, (x, y), precision="bf16", device="cpu")
    with pytest.raises(LandscapeError, match="bf16"):
        measure(obj)
