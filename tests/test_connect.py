"""The space between minima: permutation symmetry, alignment, barriers, BatchNorm reset,
curves and spawned children, each against an invariance or a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape.connect.align import align
from landscape.connect.barrier import BatchNormReset, barrier, barrier_of
from landscape.connect.curves import coefficients, fit_curve
from landscape.connect.permutations import (
    permutation_spec,
    permute_model,
    random_permutations,
)
from landscape.errors import LandscapeError
from landscape.models import build_model
from landscape.objective import Objective

IMAGE = (3, 8, 8)
ZOO = [("mlp", (1, 8, 8), {}, 2), ("lenet", (1, 8, 8), {}, 4), ("vgg9", IMAGE, {}, 8),
       ("resnet20", IMAGE, {}, 12), ("resnet20", IMAGE, {"shortcut": "A"}, 9),
       ("resnet20-noshort", IMAGE, {}, 19), ("resnet56", IMAGE, {}, 30),
       ("resnet110", IMAGE, {}, 57), ("resnet56-noshort", IMAGE, {}, 55),
       ("resnet110-noshort", IMAGE, {}, 109), ("wrn-16-4", IMAGE, {}, 10),
       ("wrn", IMAGE, {"depth": 10, "widen": 1}, 6), ("transformer", (5,), {}, 3)]


def _randomized(name: str, shape: tuple, options: dict, seed: int = 0) -> nn.Module:
    """A zoo model with random weights and BatchNorm statistics (so that a wrong permutation
    of any tensor changes the function), in eval mode."""
    torch.manual_seed(seed)
    model = build_model(name, shape, 10, **options).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()
    return model


def _inputs(shape: tuple, n: int = 4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    if len(shape) == 1:
        return torch.randint(0, 11, (n, *shape), generator=gen)
    return torch.randn(n, *shape, generator=gen)


@pytest.mark.parametrize(("name", "shape", "options", "groups"), ZOO,
                         ids=[f"{z[0]}{z[2].get('shortcut', '')}" for z in ZOO])
def test_permuted_zoo_models_compute_the_same_function(name, shape, options, groups):
    model = _randomized(name, shape, options)
    x = _inputs(shape)
    spec = permutation_spec(model, x)
    assert len(spec.groups) == groups  # the symmetry found, not an empty one
    permuted = permute_model(model, spec, random_permutations(spec, seed=3))
    moved = [k for k, v in model.state_dict().items()
             if not torch.equal(v, permuted.state_dict()[k])]
    assert moved  # the permutation changed the tensors...
    with torch.no_grad():
        out, out_p = model(x), permuted(x)
    scale = out.abs().max()
    assert torch.allclose(out_p, out, rtol=0, atol=1e-5 * float(scale))  # ...not the function


class _Concatenating(nn.Module):
    """Two branches concatenated (an operation the derivation does not know), then a hidden
    layer that it does."""

    def __init__(self) -> None:
        super().__init__()
        self.left, self.right = nn.Linear(6, 8), nn.Linear(6, 8)
        self.hidden, self.out = nn.Linear(16, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([torch.relu(self.left(x)), torch.relu(self.right(x))], 1)
        return self.out(torch.relu(self.hidden(h)))


def test_a_user_model_keeps_the_units_an_unknown_operation_reads_in_place():
    torch.manual_seed(0)
    model, x = _Concatenating(), torch.randn(5, 6)
    spec = permutation_spec(model, x)
    assert list(spec.groups) == ["hidden"]  # the concatenated branches stay fixed
    permuted = permute_model(model, spec, random_permutations(spec, seed=1))
    assert not torch.equal(permuted.hidden.weight, model.hidden.weight)
    torch.testing.assert_close(permuted(x), model(x))


@pytest.mark.parametrize("name", ["mlp", "lenet", "transformer"])
def test_weight_matching_recovers_a_random_permutation_exactly(name):
    shape = {"mlp": (1, 8, 8), "lenet": (1, 8, 8), "transformer": (5,)}[name]
    model = _randomized(name, shape, {})
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()  # no ties (zero biases would make some units interchangeable)
    spec = permutation_spec(model, _inputs(shape))
    shuffled = permute_model(model, spec, random_permutations(spec, seed=5))
    out = align(model, shuffled, method="weights", data=_inputs(shape))
    for key, value in model.state_dict().items():
        assert torch.equal(out.model.state_dict()[key], value), key


@pytest.mark.parametrize("name", ["lenet", "transformer"])   # derived, declared structure
def test_activation_matching_recovers_a_random_permutation_exactly(name):
    shape = {"lenet": (1, 8, 8), "transformer": (5,)}[name]
    model = _randomized(name, shape, {})
    x = _inputs(shape, 64)
    spec = permutation_spec(model, x)
    shuffled = permute_model(model, spec, random_permutations(spec, seed=2))
    out = align(model, shuffled, method="activations", data=x)
    for key, value in model.state_dict().items():
        assert torch.equal(out.model.state_dict()[key], value), key


def _digits_like(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen)
    return x, (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 0.5).long()


def test_barrier_of_a_model_with_itself_and_with_its_aligned_permutation_is_zero(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 3))
    data = {"train": _digits_like(), "test": _digits_like(40, 1)}
    spec = permutation_spec(model, data["train"][0])
    shuffled = permute_model(model, spec, random_permutations(spec, seed=1))
    common = {"data": data, "points": 5, "show_progress": False}
    itself = barrier(model, model, out=tmp_path / "self.h5", **common)
    assert set(itself.barriers) == {"train_loss", "train_error", "test_loss", "test_error"}
    assert all(v == 0.0 for v in itself.barriers.values())
    naive = barrier(model, shuffled, out=tmp_path / "naive.h5", **common)
    assert naive.barriers["train_loss"] > 0.01  # the same function, yet a barrier between
    for method in ("weights", "activations"):
        aligned = barrier(model, shuffled, align=method, out=tmp_path / f"{method}.h5",
                          **common)
        assert max(abs(v) for v in aligned.barriers.values()) < 1e-6, method


class _Quartic(nn.Module):
    """One weight ``w``: output ``w * x``; with x = 1 and loss ``(out^2 - 1)^2`` the loss is
    the double well ``(w^2 - 1)^2``."""

    def __init__(self, w: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([w], dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w


def test_barrier_formula_against_a_hand_computation_on_a_double_well(tmp_path):
    # t = 0, .2, ..., 1 from w = -1 to w = 1.5: w = -1, -.5, 0, .5, 1, 1.5, loss (w^2-1)^2 =
    # 0, .5625, 1, .5625, 0, 1.5625; the chord 1.5625 t; excess 0, .25, .375, -.375, -1.25, 0
    x, y = torch.ones(3, 1, dtype=torch.float64), torch.zeros(3, 1, dtype=torch.float64)
    path = barrier(_Quartic(-1.0), _Quartic(1.5), data=(x, y), points=6, precision="float64",
                   loss=lambda out, _y: ((out ** 2 - 1) ** 2).mean(), out=tmp_path / "q.h5",
                   show_progress=False)
    np.testing.assert_allclose(path.surface.values["train_loss"],
                               [0, 0.5625, 1, 0.5625, 0, 1.5625], atol=1e-12)
    assert path.barriers["train_loss"] == pytest.approx(0.375, abs=1e-12)
    assert path.argmax["train_loss"] == pytest.approx(0.4)
    assert barrier_of(np.array([0.0, 0.5, 1.0]), np.array([1.0, 0.5, 3.0])) == (0.0, 0.0)


def _bn_net() -> nn.Sequential:
    """A float64 net with one BatchNorm layer (statistics of its 5 pre-activations)."""
    return nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(),
                         nn.Linear(5, 3)).double().eval()


def _bn_pair() -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    """Two such nets (seed 0) and float64 data for them."""
    torch.manual_seed(0)
    a, b = _bn_net(), _bn_net()
    x, y = _digits_like()
    return a, b, x.double(), y


def test_batchnorm_reset_equals_statistics_computed_by_hand(tmp_path):
    a, b, x, y = _bn_pair()
    reset = BatchNormReset(a, (x, y), device=torch.device("cpu"), dtype=torch.float64,
                           batch_size=len(x))
    obj = Objective(a, (x, y), precision="float64")
    mid = (obj.theta0 + obj.space.flatten(b).double()) / 2
    buffers = reset(mid[None])
    w, c = (a[0].weight + b[0].weight) / 2, (a[0].bias + b[0].bias) / 2
    pre = (x @ w.T + c).detach()
    torch.testing.assert_close(buffers["1.running_mean"][0], pre.mean(0))
    torch.testing.assert_close(buffers["1.running_var"][0], pre.var(0, unbiased=True))
    # the path evaluates its midpoint with those statistics (and the endpoints' own weights)
    path = barrier(a, b, data=(x, y), points=3, precision="float64", out=tmp_path / "bn.h5",
                   show_progress=False)
    assert path.surface.attrs["bn_stats"] == "reset"
    by_hand = _bn_net()
    by_hand.load_state_dict({**{k: (a.state_dict()[k] + b.state_dict()[k]) / 2
                                for k in a.state_dict()},
                             "1.running_mean": pre.mean(0), "1.running_var": pre.var(0)})
    with torch.no_grad():
        expected = nn.functional.cross_entropy(by_hand(x), y).item()
    assert path.surface.values["train_loss"][1] == pytest.approx(expected, rel=1e-10)


def test_a_batchnorm_curve_fits_on_batch_statistics_and_is_evaluated_on_recomputed_ones(
        tmp_path):
    from landscape.connect.curves import Curve, batch_statistics, curve_loss

    a, b, x, y = _bn_pair()
    obj = Objective(a, (x, y), precision="float64")
    flat_b = obj.space.flatten(b).double()
    c = obj.theta0 + torch.randn_like(obj.theta0)
    curve = Curve("bezier", obj.theta0, flat_b, c, [])

    def at(t: float, **buffers: torch.Tensor) -> nn.Module:
        model = _bn_net()
        nn.utils.vector_to_parameters(curve.point(t)[0], model.parameters())
        for name, value in buffers.items():
            setattr(model[1], name, value)
        return model

    # the fit: each minibatch normalized by its own statistics at its t; running ones kept
    before = {k: v.clone() for k, v in obj.buffers.items()}
    with batch_statistics(obj):
        loss = curve_loss(obj, "bezier", obj.theta0, flat_b, c,
                          torch.tensor(0.3, dtype=torch.float64), x[:16], y[:16]).item()
    expected = nn.functional.cross_entropy(at(0.3).train()(x[:16]), y[:16]).item()
    assert loss == pytest.approx(expected, rel=1e-12)
    assert all(torch.equal(before[k], obj.buffers[k]) for k in before)
    # evaluation: statistics recomputed on the training data at every curve point
    fitted = fit_curve(a, b, data=(x, y), epochs=2, batch_size=16, precision="float64",
                       show_progress=False)
    assert all(np.isfinite(fitted.history))
    curve = fitted   # at() now reads the fitted curve
    path = barrier(a, b, data=(x, y), curve=fitted, points=3, precision="float64",
                   out=tmp_path / "bn_curve.h5", show_progress=False)
    with torch.no_grad():
        pre = at(0.5)[0](x)
        mid = at(0.5, running_mean=pre.mean(0), running_var=pre.var(0)).eval()
        expected = nn.functional.cross_entropy(mid(x), y).item()
    assert path.surface.attrs["bn_stats"] == "reset"
    assert path.surface.values["train_loss"][1] == pytest.approx(expected, rel=1e-10)


def test_curve_coefficients_pass_through_the_endpoints_and_control_point():
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    np.testing.assert_allclose(coefficients("bezier", t), [[0, 0], [0.25, 0.5], [1, 0]])
    np.testing.assert_allclose(coefficients("polychain", t), [[0, 0], [0, 1], [1, 0]])


def test_a_stored_curved_path_holds_the_loss_at_each_curve_point(tmp_path):
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    b = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    data = _digits_like()
    curve = fit_curve(a, b, data=data, epochs=20, show_progress=False)
    path = barrier(a, b, data=data, curve=curve, points=5, out=tmp_path / "c.h5",
                   show_progress=False)
    obj = Objective(a, data)
    expected = obj.evaluate(curve.point(torch.as_tensor(path.t)))["loss"].numpy()
    np.testing.assert_allclose(path.surface.values["train_loss"], expected, rtol=1e-6)
    with pytest.raises(LandscapeError, match="other endpoints"):
        barrier(b, a, data=data, curve=curve, out=tmp_path / "x.h5", show_progress=False)
    line = barrier(a, b, data=data, points=5, out=tmp_path / "l.h5", show_progress=False)
    inner = slice(1, -1)  # the trained control point lowers the loss inside the path
    assert (path.surface.values["train_loss"][inner].mean()
            < line.surface.values["train_loss"][inner].mean() - 0.01)


def test_spawned_children_share_the_parent_epochs_and_then_differ(tmp_path):
    from landscape.training import train

    common = {"model_options": {"widths": [4]}, "epochs": 2, "progress": False}
    runs = [train(seed=0, spawn=(1, c), out=tmp_path / f"child{c}", **common) for c in (0, 1)]
    plain = train(seed=0, out=tmp_path / "plain", **common)
    losses = [[row["train_loss"] for row in r.history] for r in (*runs, plain)]
    assert losses[0][:2] == losses[1][:2] == losses[2][:2]  # epochs 0 and 1: the parent's
    assert losses[0][2] != losses[1][2]                     # epoch 2: each child's own order


@pytest.mark.parametrize("optimizer", ["sgd", "sag"])   # a random order; fixed partitions
def test_children_spawned_at_a_step_share_its_steps_then_differ_and_keep_one_pass_per_epoch(
        tmp_path, monkeypatch, optimizer):
    from landscape.sources import Source
    from landscape.training import train

    # 100 samples in batches of 25: 4 steps an epoch; step 6 is inside epoch 2
    common = {"model_options": {"widths": [4]}, "train_size": 100, "batch_size": 25,
              "optimizer": optimizer, "progress": False}
    drawn: list[torch.Tensor] = []
    rows = Source.rows
    # one read of the source per step (not GATHER_BYTES worth of steps), to see each step's rows
    monkeypatch.setattr("landscape.training.trainer.GATHER_BYTES", 0)
    monkeypatch.setattr(Source, "rows", lambda self, idx, b: (  # a step's rows (not probes)
        len(idx) == 25 and drawn.append(idx.clone()), rows(self, idx, b))[1])
    parent = train(seed=0, steps=6, out=tmp_path / "parent", **common)
    at_spawn = [train(seed=0, spawn=(6, c), spawn_unit="step", steps=6, out=tmp_path / f"a{c}",
                      **common) for c in (0, 1)]
    for child in at_spawn:   # the parent's first 6 steps, bit for bit
        for (name, w), w_child in zip(parent.model.state_dict().items(),
                                      child.model.state_dict().values(), strict=True):
            assert torch.equal(w, w_child), name
    drawn.clear()
    later = [train(seed=0, spawn=(6, c), spawn_unit="step", steps=8, out=tmp_path / f"b{c}",
                   **common) for c in (0, 1)]
    for child in range(2):   # epoch 2 of each child: one pass over the 100 samples
        epoch2 = torch.cat(drawn[8 * child + 4:8 * child + 8])
        assert torch.equal(epoch2.sort().values, torch.arange(100))
    assert torch.equal(drawn[4], drawn[12]) and torch.equal(drawn[5], drawn[13])
    assert not torch.equal(drawn[6], drawn[14])   # the children's own order after step 6
    assert not torch.equal(*(nn.utils.parameters_to_vector(c.model.parameters()) for c in later))
    assert later[0].config["spawn_unit"] == "step"
    # step 4 (= 1 epoch of 4 steps) is epoch 1, bit for bit
    by_epoch = train(seed=0, spawn=(1, 0), epochs=2, out=tmp_path / "e", **common)
    by_step = train(seed=0, spawn=(4, 0), spawn_unit="step", epochs=2, out=tmp_path / "s",
                    **common)
    assert by_epoch.history[-1]["train_loss"] == by_step.history[-1]["train_loss"]
    with pytest.raises(LandscapeError, match="spawn unit"):
        train(seed=0, spawn=(4, 0), spawn_unit="iteration", out=tmp_path / "x", **common)


def test_connect_and_stability_commands_report_what_their_files_hold(tmp_path):
    import json

    from _helpers import invoke

    from landscape.connect.barrier import load_path
    from landscape.connect.stability import load_stability
    from landscape.training import train

    common = {"model_options": {"widths": [4]}, "epochs": 1, "progress": False}
    a, b = (train(seed=s, out=tmp_path / f"r{s}", **common) for s in (0, 1))
    out = tmp_path / "ab.h5"
    args = ("connect", a.path, b.path, "--align", "weights", "--points", "5", "--out", out,
            "--json")
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output)
    assert summary["barriers"] == pytest.approx(load_path(out).barriers)
    again = invoke(*args)  # the same settings: the stored file, not a new computation
    assert json.loads(again.output)["barriers"] == summary["barriers"]
    refused = invoke("connect", a.path, b.path, "--plane", tmp_path / "p.h5", "--out", out)
    assert refused.exit_code == 1 and len(refused.output.strip().splitlines()) == 1
    stab = invoke("stability", "--spawn", "3", "--spawn-unit", "step", "--pairs", "2",
                  "--epochs", "1", "--widths", "4", "--points", "3", "--out", tmp_path / "stab",
                  "--json")
    assert stab.exit_code == 0, stab.output
    stored = load_stability(tmp_path / "stab")
    assert json.loads(stab.output)["values"] == stored.values
    assert (stored.unit, stored.spawn_at) == ("step", [3])
    assert json.loads(stab.output)["unit"] == "step"
    assert len(stored.values["test_error"][0]) == 2


def test_figures_draw_the_stored_means_bands_and_curve(tmp_path):
    from landscape.connect.barrier import curve_plane
    from landscape.connect.stability import Stability
    from landscape.plot.connect import plot_curve_plane, plot_paths, plot_stability

    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)) for _ in range(3)]
    data = _digits_like()
    paths = [barrier(models[0], m, data=data, points=5, out=tmp_path / f"p{i}.h5",
                     show_progress=False) for i, m in enumerate(models[1:])]
    fig = plot_paths({"naive": paths}, metric="train_error")
    mean = np.mean([100 * (1 - p.surface.values["train_acc"]) for p in paths], axis=0)
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), mean)
    assert fig.axes[0].collections  # the interval band over the two pairs
    stability = Stability([0, 3], {"test_error": [[0.01, 0.03], [0.0, 0.0]]}, {},
                          tmp_path / "s.json")
    fig = plot_stability(stability)
    np.testing.assert_allclose(fig.axes[0].lines[-2].get_ydata(), [2.0, 0.0])  # mean, %
    curve = fit_curve(models[0], models[1], data=data, epochs=1, show_progress=False)
    barrier(models[0], models[1], data=data, curve=curve, points=5, out=tmp_path / "c.h5",
            show_progress=False)
    plane = curve_plane(models[0], tmp_path / "c.h5", data=data, points=4,
                        out=tmp_path / "plane.h5", show_progress=False)
    ab = (curve.b - curve.a).double()
    assert plane.extras["path/endpoints"][1, 0] == pytest.approx(float(ab.norm()), rel=1e-5)
    fig = plot_curve_plane(plane)
    drawn = fig.axes[0].lines[0]
    np.testing.assert_allclose(drawn.get_xdata(), plane.extras["path/coords"][:, 0])
