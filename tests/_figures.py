"""Shared by the figure tests: the text a figure draws, and whether it stays on the canvas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from landscape.plot import save_figure

NX, NY = 6, 4   # the stored test surface: a non-square grid, so swapped axes would show


def drawn_texts(fig: Figure, path: str | Path | None = None) -> list[tuple[str, Bbox, Bbox]]:
    """Every visible, non-empty text as it is last drawn (saving may draw twice: a layout
    pass, then the output): ``(text, its extent, the canvas box)`` in display units.
    ``path`` None: drawn on Agg; else saved there with :func:`landscape.plot.save_figure`
    (laid out and measured for that format: a PDF's canvas is its page)."""
    drawn: dict[int, tuple[str, Bbox, Bbox]] = {}
    draw = Text.draw

    def recording_draw(self: Text, renderer: Any) -> None:
        draw(self, renderer)
        if self.get_visible() and self.get_text().strip():
            drawn[id(self)] = (self.get_text(), self.get_window_extent(renderer),
                               self.get_figure(root=True).bbox.frozen())

    Text.draw = recording_draw
    try:
        if path is None:
            FigureCanvasAgg(fig).draw()
        else:
            save_figure(fig, path)
    finally:
        Text.draw = draw
    return list(drawn.values())


def texts_off_canvas(texts: list[tuple[str, Bbox, Bbox]], slack: float = 1.0) -> list[str]:
    """The texts (from :func:`drawn_texts`) reaching more than ``slack`` display units past
    the canvas edge, each with how far on each side."""
    return [f"{text!r} ({ext.x0 - box.x0:.1f}, {ext.y0 - box.y0:.1f}, "
            f"{box.x1 - ext.x1:.1f}, {box.y1 - ext.y1:.1f} inside left/bottom/right/top)"
            for text, ext, box in texts
            if (ext.x0 < box.x0 - slack or ext.y0 < box.y0 - slack
                or ext.x1 > box.x1 + slack or ext.y1 > box.y1 + slack)]


def overlapping_texts(texts: list[tuple[str, Bbox, Bbox]], slack: float = 0.5) -> list[str]:
    """The pairs of texts (from :func:`drawn_texts`) whose extents overlap by more than
    ``slack`` display units each way."""
    out = []
    for i, (a, ea, _) in enumerate(texts):
        for b, eb, _ in texts[i + 1:]:
            if min(ea.x1, eb.x1) - max(ea.x0, eb.x0) > slack and \
                    min(ea.y1, eb.y1) - max(ea.y0, eb.y0) > slack:
                out.append(f"{a!r} overlaps {b!r}")
    return out


def tight_box_overhang(fig: Figure) -> float:
    """How far (inches) matplotlib's tight bounding box of ``fig`` (every artist, as laid
    out on Agg) reaches past the figure's edges; 0 when it lies within."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    tight = fig.get_tightbbox(canvas.get_renderer())
    width, height = fig.get_size_inches()
    return float(max(0.0, -tight.x0, -tight.y0, tight.x1 - width, tight.y1 - height))
