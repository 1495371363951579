"""The comparison figure of a study (:mod:`landscape.study`): every model on shared axes and
one shared colour scale, so that differences in sharpness are differences in the picture.

Layout (double column): top row, (a) the 1D filter-normalized curves of all models on one
axes (train solid, test dashed), (b) the interpolations between the solutions, (c) every
sharpness measure of each model relative to the largest over models (log scale); bottom row,
the 2D filter-normalized surfaces side by side, sharing their axes, levels and colour bar.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colors
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from landscape.errors import LandscapeError
from landscape.plot._inputs import metric_label, scale_metric, values
from landscape.plot.contours import add_colorbar, color_scale, plot_contour
from landscape.plot.curves import SPLIT_STYLE, plot_curve
from landscape.plot.style import DOUBLE_COLUMN, OKABE_ITO, house_style

#: (table key, label) of the measures drawn in the relative-value panel.
RELATIVE_MEASURES = (
    ("top_eigenvalue", "top eigenvalue"),
    ("hessian_trace", "Hessian trace"),
    ("epsilon_sharpness", "$\\epsilon$-sharpness"),
    ("adaptive_worst_l2", "adaptive worst $\\ell_2$"),
    ("adaptive_average_l2", "adaptive avg. $\\ell_2$"),
    ("pac_bayes_flatness", "PAC-Bayes $1/\\sigma^2$"),
    ("curve_rise", "1D rise"),
    ("noise_scale", "noise scale"),
)


#: With ``increase``, log levels span this fraction of the largest rise up to the largest.
INCREASE_RANGE = 3e-4


def _as_study(study: Any) -> Any:
    from landscape.study import Study, load_study

    if isinstance(study, str | Path):
        return load_study(study)
    if not isinstance(study, Study):
        raise LandscapeError(f"a comparison figure needs a study file or Study, got "
                             f"{type(study).__name__}")
    return study


def _letter(ax: Any, letter: str) -> None:
    ax.set_title(f"({letter})", loc="left", fontweight="bold", fontsize=8)


def _interpolation_panel(ax: Any, study: Any, colors_of: dict[str, str]) -> None:
    """Loss (black, left) and accuracy (grey, right) from one solution to the other; with
    more than two models, every pair's loss in its own colour."""
    pairs = list(study.interpolations.items())
    if not pairs:
        ax.text(0.5, 0.5, "no interpolation\n(different architectures)", ha="center",
                va="center", transform=ax.transAxes, fontsize=7, color="0.4")
        ax.set_axis_off()
        return
    single = len(pairs) == 1
    ax_acc = None
    if single and any(k.endswith("_acc") for k in pairs[0][1].values):
        ax_acc = ax.twinx()
        ax_acc.spines["right"].set_visible(True)
        ax_acc.set_ylim(-2, 102)
        ax_acc.set_ylabel("accuracy (%)", color="0.5")
        ax_acc.tick_params(axis="y", colors="0.5")
        ax.set_zorder(ax_acc.get_zorder() + 1)
        ax.patch.set_visible(False)
    for i, ((a, b), curve) in enumerate(pairs):
        color = "black" if single else OKABE_ITO[(i + len(colors_of)) % (len(OKABE_ITO) - 1)]
        for split in ("train", "test"):
            if f"{split}_loss" in curve.values:
                ax.plot(curve.x, values(curve, f"{split}_loss"), color=color,
                        ls=SPLIT_STYLE[split])
            if ax_acc is not None and f"{split}_acc" in curve.values:
                ax_acc.plot(curve.x, 100 * values(curve, f"{split}_acc"), color="0.55",
                            ls=SPLIT_STYLE[split], lw=0.8)
        if not single:
            ax.plot([], [], color=color, label=f"{a} $\\to$ {b}")
    for t in (0.0, 1.0):
        ax.axvline(t, color="0.6", lw=0.5, ls=":", zorder=1)
    if single:
        (a, b), _ = pairs[0]
        for t, name in ((0.0, a), (1.0, b)):  # each end in its model's colour
            ax.plot(t, 0, marker="^", ms=6, color=colors_of[name], clip_on=False, zorder=6,
                    transform=ax.get_xaxis_transform())
        ax.set_xlabel(f"$t$ (0: {a}, 1: {b})")
    else:
        ax.set_xlabel("$t$ (0: first model, 1: second)")
        ax.legend(loc="best", fontsize=6.5)
    ax.set_xlim(float(pairs[0][1].x.min()), float(pairs[0][1].x.max()))
    ax.set_ylabel(metric_label("loss", pairs[0][1].attrs.get("loss")))


def _relative_panel(ax: Any, study: Any, colors_of: dict[str, str]) -> None:
    rows = {r["model"]: r for r in study.table}
    shown = [(k, label) for k, label in RELATIVE_MEASURES
             if any(isinstance(rows[n].get(k), int | float) and rows[n][k] > 0
                    for n in study.names)]
    n_models = len(study.names)
    height = 0.7 / max(1, n_models)
    for j, name in enumerate(study.names):
        for i, (key, _) in enumerate(shown):
            vals = [rows[n].get(key) for n in study.names]
            top = max(v for v in vals if isinstance(v, int | float) and v > 0)
            v = rows[name].get(key)
            y = i + (j - (n_models - 1) / 2) * height
            if isinstance(v, int | float) and v > 0:
                ax.barh(y, v / top, height=height * 0.9, left=0, color=colors_of[name],
                        log=True)
            else:
                missing = v is None or not np.isfinite(v)
                ax.text(1.2e-4, y, "n/a" if missing else "$\\leq$ 0", va="center",
                        fontsize=5.5, color=colors_of[name])
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1.6)
    ax.set_yticks(range(len(shown)), [label for _, label in shown])
    ax.invert_yaxis()
    ax.tick_params(axis="y", length=0)
    ax.set_xlabel("value / largest over models")


