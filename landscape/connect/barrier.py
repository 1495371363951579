"""Loss and error barriers along a path between two minima, evaluated as surface points.

The barrier (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket
Hypothesis") of a path ``phi(t)`` from ``a = phi(0)`` to ``b = phi(1)`` is

    ``sup_t L(phi(t)) - ((1 - t) L(a) + t L(b))``

for the loss and for the error (``1 - accuracy``), the supremum taken over the evaluated
``t`` (default 25 evenly spaced points, endpoints included). The path is the straight line,
or a trained curve (:mod:`landscape.connect.curves`), optionally after permuting B's hidden
units onto A's (:mod:`landscape.connect.align`).

Path points are surface points: they go through
:func:`landscape.surface.compute.compute_surface` on the plane ``a + u (b - a) + v (c - a)``
(kind ``path``, the ``x`` coordinate is ``t``), so they are batched, stored, flushed and
resumed like any surface. BatchNorm networks: interpolated running statistics are wrong for
the interpolated weights, so by default (``bn_stats="reset"``) every path point gets its
statistics recomputed on the training data (the REPAIR-style reset of Jordan et al. 2023:
running statistics zeroed, then one pass in train mode with a cumulative average, batches
of ``bn_batch`` samples; one extra forward pass over the training split per point);
``bn_stats="interpolate"`` interpolates them like the weights. The choice is recorded in the
file's settings.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import gridfile, store
from landscape.connect.align import METHODS, Alignment, align
from landscape.connect.curves import CURVES, Curve, coefficients, fit_curve
from landscape.errors import LandscapeError, unknown_name
from landscape.objective import Objective
from landscape.params import ParamSpace
from landscape.sources import Source, call_model
from landscape.surface.compute import Surface, compute_surface, load_surface

BN_STATS = ("reset", "interpolate")
SPLITS = ("train", "test")


def barrier_of(t: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """``(barrier, t at the supremum)`` of ``values`` along ``t``, where ``t`` holds 0 and 1:
    ``max_t values(t) - ((1 - t) values(0) + t values(1))``."""
    t, values = np.asarray(t, dtype=float), np.asarray(values, dtype=float)
    ends = [np.flatnonzero(np.isclose(t, e)) for e in (0.0, 1.0)]
    if not all(len(e) for e in ends):
        raise LandscapeError("a barrier needs the path's endpoints t = 0 and t = 1")
    v0, v1 = values[ends[0][0]], values[ends[1][0]]
    excess = values - ((1 - t) * v0 + t * v1)
    k = int(np.nanargmax(excess))
    return float(excess[k]), float(t[k])


class BatchNormReset:
    """Buffers with every BatchNorm's running statistics recomputed at given points on
    training data: ``reset(points[K, P]) -> {buffer name: [K, ...]}``. Cost: one forward
    pass (train-mode BatchNorm, everything else in eval mode) over the data per point."""

    def __init__(self, model: nn.Module, train_data: Any, *, device: torch.device,
                 dtype: torch.dtype, batch_size: int = 512) -> None:
        self.model = copy.deepcopy(model).to(device, dtype).eval()
        self.space = ParamSpace.from_model(self.model)
        self.norms = [m for m in self.model.modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        for m in self.norms:
            m.momentum = None  # the cumulative average over the pass
        self.source = Source(train_data, device, dtype)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, points: Tensor) -> dict[str, Tensor]:
        params = dict(self.model.named_parameters())
        rows = []
        for theta in points:
            for name, view in self.space.unflatten(theta).items():
                params[name].copy_(view)
            for m in self.norms:
                m.reset_running_stats()
                m.train()
            try:
                for x, _ in self.source.batches(self.batch_size):
                    call_model(self.model, x)
            finally:
                for m in self.norms:
                    m.eval()
            rows.append({k: v.clone() for k, v in self.model.named_buffers()})
        return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


@dataclass
class ConnectPath:
    """A stored path: ``t``, values per ``<split>_<metric>``, and the barriers per
    ``<split>_loss`` / ``<split>_error`` with the ``t`` where each is reached."""

    surface: Surface
    barriers: dict[str, float]
    argmax: dict[str, float]

    @property
    def t(self) -> np.ndarray:
        return self.surface.x


def load_path(path: str | Path) -> ConnectPath:
    """Read a path file written by :func:`barrier` and compute its barriers."""
    return _summarized(load_surface(path), path)


def _summarized(surface: Surface, path: str | Path) -> ConnectPath:
    """The barriers of a loaded path."""
    if surface.attrs.get("kind") != "path":
        raise LandscapeError(f"{path}: a {surface.attrs.get('kind')} file, not a path")
    if not surface.complete:
        raise LandscapeError(f"{path}: the path is not complete; run the command again")
    barriers, argmax = {}, {}
    for name, values in surface.values.items():
        split, metric = name.split("_", 1)
        key, v = ((f"{split}_error", 1 - values) if metric == "acc"
                  else (name, values))
        barriers[key], argmax[key] = barrier_of(surface.x, v)
    return ConnectPath(surface, barriers, argmax)


def _split_sources(data: Any) -> dict[str, Any]:
    """``{split: data for Objective}`` from a Dataset (``split()``), a mapping or one source
    (the training split)."""
    if hasattr(data, "split") and callable(data.split):
        return {s: data for s in SPLITS if s == "train" or _has_split(data, s)}
    if isinstance(data, Mapping):
        if "train" not in data:
            raise LandscapeError("data needs a 'train' split")
        return {s: data[s] for s in SPLITS if s in data}
    if data is None:
        raise LandscapeError("data= is needed (a dataset, a source, or {'train': ..., "
                             "'test': ...})")
    return {"train": data}


def _has_split(data: Any, split: str) -> bool:
    try:
        part = data.split(split)
    except (LandscapeError, KeyError, ValueError):
        return False
    return part is not None


def _raw(data: Any, split: str) -> Any:
    return data.split(split) if hasattr(data, "split") and callable(data.split) else data


def barrier(model_a: nn.Module, model_b: nn.Module, *, data: Any,
            align: str | None = None, curve: str | Curve | None = None,
            points: int = 25, split: str | tuple[str, ...] = ("train", "test"),
            bn_stats: str = "reset", bn_batch: int = 512, out: str | Path | None = None,
            overwrite: bool = False, seed: int = 0, curve_options: Mapping | None = None,
            settings: Mapping[str, Any] | None = None, attrs: Mapping[str, Any] | None = None,
            show_progress: bool = True, **engine: Any) -> ConnectPath:
    """Loss and error along the path from ``model_a`` to ``model_b`` and its barriers.

    Args:
        data: a dataset (``landscape.load_dataset``), ``{"train": ..., "test": ...}`` or one
            source (train only): every point is evaluated on each split present.
        align: None, ``"weights"`` or ``"activations"``: permute B's units onto A's first.
        curve: None (the straight line), ``"bezier"`` / ``"polychain"`` (trained here with
            ``curve_options`` for :func:`fit_curve`) or a trained :class:`Curve`.
        points: evenly spaced ``t`` in ``[0, 1]``, endpoints included.
        bn_stats: ``"reset"`` (default) or ``"interpolate"``; see the module docstring;
            ``bn_batch``: samples per batch of the reset pass.
        seed: the order in which weight matching visits the layers; the curve's draws.
        out: the HDF5 file (default ``outputs/connect.h5``); an existing one with the same
            settings is resumed.
        engine: :class:`Objective` options (``precision``, ``device``, ``batch_size``...).

    Cost: ``points`` forward passes over each split (plus one over the training split per
    point for a BatchNorm reset), the alignment and the curve training.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
        >>> a = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> import tempfile, os
        >>> out = os.path.join(tempfile.mkdtemp(), "p.h5")
        >>> barrier(a, a, data=(x, y), out=out, points=5, show_progress=False).barriers
        {'train_loss': 0.0, 'train_error': 0.0}
    """
    if align is not None and align not in METHODS:
        raise unknown_name("alignment", align, METHODS)
    if bn_stats not in BN_STATS:
        raise unknown_name("BatchNorm statistics rule", bn_stats, BN_STATS)
    if isinstance(curve, str) and curve not in CURVES:
        raise unknown_name("curve", curve, CURVES)
    if points < 2:
        raise LandscapeError(f"a path needs at least 2 points, got {points}")
    splits = (split,) if isinstance(split, str) else tuple(split)
    sources = {s: v for s, v in _split_sources(data).items() if s in splits}
    objs = {s: Objective(model_a, v, split=s, **engine) for s, v in sources.items()}
    first = next(iter(objs.values()))
    extras: dict[str, np.ndarray] = {}
    aligned: Alignment | None = None
    if align is not None:
        train_x = _inputs(first)
        aligned = align_models(model_a, model_b, align, train_x, seed)
        model_b = aligned.model
        extras = {f"perm/{g}": p.numpy() for g, p in aligned.perms.items()}
    a = first.theta0
    b = first.space.flatten(model_b).to(a)
    if isinstance(curve, str):
        curve = fit_curve(model_a, model_b, data=sources["train"], kind=curve, seed=seed,
                          show_progress=show_progress, **(curve_options or {}), **engine)
    elif curve is not None and not (torch.equal(curve.a.to(a), a)
                                    and torch.equal(curve.b.to(a), b)):
        raise LandscapeError("the curve was trained between other endpoints (fit it on these "
                             "models, after the same alignment)")
    dirs = [b - a] + ([curve.c.to(a) - a] if curve is not None else [])
    kind = curve.kind if curve is not None else "line"
    if curve is not None:
        extras["curve/history"] = np.asarray(curve.history)
    has_bn = first.has_bn
    rule = bn_stats if has_bn else None

    def embed(t: Tensor) -> Tensor:
        return coefficients(kind, t[:, 0]) if curve is not None else t

    point_buffers = None
    buffer_kw: dict[str, Any] = {}
    if rule == "reset":
        reset = BatchNormReset(model_a, _raw(sources["train"], "train"), device=first.device,
                               dtype=first.dtype, batch_size=bn_batch)
        direction_stack = torch.stack(dirs)

        def point_buffers(uv: Tensor) -> dict[str, Tensor]:
            return reset(a + uv.to(a) @ direction_stack)
    elif rule == "interpolate":
        if curve is not None:
            raise LandscapeError("interpolated BatchNorm statistics are defined on the line "
                                 "only; use bn_stats='reset' for a curve")
        buf_a = {k: v.detach().double() for k, v in model_a.named_buffers()}
        buf_b = {k: v.detach().double() for k, v in model_b.named_buffers()}
        buffer_kw = {"buffer_origin": buf_a, "buffer_directions": [
            {k: buf_b[k] - buf_a[k] for k in buf_a if torch.is_floating_point(buf_a[k])}]}
    path_settings = {
        **(settings or {}), "path": kind, "align": align, "bn_stats": rule,
        "bn_batch": bn_batch if rule == "reset" else None, "seed": seed,
        "perms_sha": store.values_digest(list(aligned.perms.values())) if aligned else None}
    t = np.linspace(0.0, 1.0, points)
    out = out or Path("outputs") / "connect.h5"
    surface = compute_surface(
        objs, out, t, directions=dirs, kind="path",
        embed=embed if curve is not None else None, point_buffers=point_buffers,
        settings=path_settings,
        direction_attrs=[{"to": "b"}, {"to": "control point"}][:len(dirs)],
        attrs={**(attrs or {}), "path": kind, "align": align, "bn_stats": rule},
        extras=extras, overwrite=overwrite, show_progress=show_progress, **buffer_kw)
    return _summarized(surface, out)


def _inputs(obj: Objective) -> list[Any]:
    """The training inputs of ``obj`` in batches of at most 1024 (for activation matching
    and to derive a permutation structure)."""
    x = obj.x
    n = obj.n
    from landscape.sources import take

    return [take(x, slice(s, s + 1024)) for s in range(0, n, 1024)]


def align_models(model_a: nn.Module, model_b: nn.Module, method: str, inputs: list[Any],
                 seed: int = 0) -> Alignment:
    """:func:`landscape.connect.align.align` on CPU float32 copies (the engine's device and
    precision do not change the permutation found)."""
    cpu = [copy.deepcopy(m).float().cpu().eval() for m in (model_a, model_b)]
    batches = [(x.float() if x.is_floating_point() else x).cpu() if isinstance(x, Tensor)
               else x for x in inputs]
    return align(cpu[0], cpu[1], method=method, data=batches, seed=seed)


def curve_plane(model_a: nn.Module, path_file: str | Path, *, data: Any, points: int = 21,
                margin: float = 0.25, split: str | tuple[str, ...] = "train",
                bn_batch: int = 512, out: str | Path | None = None, overwrite: bool = False,
                show_progress: bool = True, **engine: Any) -> Surface:
    """The plane through A, B and the control point of a stored curved path, on an
    orthonormal basis (Garipov et al.'s figure 1): ``x`` along ``b - a``, ``y`` along the
    control point's component orthogonal to it, both in units of parameter distance, with
    ``points`` x ``points`` values over the triangle's extent plus ``margin`` on each side.
    The curve's plane coordinates are stored as ``path/coords`` (A, B, C as
    ``path/endpoints``). BatchNorm statistics follow the path file's rule. Cost:
    ``points**2`` forward passes per split (plus the BatchNorm resets).
    """
    with store.open_result(path_file, kind="path", validate=gridfile.validate_grid) as f:
        origin = torch.as_tensor(f["origin"][()]).double()
        ab = torch.as_tensor(f["directions"]["x"][()]).double()
        if "y" not in f["directions"]:
            raise LandscapeError(f"{path_file}: a straight path has no plane; fit a curve")
        ac = torch.as_tensor(f["directions"]["y"][()]).double()
        settings = store.read_settings(f)
        t = f["x"][()]
    u = ab / ab.norm()
    v = ac - (ac @ u) * u
    if float(v.norm()) == 0.0:
        raise LandscapeError(f"{path_file}: the control point lies on the line through A, B")
    v = v / v.norm()
    uv = coefficients(settings["path"], torch.as_tensor(t))
    curve = uv[:, :1] * ab + uv[:, 1:] * ac
    coords = torch.stack([curve @ u, curve @ v], -1).numpy()
    corners = np.array([[0.0, 0.0], [float(ab @ u), 0.0], [float(ac @ u), float(ac @ v)]])
    span = np.concatenate([coords, corners])
    lo, hi = span.min(0), span.max(0)
    pad = margin * (hi - lo).max()
    x = np.linspace(lo[0] - pad, hi[0] + pad, points)
    y = np.linspace(lo[1] - pad, hi[1] + pad, points)
    splits = (split,) if isinstance(split, str) else tuple(split)
    sources = {s: d for s, d in _split_sources(data).items() if s in splits}
    objs = {s: Objective(model_a, d, split=s, **engine) for s, d in sources.items()}
    first = next(iter(objs.values()))
    dirs = [u.to(first.theta0), v.to(first.theta0)]
    point_buffers = None
    if first.has_bn and settings.get("bn_stats") == "reset":
        reset = BatchNormReset(model_a, _raw(sources["train"], "train"), device=first.device,
                               dtype=first.dtype, batch_size=bn_batch)
        base, stack = origin.to(first.theta0), torch.stack(dirs)

        def point_buffers(c: Tensor) -> dict[str, Tensor]:
            return reset(base + c.to(base) @ stack)
    elif first.has_bn:
        raise LandscapeError("the plane of a BatchNorm network needs bn_stats='reset'")
    return compute_surface(objs, out or Path("outputs") / "connect_plane.h5", x, y,
                           directions=dirs, origin=origin.to(first.theta0), kind="surface",
                           point_buffers=point_buffers,
                           settings={"path_file_settings": settings, "margin": margin},
                           extras={"path/coords": coords, "path/endpoints": corners,
                                   "path/t": np.asarray(t)},
                           attrs={"path": settings["path"], "source": str(path_file)},
                           overwrite=overwrite, show_progress=show_progress)


def connect_runs(run_a: Any, run_b: Any, *, command: str | None = None, **options: Any,
            ) -> ConnectPath:
    """:func:`barrier` between two trained runs (directories or loaded runs), on the data of
    ``run_a``; the endpoints are recorded in the file's settings and attributes."""
    from landscape.runs import as_run

    run_a, run_b = as_run(run_a), as_run(run_b)
    ends = [str(run_a.path), str(run_b.path)]
    model = (getattr(run_a, "info", {}) or {}).get("model")
    return barrier(run_a.model, run_b.model, data=run_a.data,
                   settings={"endpoints": ends, "model": model},
                   attrs={"endpoints": ends, "command": command}, **options)
