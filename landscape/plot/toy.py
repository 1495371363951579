"""Figures of optimizer paths on analytic test functions (:mod:`landscape.toy`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from landscape.errors import LandscapeError
from landscape.plot.style import OKABE_ITO, check_formats, house_style, new_axes, save_figure
from landscape.toy import DIVERGED, ToyFunction, ToyPath, as_function, load_paths

_TINY = 1e-300
CMAP = "viridis"


def _as_list(paths: Mapping[str, ToyPath] | Sequence[ToyPath] | ToyPath) -> list[ToyPath]:
    if isinstance(paths, ToyPath):
        return [paths]
    out = list(paths.values()) if isinstance(paths, Mapping) else list(paths)
    if not out:
        raise LandscapeError("no optimizer path to plot")
    return out


def function_title(f: ToyFunction) -> str:
    """The panel title of a toy function (the condition number of a quadratic)."""
    if f.name == "quadratic":
        eig = np.asarray(f.spec["eigenvalues"])
        dims = f", {f.dim}-D" if f.dim > 2 else ""
        return f"quadratic{dims}, $\\kappa$ = {eig.max() / eig.min():.3g}"
    return f"{f.name} ({f.dim}-D)" if f.dim > 2 else f.name


def _levels(gap: np.ndarray, n: int) -> np.ndarray:
    positive = gap[gap > 0]
    lo = max(np.percentile(positive, 0.5), positive.max() * 1e-8)
    hi = np.percentile(positive, 97)
    return np.geomspace(lo, hi, n)


def _box(f: ToyFunction, box: Any) -> tuple[tuple[float, float], tuple[float, float]]:
    if f.dim != 2:
        raise LandscapeError(f"paths are drawn on 2D functions; {f.name} has dimension {f.dim}"
                             " (plot the losses instead)")
    return box or f.box


def panel_aspect(f: ToyFunction, box: Any = None) -> float:
    """Panel height over width: about equal scales on both axes, plus the legend's rows."""
    (x0, x1), (y0, y1) = _box(f, box)
    return min(max((y1 - y0) / (x1 - x0), 0.45), 1.0) * 0.78 + 0.27


def draw_toy_contours(function: ToyFunction | str, ax: Axes, *,
                      box: tuple[tuple[float, float], tuple[float, float]] | None = None,
                      levels: int = 14, resolution: int = 241) -> None:
    """Contours of a 2D ``function`` on ``ax`` (log-spaced in ``f - f_min`` for functions
    with a wide range of values, linear otherwise), its known minima as grey stars, the axes
    limited to ``box`` (default: the function's plotting range) and labelled. Cost:
    ``resolution^2`` function evaluations."""
    f = as_function(function)
    (x0, x1), (y0, y1) = _box(f, box)
    xs, ys = np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution)
    grid = np.stack(np.meshgrid(xs, ys), -1)
    with torch.no_grad():
        z = f(torch.from_numpy(grid)).numpy()
    if f.log_levels:
        gap = z - f.f_min
        lv = _levels(gap, levels)
        values, norm = np.maximum(gap, _TINY), LogNorm(lv[0], lv[-1])
    else:
        lv = np.linspace(np.percentile(z, 0.2), np.percentile(z, 97), levels)
        values, norm = z, None
    ax.contourf(xs, ys, values, levels=lv, norm=norm, cmap=CMAP, alpha=0.3, extend="both")
    ax.contour(xs, ys, values, levels=lv, norm=norm, cmap=CMAP, linewidths=0.4)
    minima = np.asarray(f.minima)
    ax.scatter(minima[:, 0], minima[:, 1], marker="*", s=45, color="0.35", zorder=8,
               edgecolors="white", linewidths=0.4, label="minimum")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("$w_1$")
    ax.set_ylabel("$w_2$")