def plot_comparison(study: Any, *, metric: str = "train_loss",
                    levels: int | None = None, vmin: float | None = None,
                    vmax: float | None = None, log: bool | None = None,
                    increase: bool = True, relative: bool = True) -> Figure:
    """The comparison figure of a study (a ``study.h5`` path, its folder, or a loaded
    :class:`~landscape.study.Study`).

    The 2D panels share x and y axes and one colour scale (the same norm and levels, from
    the values of all models: ``levels``/``vmin``/``vmax``/``log`` as in
    :func:`~landscape.plot.contours.color_scale`) with a single colour bar. ``increase``
    (default) draws each model's rise above its own centre value, on log-spaced levels from
    ``3e-4`` of the largest rise: minima at different loss levels then compare by their
    shape (the same rise is reached closer to a sharper minimum); ``increase=False`` draws
    the loss itself, as Li et al. (2018) do. ``relative=False`` leaves out the panel of
    relative measures. Returns the figure (7 in wide).
    """
    study = _as_study(study)
    names = list(study.names)
    if len(names) < 1:
        raise LandscapeError(f"{study.path}: the study holds no model")
    colors_of = {n: OKABE_ITO[i % (len(OKABE_ITO) - 1)] for i, n in enumerate(names)}
    surfaces = {n: _increase(study.surfaces[n], metric) if increase else study.surfaces[n]
                for n in names}
    grids = [scale_metric(metric, values(surfaces[n], metric)) for n in names]
    if increase and log is not False and vmin is None:  # log levels of the rise above 0
        top_value = max(float(np.nanmax(g)) for g in grids)
        vmin, log = max(top_value * INCREASE_RANGE, 1e-12), True
    lv, norm = color_scale(grids, levels=levels, vmin=vmin, vmax=vmax, log=log)
    n_top = 3 if relative and study.table else 2
    n = len(names)
    bottom_h = min(3.3, (DOUBLE_COLUMN - 1.3) / n + 0.75)
    with house_style():
        fig = Figure(figsize=(DOUBLE_COLUMN, 2.45 + bottom_h))
        top, bottom = fig.subfigures(2, 1, height_ratios=[2.45, bottom_h])
        ax_top = top.subplots(1, n_top, width_ratios=[1.0, 1.0, 0.9][:n_top])
        plot_curve({m: study.curves[m] for m in names}, ax_top[0], accuracy=False,
                   colors=[colors_of[m] for m in names], legend=False)
        _interpolation_panel(ax_top[1], study, colors_of)
        if n_top == 3:
            _relative_panel(ax_top[2], study, colors_of)
        for i, ax in enumerate(ax_top):
            _letter(ax, chr(ord("a") + i))
        handles = [Line2D([], [], color=colors_of[m], lw=2.5, label=m) for m in names]
        handles += [Line2D([], [], color="0.3", ls=SPLIT_STYLE[sp], label=sp)
                    for sp in ("train", "test")]
        top.legend(handles=handles, loc="outside upper center", ncols=len(handles))
        axes = np.atleast_1d(bottom.subplots(1, n, sharex=True, sharey=True))
        for i, (ax, name) in enumerate(zip(axes, names)):
            plot_contour(surfaces[name], ax, metric=metric, levels=lv, norm=norm,
                         colorbar=False)
            ax.set_title(name, color=colors_of[name])
            _letter(ax, chr(ord("a") + n_top + i))
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.yaxis.set_major_locator(MaxNLocator(5))
            if i:
                ax.set_ylabel("")
        label = metric_label(metric, study.surfaces[names[0]].attrs.get("loss"))
        if increase:
            label = label.replace(" (", " increase over the centre (", 1)
        add_colorbar(bottom, list(axes), _first_contour(axes), label)
    return fig


def _increase(surface: Any, metric: str) -> Any:
    """A copy of ``surface`` whose ``metric`` is its rise over the value at the centre
    (the trained model), so minima at different loss levels compare by their shape."""
    from dataclasses import replace

    center = surface.attrs.get(f"center_{metric}")
    if center is None:
        raise LandscapeError(f"{surface.path}: no centre value of {metric!r} to subtract")
    rise = values(surface, metric) - float(center)
    return replace(surface, values={**surface.values, metric: np.maximum(rise, 0.0)})


def _first_contour(axes: Any) -> Any:
    from matplotlib.contour import ContourSet

    for ax in axes:
        for artist in ax.get_children():
            if isinstance(artist, ContourSet):
                return artist
    return None


def shared_norm(fig: Figure) -> list[colors.Normalize]:
    """The colour norms of the contour sets in ``fig`` (one per 2D panel), for checks."""
    from matplotlib.contour import ContourSet

    return [a.norm for ax in fig.axes for a in ax.get_children() if isinstance(a, ContourSet)]


__all__ = ["plot_comparison", "shared_norm"]
