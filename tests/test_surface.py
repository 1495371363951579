"""Loss surfaces (landscape.surface): every number against an independent reference.

References: the model's own forward pass (``nn.Module.__call__`` on a deep copy whose
parameters are set with ``torch.nn.utils.vector_to_parameters``) and ``torch.nn.functional``
losses; directions rebuilt by hand from ``torch.randn`` with a seeded generator; numpy for
cosines; scikit-learn's PCA for trajectory planes; exact invariances (ReLU rescaling, endpoints
of interpolations, a model that fits its data exactly).

Runs are small stand-ins (``StandInRun``) with the attributes the run-level functions use.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from landscape.data import Dataset
from landscape.errors import LandscapeError
from landscape.models import build_model
from landscape.objective import Objective
from landscape.params import ParamSpace
from landscape.surface import (
    compute_surface,
    interpolate,
    load_surface,
    normalize_direction,
    parse_range,
    pca_directions,
    plane,
    random_direction,
    random_surface,
    trajectory,
)

CLASSES = 3
DIM = 4


# ---------------------------------------------------------------------------------------
# tiny data, models and runs, built by hand
def _toy_data(n_train: int = 40, n_test: int = 30, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x_tr, x_te = torch.randn(n_train, DIM, generator=g), torch.randn(n_test, DIM, generator=g)
    y_tr = torch.randint(0, CLASSES, (n_train,), generator=g)
    y_te = torch.randint(0, CLASSES, (n_test,), generator=g)
    return Dataset(name="toy", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
                   task="classification", num_outputs=CLASSES, input_shape=(DIM,),
                   spec={"name": "toy", "seed": seed}, loss="cross_entropy")


def _mlp(seed: int = 0, width: int = 6) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(DIM, width), nn.Tanh(), nn.Linear(width, CLASSES)).eval()


def _bn_mlp(seed: int) -> nn.Module:
    """Linear -> BatchNorm1d (running statistics that depend on the seed) -> ReLU -> linear."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(DIM, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, CLASSES))
    bn = model[1]
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0.0, 0.3)
        bn.running_mean.normal_(0.0, 0.5)
        bn.running_var.uniform_(1.0, 1.5)
        bn.num_batches_tracked.fill_(seed + 1)
    return model.eval()


def _conv_bn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 2),
                         nn.Flatten(), nn.Linear(5, CLASSES))


@dataclass
class StandInRun:
    """What the run-level surface functions read from a run."""

    path: Path
    model: nn.Module
    data: Dataset
    config: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    saved: dict[int, nn.Module] = field(default_factory=dict)

    def checkpoints(self) -> list[tuple[int, Path]]:
        return [(e, Path(self.path) / f"epoch_{e:04d}.pt") for e in sorted(self.saved)]

    def load_checkpoint(self, epoch: int) -> nn.Module:
        return copy.deepcopy(self.saved[epoch]).eval()


def _run(tmp_path: Path, model: nn.Module, name: str = "run", data: Dataset | None = None,
         saved: dict[int, nn.Module] | None = None) -> StandInRun:
    return StandInRun(tmp_path / name, model, data or _toy_data(), saved=saved or {})


# ---------------------------------------------------------------------------------------
# references
def _flat(model: nn.Module) -> Tensor:
    return parameters_to_vector(model.parameters()).detach()


def _at(model: nn.Module, theta: Tensor | None = None, buffers: dict[str, Tensor] | None = None,
        dtype: torch.dtype = torch.float64) -> nn.Module:
    """A copy of ``model`` (eval mode, ``dtype``) with parameters ``theta`` and some buffers."""
    m = copy.deepcopy(model).to(dtype).eval()
    if theta is not None:
        vector_to_parameters(theta.to(dtype), m.parameters())
    own = dict(m.named_buffers())
    for k, v in (buffers or {}).items():
        own[k].copy_(v)
    return m


