"""Hessian figures: the eigenvalue density (Ghorbani et al. 2019) and the map of
``|lambda_min / lambda_max|`` over a surface (Li et al. 2018, Fig. 7)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colors
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from landscape.analysis.hessian import min_max_ratio
from landscape.errors import LandscapeError, LandscapeWarning
from landscape.plot._inputs import as_surface, named
from landscape.plot.contours import finish_2d, mark_points
from landscape.plot.style import OKABE_ITO, SEQUENTIAL_CMAP, house_style, new_axes

#: Density values below this fraction of the peak are not drawn on the log scale.
DENSITY_FLOOR = 1e-7


def _as_report(obj: Any) -> Any:
    """A :class:`landscape.analysis.hessian.HessianReport` from a path, report or density."""
    from landscape.analysis.hessian import DensityResult, HessianReport, load_hessian

    if isinstance(obj, str | Path):
        return load_hessian(obj)
    if isinstance(obj, DensityResult):
        return HessianReport(density=obj)
    if isinstance(obj, HessianReport):
        return obj
    raise LandscapeError(f"a density plot needs a 'hessian' file or result, got "
                         f"{type(obj).__name__}")


def plot_density(results: Any, ax: Axes | None = None, *, log: bool = True,
                 eigenvalues: bool = True, labels: list[str] | None = None,
                 title: str | None = None) -> Figure:
    """Eigenvalue density of the Hessian from stochastic Lanczos quadrature, log scale.

    ``results``: a ``kind="hessian"`` file computed with a density (``landscape hessian
    --density``), a loaded :class:`~landscape.analysis.hessian.HessianReport` or
    :class:`~landscape.analysis.hessian.DensityResult`, or several of them (a sequence or
    ``{name: result}``, overlaid). ``eigenvalues`` marks the Lanczos top/bottom eigenvalues
    stored beside the density as ticks along the top. Values below ``1e-7`` of the peak are
    left out of the log scale.
    """
    reports = {name: _as_report(r) for name, r in named(results).items()}
    names = list(labels) if labels is not None else list(reports)
    with house_style():
        fig, ax = new_axes(ax, aspect=0.62)
        peak_all, lo_x, hi_x = 0.0, np.inf, -np.inf
        for i, (name, rep) in enumerate(reports.items()):
            where = rep.path or name
            if rep.density is None:
                raise LandscapeError(f"{where}: no spectral density in this file (group "
                                     "'density'); compute it with `landscape hessian --density`")
            grid = np.asarray(rep.density.grid, dtype=float)
            dens = np.asarray(rep.density.density, dtype=float)
            peak = float(np.nanmax(dens))
            peak_all = max(peak_all, peak)
            if log:
                dens = np.where(dens > DENSITY_FLOOR * peak, dens, np.nan)
            color = OKABE_ITO[i % (len(OKABE_ITO) - 1)]
            ax.plot(grid, dens, color=color, lw=1.0,
                    label=names[i] if len(reports) > 1 else "density (SLQ)")
            lo_x, hi_x = min(lo_x, grid.min()), max(hi_x, grid.max())
            if eigenvalues and rep.eigen is not None and rep.eigen.eigenvalues.numel():
                ev = np.asarray(rep.eigen.eigenvalues, dtype=float)
                ax.plot(ev, np.full_like(ev, 1.0), transform=ax.get_xaxis_transform(),
                        ls="none", marker="|", ms=7, mew=1.0, color=color, clip_on=False,
                        label="Lanczos eigenvalues" if len(reports) == 1 else None)
        if log:
            ax.set_yscale("log")
            ax.set_ylim(DENSITY_FLOOR * peak_all, 3 * peak_all)
        ax.set_xlim(lo_x, hi_x)
        ax.axvline(0.0, color="0.6", lw=0.5, ls=":", zorder=0)
        ax.set_xlabel("eigenvalue $\\lambda$ of the Hessian (loss / parameter$^2$)")
        ax.set_ylabel("density (1 / $\\lambda$ units)")
        ax.legend(loc="upper right")
        if title:
            ax.set_title(title)
    return fig


def _curvature_arrays(s: Any) -> dict[str, np.ndarray]:
    """``hessian_max``/``hessian_min`` (and ``hessian_done``) of a surface: from its values,
    else from its file."""
    from landscape import formats

    names = ("hessian_max", "hessian_min", "hessian_done")
    found = {k: np.asarray(s.values[k]) for k in names if k in s.values}
    if len(found) < 2 and Path(s.path).is_file():
        with formats.open_result(s.path) as f:
            found = {k: np.asarray(f[k][()]) for k in names if k in f}
    for k in names[:2]:
        if k not in found:
            raise LandscapeError(f"{s.path}: no dataset {k!r}; compute the curvature map "
                                 "first (landscape.analysis.hessian.curvature_map)")
        found[k] = found[k].astype(float)
    return found


def curvature_ratio(surface: Any) -> np.ndarray:
    """``|lambda_min / lambda_max|`` on the grid (NaN where not computed or lambda_max <= 0)."""
    s = as_surface(surface, ndim=2, what="a curvature ratio map")
    maps = _curvature_arrays(s)
    hmax, hmin = maps["hessian_max"], maps["hessian_min"]
    return min_max_ratio(hmax, hmin, maps.get("hessian_done", np.isfinite(hmax)))


def plot_ratio(surface: Any, ax: Axes | None = None, *, vmin: float = 0.0,
               vmax: float | None = None, cmap: str = SEQUENTIAL_CMAP,
               colorbar: bool = True, title: str | None = None) -> Figure:
    """Heat map of ``|lambda_min / lambda_max|`` over a 2D surface (Li et al. 2018, Fig. 7).

    Near 0: locally convex (the negative curvature is negligible); large: markedly
    non-convex. Needs the ``hessian_max``/``hessian_min`` datasets that
    :func:`landscape.analysis.hessian.curvature_map` adds to a surface file. ``vmax``
    defaults to the largest value on the grid. Points where ``lambda_max <= 0`` are blank. A
    map not yet complete says so in a warning and in the title (its missing points are blank).
    """
    s = as_surface(surface, ndim=2, what="a curvature ratio map")
    ratio = curvature_ratio(s)
    ok = ratio[np.isfinite(ratio)]
    if ok.size == 0:
        raise LandscapeError(f"{s.path}: the curvature map has no computed point yet")
    done = _curvature_arrays(s).get("hessian_done")
    if done is not None and not done.astype(bool).all():
        part = f"{int(done.astype(bool).sum())} of {done.size} points"
        warnings.warn(f"{s.path}: the curvature map is partial ({part} computed; the rest "
                      "blank): rerun the curvature command to complete it", LandscapeWarning,
                      stacklevel=2)
        title = f"{title} (partial: {part})" if title else f"partial: {part}"
    hi = float(ok.max()) if vmax is None else float(vmax)
    norm = colors.Normalize(vmin, hi if hi > vmin else vmin + 1e-12)
    with house_style():
        fig, ax = new_axes(ax, aspect=0.85)
        mesh = ax.pcolormesh(s.x, s.y, ratio, norm=norm, cmap=cmap, shading="nearest",
                             rasterized=True)
        mark_points(ax, s)
        finish_2d(fig, ax, s, mesh, "$|\\lambda_{\\min} / \\lambda_{\\max}|$", colorbar, title)
    return fig


__all__ = ["curvature_ratio", "plot_density", "plot_ratio"]
