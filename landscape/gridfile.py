"""The grid result file (kinds surface, interpolation, plane, trajectory, path): its layout
and its validator, beside the layout's writer (:func:`init_grid`).

Coordinates ``x`` (and ``y``) are HDF5 dimension scales labelling every grid array; values are
``[len(y), len(x)]`` (``[len(x)]``) float64 arrays, one per name in the ``metrics`` attribute
(NaN where not yet computed), with a ``done`` mask; the origin and the directions are flat
float32 datasets (the parameter layout in the origin's attributes), the model's buffers under
``buffers/``. :mod:`landscape.surface.compute` computes the values, and
:func:`landscape.analysis.hessian.curvature_map` adds ``hessian_max``, ``hessian_min`` and
``hessian_done`` to a surface; a study file keeps grids (coordinates, done mask, values) in
its groups. The format sits below all three writers, on the floor above :mod:`landscape.store`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from landscape import store
from landscape.sources import ACCURACY_UNIT

if TYPE_CHECKING:
    from torch import Tensor

#: The kinds written in this layout.
KINDS = ("surface", "interpolation", "plane", "trajectory", "path")
#: The axes of the directions, in order (``directions/x``, ``directions/y``).
AXES = ("x", "y")

#: The largest coordinate magnitude a grid may hold: directions are normalized, so real grids
#: stay within a few hundred; near 1e308 a figure's axis cannot even be ticked.
MAX_COORDINATE = 1e100


def coordinates_fault(values: np.ndarray) -> str | None:
    """Why ``values`` cannot be a grid axis (empty, not finite, beyond
    :data:`MAX_COORDINATE`, not strictly increasing), or None."""
    if values.size == 0 or not np.isfinite(values).all():
        return "are empty or not all finite"
    if np.abs(values).max() > MAX_COORDINATE:
        return f"reach beyond +-{MAX_COORDINATE:g}"
    if (np.diff(values) <= 0).any():
        return "are not strictly increasing"
    return None


def attach_grid_scales(f: h5py.File, names: Iterable[str]) -> None:
    """Label the dimensions of the grid arrays ``names`` with the coordinates ``y``, ``x`` (or
    ``x``) as HDF5 dimension scales, as every array of a grid is (xarray and other readers
    then name them alike)."""
    axes = [a for a in ("y", "x") if a in f]
    for axis in axes:
        if not h5py.h5ds.is_scale(f[axis].id):
            f[axis].make_scale(axis)
    for name in names:
        for dim, axis in enumerate(axes):
            f[name].dims[dim].attach_scale(f[axis])


def init_grid(f: h5py.File, x: np.ndarray, y: np.ndarray | None, names: Sequence[str],
              origin: Tensor, directions: Tensor, layout: dict,
              direction_attrs: Sequence[Mapping[str, Any]], buffer_origin: Mapping[str, Tensor],
              buffer_directions: Sequence[Mapping[str, Tensor]] | None,
              extras: Mapping[str, np.ndarray]) -> None:
    """Create the datasets of a new grid file ``f`` (coordinates as HDF5 dimension scales):
    every value array of ``names`` allocated and NaN, the ``done`` mask false, the origin
    (its parameter ``layout`` in its attributes), the directions with ``direction_attrs``
    and their L2 norms, the buffers at the origin and per unit of each direction, and the
    ``extras`` arrays as they are."""
    f.create_dataset("x", data=x)
    if y is not None:
        f.create_dataset("y", data=y)
    shape = (len(x),) if y is None else (len(y), len(x))
    for name in names:
        ds = store.allocated(f, name, shape, "f8", np.nan)
        if name.endswith("_acc"):
            ds.attrs["unit"] = ACCURACY_UNIT
    f.create_dataset("origin", data=origin.detach().cpu().float().numpy())
    store.write_attrs(f["origin"], {"layout": layout})
    for axis, d, d_attrs in zip(AXES, directions, direction_attrs):
        ds = f.create_dataset(f"directions/{axis}", data=d.detach().cpu().float().numpy())
        store.write_attrs(ds, {**d_attrs, "norm_l2": float(d.double().norm())})
    for name, b in buffer_origin.items():
        f.create_dataset(f"buffers/origin/{name}", data=b.detach().cpu().numpy())
    for axis, bdir in zip(AXES, buffer_directions or []):
        for name, b in bdir.items():
            f.create_dataset(f"buffers/{axis}/{name}", data=b.detach().cpu().numpy())
    for name, value in extras.items():
        f.create_dataset(name, data=np.asarray(value))
    store.allocated(f, "done", shape, bool, False)
    attach_grid_scales(f, [*names, "done"])


def check_grid(group: h5py.Group, path: Path) -> tuple[int, ...]:
    """Check the coordinates (1D, finite, not empty) and the done mask of a grid in ``group``
    (a file, or a study's group); its shape. Reads the coordinates only."""
    coords = [store.dataset(group, a, path, ndim=1, optional=a == "y") for a in ("y", "x")]
    coords = [c for c in coords if c is not None]
    for c in coords:
        try:
            values = c[()]
        except OSError as err:
            raise store.damaged(path, f"cannot read '{c.name}': {store.reason(err)}") from None
        fault = coordinates_fault(values)
        if fault:
            raise store.damaged(path, f"coordinates '{c.name}' {fault}")
    shape = tuple(len(c) for c in coords)
    if math.prod(shape) > store.MAX_VALUES:
        raise store.damaged(path, f"a grid of {math.prod(shape):,} points, more than "
                                  f"{store.MAX_VALUES:,}")
    store.dataset(group, "done", path, dtype="biu", shape=shape)
    return shape


def validate_grid(f: h5py.File, path: Path, attrs: Mapping[str, Any]) -> None:
    """The validator of the grid kinds (:data:`landscape.store.Validator`)."""
    shape = check_grid(f, path)
    metrics = store.names(attrs, "metrics", path)
    for name in metrics + ["hessian_max", "hessian_min"]:
        store.dataset(f, name, path, shape=shape, optional=name not in metrics)
    store.dataset(f, "hessian_done", path, dtype="biu", shape=shape, optional=True)
    origin = store.dataset(f, "origin", path, ndim=1, limit=None, optional=True)
    if "directions" in f:
        directions = store.subgroup(f, "directions", path)
        for axis in ("x", "y")[: len(shape)]:
            store.dataset(directions, axis, path, ndim=1, limit=None,
                          shape=None if origin is None else origin.shape)
    if "path" in f:
        group = store.subgroup(f, "path", path)
        for name in group:
            store.dataset(group, name, path, dtype="fbiu")
