"""Curvature along a training run: loss, sharpness against its stability threshold, and the
landscape of the path, on a shared step axis (one run or several overlaid)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from landscape.analysis.measures import REGISTRY
from landscape.analysis.track import TRACK_FILE, Track, load_track
from landscape.errors import LandscapeError
from landscape.plot.style import GOLDEN, OKABE_ITO, figure_size, house_style


def _tracks(tracks: Any) -> dict[str, Track]:
    """``{label: Track}`` from a Track/path, a sequence of them, or a mapping."""
    if isinstance(tracks, Mapping):
        items = list(tracks.items())
    else:
        seq = [tracks] if isinstance(tracks, Track | str | Path) else list(tracks)
        items = [(None, t) for t in seq]
    out: dict[str, Track] = {}
    for label, t in items:
        track = t if isinstance(t, Track) else load_track(t)
        if label is None:
            run = track.path.parent if track.path.name == TRACK_FILE else track.path
            label = run.name
        out[str(label)] = track
    if not out:
        raise LandscapeError("no tracks to plot")
    return out


def plot_track(tracks: Any, axes: Sequence[Axes] | None = None, *,
               log_loss: bool = True) -> Figure:
    """Three panels sharing the step axis: (top) the train loss at tracked steps, with a thin
    line for the loss on the straight line between consecutive tracked points (a bump above
    both ends: the path crossed a ridge); (middle) the sharpness (the preconditioned top
    eigenvalue for adaptive optimizers) with its stability threshold (2/lr, dashed, same
    colour); (bottom) the line minimum along each update, in units of the step taken (1/2:
    the step jumped across the valley to the mirror point, below 1/2: it raised the loss).

    ``tracks``: a run directory, a ``track.h5``, a :class:`Track`, a sequence of them or
    ``{label: ...}`` (several runs overlaid, one colour each, with a legend). ``axes``: three
    axes to draw on (default: a new single-column figure). Nothing is shown or saved.
    """
    runs = _tracks(tracks)
    palette = OKABE_ITO[:-1]
    with house_style():
        if axes is None:
            fig = Figure(figsize=figure_size("single", GOLDEN * 2.1))
            axes = fig.subplots(3, 1, sharex=True, height_ratios=(1.0, 1.2, 0.8))
        else:
            if len(axes) != 3:
                raise LandscapeError(f"plot_track draws three panels, got {len(axes)} axes")
            fig = axes[0].get_figure()
        ax_loss, ax_sharp, ax_line = axes
        names = set()
        for i, (label, tr) in enumerate(runs.items()):
            color = palette[i % len(palette)]
            steps = tr.step.astype(float)
            ax_loss.plot(steps, tr.train_loss, color=color, lw=1.0, label=label)
            for r in range(1, len(steps)):  # the straight line between tracked points
                seg = tr.segment_loss[r]
                if np.isfinite(seg).all():
                    x = steps[r - 1] + tr.segment_s * (steps[r] - steps[r - 1])
                    ax_loss.plot(x, seg, color=color, lw=0.4, alpha=0.6)
            values, threshold, name = tr.sharpness
            names.add(name)
            ax_sharp.plot(steps, values, color=color, lw=1.0)
            ax_sharp.plot(steps, threshold, color=color, lw=0.8, ls="--")
            ax_line.plot(steps, tr.line_minimum(), color=color, lw=0.8, marker=".", ms=2)
        if log_loss:
            ax_loss.set_yscale("log")
        ax_loss.set_ylabel("train loss")
        label = "preconditioned sharpness" if names == {"preconditioned_top_eigenvalue"} \
            else REGISTRY["top_eigenvalue"].label if names == {"top_eigenvalue"} \
            else "(preconditioned) sharpness"
        ax_sharp.set_ylabel(label.replace("top Hessian eigenvalue", "top Hessian eig."))
        ax_sharp.set_ylim(bottom=0)
        for y in (0.5, 1.0):
            ax_line.axhline(y, color="0.6", lw=0.5, ls=":", zorder=1)
        ax_line.set_ylabel("line min. (steps)")
        ax_line.set_xlabel("optimizer step")
        handles = [Line2D([], [], color=palette[i % len(palette)], label=label)
                   for i, label in enumerate(runs)]
        handles.append(Line2D([], [], color="0.3", ls="--", lw=0.8, label="threshold"))
        ax_loss.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0),
                       ncols=min(len(handles), 3), borderaxespad=0.2, columnspacing=1.2)
        fig.align_ylabels(axes)
    return fig


def plot_tracks(source: Any, seed: int | None = None) -> Figure:
    """:func:`plot_track` of several runs: a study (a :class:`landscape.study.Study`, its
    ``study.h5``, or its folder), one run per recipe (``runs/NAME/seedK`` next to the study
    file; ``seed``: which, default the lowest tracked one), or ``{label: run_dir}``."""
    if isinstance(source, Mapping):
        return plot_track(source)
    path = Path(getattr(source, "path", source))
    folder = (path if path.is_dir() else path.parent) / "runs"
    found: dict[str, Path] = {}
    for recipe in sorted(p for p in folder.glob("*") if p.is_dir()):
        tracked = sorted((int(d.name[4:]), d) for d in recipe.glob("seed*")
                         if d.name[4:].isdigit() and (d / TRACK_FILE).exists()
                         and (seed is None or int(d.name[4:]) == seed))
        if tracked:
            found[recipe.name] = tracked[0][1]
    if not found:
        raise LandscapeError(f"{folder}: no tracked runs (give the recipes track=... options)")
    return plot_track(found)


__all__ = ["plot_track", "plot_tracks"]
