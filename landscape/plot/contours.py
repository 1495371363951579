"""2D figures of a stored surface: contour lines, filled contours or a heat map, a 3D surface,
and a training trajectory over the contours of its PCA plane (Li et al. 2018, Figs. 1, 9).

Levels are linear, or log-spaced when the values are positive and span more than
:data:`LOG_SPAN` (losses far from a minimum grow by orders of magnitude); ``vmin``/``vmax``
clip the colour scale (values beyond it are drawn in the end colours). Pass the same
``norm`` to several plots to share one colour scale (see :func:`color_scale`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib import colors
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from landscape.errors import LandscapeError
from landscape.plot._inputs import (
    as_surface,
    axis_labels,
    check_finite,
    endpoint_names,
    finite,
    metric_label,
    scale_metric,
    values,
)
from landscape.plot.style import SEQUENTIAL_CMAP, house_style, new_axes

LOG_SPAN = 30.0        # max/min ratio from which levels are log-spaced by default
DEFAULT_LEVELS = 15


def color_scale(data: np.ndarray | Sequence[np.ndarray], *, levels: int | Sequence[float] |
                None = None, vmin: float | None = None, vmax: float | None = None,
                log: bool | None = None) -> tuple[np.ndarray, colors.Normalize]:
    """Contour levels and the colour norm for ``data`` (one array or several, NaN ignored).

    ``levels``: a number of levels (default 15) or the levels themselves; ``vmin``/``vmax``
    default to the finite range of the data (or of given levels); ``log`` (default: when
    every value is positive and max/min > 30) spaces the levels geometrically and returns a
    :class:`~matplotlib.colors.LogNorm`.
    """
    arrays = [data] if isinstance(data, np.ndarray) else list(data)
    vals = np.concatenate([finite(a) for a in arrays]) if arrays else np.array([])
    given = None if levels is None or isinstance(levels, int | np.integer) else \
        np.sort(np.asarray(levels, dtype=float))
    if given is not None and given.size < 2:
        raise LandscapeError(f"give at least 2 contour levels, got {given.size}")
    if vals.size == 0 and given is None and (vmin is None or vmax is None):
        raise LandscapeError("no finite value to choose the colour scale from")
    lo = float(vmin) if vmin is not None else (
        float(given[0]) if given is not None else float(vals.min()))
    hi = float(vmax) if vmax is not None else (
        float(given[-1]) if given is not None else float(vals.max()))
    if not hi > lo:
        if vmin is not None and vmax is not None:
            raise LandscapeError(f"vmax ({hi:g}) must be larger than vmin ({lo:g})")
        hi = lo + max(abs(lo) * 1e-6, 1e-12)
    if log is None:
        log = lo > 0 and hi / lo > LOG_SPAN
    if log and lo <= 0:
        if vmin is not None:
            raise LandscapeError(f"a log colour scale needs vmin > 0, got {lo:g}")
        positive = vals[vals > 0]
        if positive.size == 0:
            raise LandscapeError("a log colour scale needs positive values; none are")
        lo = float(positive.min())
    if given is not None:
        lv = given
    else:
        n = DEFAULT_LEVELS if levels is None else int(levels)
        if n < 2:
            raise LandscapeError(f"the number of levels must be at least 2, got {n}")
        lv = np.geomspace(lo, hi, n) if log else np.linspace(lo, hi, n)
    norm = colors.LogNorm(lo, hi) if log else colors.Normalize(lo, hi)
    return lv, norm


def _extend(z: np.ndarray, norm: colors.Normalize) -> str:
    v = finite(z)
    below, above = bool((v < norm.vmin).any()), bool((v > norm.vmax).any())
    return {(False, False): "neither", (True, False): "min", (False, True): "max",
            (True, True): "both"}[(below, above)]


def _grid(surface: Any, metric: str) -> tuple[np.ndarray, str]:
    z = scale_metric(metric, values(surface, metric))
    check_finite(z, surface, metric)
    return z, metric_label(metric, surface.attrs.get("loss"))


def mark_points(ax: Axes, surface: Any) -> None:
    """The trained model(s) on the plane: the origin, or each solution of a plane."""
    kind = surface.attrs.get("kind", "surface")
    if kind == "plane":
        for (px, py), name in zip(((0, 0), (1, 0), (0, 1)), endpoint_names(surface)):
            ax.plot(px, py, marker="o", ms=3.5, color="white", mec="black", mew=0.6, zorder=5)
            ax.annotate(name, (px, py), xytext=(3, 3), textcoords="offset points",
                        fontsize=6.5, zorder=6)
    elif kind == "surface":
        ax.plot(0, 0, marker="+", ms=6, color="black", mew=0.9, zorder=5)


def add_colorbar(fig: Figure, ax: Axes | Sequence[Axes], mappable: Any, label: str) -> Any:
    """A colorbar for ``mappable`` beside ``ax`` (one axes or several sharing the scale).

    Contour lines get a continuous bar with their levels drawn on it; log scales get
    decade ticks with plain numbers.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.contour import ContourSet
    from matplotlib.ticker import LogFormatterSciNotation

    lines = isinstance(mappable, ContourSet) and not mappable.filled
    source = ScalarMappable(norm=mappable.norm, cmap=mappable.cmap) if lines else mappable
    cbar = fig.colorbar(source, ax=ax, label=label, shrink=0.9, pad=0.02, aspect=25)
    if lines:
        cbar.add_lines(mappable)
    if isinstance(mappable.norm, colors.LogNorm):
        if isinstance(mappable, ContourSet) and mappable.filled:  # discrete bands: their edges
            from matplotlib.ticker import FormatStrFormatter, NullLocator

            edges = np.asarray(mappable.levels)
            cbar.set_ticks(edges[:: max(1, int(np.ceil(len(edges) / 8)))])
            cbar.ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
            cbar.ax.yaxis.set_minor_locator(NullLocator())
        else:
            cbar.ax.yaxis.set_major_formatter(LogFormatterSciNotation(labelOnlyBase=True))
    return cbar