@torch.no_grad()
def _ref(model: nn.Module, x: Tensor, y: Tensor, dtype: torch.dtype = torch.float64,
         ) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode, computed in ``dtype``."""
    m = copy.deepcopy(model).to(dtype).eval()
    out = m(x.to(dtype))
    return F.cross_entropy(out, y).item(), (out.argmax(-1) == y).double().mean().item()


def _float_buffers(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone().double() for k, v in model.named_buffers()
            if torch.is_floating_point(v)}


def _gaussian(numel: int, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(numel, generator=gen, dtype=torch.float32).double()


def _filter_normalized(model: nn.Module, seed: int) -> Tensor:
    """Li et al.'s filter-normalized direction, by hand: each row of each >= 2-D weight of the
    seeded Gaussian gets the norm of that row of the weight; 1-D tensors get zeros."""
    raw = _gaussian(sum(p.numel() for p in model.parameters()), seed)
    parts, off = [], 0
    for p in model.parameters():
        r = raw[off : off + p.numel()].reshape(p.shape)
        off += p.numel()
        if p.dim() >= 2:
            w = p.detach().double()
            scale = w.flatten(1).norm(dim=1) / r.flatten(1).norm(dim=1)
            parts.append((r.flatten(1) * scale[:, None]).reshape(-1))
        else:
            parts.append(torch.zeros(p.numel(), dtype=torch.float64))
    return torch.cat(parts)


# ---------------------------------------------------------------------------------------
# the origin and the endpoints are the models themselves
def test_value_at_origin_equals_models_own_loss_in_float32(tmp_path: Path) -> None:
    run = _run(tmp_path, _bn_mlp(0))
    s = random_surface(run, x="-1:1:3", y="-1:1:3", precision="float32",
                       out=tmp_path / "s.h5", show_progress=False)
    loss, acc = _ref(run.model, *run.data.split("train"), dtype=torch.float32)
    assert s.values["train_loss"][1, 1] == pytest.approx(loss, rel=1e-6)
    assert s.values["train_acc"][1, 1] == pytest.approx(acc, abs=1e-12)
    assert s.attrs["center_train_loss"] == pytest.approx(loss, rel=1e-6)


PRECISIONS = [("float32", "loop"), ("float32", "vmap"),
              ("float64", "loop")]


def _rel(precision: str) -> float:
    return 1e-6 if precision == "float32" else 1e-12


@pytest.mark.parametrize(("precision", "strategy"), PRECISIONS)
def test_interpolation_endpoints_equal_each_models_loss_with_batchnorm_buffers(
        tmp_path: Path, precision: str, strategy: str) -> None:
    a, b = _bn_mlp(1), _bn_mlp(2)
    run_a, run_b = _run(tmp_path, a, "a"), _run(tmp_path, b, "b")
    x, y = run_a.data.split("train")
    # the check is sensitive to the buffers: B's weights with A's statistics give another loss
    mixed = _at(b, buffers=_float_buffers(a))
    assert abs(_ref(mixed, x, y)[0] - _ref(b, x, y)[0]) > 1e-3
    s = interpolate(run_a, run_b, x="-0.5:1.5:5", precision=precision, strategy=strategy,
                    out=tmp_path / "i.h5", show_progress=False)
    np.testing.assert_array_equal(s.x, [-0.5, 0.0, 0.5, 1.0, 1.5])
    loss, rel = s.values["train_loss"], _rel(precision)
    assert loss[1] == pytest.approx(_ref(a, x, y)[0], rel=rel)
    assert s.attrs["center_train_loss"] == pytest.approx(_ref(a, x, y)[0], rel=rel)
    # the midpoint: averaged parameters and averaged running statistics
    ba, bb = _float_buffers(a), _float_buffers(b)
    mid = _at(a, (_flat(a).double() + _flat(b).double()) / 2,
              {k: (ba[k] + bb[k]) / 2 for k in ba})
    assert loss[2] == pytest.approx(_ref(mid, x, y)[0], rel=max(rel, 1e-9))
    assert s.complete and s.attrs["kind"] == "interpolation"
    assert loss[3] == pytest.approx(_ref(b, x, y)[0], rel=rel)


def test_interpolation_between_models_without_buffers_reproduces_both(tmp_path: Path) -> None:
    a, b = _mlp(1), _mlp(2)
    x, y = _toy_data().split("train")
    s = interpolate(_run(tmp_path, a, "a"), _run(tmp_path, b, "b"), x="0:1:3",
                    precision="float64", strategy="loop", out=tmp_path / "i.h5",
                    show_progress=False)
    assert s.values["train_loss"][0] == pytest.approx(_ref(a, x, y)[0], rel=1e-12)
    assert s.values["train_loss"][2] == pytest.approx(_ref(b, x, y)[0], rel=1e-12)


@pytest.mark.parametrize(("precision", "strategy"), PRECISIONS)
def test_plane_through_three_solutions_reproduces_each(tmp_path: Path, precision: str,
                                                        strategy: str) -> None:
    a, b, c = _bn_mlp(3), _bn_mlp(4), _bn_mlp(5)
    runs = [_run(tmp_path, m, n) for m, n in ((a, "a"), (b, "b"), (c, "c"))]
    x, y = runs[0].data.split("train")
    s = plane(*runs, x="0:1:2", y="0:1:2", precision=precision, strategy=strategy,
              out=tmp_path / "p.h5", show_progress=False)
    loss, rel = s.values["train_loss"], _rel(precision)  # [y, x]: A (0, 0), B x=1, C y=1
    assert loss.shape == (2, 2)
    fa, fb, fc = (_float_buffers(m) for m in (a, b, c))
    corner = _at(a, _flat(b).double() + _flat(c).double() - _flat(a).double(),
                 {k: fb[k] + fc[k] - fa[k] for k in fa})
    db, dc = (_flat(m).double().numpy() - _flat(a).double().numpy() for m in (b, c))
    cos = db @ dc / (np.linalg.norm(db) * np.linalg.norm(dc))
    assert s.attrs["cosine_xy"] == pytest.approx(cos, abs=1e-6)
    assert loss[0, 0] == pytest.approx(_ref(a, x, y)[0], rel=rel)
    assert loss[0, 1] == pytest.approx(_ref(b, x, y)[0], rel=rel)
    assert loss[1, 0] == pytest.approx(_ref(c, x, y)[0], rel=rel)
    assert loss[1, 1] == pytest.approx(_ref(corner, x, y)[0], rel=rel)


# ---------------------------------------------------------------------------------------
# normalization of directions
def _named_views(model: nn.Module, d: Tensor) -> list[tuple[str, Tensor, Tensor]]:
    out, off = [], 0
    for name, p in model.named_parameters():
        out.append((name, p.detach().double(), d[off : off + p.numel()].reshape(p.shape)))
        off += p.numel()
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_filter_normalized_direction_has_weight_filter_norms_and_zero_ignored_entries(
        dtype: torch.dtype) -> None:
    model = _conv_bn()
    space = ParamSpace.from_model(model)
    theta = _flat(model).to(dtype)
    d = random_direction(space, theta, seed=11, norm="filter", ignore="biasbn")
    assert d.dtype == dtype and d.shape == theta.shape
    n_weights = 0
    for name, w, dw in _named_views(model, d.double()):
        if w.dim() >= 2:
            n_weights += 1
            np.testing.assert_allclose(dw.flatten(1).norm(dim=1), w.flatten(1).norm(dim=1),
                                       rtol=1e-6)
        else:  # biases and BatchNorm weight/bias: exactly zero
            assert torch.count_nonzero(dw) == 0, name
    assert n_weights == 3
    # it is the seeded Gaussian, rescaled filter by filter (a positive factor per filter)
    np.testing.assert_allclose(d.double(), _filter_normalized(model, 11), rtol=1e-6, atol=1e-7)


def test_layer_normalization_gives_each_weight_tensor_its_norm() -> None:
    model = _conv_bn()
    space = ParamSpace.from_model(model)
    theta = _flat(model).double()
    d = random_direction(space, theta, seed=3, norm="layer")
    raw = _gaussian(theta.numel(), 3)
    for name, w, dw in _named_views(model, d):
        if w.dim() >= 2:
            assert dw.norm().item() == pytest.approx(w.norm().item(), rel=1e-10)
            # one positive factor per tensor: parallel to the raw draw
            r = [v for n, _, v in _named_views(model, raw) if n == name][0]
            ratio = dw / r
            np.testing.assert_allclose(ratio, ratio.reshape(-1)[0].item(), rtol=1e-10)
            # and not per filter: filter norms do not all match the weight's
            assert not torch.allclose(dw.flatten(1).norm(dim=1), w.flatten(1).norm(dim=1),
                                      rtol=1e-3)
        else:
            assert torch.count_nonzero(dw) == 0, name


def test_weight_normalization_is_elementwise_product_with_weights() -> None:
    model = _conv_bn()
    space = ParamSpace.from_model(model)
    theta = _flat(model).double()
    d = random_direction(space, theta, seed=4, norm="weight")
    raw = _gaussian(theta.numel(), 4)
    for (name, w, dw), (_, _, r) in zip(_named_views(model, d), _named_views(model, raw)):
        if w.dim() >= 2:
            np.testing.assert_allclose(dw, r * w, rtol=1e-12, atol=0)
        else:
            assert torch.count_nonzero(dw) == 0, name


def test_no_normalization_keeps_the_raw_gaussian() -> None:
    model = _conv_bn()
    space = ParamSpace.from_model(model)
    theta = _flat(model).double()
    raw = _gaussian(theta.numel(), 5)
    ignored = random_direction(space, theta, seed=5, norm="none", ignore="biasbn")
    kept = random_direction(space, theta, seed=5, norm="none", ignore="none")
    torch.testing.assert_close(kept, raw, rtol=0, atol=0)
    weights = space.mask("weight")
    torch.testing.assert_close(ignored[weights], raw[weights], rtol=0, atol=0)
    assert torch.count_nonzero(ignored[~weights]) == 0


def test_kept_bias_and_norm_entries_equal_the_parameters_as_in_li_et_al() -> None:
    model = _conv_bn()
    space = ParamSpace.from_model(model)
    theta = _flat(model).double()
    d = normalize_direction(space, _gaussian(theta.numel(), 6), theta, "filter", "none")
    one_d = ~space.mask("weight")
    assert int(one_d.sum()) == 4 + 4 + 4 + 5 + CLASSES  # conv1 bias, bn w/b, conv2 bias, fc b
    torch.testing.assert_close(d[one_d], theta[one_d], rtol=0, atol=0)
    np.testing.assert_allclose(d, _filter_normalized(model, 6) + torch.where(
        one_d, theta, torch.zeros_like(theta)), rtol=1e-10, atol=1e-12)


def test_unknown_normalization_is_a_landscape_error() -> None:
    model = _conv_bn()
    space = ParamSpace.from_model(model)
    with pytest.raises(LandscapeError, match="filtre|filter"):
        random_direction(space, _flat(model), seed=0, norm="filtre")


# ---------------------------------------------------------------------------------------
# filter normalization does its job
def test_filter_normalized_curve_is_invariant_to_layerwise_rescaling_unlike_unnormalized(
        tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("mlp", (DIM,), CLASSES, widths=(8, 8), bias=False).double().eval()
    rescaled = copy.deepcopy(model)  # float64, so that the rescaled function is the same
    with torch.no_grad():
        rescaled.layers[1].weight.mul_(5.0)
        rescaled.layers[3].weight.div_(5.0)
    data = _toy_data()
    x, y = data.split("train")
    with torch.no_grad():  # the function is unchanged
        torch.testing.assert_close(rescaled(x.double()), model(x.double()), rtol=1e-12,
                                   atol=1e-12)
    curves = {}
    for norm in ("filter", "none"):
        for name, m in (("orig", model), ("scaled", rescaled)):
            s = random_surface(_run(tmp_path, m, name, data), x="-2:2:9", norm=norm, seed=7,
                               precision="float64", strategy="loop",
                               out=tmp_path / f"{norm}_{name}.h5", show_progress=False)
            curves[norm, name] = s.values["train_loss"]
    base = curves["filter", "orig"]
    assert np.max(np.abs(curves["filter", "scaled"] - base) / base) < 1e-5
    change = np.abs(curves["none", "scaled"] - curves["none", "orig"]) / curves["none", "orig"]
    assert np.max(change) > 0.1
    # the curves are not flat: the invariance is not trivially met
    assert np.ptp(base) > 0.1 * base.min()


# ---------------------------------------------------------------------------------------
# resuming, damaged files, settings
KILL_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    from torch import nn
    from landscape.objective import Objective
    from landscape.surface import compute_surface, random_direction

    kill_at, outs = int(sys.argv[1]), sys.argv[2:]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(20, 3, generator=g), torch.randint(0, 2, (20,), generator=g)
    obj = Objective(model, (x, y), precision="float64", strategy="loop", device="cpu")
    dirs = [random_direction(obj.space, obj.theta0, s) for s in (0, 1)]
    original, calls, points = Objective.evaluate, [0], [0]

    def evaluate(self, pts, *args, **kwargs):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        points[0] += pts.shape[0] if pts.dim() == 2 else 1
        return original(self, pts, *args, **kwargs)

    Objective.evaluate = evaluate
    evaluated = {}
    for out in outs:
        points[0] = 0
        compute_surface(obj, out, "-1:1:4", "-1:1:3", directions=dirs, chunk=1,
                        show_progress=False)
        evaluated[out] = points[0]
    print(json.dumps(evaluated))
""")


