"""Evaluate a 1D or 2D grid of parameter points and keep it in a resumable HDF5 file.

The point at grid index ``(i, j)`` is ``origin + x[j] * directions[0] + y[i] * directions[1]``.
Values are stored as ``[len(y), len(x)]`` arrays (``[len(x)]`` in 1D), one per split and
metric (``train_loss``, ``test_acc``, ...), NaN where not yet computed, with a ``done`` mask.
Each chunk of points is written and flushed before the next is computed, so a killed run
loses at most one chunk, and re-running the same computation continues where it stopped. The
evaluation strategy, data chunk size and device type are part of the settings hash, so a
resumed file is bit-identical to an uninterrupted one and a resume with other chunking is
refused. After an out-of-memory halving (:class:`landscape.evaluate.Evaluator`) the file
records the halved chunking and every point is computed with it (those done before are
computed again); a resume takes the halved chunking it records. (Under ``torchrun``, with
the points split among ranks, each rank halves on its own and the file keeps its settings.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from landscape import distributed, gridfile, store
from landscape.errors import LandscapeError
from landscape.objective import Objective
from landscape.progress import progress
from landscape.surface.directions import cosine
from landscape.surface.grid import parse_range


@dataclass
class Surface:
    """A stored surface: coordinates, values per ``<split>_<metric>``, the ``done`` mask."""

    path: Path
    x: np.ndarray
    y: np.ndarray | None
    values: dict[str, np.ndarray]
    done: np.ndarray
    attrs: dict[str, Any]
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    def rise(self, metric: str = "train_loss", at: float = 0.5) -> float:
        """Mean increase of ``metric`` at ``x = -at`` and ``x = +at`` over its value at the
        centre (the trained model), on a 1D curve with linear interpolation between grid
        points: how fast the curve rises away from the minimum, in the metric's units."""
        if self.y is not None or metric not in self.values:
            raise LandscapeError(f"{self.path}: the rise needs a 1D curve holding {metric!r}")
        y = np.where(self.done, np.asarray(self.values[metric], dtype=float), np.nan)
        ok = np.isfinite(y)
        if not ok.any() or not (self.x[ok].min() <= -at and self.x[ok].max() >= at):
            raise LandscapeError(f"{self.path}: the curve does not reach x = +-{at}")
        center = self.attrs.get(f"center_{metric}")
        y0 = float(center) if center is not None else float(np.interp(0.0, self.x[ok], y[ok]))
        return float(np.mean(np.interp([-at, at], self.x[ok], y[ok])) - y0)

    @property
    def n_nonfinite(self) -> int:
        """Number of computed values that are NaN or infinite (far from the minimum)."""
        return int(sum((~np.isfinite(v[self.done])).sum() for v in self.values.values()))


def load_surface(path: str | Path) -> Surface:
    """Read a surface (or trajectory/interpolation) file written by :func:`compute_surface`."""
    path = Path(path)
    with store.open_result(path, kind=gridfile.KINDS, validate=gridfile.validate_grid) as f:
        if "done" not in f or "x" not in f:
            raise LandscapeError(f"{path}: no 'x' coordinates or 'done' mask: not a surface")
        values = {k: f[k][()] for k in store.read_attrs(f)["metrics"]}
        extras = {f"path/{k}": f["path"][k][()] for k in f.get("path", {})}
        return Surface(path, f["x"][()], f["y"][()] if "y" in f else None, values,
                       f["done"][()].astype(bool), store.read_attrs(f), extras)


def _check_resumable(f: h5py.File, out: str | Path, x: np.ndarray, y: np.ndarray | None,
                     names: Sequence[str]) -> None:
    """A file being resumed (already checked against its schema) holds this grid: the same
    coordinates and a value dataset per metric and split."""
    for axis, c in (("x", x), ("y", y)):
        stored = f[axis][()] if axis in f else None
        if (stored is None) != (c is None) or (c is not None and not np.array_equal(stored, c)):
            raise store.damaged(out, f"its '{axis}' coordinates are not those of its settings")
    missing = [n for n in names if n not in store.read_attrs(f)["metrics"]]  # validated
    if missing:
        raise store.damaged(out, f"no dataset {', '.join(map(repr, missing))} for its "
                                 "settings' splits; use --overwrite to replace it")


