"""Every figure kind, saved as PNG and as PDF, keeps all its text on the canvas (the PDF's
page): each text's extent as drawn lies within the figure's box, measured in the draw that
writes the file. The comparison figure of a study has the same check in test_plot.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _figures import drawn_texts, texts_off_canvas, tight_box_overhang
from matplotlib.figure import Figure
from torch import nn

import landscape
from landscape.plot import (
    plot_contour,
    plot_curve,
    plot_density,
    plot_filled,
    plot_heatmap,
    plot_ratio,
    plot_surface3d,
    plot_toy_losses,
    plot_toy_paths,
    plot_trajectory,
)
from landscape.plot.track import plot_track
from landscape.toy import compare_optimizers

TOY_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "rmsprop")


@pytest.fixture(scope="module")
def results(plot_files: dict[str, Path]) -> dict[str, Any]:
    """The stored plot results plus toy optimizer paths."""
    return {**plot_files, "toy": compare_optimizers("rosenbrock", TOY_OPTIMIZERS, steps=40)}


@pytest.fixture(scope="module")
def track_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tracked 4-step runs (only the track figures train)."""
    root = tmp_path_factory.mktemp("canvas")
    return [landscape.train(model_options={"widths": [6]}, dataset="spirals", train_size=60,
                            optimizer="sgd", lr=lr, batch_size=60, steps=4, progress=False,
                            track="top_eigenvalue", track_every=2, track_subset=30,
                            out=root / f"lr{lr}").path for lr in (0.3, 0.5)]


FIGURES: dict[str, Callable[[dict[str, Any]], Figure]] = {
    "curve": lambda r: plot_curve(r["curve"]),
    "curve-log-several": lambda r: plot_curve({"small": r["curve"], "large": r["interp"]},
                                              log=True),
    "interpolation": lambda r: plot_curve(r["interp"]),
    "contour": lambda r: plot_contour(r["surface"]),
    "filled": lambda r: plot_filled(r["surface"], metric="train_acc"),
    "heatmap": lambda r: plot_heatmap(r["surface"]),
    "surface3d": lambda r: plot_surface3d(r["surface"]),
    "ratio": lambda r: plot_ratio(r["surface"]),
    "trajectory": lambda r: plot_trajectory(r["traj"]),
    "density": lambda r: plot_density(r["hessian"]),
    "track": lambda r: plot_track(r["runs"][0]),
    "tracks-overlaid": lambda r: plot_track(r["runs"]),
    "toy-paths": lambda r: plot_toy_paths("rosenbrock", r["toy"]),
    "toy-losses": lambda r: plot_toy_losses("rosenbrock", r["toy"]),
}


@pytest.mark.parametrize("suffix", ["png", "pdf"])
@pytest.mark.parametrize("kind", list(FIGURES))
def test_every_text_of_the_saved_figure_lies_on_the_canvas(results, kind, suffix, tmp_path,
                                                          request) -> None:
    if kind.startswith("track"):
        results = {**results, "runs": request.getfixturevalue("track_runs")}
    fig = FIGURES[kind](results)
    texts = drawn_texts(fig, tmp_path / f"{kind}.{suffix}")
    assert len(texts) >= 5   # labels and tick labels were drawn and measured
    assert not texts_off_canvas(texts), kind
    assert tight_box_overhang(fig) < 0.01   # inches


def test_text_past_the_edge_is_reported(tmp_path) -> None:
    """The check itself: a label placed beyond the right edge is found, in PNG and PDF."""
    for suffix in ("png", "pdf"):
        fig = Figure(figsize=(2, 2), layout="constrained")
        fig.add_subplot().set_xlabel("inside")
        fig.text(0.9, 0.5, "far past the right edge")
        off = texts_off_canvas(drawn_texts(fig, tmp_path / f"edge.{suffix}"))
        assert len(off) == 1 and "far past the right edge" in off[0]
        assert tight_box_overhang(fig) > 0.5


def test_density_of_an_unsaved_hessian_result_is_drawn() -> None:
    """``analyze_hessian`` without ``out=`` (no file): the figure draws its density, named
    ``result``; the curve is the one in the report."""
    from landscape.analysis.hessian import analyze_hessian
    from landscape.objective import Objective

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    x, y = torch.randn(20, 3), torch.randint(0, 2, (20,))
    report = analyze_hessian(Objective(model, (x, y), precision="float64"), top=1,
                             density=True, density_probes=2, density_steps=10)
    assert report.path is None
    for given in (report, report.density, [report, report]):
        fig = plot_density(given, log=False)
        line = fig.axes[0].get_lines()[0]
        np.testing.assert_allclose(line.get_ydata(), np.asarray(report.density.density))
    labels = [t.get_text() for t in plot_density([report, report]).axes[0].get_legend()
              .get_texts()]
    assert labels == ["result", "result'"]
