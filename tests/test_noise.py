"""Gradient-noise statistics against closed forms written out in numpy (linear regression).

Model ``x^T w + b`` with the MSE loss: sample i's loss is ``r_i^2`` with ``r_i = x_i^T w + b -
y_i``, so its gradient is ``g_i = 2 r_i [x_i, 1]`` (weight entries first, then the bias).
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

from landscape.analysis.noise import (
    NOISE_MEASURES,
    gradient_noise,
    noise_scale_two_batch,
    two_batch_estimates,
)
from landscape.errors import LandscapeError
from landscape.objective import Objective


def regression(n: int = 12, d: int = 3, seed: int = 0) -> tuple[Objective, np.ndarray]:
    """A linear-regression Objective away from its minimum, and the per-sample gradients."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = x @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n)
    w, b = rng.standard_normal(d), 0.3
    model = nn.Linear(d, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor(w)[None])
        model.bias.fill_(b)
    obj = Objective(model, (torch.tensor(x), torch.tensor(y)[:, None]), loss="mse",
                    precision="float64", device="cpu")
    r = x @ w + b - y
    grads = 2 * r[:, None] * np.hstack([x, np.ones((n, 1))])
    return obj, grads


@pytest.mark.parametrize("method,cost", [("norms", "grad"), ("per_sample", "per_sample")])
def test_gradient_noise_matches_linear_regression_closed_forms(method: str, cost: str) -> None:
    obj, g = regression()
    n, batch, lr = len(g), 4, 0.3
    full = g.mean(0)
    gamma = ((g - full) ** 2).sum(1).mean()
    res = gradient_noise(obj, batch_size=batch, lr=lr, method=method)
    assert np.allclose(obj.per_sample_grads(obj.theta0).numpy(), g, rtol=1e-12)
    assert np.allclose(res.grad.numpy(), full, rtol=1e-12)
    assert res.grad_norm_sq == pytest.approx(full @ full, rel=1e-12)
    assert res.trace_cov == pytest.approx(gamma, rel=1e-12)
    assert res.trace_cov_unbiased == pytest.approx(gamma * n / (n - 1), rel=1e-12)
    assert res.noise_scale == pytest.approx(gamma / (full @ full), rel=1e-12)
    assert res.value == res.noise_scale
    # E||G_B - G||^2 by enumerating every batch of 4 of the 12 samples (without replacement)
    minibatch = np.mean([np.sum((g[list(s)].mean(0) - full) ** 2)
                         for s in itertools.combinations(range(n), batch)])
    assert res.minibatch_error == pytest.approx(minibatch, rel=1e-12)
    assert res.implicit_regularizer == pytest.approx(lr / 4 * minibatch, rel=1e-12)
    diversity = (g**2).sum() / (g.sum(0) @ g.sum(0))
    assert res.gradient_diversity == pytest.approx(diversity, rel=1e-12)
    assert res.gradient_snr == pytest.approx((full @ full) / minibatch, rel=1e-12)
    assert res.cost == {cost: pytest.approx(1.0)}


def test_chunked_accumulation_equals_one_chunk() -> None:
    obj, _ = regression(n=23)
    whole = gradient_noise(obj, batch_size=5, method="per_sample", chunk=23)
    pieces = gradient_noise(obj, batch_size=5, method="per_sample", chunk=4)
    for name in NOISE_MEASURES:
        assert getattr(pieces, name) == pytest.approx(getattr(whole, name), rel=1e-12)


def test_minibatch_error_equals_enumeration_over_all_batches_without_replacement() -> None:
    obj, g = regression(n=8)
    full = g.mean(0)
    batch = 3
    errors = [np.sum((g[list(s)].mean(0) - full) ** 2)
              for s in itertools.combinations(range(len(g)), batch)]
    res = gradient_noise(obj, batch_size=batch)
    assert res.minibatch_error == pytest.approx(np.mean(errors), rel=1e-12)
    # batch = N: no noise at all
    assert gradient_noise(obj, batch_size=len(g)).minibatch_error == 0.0


