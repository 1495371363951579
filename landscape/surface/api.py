"""Surfaces of trained runs: random planes, interpolations, planes through three solutions,
and training trajectories on their PCA plane (Li et al. 2018), each in one HDF5 file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape import gridfile, store
from landscape.errors import LandscapeError
from landscape.objective import Objective
from landscape.params import ParamSpace
from landscape.runs import as_run
from landscape.surface import curvature
from landscape.surface.compute import Surface, compute_surface
from landscape.surface.directions import orthogonalize, pca_directions, random_direction
from landscape.surface.grid import parse_range

SPLITS = ("train", "test")


def _splits(split: str | Sequence[str]) -> list[str]:
    names = [s.strip() for s in split.split(",")] if isinstance(split, str) else list(split)
    bad = [s for s in names if s not in SPLITS]
    if bad or not names:
        raise LandscapeError(f"unknown split(s) {bad}; choose from {', '.join(SPLITS)}")
    return names


def _objectives(run: Any, split: str | Sequence[str], engine: dict[str, Any],
                ) -> dict[str, Objective]:
    run = as_run(run)
    return {s: Objective.from_run(run, split=s, **engine) for s in _splits(split)}


def _run_settings(run: Any) -> dict[str, Any]:
    info = getattr(run, "info", {}) or {}
    return {"model": info.get("model", run.config.get("model")),
            "dataset": getattr(run.data, "spec", None)}


def _default_out(run: Any, kind: str) -> Path:
    return Path("outputs") / f"{Path(run.path).name}_{kind}.h5"


def _buffers(model: torch.nn.Module) -> dict[str, Tensor]:
    """The model's buffers, floating ones in float64 so that interpolated endpoints are exact."""
    return {k: v.detach().double() if torch.is_floating_point(v) else v.detach().clone()
            for k, v in model.named_buffers()}


def _same_space(a: ParamSpace, b: ParamSpace, what: str) -> None:
    if a != b:
        raise LandscapeError(f"{what} has a different architecture (parameter layout) "
                             "from the first run")


def _float_buffer_delta(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: b[k] - a[k] for k in a if torch.is_floating_point(a[k])}


def read_directions(path: str | Path, numel: int) -> list[Tensor]:
    """Directions stored in a grid file (a surface, ...), checked against the model's parameter
    count."""
    with store.open_result(path, gridfile.KINDS, validate=gridfile.validate_grid) as f:
        if "directions" not in f:
            raise LandscapeError(f"{path}: holds no directions")
        dirs = [torch.as_tensor(f["directions"][a][()]) for a in ("x", "y") if a in f["directions"]]
    for d in dirs:
        if d.numel() != numel:
            raise LandscapeError(f"{path}: direction of length {d.numel()} does not match the "
                                 f"model's {numel} parameters")
    return dirs


