"""1D figures: loss (and accuracy on a twin axis) along a direction or an interpolation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from landscape.errors import LandscapeError
from landscape.plot._inputs import (
    as_surface,
    axis_labels,
    direction_length,
    metric_label,
    metric_names,
    named,
    values,
)
from landscape.plot.style import OKABE_ITO, house_style, new_axes

SPLIT_STYLE = {"train": "-", "test": "--"}
_LOSS_COLOR, _ACC_COLOR = OKABE_ITO[0], OKABE_ITO[4]   # blue loss, vermillion accuracy


def _splits(surface: Any, splits: Sequence[str] | None) -> list[str]:
    have = [s for s in ("train", "test") if f"{s}_loss" in metric_names(surface)]
    if splits is None:
        return have
    missing = [s for s in splits if s not in have]
    if missing:
        raise LandscapeError(f"{surface.path}: no {missing[0]!r} split (dataset "
                             f"'{missing[0]}_loss'); it holds {', '.join(have) or 'none'}")
    return list(splits)


def plot_curve(results: Any, ax: Axes | None = None, *, splits: Sequence[str] | None = None,
               accuracy: bool | None = None, log: bool = False,
               labels: Sequence[str] | None = None, colors: Sequence[str] | None = None,
               title: str | None = None, legend: bool = True,
               distance: bool = False) -> Figure:
    """Loss along a 1D direction or interpolation; accuracy (%) on a twin axis.

    ``results``: one curve (a ``.h5`` path or a loaded :class:`~landscape.surface.Surface`,
    kind ``surface`` or ``interpolation``), a sequence of them, or ``{name: curve}``; several
    curves share the axes, one colour per model. Train lines are solid, test lines dashed.
    ``accuracy`` (default: only for a single curve) adds the accuracy on a right-hand axis
    (thin lines); ``log`` puts the loss on a log scale. ``distance``: the x axis is the L2
    distance from the centre in parameter space (each coordinate times its direction's
    norm), so that curves along directions of different lengths (a unit Hessian eigenvector,
    a filter-normalized random direction) compare. Returns the figure of ``ax`` (or a new
    single-column one); nothing is shown or saved.
    """
    curves = {name: as_surface(r, kinds=("surface", "interpolation"), ndim=1,
                               what="a 1D curve plot") for name, r in named(results).items()}
    names = list(labels) if labels is not None else list(curves)
    if len(names) != len(curves):
        raise LandscapeError(f"{len(names)} labels for {len(curves)} curves")
    single = len(curves) == 1
    accuracy = single if accuracy is None else accuracy
    palette = list(colors) if colors is not None else list(OKABE_ITO[:-1])
    first = next(iter(curves.values()))
    xlabel = axis_labels(first)[0]
    xs = {name: c.x * (direction_length(c) if distance else 1.0) for name, c in curves.items()}
    if distance:
        xlabel = "signed L2 distance from the centre (parameter space)"
    with house_style():
        fig, ax = new_axes(ax)
        ax_acc = None
        if accuracy and any(f"{s}_acc" in metric_names(c) for c in curves.values()
                            for s in ("train", "test")):
            ax_acc = ax.twinx()
            ax_acc.spines["right"].set_visible(True)
            ax_acc.set_ylabel("accuracy (%)", color=_ACC_COLOR if single else "black")
            ax_acc.set_ylim(-2, 102)
            ax.set_zorder(ax_acc.get_zorder() + 1)   # loss lines over accuracy lines
            ax.patch.set_visible(False)
        handles: list[Line2D] = []
        used_splits: list[str] = []
        for i, (key, c) in enumerate(curves.items()):
            x = xs[key]
            color = _LOSS_COLOR if single else palette[i % len(palette)]
            for split in _splits(c, splits):
                y = values(c, f"{split}_loss")
                if log:
                    y = np.where(y > 0, y, np.nan)
                line, = ax.plot(x, y, color=color, ls=SPLIT_STYLE[split], zorder=3,
                                label=f"{split} loss" if single else f"{names[i]}, {split}")
                if split not in used_splits:
                    used_splits.append(split)
                if single:
                    handles.append(line)
                if ax_acc is not None and f"{split}_acc" in metric_names(c):
                    acc = 100.0 * values(c, f"{split}_acc")
                    acc_line, = ax_acc.plot(x, acc, color=_ACC_COLOR if single else color,
                                            ls=SPLIT_STYLE[split], lw=0.7,
                                            alpha=1.0 if single else 0.55,
                                            label=f"{split} accuracy")
                    if single:
                        handles.append(acc_line)
            if not single:
                handles.append(Line2D([], [], color=color, label=names[i]))
        if not single:
            handles += [Line2D([], [], color="0.3", ls=SPLIT_STYLE[s], label=s)
                        for s in used_splits]
            if ax_acc is not None:
                handles.append(Line2D([], [], color="0.3", lw=0.7, alpha=0.55,
                                      label="accuracy (right)"))
        loss_name = first.attrs.get("loss", "cross_entropy")
        ax.set_ylabel(metric_label("loss", loss_name, log=log),
                      color=_LOSS_COLOR if single and ax_acc is not None else "black")
        if log:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_xlim(min(float(x.min()) for x in xs.values()),
                    max(float(x.max()) for x in xs.values()))
        if first.attrs.get("kind") == "interpolation":
            for t in (0.0, 1.0):
                ax.axvline(t, color="0.6", lw=0.5, ls=":", zorder=1)
        if title:
            ax.set_title(title)
        if legend:  # above the axes, where it hides no data
            ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0),
                      ncols=min(len(handles), 2 if single else 3), borderaxespad=0.2,
                      columnspacing=1.2)
    return fig


def curve_rise(curve: Any, metric: str = "train_loss", at: float = 0.5) -> float:
    """:meth:`landscape.surface.Surface.rise` of a curve given as a path or a loaded curve."""
    return as_surface(curve, kinds=("surface",), ndim=1, what="the curve rise").rise(metric, at)


__all__ = ["curve_rise", "plot_curve"]