class _LayerNormNet(nn.Module):
    """A Linear layer called twice (positions of one weight), then LayerNorm (per-sample
    gradients by vmap) and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.lin, self.norm, self.head = nn.Linear(16, 16), nn.LayerNorm(16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.lin(torch.tanh(self.lin(x.flatten(1)))))
        return self.head(self.norm(h))


def _noise_case(kind: str) -> Objective:
    from landscape.models import build_model

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(30, 1, 4, 4, generator=gen)
    y = torch.randint(0, 3, (30,), generator=gen)
    if kind == "mlp":
        model = build_model("mlp", (1, 4, 4), 3, widths=(8, 8))
    elif kind == "lenet":
        x = torch.randn(30, 1, 12, 12, generator=gen)
        model = build_model("lenet", (1, 12, 12), 3)
    else:
        model = _LayerNormNet()
    return Objective(model, (x, y), precision="float64", device="cpu", batch_size=7)


@pytest.mark.parametrize("kind", ["mlp", "lenet", "layernorm"])
def test_norms_method_equals_per_sample_gradients(kind: str) -> None:
    obj = _noise_case(kind)
    fast = gradient_noise(obj, batch_size=4, method="norms")
    slow = gradient_noise(obj, batch_size=4, method="per_sample")
    assert 0.5 < fast.noise_scale < 1e3
    for name in NOISE_MEASURES:
        assert getattr(fast, name) == pytest.approx(getattr(slow, name), rel=1e-9)
    torch.testing.assert_close(fast.grad, slow.grad, rtol=1e-12, atol=1e-14)
    # only the LayerNorm model needs per-sample gradients (of its LayerNorm alone)
    assert fast.cost.get("per_sample", 0.0) == (1.0 if kind == "layernorm" else 0.0)


def test_unknown_noise_method_raises_a_one_line_error() -> None:
    obj, _ = regression()
    with pytest.raises(LandscapeError, match="method"):
        gradient_noise(obj, method="backpack")


def test_two_batch_estimators_are_exact_on_exact_expectations() -> None:
    grad_sq, trace = 2.5, 7.0
    small, big = 4, 32
    expect = [grad_sq + trace / b for b in (small, big)]  # E|G_B|^2, i.i.d. samples
    g2, s = two_batch_estimates(expect[0], expect[1], small, big)
    assert float(g2) == pytest.approx(grad_sq, rel=1e-12)
    assert float(s) == pytest.approx(trace, rel=1e-12)


def test_two_batch_noise_scale_is_unbiased_on_average() -> None:
    obj, g = regression(n=10)
    full = g.mean(0)
    gamma = ((g - full) ** 2).sum(1).mean()
    res = noise_scale_two_batch(obj, b_small=2, b_big=6, n_pairs=600, seed=0)
    assert abs(res.grad_norm_sq - full @ full) < 4 * res.grad_norm_sq_stderr
    assert abs(res.trace_cov - gamma) < 4 * res.trace_cov_stderr
    assert res.trace_cov_stderr < 0.2 * gamma
    assert res.value == pytest.approx(res.trace_cov / res.grad_norm_sq)
    assert abs(res.value - gamma / (full @ full)) < 4 * res.stderr
    assert res.cost["grad"] == pytest.approx(600 * 6 / 10)


@pytest.mark.parametrize("call", [
    lambda o: gradient_noise(o, batch_size=13),
    lambda o: gradient_noise(o, batch_size=0),
    lambda o: gradient_noise(o, lr=0.0),
    lambda o: gradient_noise(o, chunk=4),
    lambda o: noise_scale_two_batch(o, b_small=4, b_big=4),
    lambda o: noise_scale_two_batch(o, b_small=2, b_big=20),
])
def test_bad_settings_raise_a_one_line_error(call) -> None:
    obj, _ = regression()
    with pytest.raises(LandscapeError) as err:
        call(obj)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from landscape.training import train

    out = tmp_path_factory.mktemp("run") / "digits"
    train(model_options={"widths": [8]}, train_size=100, epochs=3, out=out, progress=False,
          device="cpu", save_every=100)
    return out


def test_cli_noise_json_has_every_quantity_and_keeps_a_result_file(tiny_run, tmp_path) -> None:
    from landscape import formats, store
    from landscape.cli import main

    out = tmp_path / "noise.h5"
    result = CliRunner().invoke(main, ["noise", "--run", str(tiny_run), "--noise-batch-size", "16",
                                       "--lr", "0.05", "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data) == list(NOISE_MEASURES)
    assert all(math.isfinite(v["value"]) for v in data.values())
    assert data["noise_scale"]["value"] == pytest.approx(
        data["trace_cov"]["value"] / data["grad_norm_sq"]["value"])
    with formats.open_result(out, kind="noise") as f:
        assert float(f["trace_cov"][()]) == pytest.approx(data["trace_cov"]["value"])
        assert store.read_settings(f)["lr"] == 0.05
    table = CliRunner().invoke(main, ["noise", "--run", str(tiny_run), "--noise-batch-size", "32"])
    assert table.exit_code == 0 and "gradient_diversity" in table.stdout
    bad = CliRunner().invoke(main, ["noise", "--run", str(tiny_run), "--noise-batch-size", "1000"])
    assert bad.exit_code == 1 and "larger than the data split" in bad.output