def _run_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "grid.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "LANDSCAPE_QUIET": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          env=env, timeout=300)


def _datasets(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset)
                     else None)
    return out


def test_run_killed_by_sigkill_mid_grid_resumes_to_identical_arrays(tmp_path: Path) -> None:
    killed, fresh = tmp_path / "killed.h5", tmp_path / "fresh.h5"
    proc = _run_script(tmp_path, "7", str(killed))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with h5py.File(killed, "r") as f:
        done = f["done"][()]
        partial = f["train_loss"][()]
    n_done = int(done.sum())
    assert 0 < n_done < done.size == 12
    assert np.all(np.isfinite(partial[done])) and np.all(np.isnan(partial[~done]))
    proc = _run_script(tmp_path, "0", str(killed), str(fresh))
    assert proc.returncode == 0, proc.stderr
    evaluated = json.loads(proc.stdout.strip().splitlines()[-1])
    # the resumed run evaluates only the missing points (no centre: it is already stored)
    assert evaluated[str(killed)] == 12 - n_done
    assert evaluated[str(fresh)] == 12 + 1
    a, b = _datasets(killed), _datasets(fresh)
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)  # bit for bit
    assert a["done"].all()
    np.testing.assert_array_equal(a["train_loss"][done], partial[done])


class _Interrupted(Exception):
    pass