def finish_2d(fig: Figure, ax: Axes, surface: Any, mappable: Any, label: str,
              colorbar: bool, title: str | None) -> None:
    """Axis labels, limits, equal aspect, the colour bar and title of a 2D surface panel."""
    xlabel, ylabel = axis_labels(surface)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(float(surface.x.min()), float(surface.x.max()))
    ax.set_ylim(float(surface.y.min()), float(surface.y.max()))
    xr, yr = np.ptp(surface.x), np.ptp(surface.y)
    if yr > 0 and 0.25 <= xr / yr <= 4 and surface.attrs.get("kind") != "trajectory":
        ax.set_aspect("equal")
    if colorbar:
        add_colorbar(fig, ax, mappable, label)
    if title:
        ax.set_title(title)


def plot_contour(surface: Any, ax: Axes | None = None, *, metric: str = "train_loss",
                 levels: int | Sequence[float] | None = None, vmin: float | None = None,
                 vmax: float | None = None, log: bool | None = None, filled: bool = False,
                 heatmap: bool = False, norm: colors.Normalize | None = None,
                 cmap: str = SEQUENTIAL_CMAP, colorbar: bool = True,
                 labels: bool = False, title: str | None = None) -> Figure:
    """Contour lines of ``metric`` over a 2D surface (path or loaded surface).

    ``filled`` draws filled contours, ``heatmap`` a cell-centred heat map instead; levels and
    colour scale as in :func:`color_scale` (``norm`` overrides them, to share one scale
    between panels). ``labels`` writes the level values on the lines. Accuracies are in %.
    The trained model is marked ``+`` (the solutions of a plane by name).
    """
    s = as_surface(surface, ndim=2, what="a contour plot")
    z, label = _grid(s, metric)
    if norm is None:
        lv, norm = color_scale(z, levels=levels, vmin=vmin, vmax=vmax, log=log)
    else:  # a shared scale: levels spread over it unless given
        lv, _ = color_scale(z, levels=levels, vmin=norm.vmin, vmax=norm.vmax,
                            log=isinstance(norm, colors.LogNorm))
    if isinstance(norm, colors.LogNorm):
        z = np.where(z > 0, z, norm.vmin * 1e-3)   # contour cannot place a non-positive value
    with house_style():
        fig, ax = new_axes(ax, aspect=0.85)
        if heatmap:
            mappable = ax.pcolormesh(s.x, s.y, z, norm=norm, cmap=cmap, shading="nearest",
                                     rasterized=True)
        elif filled:
            mappable = ax.contourf(s.x, s.y, z, levels=lv, norm=norm, cmap=cmap,
                                   extend=_extend(z, norm))
        else:
            mappable = ax.contour(s.x, s.y, z, levels=lv, norm=norm, cmap=cmap,
                                  linewidths=0.7)
            if labels:
                ax.clabel(mappable, fontsize=5.5, fmt="%.3g", inline_spacing=2)
        mark_points(ax, s)
        finish_2d(fig, ax, s, mappable, label, colorbar, title)
    return fig


def plot_filled(surface: Any, ax: Axes | None = None, **options: Any) -> Figure:
    """Filled contours of a 2D surface (:func:`plot_contour` with ``filled=True``)."""
    return plot_contour(surface, ax, filled=True, **options)


def plot_heatmap(surface: Any, ax: Axes | None = None, **options: Any) -> Figure:
    """Heat map of a 2D surface (:func:`plot_contour` with ``heatmap=True``)."""
    return plot_contour(surface, ax, heatmap=True, **options)


