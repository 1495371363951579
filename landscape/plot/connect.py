"""Figures of the space between minima: loss or error along paths (naive, aligned, curved)
with bands over seed pairs, the barrier against the spawn step (instability analysis), and
the plane through two minima and a curve's control point (Garipov et al. 2018, figure 1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from landscape.errors import LandscapeError
from landscape.plot._inputs import as_surface, metric_label, named, values
from landscape.plot.contours import add_colorbar, color_scale
from landscape.plot.style import OKABE_ITO, SEQUENTIAL_CMAP, house_style, new_axes
from landscape.stats import LEVEL, confidence_interval


def _series(surface: Any, metric: str) -> np.ndarray:
    """``metric`` along a path: ``<split>_loss`` as stored, ``<split>_error`` in percent."""
    split, _, name = metric.rpartition("_")
    if name == "error":
        return 100.0 * (1.0 - values(surface, f"{split}_acc"))
    return values(surface, metric)


def _label(metric: str, loss: str | None) -> str:
    split, _, name = metric.rpartition("_")
    return f"{split} error (%)" if name == "error" else metric_label(metric, loss)


def _band(ax: Axes, x: np.ndarray, rows: np.ndarray, color: str, label: str) -> None:
    """Mean line and its Student-t interval over the rows (a band where there are >= 2)."""
    stats = [confidence_interval(rows[:, j]) for j in range(rows.shape[1])]
    mean = np.array([s.mean if s.mean is not None else np.nan for s in stats])
    ax.plot(x, mean, color=color, label=label, zorder=3)
    if rows.shape[0] >= 2:
        lo = np.array([s.ci_low for s in stats], dtype=float)
        hi = np.array([s.ci_high for s in stats], dtype=float)
        ax.fill_between(x, lo, hi, color=color, alpha=0.25, lw=0, zorder=2)


def plot_paths(groups: Any, ax: Axes | None = None, *, metric: str = "test_loss",
               colors: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """``metric`` (``<split>_loss`` or ``<split>_error``) along paths, one colour per group
    (``{"naive": [files...], "weights": [...], "bezier": [...]}``, each a list of path files
    or loaded paths over seed pairs): the mean and its 95% interval over the pairs as a band.
    """
    if not isinstance(groups, dict):
        groups = {"path": groups}
    palette = list(colors) if colors is not None else list(OKABE_ITO[:-1])
    loss = None
    with house_style():
        fig, ax = new_axes(ax)
        for i, (name, files) in enumerate(groups.items()):
            paths = [as_surface(getattr(p, "surface", p), kinds=("path",), ndim=1,
                                what="a path plot") for p in named(files).values()]
            if not paths:
                raise LandscapeError(f"group {name!r} holds no path")
            t = paths[0].x
            if any(not np.array_equal(p.x, t) for p in paths):
                raise LandscapeError(f"the paths of group {name!r} have different t")
            rows = np.stack([_series(p, metric) for p in paths])
            loss = paths[0].attrs.get("loss")
            _band(ax, t, rows, palette[i % len(palette)], f"{name} (n={len(paths)})")
        ax.set_xlabel("t (A at 0, B at 1)")
        ax.set_ylabel(_label(metric, loss))
        ax.set_xlim(0.0, 1.0)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3, borderaxespad=0.2)
        if title:
            ax.set_title(title)
    return fig


def plot_stability(result: Any, ax: Axes | None = None, *, metric: str = "test_error",
                   title: str | None = None) -> Figure:
    """Barrier between children against the epoch or step they were spawned at (Frankle et al.
    2020): the mean over pairs with its 95% interval, each pair as a dot. ``result``: a
    :class:`landscape.connect.stability.Stability` or its ``stability.json``."""
    from landscape.connect.stability import Stability, load_stability

    if not isinstance(result, Stability):
        result = load_stability(result)
    if metric not in result.values:
        raise LandscapeError(f"no {metric!r} barrier (have {', '.join(result.values)})")
    scale = 100.0 if metric.endswith("_error") else 1.0
    k = np.asarray(result.spawn_at, dtype=float)
    with house_style():
        fig, ax = new_axes(ax)
        for kk, v in zip(k, result.values[metric]):
            ax.plot([kk] * len(v), scale * np.asarray(v), ".", color="0.55", ms=3, zorder=2)
        rows = [confidence_interval(scale * np.asarray(v)) for v in result.values[metric]]
        mean = np.array([r.mean for r in rows], dtype=float)
        ax.plot(k, mean, "o-", color=OKABE_ITO[0], ms=3.5, zorder=3, label="mean over pairs")
        lo = np.array([r.ci_low if r.ci_low is not None else np.nan for r in rows], dtype=float)
        hi = np.array([r.ci_high if r.ci_high is not None else np.nan for r in rows],
                      dtype=float)
        ax.fill_between(k, lo, hi, color=OKABE_ITO[0], alpha=0.25, lw=0,
                        label=f"{int(LEVEL * 100)}% interval")
        ax.axhline(0.0, color="0.6", lw=0.5, ls=":")
        ax.set_xlabel(f"spawn {result.unit} k")
        what = "error (%)" if metric.endswith("_error") else "loss"
        ax.set_ylabel(f"{metric.split('_')[0]} {what} barrier")
        ax.legend(loc="upper right")
        if title:
            ax.set_title(title)
    return fig


def plot_curve_plane(surface: Any, ax: Axes | None = None, *, metric: str = "train_loss",
                     levels: int = 15, title: str | None = None) -> Figure:
    """The plane through A, B and a curve's control point
    (:func:`landscape.connect.barrier.curve_plane`): filled contours of ``metric`` (log
    levels when it spans more than a factor 30), the curve, and A, B and the control point
    C, axes in parameter distance."""
    surface = as_surface(surface, kinds=("surface",), ndim=2, what="the curve plane")
    if "path/coords" not in surface.extras:
        raise LandscapeError(f"{surface.path}: not a curve plane (no path/coords)")
    z = values(surface, metric)
    lv, norm = color_scale(z)
    with house_style():
        fig, ax = new_axes(ax)
        filled = ax.contourf(surface.x, surface.y, z, levels=lv, norm=norm,
                             cmap=SEQUENTIAL_CMAP, extend="both")
        curve = surface.extras["path/coords"]
        ax.plot(curve[:, 0], curve[:, 1], color="white", lw=1.2, zorder=4,
                label=surface.attrs.get("path", "curve"))
        corners = surface.extras["path/endpoints"]
        for (px, py), name in zip(corners, ("A", "B", "C")):
            ax.plot(px, py, marker="o" if name != "C" else "s", ms=3.5, color="white",
                    mec="black", mew=0.6, zorder=5)
            ax.annotate(name, (px, py), xytext=(3, 3), textcoords="offset points",
                        fontsize=6.5, color="white", zorder=6)
        ax.set_xlabel("distance along B - A")
        ax.set_ylabel("distance towards C")
        ax.set_aspect("equal")
        add_colorbar(fig, ax, filled, metric_label(metric, surface.attrs.get("loss")))
        if title:
            ax.set_title(title)
    return fig


__all__ = ["plot_curve_plane", "plot_paths", "plot_stability"]