#: The evaluator settings an out-of-memory halving changes (:class:`landscape.evaluate.Evaluator`).
HALVED = ("batch_size", "point_chunk")


def _chunking(objs: Mapping[str, Objective]) -> dict[str, Any]:
    """The settings keys of each split's evaluation, as in use now."""
    return {f"{s}.{k}": v for s, o in objs.items() for k, v in o.evaluation_settings().items()}


def _adopt_halved(out: str | Path, kind: str, objs: Mapping[str, Objective]) -> None:
    """Resume with the chunking that produced a file's values: where an out-of-memory halving
    took the chunking this command asks for (recorded in the file's ``oom_halved``: settings
    key -> the value asked for) down to the one in its settings, the objective takes the
    halved one (so the resumed file is the uninterrupted one, bit for bit). Any other change
    of chunking is refused by :func:`landscape.store.create` as before."""
    if not Path(out).exists():
        return
    with store.open_result(out, kind, validate=gridfile.validate_grid) as f:
        recorded, attrs = store.read_settings(f), store.read_attrs(f)
    asked = attrs.get("oom_halved")
    if not isinstance(asked, dict):
        return
    for split, o in objs.items():
        for key in HALVED:
            was, now = recorded.get(f"{split}.{key}"), o.evaluation_settings()[key]
            if asked.get(f"{split}.{key}") == now and isinstance(was, int) \
                    and not isinstance(was, bool) and 0 < was < now:
                if key == "batch_size":
                    o.batch_size = was
                else:
                    o.evaluator.point_chunk = was


def _point_buffers(coords: Tensor, origin: Mapping[str, Tensor],
                   directions: Sequence[Mapping[str, Tensor]] | None,
                   names: Sequence[str]) -> dict[str, Tensor] | None:
    """Per-point buffers ``origin + sum_a coords[:, a] * directions[a]`` (None if fixed)."""
    if not directions:
        return None
    out = {}
    for k in names:
        b0 = origin[k]
        c = coords.to(b0.dtype).reshape(coords.shape[0], coords.shape[1], *[1] * b0.dim())
        out[k] = b0[None] + sum(c[:, a] * d[k].to(b0)[None] for a, d in enumerate(directions))
    return out


def _slabs(idx: np.ndarray, shape: tuple[int, ...]) -> list[tuple]:
    """Selections ``[row, lo:hi]`` (``[lo:hi]`` in 1D) covering the flat indices ``idx`` of an
    array of ``shape``: a flush writes the rows its new points are in, not the whole grid."""
    if len(shape) == 1:
        return [np.s_[int(idx.min()) : int(idx.max()) + 1]]
    rows, cols = np.divmod(idx, shape[1])
    return [np.s_[int(r), int(cols[rows == r].min()) : int(cols[rows == r].max()) + 1]
            for r in np.unique(rows)]