def _interrupted_surface(obj: Objective, out: Path, dirs: list[Tensor], stop_after: int | None,
                         chunk: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """compute_surface, interrupted by an exception at the ``stop_after``-th evaluation call
    (a kill between two flushed chunks); None runs to the end."""
    original, calls = Objective.evaluate, [0]

    def evaluate(self: Objective, *args: object, **kwargs: object) -> dict[str, Tensor]:
        calls[0] += 1
        if calls[0] == stop_after:
            raise _Interrupted
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Objective, "evaluate", evaluate)
    try:
        compute_surface(obj, out, "-1:1:7", "-1:1:5", directions=dirs, chunk=chunk,
                        show_progress=False)
    except _Interrupted:
        pass
    finally:
        monkeypatch.setattr(Objective, "evaluate", original)


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_surface_finished_in_interrupted_pieces_is_bit_identical_to_one_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strategy: str) -> None:
    """float32, where round-off depends on how the numbers are computed: a file finished after
    four interruptions (resumed with other points per call) equals an uninterrupted one bit for
    bit, and records the strategy and data chunking that produced it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(DIM, 16), nn.ReLU(), nn.Linear(16, CLASSES))
    data = _toy_data(n_train=50)
    obj = Objective(model, data, device="cpu", strategy=strategy, batch_size=20, point_chunk=4)
    dirs = [random_direction(obj.space, obj.theta0, s) for s in (0, 1)]
    whole, pieces = tmp_path / "whole.h5", tmp_path / "pieces.h5"
    _interrupted_surface(obj, whole, dirs, None, None, monkeypatch)
    for stop_after, chunk in ((3, 4), (2, 3), (4, 5), (2, 2), (None, 6)):
        _interrupted_surface(obj, pieces, dirs, stop_after, chunk, monkeypatch)
        if stop_after is not None:
            assert not load_surface(pieces).complete
    a, b = _datasets(whole), _datasets(pieces)
    assert set(a) == set(b) and b["done"].all()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)  # bit for bit
    recorded = load_surface(pieces).attrs["settings"]
    assert (recorded["train.strategy"], recorded["train.batch_size"],
            recorded["train.device"]) == (strategy, 20, "cpu")


def test_resume_with_other_strategy_or_data_chunking_is_refused_naming_it(
        tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    _small_surface(tmp_path, out, batch_size=40, strategy="loop")
    before = out.read_bytes()
    with pytest.raises(LandscapeError, match="train.batch_size: 40 -> 7"):
        _small_surface(tmp_path, out, batch_size=7, strategy="loop")
    with pytest.raises(LandscapeError, match="train.strategy: 'loop' -> 'vmap'"):
        _small_surface(tmp_path, out, batch_size=40, strategy="vmap")
    assert out.read_bytes() == before
    _small_surface(tmp_path, out)  # auto resolves to the same loop and chunk: accepted
    assert load_surface(out).complete


def _small_surface(tmp_path: Path, out: Path, **kwargs) -> None:
    random_surface(_run(tmp_path, _mlp(0)), x="-1:1:3", precision="float64", out=out,
                   show_progress=False, **kwargs)


DAMAGED = r"(truncated|corrupt).*left untouched"  # the message says what and that it was kept


def test_truncated_file_is_refused_with_clear_error_and_left_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    _small_surface(tmp_path, out)
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    before = out.read_bytes()
    with pytest.raises(LandscapeError, match=DAMAGED):
        _small_surface(tmp_path, out)
    with pytest.raises(LandscapeError, match="s.h5"):
        load_surface(out)
    assert out.read_bytes() == before


def test_corrupt_file_is_refused_with_clear_error_and_left_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    out.write_bytes(np.random.default_rng(0).bytes(5000))
    before = out.read_bytes()
    with pytest.raises(LandscapeError, match=DAMAGED):
        _small_surface(tmp_path, out)
    with pytest.raises(LandscapeError):
        load_surface(out)
    assert out.read_bytes() == before


def test_hdf5_file_that_is_not_a_landscape_result_is_refused_and_left_unchanged(
        tmp_path: Path) -> None:
    out = tmp_path / "other.h5"
    with h5py.File(out, "w") as f:
        f["data"] = np.arange(5.0)
    before = out.read_bytes()
    with pytest.raises(LandscapeError, match="not a landscape result"):
        _small_surface(tmp_path, out)
    assert out.read_bytes() == before


def test_file_computed_with_other_settings_is_refused_naming_the_difference(
        tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    _small_surface(tmp_path, out, seed=0)
    before = out.read_bytes()
    with pytest.raises(LandscapeError, match="seed: 0 -> 1"):
        _small_surface(tmp_path, out, seed=1)
    with pytest.raises(LandscapeError, match=r"norm: 'filter' -> 'layer'"):
        _small_surface(tmp_path, out, seed=0, norm="layer")
    with pytest.raises(LandscapeError, match=r"\bx: "):
        random_surface(_run(tmp_path, _mlp(0)), x="-1:1:5", precision="float64", out=out,
                       show_progress=False)
    assert out.read_bytes() == before
    _small_surface(tmp_path, out, seed=1, overwrite=True)
    s = load_surface(out)
    assert s.attrs["seed"] == 1 and s.complete


def test_nonfinite_losses_are_stored_marked_done_and_reported(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    class Scaled(nn.Module):
        """``lin(x) * scale``, NaN where ``scale < 0`` (through a square root)."""

        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 1)
            self.scale = nn.Parameter(torch.ones(1))

        def forward(self, x: Tensor) -> Tensor:
            return self.lin(x) * self.scale + 0.0 * torch.sqrt(self.scale)

    torch.manual_seed(0)
    model = Scaled()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, generator=g), torch.randn(16, 1, generator=g)
    obj = Objective(model, (x, y), loss="mse", precision="float32", strategy="loop")
    direction = torch.zeros(obj.space.numel)
    direction[obj.space.offsets[obj.space.names.index("scale")]] = 1.0  # scale = 1 + t
    coords = [-3.0, 0.0, 1.0, 1e30]
    s = compute_surface(obj, tmp_path / "nf.h5", coords, directions=direction,
                        show_progress=False)
    loss = s.values["train_loss"]
    assert s.done.all()
    assert np.isnan(loss[0]) and np.isposinf(loss[3])
    assert s.n_nonfinite == 2
    for t, value in ((0.0, loss[1]), (1.0, loss[2])):
        with torch.no_grad():
            ref = F.mse_loss(model.lin(x) * (1 + t), y).item()
        assert value == pytest.approx(ref, rel=1e-6)
    assert "2 non-finite" in capsys.readouterr().err
    with h5py.File(tmp_path / "nf.h5", "r") as f:  # stored as they are, done
        assert np.isnan(f["train_loss"][0]) and np.isposinf(f["train_loss"][3])
        assert f["done"][()].all()


# ---------------------------------------------------------------------------------------
# what the reference implementation gets wrong
def test_non_square_grid_is_stored_as_y_rows_by_x_columns_with_dimension_scales(
        tmp_path: Path) -> None:
    model, data = _mlp(1), _toy_data()
    x_data, y_data = data.split("train")
    obj = Objective(model, data, precision="float64")
    theta = _flat(model).double()
    dx, dy = _filter_normalized(model, 0), _filter_normalized(model, 1)
    out = tmp_path / "g.h5"
    s = compute_surface(obj, out, "-1:1:7", "-0.5:0.5:5", directions=[dx, dy],
                        show_progress=False)
    xs, ys = np.linspace(-1, 1, 7), np.linspace(-0.5, 0.5, 5)
    np.testing.assert_array_equal(s.x, xs)
    np.testing.assert_array_equal(s.y, ys)
    assert s.values["train_loss"].shape == (5, 7) and s.done.shape == (5, 7)
    for i in range(5):
        for j in range(7):
            m = _at(model, theta + float(xs[j]) * dx + float(ys[i]) * dy)
            loss, acc = _ref(m, x_data, y_data)
            assert s.values["train_loss"][i, j] == pytest.approx(loss, rel=1e-12), (i, j)
            assert s.values["train_acc"][i, j] == pytest.approx(acc, abs=1e-12), (i, j)
    with h5py.File(out, "r") as f:
        for name in ("train_loss", "train_acc", "done"):
            assert f[name].dims[0][0].name == "/y", name
            assert f[name].dims[1][0].name == "/x", name
        assert f["x"].is_scale and f["y"].is_scale


def test_range_with_zero_endpoint_is_accepted(tmp_path: Path) -> None:
    np.testing.assert_array_equal(parse_range("0:1:5"), [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(parse_range("-1:0:3"), [-1, -0.5, 0])
    run = _run(tmp_path, _mlp(2))
    s = random_surface(run, x="0:1:5", precision="float64", out=tmp_path / "z.h5",
                       show_progress=False)
    assert s.x[0] == 0.0
    assert s.values["train_loss"][0] == pytest.approx(
        _ref(run.model, *run.data.split("train"))[0], rel=1e-12)


def test_centre_point_is_evaluated_when_not_on_the_grid(tmp_path: Path) -> None:
    run = _run(tmp_path, _bn_mlp(6))
    s = random_surface(run, x="-1:1:4", y="-1:1:4", precision="float64",
                       out=tmp_path / "c.h5", show_progress=False)
    assert 0.0 not in s.x and 0.0 not in s.y
    loss, acc = _ref(run.model, *run.data.split("train"))
    assert s.attrs["center_train_loss"] == pytest.approx(loss, rel=1e-12)
    assert s.attrs["center_train_acc"] == pytest.approx(acc, abs=1e-12)


def test_each_direction_gets_its_own_seed_recorded_in_the_file(tmp_path: Path) -> None:
    run = _run(tmp_path, _conv_bn(), data=_conv_data())
    out = tmp_path / "d.h5"
    random_surface(run, x="-1:1:2", y="-1:1:2", seed=5, precision="float64", out=out,
                   show_progress=False)
    with h5py.File(out, "r") as f:
        assert f["directions/x"].attrs["seed"] == 5
        assert f["directions/y"].attrs["seed"] == 6
        dx, dy = f["directions/x"][()], f["directions/y"][()]
    assert not np.allclose(dx, dy)
    np.testing.assert_allclose(dx, _filter_normalized(run.model, 5), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dy, _filter_normalized(run.model, 6), rtol=1e-6, atol=1e-7)


def _conv_data() -> Dataset:
    g = torch.Generator().manual_seed(3)
    return Dataset(name="img", x_train=torch.randn(12, 2, 4, 4, generator=g),
                   y_train=torch.randint(0, CLASSES, (12,), generator=g),
                   x_test=torch.randn(6, 2, 4, 4, generator=g),
                   y_test=torch.randint(0, CLASSES, (6,), generator=g),
                   task="classification", num_outputs=CLASSES, input_shape=(2, 4, 4),
                   spec={"name": "img"}, loss="cross_entropy")


def test_direction_file_of_another_model_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "a.h5"
    run_a = _run(tmp_path, _mlp(0, width=6), "a")
    first = random_surface(run_a, x="-1:1:3", y="-1:1:3", precision="float64", out=out,
                           show_progress=False)
    run_b = _run(tmp_path, _mlp(0, width=7), "b")
    with pytest.raises(LandscapeError, match="does not match"):
        random_surface(run_b, x="-1:1:3", directions_from=out, precision="float64",
                       out=tmp_path / "b.h5", show_progress=False)
    assert not (tmp_path / "b.h5").exists()
    # the same model reuses the stored directions: same values
    again = random_surface(run_a, x="-1:1:3", y="-1:1:3", seed=9, directions_from=out,
                           precision="float64", out=tmp_path / "c.h5", show_progress=False)
    np.testing.assert_allclose(again.values["train_loss"], first.values["train_loss"],
                               rtol=1e-6)
    with h5py.File(out, "r") as f, h5py.File(tmp_path / "c.h5", "r") as g:
        np.testing.assert_array_equal(f["directions/y"][()], g["directions/y"][()])


@pytest.mark.parametrize("orthogonal", [False, True])
def test_cosine_between_the_two_directions_is_recorded(tmp_path: Path,
                                                       orthogonal: bool) -> None:
    out = tmp_path / "cos.h5"
    random_surface(_run(tmp_path, _mlp(3)), x="-1:1:2", y="-1:1:2", orthogonal=orthogonal,
                   precision="float64", out=out, show_progress=False)
    with h5py.File(out, "r") as f:
        dx, dy = f["directions/x"][()].astype(np.float64), f["directions/y"][()].astype(
            np.float64)
        cos = float(f.attrs["cosine_xy"])
    ref = dx @ dy / (np.linalg.norm(dx) * np.linalg.norm(dy))
    assert cos == pytest.approx(ref, abs=1e-6)
    if orthogonal:
        assert abs(cos) < 1e-10
    else:
        assert abs(cos) > 1e-3  # two independent Gaussians are not orthogonal by accident


def test_exact_zero_loss_is_stored_as_done_and_not_recomputed_on_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False).double()
    x = torch.randn(10, 3, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)  # the model fits its data exactly: loss 0 at the origin
    obj = Objective(model, (x, y), loss="mse", precision="float64", strategy="loop")
    direction = torch.randn(3, dtype=torch.float64)
    out = tmp_path / "zero.h5"
    s = compute_surface(obj, out, "-1:1:3", directions=direction, show_progress=False)
    assert s.values["train_loss"][1] == 0.0 and s.done.all()
    assert s.attrs["center_train_loss"] == 0.0
    for t, value in zip((-1.0, 1.0), s.values["train_loss"][[0, 2]]):
        ref = F.mse_loss(x @ (model.weight.detach()[0] + t * direction)[:, None], y).item()
        assert value == pytest.approx(ref, rel=1e-12) and value > 0

    evaluated: list[int] = []
    original = Objective.evaluate

    def counting(self: Objective, points: Tensor, *args, **kwargs) -> dict[str, Tensor]:
        evaluated.append(int(torch.as_tensor(points).reshape(-1, obj.space.numel).shape[0]))
        return original(self, points, *args, **kwargs)

    monkeypatch.setattr(Objective, "evaluate", counting)
    compute_surface(obj, out, "-1:1:3", directions=direction, show_progress=False)
    assert sum(evaluated) == 0  # complete file: nothing recomputed, the zero included
    # a point marked not done is recomputed whatever its stored value; the zero is kept
    with h5py.File(out, "r+") as f:
        f["done"][2] = False
        f["train_loss"][2] = 0.0
    s = compute_surface(obj, out, "-1:1:3", directions=direction, show_progress=False)
    assert sum(evaluated) == 1
    assert s.done.all() and s.values["train_loss"][1] == 0.0 and s.values["train_loss"][2] > 0


def test_train_and_test_split_surfaces_use_each_dataset(tmp_path: Path) -> None:
    run = _run(tmp_path, _mlp(4))
    s = random_surface(run, x="-1:1:3", y="-1:1:3", split="train,test", precision="float64",
                       out=tmp_path / "tt.h5", show_progress=False)
    assert set(s.values) == {"train_loss", "train_acc", "test_loss", "test_acc"}
    with h5py.File(tmp_path / "tt.h5", "r") as f:
        dx, dy = (torch.as_tensor(f[f"directions/{a}"][()]).double() for a in "xy")
    theta = _flat(run.model).double()
    for split in ("train", "test"):
        xs, ys = run.data.split(split)
        loss, acc = _ref(run.model, xs, ys)
        assert s.values[f"{split}_loss"][1, 1] == pytest.approx(loss, rel=1e-12)
        assert s.values[f"{split}_acc"][1, 1] == pytest.approx(acc, abs=1e-12)
        assert s.attrs[f"center_{split}_loss"] == pytest.approx(loss, rel=1e-12)
        corner, _ = _ref(_at(run.model, theta - dx + dy), xs, ys)  # x = -1, y = +1
        assert s.values[f"{split}_loss"][2, 0] == pytest.approx(corner, rel=1e-5)
    assert not np.allclose(s.values["train_loss"], s.values["test_loss"])


def test_one_dimensional_surface_values_hold_only_the_metrics(tmp_path: Path) -> None:
    """A 1D file's ``x`` coordinate has the grid's shape; it is not a metric."""
    s = random_surface(_run(tmp_path, _mlp(0)), x="-1:1:3", precision="float64",
                       out=tmp_path / "one.h5", show_progress=False)
    assert set(s.values) == {"train_loss", "train_acc"}


# ---------------------------------------------------------------------------------------
# trajectories
def _plane_checkpoints(final: nn.Module, coeffs: list[tuple[float, float]], seed: int = 0,
                       off: dict[int, float] | None = None,
                       ) -> tuple[dict[int, nn.Module], Tensor, Tensor, Tensor]:
    """Checkpoints ``final + a u + b v (+ eps w)`` with their own BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    theta = _flat(final).double()
    u, v, w = (torch.randn(theta.numel(), generator=g, dtype=torch.float64) for _ in range(3))
    saved = {}
    for epoch, (a, b) in enumerate(coeffs):
        point = theta + a * u + b * v + (off or {}).get(epoch, 0.0) * w
        m = _at(final, point)
        with torch.no_grad():
            m[1].running_mean.add_(0.1 * (epoch + 1))
            m[1].running_var.mul_(1.0 + 0.2 * epoch)
        saved[epoch] = m
    saved[len(coeffs)] = _at(final)  # the last checkpoint is the final model itself
    return saved, u, v, w