def random_surface(run: Any, *, data: Any = None, x: Any = "-1:1:51", y: Any = None,
                   norm: str = "filter", ignore: str = "biasbn", seed: int = 0,
                   orthogonal: bool = False,
                   directions_from: str | Path | None = None, split: str = "train",
                   out: str | Path | None = None, overwrite: bool = False,
                   show_progress: bool = True, command: str | None = None,
                   directions: str | Sequence[str] = "random",
                   hessian: str | Path | None = None, rise: float | None = None,
                   **engine: Any) -> Surface:
    """1D curve (``y=None``) or 2D surface around a trained run along random or curvature
    directions.

    The x direction is drawn with ``seed`` and the y direction with ``seed + 1``, each
    normalized by ``norm`` (``filter`` by default, Li et al. 2018); ``orthogonal`` removes the
    y direction's component along x. ``directions_from`` reuses the directions of an existing
    surface file instead. ``directions``: one kind per axis, ``"random"`` or ``"hessian"``
    (``"hessian,random"``; one name serves both axes): the n-th ``hessian`` axis is the n-th
    top Hessian eigenvector at the centre (a unit vector: one unit of the coordinate is an L2
    step of 1 in parameter space; :mod:`landscape.surface.curvature`), computed on the train
    split (or the first split) or read from ``hessian``, a ``landscape hessian`` file of the
    same weights. ``rise``: instead of the ranges' MIN:MAX, each axis spans ``[-T, T]`` (NUM
    points kept) where the loss first rises by ``rise`` above the centre (a line search,
    :func:`~landscape.surface.curvature.extent_for_rise`); ``T`` is stored as the direction's
    ``extent``. ``engine`` goes to :class:`Objective` (``bn``, ``precision``,
    ``device``, ``batch_size``, ``loss``). ``run`` may also be a plain ``nn.Module`` with
    ``data``: one source (the ``"train"`` split) or ``{"train": ..., "test": ...}``; ``out``
    then defaults to ``outputs/model_surface.h5``. Cost: one forward pass per point and split,
    plus Lanczos HVPs for Hessian directions and about 30 forward passes per axis for ``rise``.
    """
    if isinstance(run, torch.nn.Module):
        sources = data if isinstance(data, dict) and set(data) <= set(SPLITS) else {"train": data}
        objs = {s: Objective(run, sources[s], **engine) for s in _splits(split)
                if s in sources} if data is not None else {}
        if not objs:
            raise LandscapeError(f"a {type(run).__name__} model needs data= for the split(s) "
                                 f"{split}")
        run = SimpleNamespace(path="model", config={"model": type(run).__qualname__}, data=None,
                              info={})
    else:
        run = as_run(run)
        objs = _objectives(run, split, engine)
    first = next(iter(objs.values()))
    main = objs.get("train", first)
    theta, n_dirs = first.theta0, 1 if y is None else 2
    kinds = curvature.parse_kinds(directions, n_dirs)
    if directions_from is not None:
        if "hessian" in kinds:
            raise LandscapeError("Hessian directions are computed or read with hessian=, not "
                                 "taken from a surface file")
        dirs = read_directions(directions_from, first.space.numel)
        if len(dirs) < n_dirs:
            raise LandscapeError(f"{directions_from}: holds {len(dirs)} direction(s), "
                                 f"{n_dirs} needed")
        dirs = [d.to(theta) for d in dirs[:n_dirs]]
        d_attrs = [{"source": str(directions_from)}] * n_dirs
    else:
        eig_dirs, eig_attrs = (curvature.hessian_directions(
            main, kinds.count("hessian"), hessian_file=hessian) if "hessian" in kinds
            else ([], []))
        dirs, d_attrs = [], []
        for i, kind in enumerate(kinds):
            if kind == "hessian":
                dirs.append(eig_dirs[kinds[:i].count("hessian")])
                d_attrs.append(eig_attrs[kinds[:i].count("hessian")])
            else:
                dirs.append(random_direction(first.space, theta, seed + i, norm, ignore))
                d_attrs.append({"kind": "random", "seed": seed + i, "norm": norm,
                                "ignore": ignore, "unit": curvature.UNITS["random"]})
        if orthogonal and n_dirs == 2:
            dirs[1] = orthogonalize(dirs[0], dirs[1])
    main_split = next(s for s, o in objs.items() if o is main)
    if rise is not None:
        extents = [curvature.extent_for_rise(main, d, rise) for d in dirs]
        x = _symmetric(x, extents[0])
        y = None if y is None else _symmetric(y, extents[1])
        d_attrs = [{**a, "extent": t} for a, t in zip(d_attrs, extents)]
    settings = {**_run_settings(run), "norm": norm, "ignore": ignore, "seed": seed,
                "orthogonal": orthogonal}
    if set(kinds) != {"random"} or rise is not None:  # files of random grids stay resumable
        settings.update(directions=kinds, rise=rise, hessian=hessian and str(hessian))
    return compute_surface(objs, out or _default_out(run, "surface"), x, y, directions=dirs,
                           settings=settings, direction_attrs=d_attrs,
                           attrs={"run": str(run.path), "command": command, "seed": seed,
                                  "directions": kinds, "rise": rise,
                                  "rise_metric": None if rise is None else
                                  f"{main_split}_loss"},
                           overwrite=overwrite, show_progress=show_progress)


def _symmetric(text: Any, extent: float) -> np.ndarray:
    """``[-extent, extent]`` with the number of points of range ``text``."""
    return np.linspace(-extent, extent, len(parse_range(text)))


def interpolate(run_a: Any, run_b: Any, *, x: Any = "-0.5:1.5:101", split: str = "train",
                out: str | Path | None = None, overwrite: bool = False,
                show_progress: bool = True, command: str | None = None,
                **engine: Any) -> Surface:
    """Loss along ``theta_a + t (theta_b - theta_a)``, buffers interpolated the same way.

    ``t = 0`` and ``t = 1`` reproduce each model exactly, BatchNorm statistics included
    (Goodfellow et al. 2015; Keskar et al. 2017 Fig. 3). Every point is evaluated on the data
    of ``run_a``. Cost: one forward pass per point.
    """
    return _affine(run_a, [run_b], x, None, split, out, overwrite, show_progress, command,
                   "interpolation", engine)


def plane(run_a: Any, run_b: Any, run_c: Any, *, x: Any = "-0.5:1.5:41",
          y: Any = "-0.5:1.5:41", split: str = "train", out: str | Path | None = None,
          overwrite: bool = False, show_progress: bool = True, command: str | None = None,
          **engine: Any) -> Surface:
    """The plane through three solutions: A at (0, 0), B at (1, 0), C at (0, 1).

    Directions are ``theta_b - theta_a`` and ``theta_c - theta_a`` (buffers likewise), so each
    solution is reproduced exactly; their cosine is stored as ``cosine_xy``.
    """
    return _affine(run_a, [run_b, run_c], x, y, split, out, overwrite, show_progress, command,
                   "plane", engine)