def compute_surface(objectives: Objective | Mapping[str, Objective], out: str | Path,
                    x: Any, y: Any = None, *, directions: Tensor | Sequence[Tensor],
                    origin: Tensor | None = None, kind: str = "surface",
                    buffer_origin: Mapping[str, Tensor] | None = None,
                    buffer_directions: Sequence[Mapping[str, Tensor]] | None = None,
                    direction_attrs: Sequence[Mapping[str, Any]] | None = None,
                    settings: Mapping[str, Any] | None = None,
                    attrs: Mapping[str, Any] | None = None,
                    extras: Mapping[str, np.ndarray] | None = None,
                    overwrite: bool = False, chunk: int | None = None,
                    show_progress: bool = True,
                    embed: Callable[[Tensor], Tensor] | None = None,
                    point_buffers: Callable[[Tensor], dict[str, Tensor]] | None = None,
                    ) -> Surface | None:
    """Evaluate every grid point not yet done and store it in ``out`` (HDF5).

    Args:
        objectives: an :class:`Objective`, or ``{split: Objective}`` (same model).
        x, y: coordinate ranges (``"MIN:MAX:NUM"`` or arrays); ``y=None`` for a 1D curve.
        directions: one (1D) or two (2D) flat directions ``[P]``.
        origin: the centre ``[P]`` (default: the model's own parameters).
        buffer_origin, buffer_directions: buffers (BatchNorm statistics) at the origin and their
            change per unit of each coordinate (interpolations between models); default fixed.
        settings: what else determines the numbers (hashed; a different hash is refused).
        chunk: points per evaluation call and per flush.
        embed: maps grid coordinates ``[K, ndim]`` to coefficients ``[K, D]`` of the ``D``
            directions (a curve through a plane: :mod:`landscape.connect`); default the
            identity (``D = ndim``). What it computes must be in ``settings``.
        point_buffers: the buffers at each point from its coefficients ``[K, D]`` (BatchNorm
            statistics recomputed per point), instead of ``buffer_origin``/``_directions``.

    Cost: one forward pass over each split per point. Under ``torchrun`` the points are split
    among ranks and rank 0 writes; other ranks return None.
    """
    objs = {"train": objectives} if isinstance(objectives, Objective) else dict(objectives)
    first = next(iter(objs.values()))
    space = first.space
    x = parse_range(x)
    y = None if y is None else parse_range(y)
    if len(x) * (1 if y is None else len(y)) > store.MAX_VALUES:  # before any file is written
        raise LandscapeError(f"a grid of {len(x) * len(y):,} points ({len(y)} x {len(x)}) is "
                             f"more than the {store.MAX_VALUES:,} a result file holds")
    dirs = torch.stack([d.to(first.device, first.dtype) for d in (
        [directions] if isinstance(directions, Tensor) and directions.dim() == 1 else directions)])
    if embed is None and dirs.shape[0] != (1 if y is None else 2):
        raise LandscapeError(f"a {'1D' if y is None else '2D'} grid needs "
                             f"{1 if y is None else 2} direction(s), got {dirs.shape[0]}")
    space.check(dirs)
    origin = (first.theta0 if origin is None else origin).to(first.device, first.dtype)
    space.check(origin)
    buffer_origin = {k: v.to(first.device) for k, v in (
        buffer_origin if buffer_origin is not None else first.buffers).items()}
    floating = [k for k, v in buffer_origin.items() if torch.is_floating_point(v)]
    if not floating:
        buffer_directions = None  # nothing to move (a model without BatchNorm)
    names = [f"{split}_{m}" for split, o in objs.items()
             for m in o.metric_names]
    rank, world = distributed.rank_and_world()
    if not overwrite and rank == 0:
        _adopt_halved(out, kind, objs)
    full_settings = {
        **(settings or {}), "kind": kind, "x": x.tolist(), "y": None if y is None else y.tolist(),
        "splits": list(objs),
        # one key per split and setting, so that a refusal names e.g. train.batch_size
        **_chunking(objs),
        "origin_sha": store.values_digest([origin], dtype="float32"),
        "directions_sha": [store.values_digest([d], dtype="float32") for d in dirs],
        "buffer_directions_sha": [store.values_digest(
            [torch.cat([b[k].reshape(-1).float() for k in floating])], dtype="float32")
            for b in buffer_directions] if buffer_directions else None,
    }
    shape = (len(x),) if y is None else (len(y), len(x))
    # data sharded among ranks: every rank evaluates every point (on its shard), rank 0 writes
    sharded = any(getattr(o, "sharded", False) for o in objs.values())
    share_rank, share_world = (0, 1) if sharded else (rank, world)

    def center() -> dict[str, float]:
        return {f"center_{split}_{m}": float(v[0])  # evaluated even off-grid
                for split, o in objs.items() for m, v in o.evaluate(origin[None]).items()}

    centre = center() if sharded else None  # a collective: on every rank
    f = None
    if rank == 0:

        def init(new: h5py.File) -> None:  # the layout and the centre, before the rename
            gridfile.init_grid(new, x, y, names, origin, dirs, space.layout(),
                               direction_attrs or [{}] * len(dirs), buffer_origin,
                               buffer_directions, extras or {})
            new.attrs.update(centre if centre is not None else center())

        f = store.create(out, kind, full_settings, {
            **(attrs or {}), "device": str(first.device), "precision": first.precision,
            "bn": first.bn, "loss": first.loss_name, "splits": list(objs), "metrics": names,
            "ndim": len(shape),
            "cosine_xy": cosine(dirs[0], dirs[1]) if len(dirs) == 2 else None},
            overwrite=overwrite, init=init, validate=gridfile.validate_grid)
        try:
            _check_resumable(f, out, x, y, names)
        except LandscapeError:
            store.close_quietly(f)
            raise
        done = f["done"][()].reshape(-1)
        arrays = {n: f[n][()].reshape(-1) for n in names}
        pending = np.flatnonzero(~done)
    else:
        pending = None
    pending = distributed.broadcast(pending)
    grid = np.stack(np.meshgrid(y if y is not None else [0.0], x, indexing="ij"), -1)
    grid = grid.reshape(-1, 2)[:, ::-1][:, : len(dirs)]  # flat index -> (x, y) coordinates
    size = chunk or min(64, max(8, first.point_chunk),
                        max(1, -(-len(pending) // share_world)))  # every rank gets work
    chunks = [pending[i : i + size] for i in range(0, len(pending), size)]
    bar = progress(total=len(pending), desc=f"{kind} {Path(out).name}", unit="pt",
                   disable=None if show_progress and rank == 0 else True)
    r = 0
    try:
        while r < len(chunks):
            mine = (chunks[r + share_rank] if r + share_rank < len(chunks)
                    else np.array([], dtype=int))
            results = {}
            if len(mine):
                coords = torch.as_tensor(grid[mine], dtype=first.dtype, device=first.device)
                if embed is not None:
                    coords = embed(coords).to(first.device, first.dtype)
                buffers = (point_buffers(coords) if point_buffers is not None else
                           _point_buffers(coords, buffer_origin, buffer_directions, floating))
                for split, o in objs.items():
                    for m, v in o.evaluate_plane(origin, dirs, coords, buffers).items():
                        results[f"{split}_{m}"] = v.numpy()
            now = _chunking(objs)
            if world == 1 and now != {k: full_settings[k] for k in now}:
                # an out-of-memory halving: the file records the chunking now in use (after
                # the centre is evaluated with it), and every point is computed with it
                attrs_now, now = center(), _chunking(objs)
                asked = {k: full_settings[k] for k in now if now[k] != full_settings[k]}
                before = store.read_attrs(f).get("oom_halved")
                asked.update(before if isinstance(before, dict) else {})  # the first asked
                full_settings.update(now)
                again = np.union1d(np.flatnonzero(done), mine)
                with store.writing(out):
                    f.attrs["settings_hash"] = store.settings_hash(full_settings)
                    store.write_attrs(f, {"settings": full_settings, "oom_halved": asked,
                                          **attrs_now})
                    done[:] = False
                    f["done"][...] = False
                    f.flush()
                chunks += [again[i : i + size] for i in range(0, len(again), size)]
                bar.total += len(again)
                mine = np.array([], dtype=int)
            new = []
            for idx, res in distributed.all_gather((mine, results)):
                if rank == 0 and len(idx):
                    for n in names:
                        arrays[n][idx] = res[n]
                    done[idx] = True
                    new.append(idx)
            if rank == 0 and new:
                slabs = _slabs(np.concatenate(new), shape)
                with store.writing(out):
                    for n in names:
                        for sl in slabs:
                            f[n][sl] = arrays[n].reshape(shape)[sl]
                    f.flush()  # values before the mask: a point is done only once stored
                    for sl in slabs:
                        f["done"][sl] = done.reshape(shape)[sl]
                    f.flush()
                bar.update(sum(len(c) for c in chunks[r : r + share_world]))
            r += share_world
    finally:
        bar.close()
        store.close_quietly(f)
    if rank != 0:
        return None
    result = load_surface(out)
    if result.n_nonfinite:
        print(f"warning: {result.n_nonfinite} non-finite values in {out} (stored as they are)",
              file=sys.stderr)
    return result