def test_trajectory_in_a_plane_has_zero_residuals_and_coordinates_reproduce_checkpoints(
        tmp_path: Path) -> None:
    final = _at(_bn_mlp(7))
    coeffs = [(1.0, 0.5), (0.6, 0.7), (0.2, 0.3), (0.05, -0.1)]
    saved, _, _, _ = _plane_checkpoints(final, coeffs)
    run = _run(tmp_path, final, saved=saved)
    s = trajectory(run, x="-1:1:3", y="-1:1:3", precision="float64", out=tmp_path / "t.h5",
                   show_progress=False)
    assert s.attrs["kind"] == "trajectory"
    np.testing.assert_array_equal(s.extras["path/epochs"], [0, 1, 2, 3])
    assert np.max(s.extras["path/residuals"]) < 1e-9
    assert np.max(s.extras["path/relative_residuals"]) < 1e-9
    with h5py.File(tmp_path / "t.h5", "r") as f:
        directions = torch.as_tensor(np.stack([f["directions/x"][()],
                                               f["directions/y"][()]])).double()
    np.testing.assert_allclose(directions.norm(dim=1), [1.0, 1.0], rtol=1e-6)
    coords = torch.as_tensor(s.extras["path/coords"])
    theta = _flat(final).double()
    for k, epoch in enumerate(range(4)):
        rebuilt = theta + coords[k] @ directions
        np.testing.assert_allclose(rebuilt, _flat(saved[epoch]).double(), atol=1e-6)
    evr = np.asarray(s.attrs["explained_variance_ratio"])
    assert evr.sum() == pytest.approx(1.0, abs=1e-9)


