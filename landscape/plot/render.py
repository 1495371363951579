"""Render a stored result file to a figure file (what ``landscape plot`` does).

The kind of plot defaults to the kind of result: a 1D surface or an interpolation -> ``curve``;
a 2D surface or a plane -> ``contour``; a trajectory -> ``trajectory``; a Hessian analysis ->
``density``; a study -> ``compare``; a run's ``track.h5`` (or the run directory; several
overlaid) -> ``track``; optimizer paths on a toy function (``landscape toy``'s
``paths.h5``) -> ``toy-paths`` (a 2D function) or ``toy-losses``. Asking for a plot the file
cannot make (a density from a surface file, a contour from a 1D curve) is a one-line error
naming what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from landscape import formats, gridfile
from landscape.errors import LandscapeError, unknown_name

#: Plot kind -> the result kinds (and dimension) it needs.
PLOT_KINDS: dict[str, tuple[tuple[str, ...], int | None]] = {
    "curve": (("surface", "interpolation"), 1),
    "contour": (("surface", "plane", "trajectory"), 2),
    "filled": (("surface", "plane", "trajectory"), 2),
    "heatmap": (("surface", "plane", "trajectory"), 2),
    "surface3d": (("surface", "plane", "trajectory"), 2),
    "trajectory": (("trajectory",), 2),
    "ratio": (("surface", "plane", "trajectory"), 2),
    "vtk": (("surface", "plane", "trajectory"), 2),
    "density": (("hessian",), None),
    "compare": (("study",), None),
    "track": (("track",), None),
    "toy-paths": (("toy",), None),
    "toy-losses": (("toy",), None),
    "path": (("path",), 1),
    "curve-plane": (("surface",), 2),
}


#: The most contour levels a figure may ask for (a figure shows a few dozen at most).
MAX_LEVELS = 1000


def parse_levels(text: str | int | Sequence[float] | None) -> int | list[float] | None:
    """``"12"`` -> 12 levels; ``"0.1,0.5,1"`` -> those levels; None stays None. At most
    :data:`MAX_LEVELS`, each finite."""
    if text is None:
        return None
    try:
        if isinstance(text, str):
            parts = [p.strip() for p in text.split(",") if p.strip()]
            levels = int(parts[0]) if len(parts) == 1 else [float(p) for p in parts]
        else:
            levels = int(text) if isinstance(text, int) else [float(v) for v in text]
    except (ValueError, TypeError, IndexError):
        raise LandscapeError(f"levels must be a number of levels or comma-separated values, "
                             f"got {text!r}") from None
    count = levels if isinstance(levels, int) else len(levels)
    if count > MAX_LEVELS:
        raise LandscapeError(f"{count:,} contour levels, more than the {MAX_LEVELS:,} a figure "
                             "may draw")
    if not isinstance(levels, int) and not all(math.isfinite(v) for v in levels):
        raise LandscapeError(f"contour levels must be finite numbers, got {text!r}")
    return levels


def default_kind(path: str | Path) -> str:
    """The plot kind a result file gets by default."""
    with formats.open_result(path) as f:
        kind = f.attrs.get("kind")
        ndim = len(f["done"].shape) if kind in gridfile.KINDS else None
    if kind in ("surface", "plane"):
        return "curve" if ndim == 1 else "contour"
    if kind == "toy":
        from landscape.toy import load_paths

        return "toy-paths" if load_paths(path)[0].dim == 2 else "toy-losses"
    return {"interpolation": "curve", "trajectory": "trajectory", "hessian": "density",
            "study": "compare", "track": "track", "path": "path"}.get(kind, "")


def _check_kind(path: Path, plot: str) -> None:
    kinds, ndim = PLOT_KINDS[plot]
    with formats.open_result(path) as f:
        kind = f.attrs.get("kind")
        got = len(f["done"].shape) if kind in gridfile.KINDS else None
    need = " or ".join(repr(k) for k in kinds)
    dim = {1: "1D ", 2: "2D "}.get(ndim or 0, "")
    if kind not in kinds or (ndim is not None and got != ndim):
        what = f"a {got}D {kind!r}" if got else f"a {kind!r}"
        raise LandscapeError(f"{path}: holds {what} result; --kind {plot} needs a {dim}{need} "
                             "file")


def render(path: str | Path | Sequence[str | Path], out: str | Path, *, kind: str | None = None,
           metric: str = "train_loss", vmin: float | None = None, vmax: float | None = None,
           levels: Any = None, log: bool | None = None) -> Path:
    """Plot the result in ``path`` and save it to ``out`` (.pdf/.png/.svg; .vtk/.vtp for
    ``kind="vtk"``, which a .vtk/.vtp ``out`` also selects). Returns ``out``. A run
    directory stands for its ``track.h5``; several paths are tracks overlaid in one figure."""
    from landscape.analysis.track import track_path
    from landscape.plot.compare import plot_comparison
    from landscape.plot.contours import (
        plot_contour,
        plot_filled,
        plot_heatmap,
        plot_surface3d,
        plot_trajectory,
    )
    from landscape.plot.curves import plot_curve
    from landscape.plot.spectrum import plot_density, plot_ratio
    from landscape.plot.style import save_figure
    from landscape.plot.track import plot_track
    from landscape.plot.vtk import export_vtk

    if not isinstance(path, str | Path):  # several runs' tracks overlaid
        paths = [track_path(p) for p in path]
        for p in paths:
            _check_kind(p, "track")
        return save_figure(plot_track(paths, log_loss=log is not False), out)
    path, out = track_path(path), Path(out)
    if kind is None:
        kind = "vtk" if out.suffix.lower() in (".vtk", ".vtp") else default_kind(path)
        if not kind:
            with formats.open_result(path) as f:
                raise LandscapeError(f"{path}: nothing to plot in a {f.attrs.get('kind')!r} "
                                     "result")
    if kind not in PLOT_KINDS:
        raise unknown_name("plot kind", kind, PLOT_KINDS)
    _check_kind(path, kind)
    levels = parse_levels(levels)
    for name, value in (("vmin", vmin), ("vmax", vmax)):
        if value is not None and not math.isfinite(value):
            raise LandscapeError(f"{name} must be a finite number, got {value}")
    scale = {"vmin": vmin, "vmax": vmax, "log": log}
    if kind == "vtk":
        return export_vtk(path, out, metric=metric, log=bool(log), zmax=vmax)
    if out.suffix.lower() in (".vtk", ".vtp"):
        raise LandscapeError(f"{out}: a VTK file is written by --kind vtk, not --kind {kind}")
    if kind == "curve":  # both splits' loss, accuracy on a twin axis; vmin/vmax clip the loss
        fig = plot_curve(path, log=bool(log))
        if vmin is not None or vmax is not None:
            fig.axes[0].set_ylim(vmin, vmax)
    elif kind == "contour":
        fig = plot_contour(path, metric=metric, levels=levels, **scale)
    elif kind == "filled":
        fig = plot_filled(path, metric=metric, levels=levels, **scale)
    elif kind == "heatmap":
        fig = plot_heatmap(path, metric=metric, **scale)
    elif kind == "surface3d":
        fig = plot_surface3d(path, metric=metric, **scale)
    elif kind == "trajectory":
        fig = plot_trajectory(path, metric=metric, levels=levels, **scale)
    elif kind == "ratio":
        fig = plot_ratio(path, vmax=vmax, **({} if vmin is None else {"vmin": vmin}))
    elif kind == "density":
        fig = plot_density(path, log=log is not False)
    elif kind == "track":
        fig = plot_track(path, log_loss=log is not False)
    elif kind in ("toy-paths", "toy-losses"):
        from landscape.plot.toy import plot_toy_losses, plot_toy_paths
        from landscape.toy import load_paths

        function, paths = load_paths(path)
        fig = (plot_toy_paths if kind == "toy-paths" else plot_toy_losses)(function, paths)
    elif kind in ("path", "curve-plane"):
        from landscape.plot.connect import plot_curve_plane, plot_paths

        fig = (plot_paths([path], metric=metric) if kind == "path"
               else plot_curve_plane(path, metric=metric))
    else:
        fig = plot_comparison(path, metric=metric, levels=levels, **scale)
    return save_figure(fig, out)


__all__ = ["PLOT_KINDS", "default_kind", "parse_levels", "render"]