def _affine(run_a: Any, others: list[Any], x: Any, y: Any, split: str, out: Any,
            overwrite: bool, show_progress: bool, command: str | None, kind: str,
            engine: dict[str, Any]) -> Surface:
    run_a = as_run(run_a)
    others = [as_run(r) for r in others]
    objs = _objectives(run_a, split, engine)
    first = next(iter(objs.values()))
    buf_a = _buffers(run_a.model)
    dirs, buf_dirs = [], []
    for r in others:
        _same_space(first.space, ParamSpace.from_model(r.model), str(r.path))
        dirs.append(first.space.flatten(r.model).to(first.theta0) - first.theta0)
        buf_dirs.append(_float_buffer_delta(buf_a, _buffers(r.model)))
    settings = {**_run_settings(run_a), "endpoints": [str(r.path) for r in [run_a, *others]]}
    return compute_surface(objs, out or _default_out(run_a, kind), x, y, directions=dirs,
                           kind=kind, buffer_origin=buf_a, buffer_directions=buf_dirs,
                           direction_attrs=[{"to": str(r.path)} for r in others],
                           settings=settings,
                           attrs={"run": str(run_a.path), "command": command,
                                  "endpoints": [str(r.path) for r in [run_a, *others]]},
                           overwrite=overwrite, show_progress=show_progress)


def _auto_range(values: np.ndarray, num: int = 41) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    span = max(hi - lo, 1e-3 * max(abs(lo), abs(hi), 1.0))
    return np.linspace(lo - 0.25 * span, hi + 0.25 * span, num)


def trajectory(run: Any, *, x: Any = None, y: Any = None, split: str = "train",
               out: str | Path | None = None, overwrite: bool = False,
               show_progress: bool = True, command: str | None = None,
               **engine: Any) -> Surface:
    """The training path on the PCA plane of its checkpoints, over the loss surface there.

    PCA of ``theta_i - theta_final`` over the saved checkpoints (Li et al. 2018, Sec. 7); the
    path's coordinates by least squares with each checkpoint's residual off the plane; the true
    loss of each checkpoint (its own parameters and buffers) stored beside the surface, since the
    surface is a slice through the final model and can differ from the path's own loss.
    ``x``/``y`` default to the path's extent plus a 25% margin, 41 points each.
    """
    run = as_run(run)
    objs = _objectives(run, split, engine)
    first = next(iter(objs.values()))
    final = first.theta0
    ckpts = [(e, run.load_checkpoint(e)) for e, _ in run.checkpoints()]
    thetas = [(e, first.space.flatten(m).to(final), m) for e, m in ckpts]
    thetas = [t for t in thetas if not torch.equal(t[1], final)]
    if len(thetas) < 3:
        raise LandscapeError(f"run {run.path} has {len(thetas)} checkpoint(s) besides the final "
                             "model; a trajectory needs at least 3 (train with --save-every 1)")
    traj = torch.stack([t for _, t, _ in thetas])
    pca = pca_directions(traj, final)
    coords = pca.coords.numpy()
    xs = _auto_range(coords[:, 0]) if x is None else parse_range(x)
    ys = _auto_range(coords[:, 1]) if y is None else parse_range(y)
    extras: dict[str, np.ndarray] = {
        "path/coords": coords, "path/epochs": np.array([e for e, _, _ in thetas]),
        "path/residuals": pca.residuals.numpy(),
        "path/relative_residuals": pca.relative_residuals.numpy()}
    floating = [k for k, v in first.buffers.items() if torch.is_floating_point(v)]
    bufs = {k: torch.stack([dict(m.named_buffers())[k] for _, _, m in thetas]) for k in floating}
    for s, o in objs.items():
        for m, v in o.evaluate(traj, bufs).items():
            extras[f"path/{s}_{m}"] = v.numpy()
    settings = {**_run_settings(run), "checkpoints": [e for e, _, _ in thetas]}
    evr = pca.explained_variance_ratio.tolist()
    return compute_surface(objs, out or _default_out(run, "trajectory"), xs, ys,
                           directions=list(pca.directions), kind="trajectory",
                           settings=settings, extras=extras,
                           direction_attrs=[{"pca_component": i, "explained_variance_ratio": r}
                                            for i, r in enumerate(evr)],
                           attrs={"run": str(run.path), "command": command,
                                  "explained_variance_ratio": evr},
                           overwrite=overwrite, show_progress=show_progress)