def test_trajectory_residual_of_an_off_plane_checkpoint_is_its_distance_to_the_pca_plane(
        tmp_path: Path) -> None:
    final = _at(_bn_mlp(8))
    coeffs = [(1.0, 0.5), (0.6, 0.7), (0.2, 0.3), (0.05, -0.1)]
    saved, _, _, _ = _plane_checkpoints(final, coeffs, off={2: 0.05})
    run = _run(tmp_path, final, saved=saved)
    s = trajectory(run, x="-1:1:3", y="-1:1:3", precision="float64", out=tmp_path / "t.h5",
                   show_progress=False)
    theta = _flat(final).double().numpy()
    diffs = np.stack([_flat(saved[e]).double().numpy() - theta for e in range(4)])
    pca = PCA(n_components=2, svd_solver="full").fit(diffs)
    basis = pca.components_  # orthonormal rows spanning the plane through the final model
    projected = diffs @ basis.T @ basis
    distance = np.linalg.norm(diffs - projected, axis=1)
    assert distance[2] > 1e-3
    np.testing.assert_allclose(s.extras["path/residuals"], distance, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(s.extras["path/relative_residuals"],
                               distance / np.linalg.norm(diffs, axis=1), rtol=1e-6, atol=1e-9)
    # least-squares coordinates: the projection onto the plane, whatever the components' signs
    with h5py.File(tmp_path / "t.h5", "r") as f:
        directions = np.stack([f["directions/x"][()], f["directions/y"][()]]).astype(np.float64)
    np.testing.assert_allclose(s.extras["path/coords"] @ directions, projected, atol=1e-6)
    np.testing.assert_allclose(s.attrs["explained_variance_ratio"],
                               pca.explained_variance_ratio_, rtol=1e-8)


def test_trajectory_stores_each_checkpoints_own_loss_with_its_own_buffers(
        tmp_path: Path) -> None:
    final = _at(_bn_mlp(9))
    saved, _, _, _ = _plane_checkpoints(final, [(0.3, 0.1), (0.2, 0.2), (0.1, -0.1)],
                                        off={0: 0.02})
    run = _run(tmp_path, final, saved=saved)
    s = trajectory(run, x="-1:1:3", y="-1:1:3", split="train,test", precision="float64",
                   out=tmp_path / "t.h5", show_progress=False)
    for split in ("train", "test"):
        xs, ys = run.data.split(split)
        for k, epoch in enumerate(s.extras["path/epochs"]):
            loss, acc = _ref(saved[int(epoch)], xs, ys)
            assert s.extras[f"path/{split}_loss"][k] == pytest.approx(loss, rel=1e-12)
            assert s.extras[f"path/{split}_acc"][k] == pytest.approx(acc, abs=1e-12)
            # the buffers matter: the same weights with the final model's statistics differ
            other = _at(saved[int(epoch)], buffers=_float_buffers(final))
            assert abs(_ref(other, xs, ys)[0] - loss) > 1e-4
    # the surface under the path is a slice through the final model
    assert s.values["train_loss"][1, 1] == pytest.approx(
        _ref(final, *run.data.split("train"))[0], rel=1e-12)


def test_trajectory_needs_three_checkpoints_besides_the_final_model(tmp_path: Path) -> None:
    """Centring leaves T - 1 dimensions: two checkpoints do not define a plane."""
    final = _at(_bn_mlp(10))
    saved, _, _, _ = _plane_checkpoints(final, [(0.3, 0.1), (0.5, -0.2)])
    with pytest.raises(LandscapeError, match="at least 3"):
        trajectory(_run(tmp_path, final, saved=saved), x="-1:1:3", y="-1:1:3",
                   out=tmp_path / "t.h5", show_progress=False)


def test_pca_of_a_collinear_trajectory_is_refused() -> None:
    final = torch.zeros(6, dtype=torch.float64)
    line = torch.arange(1.0, 5.0, dtype=torch.float64)[:, None] * torch.ones(6)
    with pytest.raises(LandscapeError, match="fewer than 2 dimensions"):
        pca_directions(line, final)


# ---------------------------------------------------------------------------------------
# ranges
@pytest.mark.parametrize("text", ["abc", "-1:1", "-1:1:x", "1:-1:5", "0:0:5", "-1:1:0",
                                  "0:1:1", "-1:1:5:7", "nan:1:3", ""])
def test_parse_range_rejects_bad_text_and_empty_intervals(text: str) -> None:
    with pytest.raises(LandscapeError, match="range"):
        parse_range(text)


def test_parse_range_gives_evenly_spaced_points_including_both_ends() -> None:
    x = parse_range("-1:1:51")   # both ends, steps of 0.04, zero on the grid
    assert x.shape == (51,) and x[0] == -1.0 and x[-1] == 1.0 and x[25] == 0.0
    np.testing.assert_allclose(np.diff(x), 0.04, rtol=1e-12)
    np.testing.assert_array_equal(parse_range("-2:3:2"), [-2.0, 3.0])
    np.testing.assert_array_equal(parse_range("0.5:0.5:1"), [0.5])
    assert parse_range("-1:1:4").dtype == np.float64
    assert math.isclose(parse_range("-1:1:3")[1], 0.0, abs_tol=0)


def test_a_flush_writes_only_the_rows_of_its_new_points(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, generator=g), torch.randint(0, 2, (16,), generator=g)
    torch.manual_seed(0)
    obj = Objective(nn.Linear(3, 2), (x, y), precision="float64", device="cpu")
    dirs = [random_direction(obj.space, obj.theta0, s) for s in (0, 1)]
    written: list[int] = []
    real = h5py.Dataset.__setitem__

    def counting(self: h5py.Dataset, sel: object, value: object) -> None:
        if self.name.lstrip("/") in ("train_loss", "done"):
            written.append(int(np.asarray(value).size))
        real(self, sel, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", counting)
    out = tmp_path / "s.h5"
    compute_surface(obj, out, "-1:1:9", "-1:1:9", directions=dirs, chunk=4,
                    show_progress=False)
    monkeypatch.setattr(h5py.Dataset, "__setitem__", real)
    # 81 points in chunks of 4 touch at most 2 rows of 9: never the whole 81-point grid
    assert written and max(written) <= 2 * 9 < 81
    fresh = tmp_path / "fresh.h5"
    compute_surface(obj, fresh, "-1:1:9", "-1:1:9", directions=dirs, show_progress=False)
    np.testing.assert_array_equal(load_surface(out).values["train_loss"],
                                  load_surface(fresh).values["train_loss"])
    assert load_surface(out).done.all()
