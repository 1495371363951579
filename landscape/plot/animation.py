"""Animated optimizer paths: a training trajectory on its PCA plane, or optimizers on an
analytic function, drawn as they go over the contours underneath (``landscape plot
--animate``), as a GIF (matplotlib's pillow writer) or an MP4 (ffmpeg, when installed).

Frame ``k`` of ``K`` shows each path up to the fraction ``k / (K - 1)`` of its steps,
interpolated linearly between stored points, so the last frame shows every stored point and
consecutive frames differ even when there are more frames than steps.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from landscape.errors import LandscapeError, check_int, check_positive
from landscape.plot.style import OKABE_ITO, house_style, new_axes

FORMATS = (".gif", ".mp4")


@dataclass
class PathAnimation:
    """A figure whose ``lines[label]`` are redrawn frame by frame from ``paths[label]``
    (``[T, 2]`` arrays, the stored points in order), ``frames`` frames in all."""

    fig: Figure
    lines: dict[str, Line2D]
    heads: dict[str, Line2D]
    paths: dict[str, np.ndarray]
    frames: int

    def draw(self, k: int) -> list[Line2D]:
        """Set every path to frame ``k`` (0-based); returns the changed artists."""
        u = k / max(self.frames - 1, 1)
        for label, pts in self.paths.items():
            pos = u * (len(pts) - 1)
            i = int(np.floor(pos))
            shown = pts[: i + 1]
            if i < len(pts) - 1:  # part of the next segment
                head = pts[i] + (pos - i) * (pts[i + 1] - pts[i])
                shown = np.vstack([shown, head])
            self.lines[label].set_data(shown[:, 0], shown[:, 1])
            self.heads[label].set_data(shown[-1:, 0], shown[-1:, 1])
        return [*self.lines.values(), *self.heads.values()]

    def save(self, out: str | Path, duration: float = 4.0, dpi: int = 150) -> Path:
        """Write all frames to ``out`` (.gif or .mp4), lasting ``duration`` seconds in all
        (a GIF stores each frame's time in 10 ms steps). Cost: one render per frame."""
        from matplotlib.animation import FFMpegWriter, FuncAnimation, PillowWriter

        out = Path(out)
        check_positive("duration", duration)
        if out.suffix.lower() not in FORMATS:
            raise LandscapeError(f"{out}: an animation is a .gif or .mp4 file")
        fps = self.frames / duration
        if out.suffix.lower() == ".mp4":
            if shutil.which("ffmpeg") is None:
                raise LandscapeError("an .mp4 needs ffmpeg on PATH; write a .gif instead")
            writer: Any = FFMpegWriter(fps=fps)
        else:
            writer = PillowWriter(fps=fps)
        out.parent.mkdir(parents=True, exist_ok=True)
        anim = FuncAnimation(self.fig, self.draw, frames=self.frames, blit=False,
                             repeat=False)
        anim.save(out, writer=writer, dpi=dpi)
        return out


def _animation(fig: Figure, ax: Any, paths: Mapping[str, np.ndarray], frames: int,
               colors: Mapping[str, str]) -> PathAnimation:
    check_int("frames", frames, 2)
    lines, heads, seen = {}, {}, set()
    for label in paths:
        color = colors[label]
        style = "--" if color in seen else "-"  # a colour used twice: dashed the second time
        seen.add(color)
        (lines[label],) = ax.plot([], [], color=color, ls=style, lw=1.2, label=label, zorder=6)
        (heads[label],) = ax.plot([], [], marker="o", ms=4, color=color, zorder=7)
    fig.legend(loc="outside lower center", ncols=min(len(paths), 4), handlelength=1.6,
               columnspacing=1.0)
    anim = PathAnimation(fig, lines, heads, {k: np.asarray(v, float) for k, v in paths.items()},
                         frames)
    anim.draw(0)
    return anim


def animate_toy(paths_file: str | Path, *, frames: int = 60,
                box: tuple[tuple[float, float], tuple[float, float]] | None = None,
                ) -> PathAnimation:
    """The optimizers of a 2D toy run (``landscape toy``'s ``paths.h5``) over the function's
    contours (:func:`landscape.plot.toy.draw_toy_contours`), one coloured path each."""
    from landscape.plot.toy import draw_toy_contours, function_title, panel_aspect
    from landscape.toy import load_paths

    f, toy = load_paths(paths_file)
    paths = {label: p.path for label, p in toy.items() if p.path.ndim == 2}
    if not paths:
        raise LandscapeError(f"{paths_file}: no single-run path to animate")
    with house_style():
        fig, ax = new_axes(None, aspect=panel_aspect(f, box))
        draw_toy_contours(f, ax, box=box)
        ax.set_title(function_title(f))
        colors = {k: OKABE_ITO[i % (len(OKABE_ITO) - 1)] for i, k in enumerate(paths)}
        return _animation(fig, ax, paths, frames, colors)


def animate_trajectory(surface: Any, *, frames: int = 60, metric: str = "train_loss",
                       ) -> PathAnimation:
    """A trajectory file's training path (the checkpoints, then the final model at the
    origin) drawn over the loss contours of its PCA plane
    (:func:`landscape.plot.contours.plot_contour`)."""
    from landscape.plot._inputs import as_surface
    from landscape.plot.contours import plot_contour

    s = as_surface(surface, kinds=("trajectory",), ndim=2, what="a trajectory animation")
    if "path/coords" not in s.extras:
        raise LandscapeError(f"{s.path}: no dataset 'path/coords' to animate")
    path = np.vstack([s.extras["path/coords"], [[0.0, 0.0]]])  # ends at the final model
    fig = plot_contour(s, metric=metric)
    with house_style():
        return _animation(fig, fig.axes[0], {"training path": path}, frames,
                          {"training path": "#D55E00"})


def animate(path: str | Path, out: str | Path, *, frames: int = 60, duration: float = 4.0,
            metric: str = "train_loss") -> Path:
    """Animate a trajectory or 2D toy file into ``out`` (.gif/.mp4); returns ``out``.

    >>> import tempfile, pathlib
    >>> from landscape.toy import run_toy
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = run_toy("quadratic", ["sgd", "adam"], out=d, steps=20)
    >>> animate(d / "paths.h5", d / "paths.gif", frames=10, duration=1.0).exists()
    True
    """
    from landscape import formats

    with formats.open_result(path) as f:
        kind = f.attrs.get("kind")
    if kind == "toy":
        anim = animate_toy(path, frames=frames)
    elif kind == "trajectory":
        anim = animate_trajectory(path, frames=frames, metric=metric)
    else:
        raise LandscapeError(f"{path}: holds a {kind!r} result; an animation needs a "
                             "'trajectory' or 'toy' file")
    return anim.save(out, duration)


__all__ = ["PathAnimation", "animate", "animate_toy", "animate_trajectory"]
