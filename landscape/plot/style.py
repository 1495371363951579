"""The house style of every landscape figure, applied through ``matplotlib.rc_context``.

Figures are sized for one journal column (3.4 in wide; :data:`DOUBLE_COLUMN` 7.0 in for
two), use 8 pt text (7 pt ticks and legends), embed TrueType (Type 42) fonts in PDF and
PS files so editors can change the text, use a perceptually uniform, colour-blind-safe
colormap (viridis; :data:`DIVERGING_CMAP` for signed data) and the Okabe-Ito colour-blind
safe colour cycle (Okabe & Ito, "Color Universal Design", 2008), with constrained layout.
Nothing global changes: plot functions build their figure inside :func:`house_style`, and
:func:`save_figure` saves inside it too (fonttype is read at save time).

Conventions for plot functions: take an optional ``ax=`` (draw there, return its figure),
otherwise create a :class:`matplotlib.figure.Figure` (no pyplot, no global figure
manager) with :func:`new_axes`; return the ``Figure``; never call ``show()``/``savefig()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from landscape.errors import LandscapeError, unknown_name

SINGLE_COLUMN = 3.4   # inches
DOUBLE_COLUMN = 7.0   # inches
GOLDEN = 0.618

#: Okabe-Ito colours, black moved last (it is kept for references such as the start point)
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#D55E00",  # vermillion
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
    "#000000",  # black
)
SEQUENTIAL_CMAP = "viridis"
DIVERGING_CMAP = "RdBu_r"   # colour-blind safe diverging map for signed values

RC: dict[str, Any] = {
    "figure.figsize": (SINGLE_COLUMN, SINGLE_COLUMN * GOLDEN * 1.2),
    "figure.dpi": 150,
    "figure.constrained_layout.use": True,
    "savefig.dpi": 300,
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "legend.handlelength": 1.6,
    "mathtext.fontset": "dejavusans",
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "image.cmap": SEQUENTIAL_CMAP,
    "axes.prop_cycle": cycler(color=OKABE_ITO),
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.4,
}

FORMATS = ("pdf", "png", "svg")


def check_formats(formats: Sequence[str]) -> list[str]:
    """The figure formats, each one of ``FORMATS`` (else a LandscapeError, before any work)."""
    for fmt in formats:
        if fmt not in FORMATS:
            raise unknown_name("figure format", fmt, FORMATS)
    return list(formats)


@contextmanager
def house_style(overrides: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Apply the house rc parameters (plus ``overrides``) inside a ``with`` block only."""
    import matplotlib

    with matplotlib.rc_context({**RC, **(overrides or {})}):
        yield


def figure_size(width: str | float = "single", aspect: float = GOLDEN * 1.2) -> tuple[float, float]:
    """(width, height) in inches: ``"single"`` or ``"double"`` column, or inches."""
    if isinstance(width, str):
        if width not in ("single", "double"):
            raise LandscapeError(
                f"figure width must be 'single', 'double' or inches, got {width!r}")
        width = SINGLE_COLUMN if width == "single" else DOUBLE_COLUMN
    return float(width), float(width) * aspect


def new_axes(ax: Axes | None = None, *, width: str | float = "single",
             aspect: float = GOLDEN * 1.2) -> tuple[Figure, Axes]:
    """``(figure, axes)``: ``ax`` and its figure if given, else a new styled one-axes figure.

    Call inside :func:`house_style` so the new artists pick up the style.
    """
    if ax is not None:
        try:
            return ax.get_figure(root=True), ax
        except TypeError:  # matplotlib < 3.10
            return ax.figure, ax
    fig = Figure(figsize=figure_size(width, aspect))
    return fig, fig.add_subplot()


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 300) -> Path:
    """Save ``fig`` as PDF, PNG (``dpi``, default 300) or SVG, chosen by the suffix of ``path``.

    Creates the parent directory; TrueType fonts in PDF/PS; returns the path.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise LandscapeError(
            f"{path}: cannot save a figure as {path.suffix or 'no suffix'!r}; "
            f"use one of {', '.join('.' + f for f in FORMATS)}")
    import io

    from landscape.store import atomic_write, writing

    buf = io.BytesIO()  # rendered in memory, then written atomically: a full disk or a
    with house_style():  # read-only folder is one line and leaves no partial figure
        fig.savefig(buf, format=fmt, dpi=dpi if fmt == "png" else None,
                    metadata={"Creator": "landscape"} if fmt != "png" else None)
    with writing(path, resumable=False):
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue())
    return path
