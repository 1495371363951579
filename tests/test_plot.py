"""Figures: every kind rendered from small stored files, checked on the figure itself.

References: the arrays read straight from the HDF5 files with h5py (what each plotted line,
mesh and contour set must hold), the explained-variance ratios and epoch numbers stored with
a trajectory, and hand-counted VTK points and cells. The comparison figure of a study is
checked against its table (the intervals) and against Student-t intervals computed here
from the stored curves with scipy.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from _figures import (
    NX,
    NY,
    drawn_texts,
    overlapping_texts,
    texts_off_canvas,
    tight_box_overhang,
)
from click.testing import CliRunner
from matplotlib import colors
from matplotlib.collections import QuadMesh
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure

from landscape.cli import main
from landscape.errors import LandscapeError
from landscape.plot import (
    color_scale,
    curvature_ratio,
    export_vtk,
    plot_comparison,
    plot_contour,
    plot_curve,
    plot_density,
    plot_filled,
    plot_heatmap,
    plot_ratio,
    plot_surface3d,
    plot_trajectory,
    save_figure,
)
from landscape.plot.compare import comparison_caption
from landscape.plot.render import render
from landscape.surface import load_surface


def _read(path: Path, name: str) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f[name][()]


def _contour_sets(fig: Figure) -> list[ContourSet]:
    return [a for ax in fig.axes for a in ax.get_children() if isinstance(a, ContourSet)]


# ------------------------------------------------------------------------------------- 1D
def test_curve_draws_stored_loss_and_accuracy_on_twin_axes_with_units(plot_files) -> None:
    fig = plot_curve(plot_files["curve"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2   # loss and its accuracy twin
    ax, ax_acc = fig.axes
    assert ax.get_ylabel() == "loss (nats)" and ax_acc.get_ylabel() == "accuracy (%)"
    assert "alpha" in ax.get_xlabel() and "filter-normalized" in ax.get_xlabel()
    x = _read(plot_files["curve"], "x")
    loss = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    np.testing.assert_allclose(loss["train loss"], _read(plot_files["curve"], "train_loss"))
    np.testing.assert_allclose(loss["test loss"], _read(plot_files["curve"], "test_loss"))
    acc = {line.get_label(): line.get_ydata() for line in ax_acc.get_lines()}
    np.testing.assert_allclose(acc["test accuracy"], 100 * _read(plot_files["curve"], "test_acc"))
    for line in [*ax.get_lines(), *ax_acc.get_lines()]:
        np.testing.assert_allclose(line.get_xdata(), x)
        assert np.isfinite(line.get_ydata()).all()
    assert ax.get_legend() is not None


def test_several_curves_share_one_axes_one_colour_per_model(plot_files) -> None:
    fig = plot_curve({"small": plot_files["curve"], "large": load_surface(plot_files["curve"])},
                     log=True)
    assert len(fig.axes) == 1                                   # accuracy off for several
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    lines = ax.get_lines()
    assert len(lines) == 4                                       # 2 models x train/test
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    assert [line.get_linestyle() for line in lines] == ["-", "--", "-", "--"]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"small", "large", "train", "test"} <= set(labels)


def test_interpolation_curve_names_its_endpoints(plot_files) -> None:
    ax = plot_curve(plot_files["interp"]).axes[0]
    assert ax.get_xlabel() == "$t$ (0: small, 1: large)"


def test_curve_into_a_given_axes_returns_that_figure(plot_files) -> None:
    fig = Figure()
    ax = fig.add_subplot()
    assert plot_curve(plot_files["curve"], ax, accuracy=False) is fig and fig.axes == [ax]


# ------------------------------------------------------------------------------------- 2D
def test_color_scale_log_levels_by_default_for_a_wide_positive_range() -> None:
    data = np.array([[1e-3, 1e-2], [1.0, 10.0]])
    levels, norm = color_scale(data, levels=9)
    assert isinstance(norm, colors.LogNorm) and (norm.vmin, norm.vmax) == (1e-3, 10.0)
    np.testing.assert_allclose(np.diff(np.log(levels)), np.log(1e4) / 8)
    levels, norm = color_scale(data, vmin=0.5, vmax=2.0, levels=4, log=False)
    np.testing.assert_allclose(levels, [0.5, 1.0, 1.5, 2.0])
    assert type(norm) is colors.Normalize
    levels, norm = color_scale(data, levels=[0.2, 0.1, 3.0])
    np.testing.assert_allclose(levels, [0.1, 0.2, 3.0])
    assert (norm.vmin, norm.vmax) == (0.1, 3.0)
    with pytest.raises(LandscapeError, match="vmax"):
        color_scale(data, vmin=2.0, vmax=1.0)


def test_contour_lines_follow_the_stored_grid_with_a_colorbar(plot_files) -> None:
    fig = plot_contour(plot_files["surface"], levels=7, log=False)
    (cs,) = _contour_sets(fig)
    z = _read(plot_files["surface"], "train_loss")
    assert z.shape == (NY, NX)
    assert (cs.norm.vmin, cs.norm.vmax) == (z.min(), z.max())
    np.testing.assert_allclose(cs.levels, np.linspace(z.min(), z.max(), 7))
    ax = fig.axes[0]
    assert ax.get_xlim() == (-1.0, 1.0) and ax.get_ylim() == (-0.5, 0.5)
    assert ax.get_xlabel().startswith("$\\alpha$") and ax.get_ylabel().startswith("$\\beta$")
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "train loss (nats)"


def test_filled_contours_and_heat_map_show_the_stored_values(plot_files) -> None:
    fig = plot_filled(plot_files["surface"], vmin=0.5, vmax=3.0)
    (cs,) = _contour_sets(fig)
    assert cs.filled and (cs.norm.vmin, cs.norm.vmax) == (0.5, 3.0)
    fig = plot_heatmap(plot_files["surface"], metric="train_acc")
    (mesh,) = [a for a in fig.axes[0].get_children() if isinstance(a, QuadMesh)]
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(NY, NX),
                               100 * _read(plot_files["surface"], "train_acc"))
    assert fig.axes[1].get_ylabel() == "train accuracy (%)"


def test_surface3d_draws_on_a_3d_axes_with_clipped_z(plot_files) -> None:
    z = _read(plot_files["surface"], "train_loss")
    vmax = float(np.median(z))
    fig = plot_surface3d(plot_files["surface"], vmax=vmax, log=False)
    ax = fig.axes[0]
    assert ax.name == "3d" and ax.get_zlabel() == "train loss (nats)"
    lo, hi = ax.zz_dataLim.intervalx   # the z range of the drawn surface
    assert (lo, hi) == (pytest.approx(z.min()), pytest.approx(vmax))
    with pytest.raises(LandscapeError, match="3D axes"):
        plot_surface3d(plot_files["surface"], Figure().add_subplot())


def test_trajectory_labels_carry_explained_variance_and_epochs(plot_files) -> None:
    fig = plot_trajectory(plot_files["traj"])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "PC 1 (81.2% of variance)"
    assert ax.get_ylabel() == "PC 2 (10.3% of variance)"
    path = [line for line in ax.get_lines() if line.get_label().startswith("path")][0]
    np.testing.assert_allclose(np.c_[path.get_xdata(), path.get_ydata()],
                               np.vstack([_read(plot_files["traj"], "path/coords"), [[0, 0]]]))
    assert sorted(t.get_text() for t in ax.texts) == ["0", "2", "4"]
    assert len(_contour_sets(fig)) == 1


def test_density_plot_is_log_scaled_and_marks_lanczos_eigenvalues(plot_files) -> None:
    fig = plot_density(plot_files["hessian"])
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and "eigenvalue" in ax.get_xlabel()
    density, eig = ax.get_lines()[0], ax.get_lines()[1]
    grid = _read(plot_files["hessian"], "density/grid")
    dens = _read(plot_files["hessian"], "density/density")
    np.testing.assert_allclose(density.get_xdata(), grid)
    shown = np.asarray(density.get_ydata(), dtype=float)
    np.testing.assert_allclose(shown[np.isfinite(shown)], dens[np.isfinite(shown)])
    stored = np.r_[_read(plot_files["hessian"], "eigenvalues_top"),
                   _read(plot_files["hessian"], "eigenvalues_bottom")]
    np.testing.assert_allclose(np.sort(eig.get_xdata()), np.sort(stored))


def test_ratio_map_is_abs_min_over_max_of_the_curvature_map(plot_files) -> None:
    hmax = _read(plot_files["surface"], "hessian_max")
    hmin = _read(plot_files["surface"], "hessian_min")
    expected = np.where(hmax > 0, np.abs(hmin / hmax), np.nan)
    np.testing.assert_allclose(curvature_ratio(plot_files["surface"]), expected)
    fig = plot_ratio(plot_files["surface"])
    (mesh,) = [a for a in fig.axes[0].get_children() if isinstance(a, QuadMesh)]
    shown = np.ma.filled(np.asarray(mesh.get_array(), dtype=float), np.nan).reshape(NY, NX)
    np.testing.assert_allclose(shown, expected)
    assert "lambda" in fig.axes[1].get_ylabel()


# ------------------------------------------------------------------------------------ VTK
def test_legacy_vtk_has_one_point_per_grid_node_and_one_quad_per_cell(plot_files, tmp_path) -> None:
    path = export_vtk(plot_files["surface"], tmp_path / "s.vtk")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# vtk DataFile") and lines[3] == "DATASET POLYDATA"
    n_points = int(re.match(r"POINTS (\d+) double", lines[4]).group(1))
    assert n_points == NX * NY
    points = np.array([[float(v) for v in line.split()] for line in lines[5:5 + n_points]])
    z = _read(plot_files["surface"], "train_loss")
    np.testing.assert_allclose(points[:, 2], z.ravel(), rtol=1e-8)
    xx, yy = np.meshgrid(_read(plot_files["surface"], "x"), _read(plot_files["surface"], "y"))
    np.testing.assert_allclose(points[:, :2], np.c_[xx.ravel(), yy.ravel()], atol=1e-12)
    header = lines[5 + n_points].split()
    assert header[0] == "POLYGONS" and int(header[1]) == (NX - 1) * (NY - 1)
    assert int(header[2]) == 5 * (NX - 1) * (NY - 1)
    polys = [list(map(int, line.split())) for line in
             lines[6 + n_points: 6 + n_points + int(header[1])]]
    assert all(p[0] == 4 and max(p[1:]) < n_points for p in polys)
    assert lines[6 + n_points + int(header[1])] == f"POINT_DATA {n_points}"


def test_xml_vtp_parses_and_leaves_out_cells_at_a_missing_point(plot_files, tmp_path) -> None:
    s = load_surface(plot_files["surface"])
    done = s.done.copy()
    done[1, 2] = False                      # an interior point not computed: 4 cells go
    path = export_vtk(replace(s, done=done), tmp_path / "s.vtp")
    piece = ET.parse(path).getroot().find("PolyData/Piece")
    assert int(piece.get("NumberOfPoints")) == NX * NY
    assert int(piece.get("NumberOfPolys")) == (NX - 1) * (NY - 1) - 4
    conn = piece.find("Polys/DataArray[@Name='connectivity']").text.split()
    offsets = piece.find("Polys/DataArray[@Name='offsets']").text.split()
    assert len(conn) == 4 * int(piece.get("NumberOfPolys")) and int(offsets[-1]) == len(conn)
    assert str(1 * NX + 2) not in conn
    points = np.array(piece.find("Points/DataArray").text.split(), dtype=float)
    assert points.size == 3 * NX * NY and np.isfinite(points).all()


# ---------------------------------------------------------------------------- bad input
def test_wrong_kind_or_missing_dataset_is_a_one_line_error(plot_files, tmp_path) -> None:
    cases = [
        (lambda: render(plot_files["hessian"], tmp_path / "a.png", kind="contour"),
         r"holds a 'hessian' result; --kind contour needs a 2D"),
        (lambda: render(plot_files["curve"], tmp_path / "a.png", kind="contour"),
         r"holds a 1D 'surface' result; --kind contour needs a 2D"),
        (lambda: render(plot_files["surface"], tmp_path / "a.png", kind="density"),
         r"--kind density needs a 'hessian' file"),
        (lambda: plot_trajectory(plot_files["surface"]), r"needs a 'trajectory' file"),
        (lambda: plot_contour(plot_files["surface"], metric="test_loss"),
         r"no dataset 'test_loss' \(it holds train_loss, train_acc"),
        (lambda: plot_ratio(plot_files["traj"]), r"no dataset 'hessian_max'"),
        (lambda: plot_curve(plot_files["surface"]), r"needs a 1D curve"),
        (lambda: render(plot_files["surface"], tmp_path / "a.vtk", kind="contour"),
         r"written by --kind vtk"),
        (lambda: export_vtk(plot_files["surface"], tmp_path / "a.txt"), r"\.vtk .*or \.vtp"),
        (lambda: render(plot_files["surface"], tmp_path / "a.png", kind="nope"),
         r"unknown plot kind 'nope'"),
    ]
    for call, message in cases:
        with pytest.raises(LandscapeError, match=message) as err:
            call()
        assert "\n" not in str(err.value)


@pytest.mark.parametrize(("file", "kind", "suffix"), [
    ("curve", None, "png"), ("interp", None, "svg"), ("surface", None, "pdf"),
    ("surface", "filled", "png"), ("surface", "heatmap", "png"),
    ("surface", "surface3d", "png"), ("surface", "ratio", "png"), ("traj", None, "png"),
    ("hessian", None, "png"), ("surface", None, "vtp"), ("surface", "vtk", "vtk")])
def test_cli_plot_writes_every_kind(plot_files, tmp_path, file, kind, suffix) -> None:
    out = tmp_path / f"fig.{suffix}"
    args = ["plot", str(plot_files[file]), "--out", str(out)] + (["--kind", kind] if kind else [])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 500
    if suffix == "png":
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_plot_wrong_kind_exits_1_with_one_line(plot_files, tmp_path) -> None:
    result = CliRunner().invoke(main, ["plot", str(plot_files["curve"]), "--kind", "trajectory",
                                       "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    message = result.output.strip()
    assert message.startswith("Error: ") and "\n" not in message
    assert "needs a 2D 'trajectory' file" in message


def test_saved_pdf_embeds_truetype_fonts(plot_files, tmp_path) -> None:
    path = save_figure(plot_contour(plot_files["surface"]), tmp_path / "c.pdf")
    data = path.read_bytes()
    assert b"/FontFile2" in data and b"/Type3" not in data


def test_curve_plot_clips_the_loss_axis_to_vmin_vmax(plot_files: dict[str, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import landscape.plot.style as style

    saved: dict[str, Figure] = {}
    monkeypatch.setattr(style, "save_figure", lambda fig, out: saved.setdefault("fig", fig))
    render(plot_files["curve"], tmp_path / "c.png", vmin=0.1, vmax=2.0)
    assert saved["fig"].axes[0].get_ylim() == (0.1, 2.0)


# ----------------------------------------------------------------------- comparison figure
@pytest.fixture(scope="module")
def figures(plot_studies) -> dict[str, Figure]:
    """The default comparison figure of each study (drawn once; tests only read it)."""
    return {kind: plot_comparison(study) for kind, study in plot_studies.items()}


def _panel(fig: Figure, title: str) -> Any:
    (ax,) = [ax for ax in fig.axes if ax.get_title(loc="left").endswith(title)]
    return ax


def _texts(fig: Figure) -> list[Any]:
    from matplotlib.text import Text

    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


@pytest.mark.parametrize("kind", ["sweep", "pair"])
@pytest.mark.parametrize("suffix", ["png", "pdf"])
def test_comparison_keeps_every_text_inside_the_canvas_and_labels_every_axis(
        figures, kind, suffix, tmp_path) -> None:
    fig = figures[kind]
    assert fig.get_figwidth() == pytest.approx(7.0)
    texts = drawn_texts(fig, tmp_path / f"compare.{suffix}")
    assert len(texts) > 40
    assert not texts_off_canvas(texts)
    assert not overlapping_texts(texts)   # slopes, 2/lr labels, contour labels, ticks
    assert not texts_off_canvas(drawn_texts(fig))   # on screen (Agg) too
    assert tight_box_overhang(fig) < 0.01   # inches
    # the controls' text overlaps no panel
    renderer = fig.canvas.get_renderer()
    (controls,) = [ax for ax in fig.axes if ax.get_title(loc="left").endswith("controls")]
    (text_box,) = controls.artists
    text_ext = text_box.get_window_extent(renderer)
    for ax in fig.axes:
        if ax is not controls and ax.axison:
            assert not text_ext.overlaps(ax.get_tightbbox(renderer)), ax.get_title(loc="left")
    drawn = [ax for ax in fig.axes if ax.axison and ax.get_label() != "<colorbar>"]
    (colorbar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert "nats" in colorbar.get_ylabel()
    for ax in drawn:
        assert ax.get_xlabel(), ax.get_title(loc="left")
    # every y axis carries a label, except 2D panels that share the first one's
    unlabelled = [ax for ax in drawn if not ax.get_ylabel()]
    assert all(ax.get_shared_y_axes().get_siblings(ax) != [ax] for ax in unlabelled)


def test_comparison_compares_sharpness_measures_only_in_absolute_units(figures) -> None:
    from landscape.analysis.measures import REGISTRY

    fig = figures["sweep"]
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    units = {"top_eigenvalue": "nats / param$^2$", "epsilon_sharpness": "% of (1 + loss)",
             "curve_rise": "nats"}   # one vocabulary: a cross-entropy loss is in nats
    for m, unit in units.items():
        assert _panel(fig, REGISTRY[m].label).get_ylabel() == unit
    assert not any(REGISTRY["noise_scale"].label in t for t in titles)


@pytest.mark.parametrize("kind", ["sweep", "pair"])
def test_error_bars_are_the_table_intervals_at_lr_over_b(plot_studies, figures, kind) -> None:
    from landscape.analysis.measures import REGISTRY
    from landscape.plot.compare import DODGE

    study = plot_studies[kind]
    fig = figures[kind]
    rows = {r["model"]: r for r in study.table}
    for m in ("top_eigenvalue", "epsilon_sharpness", "curve_rise"):
        ax = _panel(fig, REGISTRY[m].label)
        bars = {c.lines[0].get_gid(): c for c in ax.containers}
        assert set(bars) == {f"interval:{n}" for n in study.names}
        for i, name in enumerate(study.names):
            c, stat = bars[f"interval:{name}"], rows[name][m]
            (x,), (y,) = c.lines[0].get_xdata(), c.lines[0].get_ydata()
            (lo_pt, hi_pt), = c.lines[2][0].get_segments()
            assert y == pytest.approx(stat["mean"])
            assert (lo_pt[1], hi_pt[1]) == (pytest.approx(stat["ci_low"]),
                                           pytest.approx(stat["ci_high"]))
            if kind == "sweep":   # on lr / B, spread by at most DODGE where shared
                assert ax.get_xscale() == "log"
                assert 1 / DODGE <= x / rows[name]["lr_over_b"] <= DODGE
            else:
                assert x == i
    if kind == "pair":
        ax = _panel(fig, REGISTRY["top_eigenvalue"].label)
        assert [t.get_text() for t in ax.get_xticklabels()] == ["small", "large"]


def test_shared_lr_over_b_points_are_spread_apart(figures) -> None:
    from landscape.analysis.measures import REGISTRY

    fig = figures["sweep"]
    ax = _panel(fig, REGISTRY["top_eigenvalue"].label)
    xs = {c.lines[0].get_gid(): c.lines[0].get_xdata()[0] for c in ax.containers}
    # 0.05 / 16 == 0.2 / 64: two recipes at one lr / B, drawn at distinct x
    assert xs["interval:sgd-lr0.05-bs16"] != xs["interval:sgd-lr0.2-bs64"]


def test_top_eigenvalue_panel_draws_2_over_lr_for_each_learning_rate(figures) -> None:
    from landscape.analysis.measures import REGISTRY

    fig = figures["sweep"]
    ax = _panel(fig, REGISTRY["top_eigenvalue"].label)
    lines = [ln for ln in ax.get_lines() if ln.get_gid() == "2/lr"]
    assert sorted(ln.get_ydata()[0] for ln in lines) == pytest.approx([2 / 0.2, 2 / 0.05])
    assert all(ln.get_ydata()[0] == ln.get_ydata()[1] for ln in lines)   # horizontal
    lo, hi = ax.get_ylim()
    assert lo < 2 / 0.2 and 2 / 0.05 < hi
    assert not [ln for ax in fig.axes if ax is not _panel(fig, REGISTRY["top_eigenvalue"].label)
                for ln in ax.get_lines() if ln.get_gid() == "2/lr"]
    pair = figures["pair"]
    assert not [ln for ax in pair.axes for ln in ax.get_lines() if ln.get_gid() == "2/lr"]


def test_1d_bands_are_t_intervals_over_seeds_of_the_direction_mean_rise(
        plot_studies, figures) -> None:
    from scipy import stats

    study = plot_studies["sweep"]
    fig = figures["sweep"]
    ax = _panel(fig, "(b)")
    bands = {c.get_gid(): c for c in ax.collections if str(c.get_gid()).startswith("band:")}
    means = {ln.get_gid(): ln for ln in ax.get_lines()}
    for name in study.names:
        per_seed = np.array([np.mean([c.values["train_loss"] - c.attrs["center_train_loss"]
                                      for c in model.curves], axis=0)
                             for model in study.models[name]])
        n = per_seed.shape[0]
        mean = per_seed.mean(0)
        half = stats.t.ppf(0.975, n - 1) * per_seed.std(0, ddof=1) / np.sqrt(n)
        x = study.models[name][0].curves[0].x
        np.testing.assert_allclose(means[f"mean:{name}"].get_ydata(), mean, atol=1e-12)
        verts = bands[f"band:{name}"].get_paths()[0].vertices
        for xi, lo, hi in zip(x, mean - half, mean + half):
            ys = verts[np.isclose(verts[:, 0], xi), 1]
            assert ys.min() == pytest.approx(lo, abs=1e-12)
            assert ys.max() == pytest.approx(hi, abs=1e-12)
    window = sorted(ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_gid() == "rise-window")
    assert window == [-study.settings["rise_at"], study.settings["rise_at"]]
    assert "centre value" in ax.get_ylabel() and "nats" in ax.get_ylabel()


def test_caption_and_panel_a_state_the_rule_seeds_level_and_shout_a_missed_target(
        plot_studies) -> None:
    from copy import deepcopy

    from landscape.plot.compare import WARN

    study = deepcopy(plot_studies["pair"])
    caption = " ".join(comparison_caption(study).split())
    for phrase in ("trained for 20 optimizer steps", "2 training seeds per recipe",
                   "2 random filter-normalized directions", "95% over training seeds",
                   "batch_size", "optimizer=sgd",
                   "mean of its values at each stop and the 1 saved epoch before it"):
        assert phrase in caption, phrase
    flat = " ".join(" ".join(t.get_text() for t in _texts(plot_comparison(study))).split())
    for phrase in ("20 optimizer steps each", "2 training \u00d7 2 direction seeds",
                   "mean of each stop and the 1 saved epoch", "comparison.caption.md"):
        assert phrase in flat, phrase   # panel (a): the controls in short
    assert "NOT" not in flat
    study.table[1]["met"] = [True, False]
    texts = _texts(plot_comparison(study))
    (shout,) = [t for t in texts if "NOT" in t.get_text() and "MET" in t.get_text()]
    assert "large seed 1" in " ".join(shout.get_text().split())
    assert colors.same_color(shout.get_color(), WARN)
    legend = " ".join(t.get_text() for t in texts)
    assert "large (target NOT met)" in legend
    study.design["match"] = None   # no matching rule at all: said in red
    (none,) = [t for t in _texts(plot_comparison(study)) if "NONE" in t.get_text()]
    assert colors.same_color(none.get_color(), WARN)


def test_significance_notes_follow_the_table(plot_studies, figures) -> None:
    from landscape.analysis.measures import REGISTRY

    for kind, study in plot_studies.items():
        fig = figures[kind]
        pairs = [(a, b) for i, a in enumerate(study.table) for b in study.table[i + 1:]]
        for m in ("top_eigenvalue", "curve_rise"):
            ax = _panel(fig, REGISTRY[m].label)
            (note,) = [t.get_text() for t in ax.texts if t.get_gid() == "significance"]
            differ = sum(a["differences"][m][b["model"]] in (">", "<")
                         for a, b in pairs)
            if len(pairs) == 1:
                pairs_note = "differ" if differ else "n.s."
            else:
                pairs_note = (f"{differ}/{len(pairs)} pairs differ" if differ
                              else "all pairs n.s.")
            trend = study.findings["measures"][m]["trend"]
            if trend is None:   # recipes without an lr/B axis
                assert note == pairs_note
            else:   # the trend first, as in findings.json
                assert note == (f"slope {trend['slope']:.2g}, Holm p {trend['p_holm']:.1g}\n"
                                f"[{trend['ci_low']:.2g}, {trend['ci_high']:.2g}]\n"
                                + pairs_note)


def test_2d_panels_share_round_log_levels_with_one_level_per_seed(plot_studies, figures) -> None:
    study = plot_studies["sweep"]
    fig = figures["sweep"]
    sets = {c.get_gid(): c for ax in fig.axes for c in ax.get_children()
            if isinstance(c, ContourSet) and c.get_gid()}
    mean_sets = [sets[f"mean-contour:{n}"] for n in study.names]
    for cs in mean_sets:
        assert isinstance(cs.norm, colors.LogNorm)
        np.testing.assert_array_equal(cs.levels, mean_sets[0].levels)
        assert cs.labelTexts   # contour labels
    mantissa = mean_sets[0].levels / 10.0 ** np.floor(np.log10(mean_sets[0].levels))
    assert set(np.round(mantissa, 9)) <= {1.0, 2.0, 3.0, 5.0}
    ref = {tuple(sets[f"seed-contour:{n}:{k}"].levels) for n in study.names for k in range(2)}
    assert len(ref) == 1 and ref.pop()[0] in mean_sets[0].levels
    (cbar,) = [ax for ax in fig.axes if "centre" in ax.get_ylabel() and "seeds" in ax.get_ylabel()]
    raw = plot_comparison(study, increase=False)
    (cbar,) = [ax for ax in raw.axes if "mean of 2 seeds" in ax.get_ylabel()]
    assert "centre" not in cbar.get_ylabel()
    lowest = min(float(m.row["train_loss"]) for ms in study.models.values() for m in ms)
    raw_levels = [c for ax in raw.axes for c in ax.get_children()
                  if isinstance(c, ContourSet) and str(c.get_gid()).startswith("mean")][0].levels
    assert raw_levels[-1] > lowest


def test_many_recipes_show_the_surfaces_of_the_extreme_lr_over_b(plot_studies, monkeypatch) -> None:
    import landscape.plot.compare as compare

    monkeypatch.setattr(compare, "MAX_SURFACES", 2)
    study = plot_studies["sweep"]
    ratio = {r["model"]: r["lr_over_b"] for r in study.table}
    chosen = compare.surface_recipes(study)
    assert sorted(ratio[n] for n in chosen) == [min(ratio.values()), max(ratio.values())]


def test_nice_levels_are_round_and_few() -> None:
    from landscape.plot.compare import nice_levels

    np.testing.assert_allclose(nice_levels(0.003, 2.5),
                               [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2])
    np.testing.assert_allclose(nice_levels(0.02, 0.5), [0.02, 0.05, 0.1, 0.2, 0.5])
    np.testing.assert_allclose(nice_levels(1e-4, 10), [1e-4, 1e-3, 1e-2, 0.1, 1, 10])
    wide = nice_levels(1e-6, 1e3, most=9)
    assert len(wide) <= 9 and np.allclose(np.log10(wide), np.round(np.log10(wide)))


def test_saved_comparison_has_its_caption_beside_it(plot_studies, tmp_path) -> None:
    from landscape.plot.compare import save_comparison

    paths = save_comparison(plot_studies["sweep"], tmp_path)
    assert [p.name for p in paths] == ["comparison.pdf", "comparison.png",
                                       "comparison.caption.md"]
    assert paths[2].read_text() == comparison_caption(plot_studies["sweep"])


def test_comparison_renders_from_the_study_file_to_png_and_pdf(plot_studies, tmp_path) -> None:
    for suffix in ("png", "pdf"):
        out = render(plot_studies["sweep"].path, tmp_path / f"c.{suffix}")
        data = out.read_bytes()
        assert len(data) > 10_000
        if suffix == "png":
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert data[:5] == b"%PDF-" and b"/FontFile2" in data and b"/Type3" not in data
    with pytest.raises(LandscapeError, match="draws a loss"):
        render(plot_studies["sweep"].path, tmp_path / "c.png", metric="train_acc")


def test_every_seed_is_a_dot_drawn_above_its_interval_bar(plot_studies, figures) -> None:
    from landscape.analysis.measures import REGISTRY

    study, fig = plot_studies["sweep"], figures["sweep"]
    ax = _panel(fig, REGISTRY["top_eigenvalue"].label)
    for row in study.table:
        (dots,) = [a for a in ax.lines if a.get_gid() == f"seeds:{row['model']}"]
        interval = [a for a in [*ax.lines, *ax.collections]   # bar, caps and mean marker
                    if a.get_gid() == f"interval:{row['model']}"]
        assert list(dots.get_ydata()) == row["top_eigenvalue"]["values"]
        assert interval and dots.get_zorder() > max(a.get_zorder() for a in interval)