def plot_toy_paths(function: ToyFunction | str, paths: Mapping[str, ToyPath] | Sequence[ToyPath],
                   ax: Axes | None = None, *,
                   box: tuple[tuple[float, float], tuple[float, float]] | None = None,
                   levels: int = 14, resolution: int = 241, title: bool = True) -> Figure:
    """Paths over the contours of a 2D ``function``; one coloured line per optimizer.

    Contours are log-spaced in ``f - f_min`` for functions with a wide range of values
    (quadratic, Rosenbrock, Beale, Himmelblau), linear otherwise; a black circle marks the
    start, a cross in the path's colour its end, grey stars the known minima. A path of a
    batch of runs is drawn as one faint line collection. ``box`` defaults to the
    function's plotting range. Cost: ``resolution^2`` function evaluations.
    """
    f = as_function(function)
    paths = _as_list(paths)
    with house_style():
        own = ax is None
        fig, ax = new_axes(ax, aspect=panel_aspect(f, box))
        draw_toy_contours(f, ax, box=box, levels=levels, resolution=resolution)
        start_drawn = False
        for i, p in enumerate(paths):
            color = OKABE_ITO[i % (len(OKABE_ITO) - 1)]
            pts = p.path
            if pts.ndim == 3:  # a batch of runs [steps+1, R, 2]
                segs = np.transpose(pts, (1, 0, 2))
                ax.add_collection(LineCollection(list(segs), colors=color, linewidths=0.5,
                                                 alpha=0.35, zorder=4))
                ax.plot([], [], color=color, lw=1.0, label=p.label)  # the legend's entry
                ends, starts, end_size = pts[-1], pts[0], 12
            else:
                marker: dict[str, Any] = {"marker": "o", "markersize": 1.8} \
                    if len(pts) <= 80 else {}
                ax.plot(pts[:, 0], pts[:, 1], color=color, lw=1.0, label=p.label, zorder=4,
                        **marker)
                ends, starts, end_size = pts[-1:], pts[:1], 28
            ax.scatter(ends[:, 0], ends[:, 1], marker="X", s=end_size, color=color, zorder=6,
                       edgecolors="white", linewidths=0.4)
            if not start_drawn:
                ax.scatter(starts[:, 0], starts[:, 1], marker="o", s=26, facecolors="none",
                           edgecolors="black", linewidths=1.0, zorder=7, label="start")
                start_drawn = True
        if title:
            ax.set_title(function_title(f))
        handles, labels = ax.get_legend_handles_labels()
        order = [i for i, lab in enumerate(labels) if lab not in ("start", "minimum")] + \
            [i for i, lab in enumerate(labels) if lab in ("start", "minimum")]
        handles, labels = [handles[i] for i in order], [labels[i] for i in order]
        if own:  # below the panel, where constrained layout makes room for it
            ncols = len(order) if len(order) <= 4 else -(-len(order) // 2)
            rowwise = [k for j in range(ncols) for k in range(j, len(order), ncols)]
            fig.legend([handles[k] for k in rowwise], [labels[k] for k in rowwise],
                       loc="outside lower center", ncols=ncols, handlelength=1.4,
                       columnspacing=1.0)
        else:
            ax.legend(handles, labels, loc="best", frameon=True, framealpha=0.85,
                      edgecolor="none")
    return fig


def plot_toy_losses(function: ToyFunction | str,
                    paths: Mapping[str, ToyPath] | Sequence[ToyPath], ax: Axes | None = None,
                    *, title: bool = True) -> Figure:
    """Suboptimality ``f(w_k) - f_min`` against step ``k`` (log scale), one line per path.

    A batch of runs is drawn as its median over runs. Values at or below 0 (reached to
    rounding) and diverged ones (not finite or above :data:`landscape.toy.DIVERGED`) are
    left out.
    """
    f = as_function(function)
    paths = _as_list(paths)
    ax_given = ax is not None
    with house_style():
        fig, ax = new_axes(ax, aspect=0.7 if len(paths) <= 3 else 0.8)
        for i, p in enumerate(paths):
            gap = p.losses - f.f_min
            if gap.ndim == 2:
                gap = np.median(gap, axis=1)
            gap = np.where(np.isfinite(gap) & (gap > 0) & (gap <= DIVERGED), gap, np.nan)
            ax.plot(np.arange(len(gap)), gap, color=OKABE_ITO[i % (len(OKABE_ITO) - 1)],
                    label=p.label)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(r"$f(w_k) - f^\star$")
        if title:
            ax.set_title(function_title(f))
        if ax_given or len(paths) <= 3:
            ax.legend(loc="best")
        else:  # many lines: below the panel, off the data
            fig.legend(loc="outside lower center", ncols=3, handlelength=1.4,
                       columnspacing=1.0)
    return fig


def save_toy_figures(paths_file: str | Path, out: str | Path,
                     formats: Sequence[str] = ("pdf", "png")) -> list[Path]:
    """Draw the paths of a ``paths.h5`` (:func:`landscape.toy.save_paths`) as
    ``out/losses.<fmt>`` and, for 2D functions, ``out/paths.<fmt>``; returns the files."""
    formats = check_formats(formats)
    f, paths = load_paths(paths_file)
    figures = {"losses": plot_toy_losses(f, paths)}
    if f.dim == 2:
        figures["paths"] = plot_toy_paths(f, paths)
    return [save_figure(fig, Path(out) / f"{stem}.{fmt}")
            for stem, fig in figures.items() for fmt in formats]


__all__ = ["draw_toy_contours", "function_title", "panel_aspect", "plot_toy_losses",
           "plot_toy_paths", "save_toy_figures"]
