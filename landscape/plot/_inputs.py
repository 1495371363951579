"""Reading stored results for the figures: kind checks, metric look-up, axis labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from landscape.errors import LandscapeError

SURFACE_KINDS = ("surface", "interpolation", "plane", "trajectory")
_COORDS = ("x", "y")


def as_surface(obj: Any, *, kinds: Sequence[str] = SURFACE_KINDS, ndim: int | None = None,
               what: str = "this plot") -> Any:
    """A :class:`landscape.surface.Surface` from a path or a loaded surface, checked.

    ``kinds``: the file kinds accepted; ``ndim``: 1 (a curve) or 2 (a grid) if required.
    A wrong kind or dimension raises a one-line LandscapeError naming what was expected.
    """
    from landscape import formats
    from landscape.surface import Surface, load_surface

    if isinstance(obj, str | Path):
        with formats.open_result(obj) as f:
            kind = f.attrs.get("kind")
        if kind not in kinds:
            raise LandscapeError(f"{obj}: holds a {kind!r} result; {what} needs a "
                                 f"{' or '.join(repr(k) for k in kinds)} file")
        obj = load_surface(obj)
    if not isinstance(obj, Surface):
        raise LandscapeError(f"{what} needs a surface file or Surface, got {type(obj).__name__}")
    kind = obj.attrs.get("kind", "surface")
    if kind not in kinds:
        raise LandscapeError(f"{obj.path}: holds a {kind!r} result; {what} needs a "
                             f"{' or '.join(repr(k) for k in kinds)} file")
    got = 1 if obj.y is None else 2
    if ndim is not None and got != ndim:
        need = "a 1D curve" if ndim == 1 else "a 2D surface"
        raise LandscapeError(f"{obj.path}: holds a {got}D {kind}; {what} needs {need}")
    return obj


def metric_names(surface: Any) -> list[str]:
    """The value datasets of a surface (coordinates left out)."""
    return [k for k in surface.values if k not in _COORDS]


def values(surface: Any, metric: str) -> np.ndarray:
    """The ``metric`` array of ``surface`` with not-yet-computed points as NaN."""
    names = metric_names(surface)
    if metric not in names:
        raise LandscapeError(f"{surface.path}: no dataset {metric!r} (it holds "
                             f"{', '.join(names) or 'no values'})")
    out = np.array(surface.values[metric], dtype=float)
    out[~surface.done] = np.nan
    return out


def finite(a: np.ndarray) -> np.ndarray:
    """The finite entries of ``a`` (flattened)."""
    a = np.asarray(a, dtype=float).ravel()
    return a[np.isfinite(a)]


def check_finite(a: np.ndarray, surface: Any, metric: str) -> np.ndarray:
    """``finite(a)``, or a LandscapeError when nothing is computed yet."""
    out = finite(a)
    if out.size == 0:
        raise LandscapeError(f"{surface.path}: {metric!r} has no finite computed value yet")
    return out


def is_accuracy(metric: str) -> bool:
    return metric.endswith("_acc") or metric == "acc"


def metric_label(metric: str, loss: str | None = "cross_entropy", *, log: bool = False) -> str:
    """Axis label with units: ``train loss (nats)``, ``test accuracy (%)``."""
    split, _, name = metric.rpartition("_")
    prefix = f"{split} " if split else ""
    if name == "acc":
        return f"{prefix}accuracy (%)"
    if name == "loss":
        unit = "nats" if (loss or "cross_entropy") == "cross_entropy" else "MSE"
        return f"{prefix}loss ({unit}{', log scale' if log else ''})"
    return metric.replace("_", " ")


def scale_metric(metric: str, a: np.ndarray) -> np.ndarray:
    """Accuracies in percent, everything else unchanged."""
    return 100.0 * a if is_accuracy(metric) else a


def endpoint_names(surface: Any) -> list[str]:
    """Short names of the runs an interpolation or plane goes through (A, B, C if unknown)."""
    ends = surface.attrs.get("endpoints")
    if isinstance(ends, list | tuple) and ends:
        return [Path(str(e)).name or str(e) for e in ends]
    return ["A", "B", "C"]


def direction_norm(surface: Any) -> str | None:
    settings = surface.attrs.get("settings")
    return settings.get("norm") if isinstance(settings, Mapping) else None


def direction_length(surface: Any) -> float:
    """The L2 norm of a stored surface's x direction in parameter space (the length of one
    unit of its x coordinate)."""
    from landscape import formats, store

    with formats.open_result(surface.path) as f:
        if "directions/x" not in f:
            raise LandscapeError(f"{surface.path}: holds no directions")
        return float(store.read_attrs(f["directions/x"])["norm_l2"])


def axis_labels(surface: Any) -> tuple[str, str | None]:
    """Labels of the x (and y) coordinate, by the kind of result."""
    kind = surface.attrs.get("kind", "surface")
    if kind == "interpolation":
        a, b = endpoint_names(surface)[:2]
        return f"$t$ (0: {a}, 1: {b})", None
    if kind == "plane":
        a, b, c = (endpoint_names(surface) + ["A", "B", "C"])[:3]
        return f"$\\alpha$ (0: {a}, 1: {b})", f"$\\beta$ (0: {a}, 1: {c})"
    if kind == "trajectory":
        evr = surface.attrs.get("explained_variance_ratio")
        if evr is not None and len(evr) >= 2:
            return (f"PC 1 ({float(evr[0]):.1%} of variance)",
                    f"PC 2 ({float(evr[1]):.1%} of variance)")
        return "PC 1", "PC 2"
    norm = direction_norm(surface)
    qual = f" ({norm}-normalized)" if norm and norm != "none" else ""
    if surface.y is None:
        return f"$\\alpha${qual}", None
    return f"$\\alpha$, direction 1{qual}", f"$\\beta$, direction 2{qual}"


def named(results: Any) -> dict[str, Any]:
    """``{name: result}`` from one result, a sequence of results or a mapping."""
    if isinstance(results, Mapping):
        out = dict(results)
    elif isinstance(results, str | Path) or not isinstance(results, Sequence):
        out = {_name(results): results}
    else:
        out = {}
        for r in results:
            name = _name(r)
            while name in out:
                name += "'"
            out[name] = r
    if not out:
        raise LandscapeError("nothing to plot: no result given")
    return out


def _name(result: Any) -> str:
    """The stem of a result's file; ``"result"`` for one never saved (``path`` None)."""
    path = result if isinstance(result, str | Path) else getattr(result, "path", None)
    return Path(path).stem if path is not None else "result"