def plot_surface3d(surface: Any, ax: Axes | None = None, *, metric: str = "train_loss",
                   vmin: float | None = None, vmax: float | None = None,
                   log: bool | None = None, cmap: str = SEQUENTIAL_CMAP,
                   elev: float = 30.0, azim: float = -60.0, colorbar: bool = False,
                   title: str | None = None) -> Figure:
    """The 2D surface as a 3D shaded surface (matplotlib ``mplot3d``).

    Values above ``vmax`` are clipped to it (the usual way to keep a landscape's far walls
    from flattening the basin); ``log`` plots log10 of the metric. ``ax`` must be a 3D axes.
    """
    s = as_surface(surface, ndim=2, what="a 3D surface plot")
    z, label = _grid(s, metric)
    _, norm = color_scale(z, vmin=vmin, vmax=vmax, log=log)
    use_log = isinstance(norm, colors.LogNorm)
    z = np.clip(z, norm.vmin, norm.vmax)
    zplot = np.log10(z) if use_log else z
    with house_style():
        if ax is None:
            fig = Figure(figsize=(3.4, 3.0))
            ax = fig.add_subplot(projection="3d")
        else:
            if getattr(ax, "name", "") != "3d":
                raise LandscapeError("a 3D surface needs a 3D axes "
                                     "(fig.add_subplot(projection='3d'))")
            fig = ax.get_figure()
        xx, yy = np.meshgrid(s.x, s.y)
        facecolors = matplotlib.colormaps[cmap](norm(z))
        ax.plot_surface(xx, yy, zplot, facecolors=facecolors, rstride=1, cstride=1,
                        linewidth=0.1, edgecolor=(0, 0, 0, 0.15), antialiased=True,
                        shade=False, rasterized=True)
        def short(text: str) -> str:   # 3D axes have room for the symbol only
            return text.split(",")[0].split(" (")[0]

        xlabel, ylabel = axis_labels(s)
        ax.set_xlabel(short(xlabel), labelpad=-4)
        ax.set_ylabel(short(ylabel), labelpad=-4)
        ax.set_zlabel(f"log$_{{10}}$ {short(label)}" if use_log else label, labelpad=-2)
        from matplotlib.ticker import MaxNLocator

        for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
            axis.set_major_locator(MaxNLocator(5))
        ax.tick_params(pad=-2, labelsize=6)
        ax.view_init(elev=elev, azim=azim)
        ax.set_box_aspect((1, 1, 0.75), zoom=0.82)
        if colorbar:
            from matplotlib.cm import ScalarMappable

            add_colorbar(fig, ax, ScalarMappable(norm=norm, cmap=cmap), label)
        if title:
            ax.set_title(title)
    return fig


def _epoch_labels(epochs: np.ndarray, most: int = 6) -> set[int]:
    """Indices of the path points that get an epoch label: first, last, evenly between."""
    n = len(epochs)
    if n <= most:
        return set(range(n))
    return {int(round(i)) for i in np.linspace(0, n - 1, most)}


def plot_trajectory(surface: Any, ax: Axes | None = None, *, metric: str = "train_loss",
                    levels: int | Sequence[float] | None = None, vmin: float | None = None,
                    vmax: float | None = None, log: bool | None = None,
                    cmap: str = SEQUENTIAL_CMAP, colorbar: bool = True,
                    title: str | None = None) -> Figure:
    """The optimization path on its PCA plane over the contours there (Li et al. Fig. 9).

    Needs a ``trajectory`` file (:func:`landscape.surface.trajectory`): contour lines of
    ``metric``, the checkpoints as dots joined in order with their epochs written beside a
    few of them, the final model (the plane's origin) as a star; the axis labels give each
    principal component's share of the path's variance.
    """
    s = as_surface(surface, kinds=("trajectory",), ndim=2, what="a trajectory plot")
    for name in ("path/coords", "path/epochs"):
        if name not in s.extras:
            raise LandscapeError(f"{s.path}: no dataset {name!r}; a trajectory file holds the "
                                 "path's coordinates and epochs")
    coords = np.asarray(s.extras["path/coords"], dtype=float)
    epochs = np.asarray(s.extras["path/epochs"])
    fig = plot_contour(s, ax, metric=metric, levels=levels, vmin=vmin, vmax=vmax, log=log,
                       cmap=cmap, colorbar=colorbar, title=title)
    ax = ax if ax is not None else fig.axes[0]
    with house_style():
        full = np.vstack([coords, [[0.0, 0.0]]])   # the path ends at the final model
        ax.plot(full[:, 0], full[:, 1], color="#D55E00", lw=1.0, zorder=6, marker="o", ms=2.2,
                mfc="#D55E00", mec="white", mew=0.3, label="path (numbers: epochs)")
        ax.plot(0, 0, marker="*", ms=8, color="#D55E00", mec="black", mew=0.4, zorder=7,
                label="final model")
        for i in sorted(_epoch_labels(epochs)):
            ax.annotate(f"{int(epochs[i])}", coords[i], xytext=(3, 2),
                        textcoords="offset points", fontsize=6, color="black", zorder=8)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, borderaxespad=0.2)
    return fig


__all__ = ["add_colorbar", "color_scale", "finish_2d", "mark_points", "plot_contour",
           "plot_filled", "plot_heatmap", "plot_surface3d", "plot_trajectory"]
