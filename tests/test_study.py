"""The comparison study (``landscape compare``): tables, resume, the figure, bad recipes.

References: each model's accuracy recomputed with a plain forward pass of the loaded run, the
arrays of the surface files read with h5py, and counts of what a re-run computes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from matplotlib.contour import ContourSet

import landscape.study as study_mod
from landscape.cli import main
from landscape.errors import LandscapeError
from landscape.plot.compare import plot_comparison
from landscape.study import (
    MEASURES,
    load_study,
    parse_recipe,
    read_recipes,
    run_study,
)
from landscape.train import load_run

RECIPES = ["small=optimizer=sgd,lr=0.1,batch_size=8,epochs=2",
           "large=optimizer=sgd,lr=0.1,batch_size=100,epochs=2"]
TINY = {"train_size": 100, "model_options": {"widths": [16]}, "curve": "-1:1:5",
        "surface": "-1:1:3", "interpolation": "-0.5:1.5:5", "trace_probes": 10,
        "hessian_tol": 1e-3, "pac_bayes_samples": 4, "show_progress": False, "quiet": True}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    return run_study(RECIPES, out=tmp_path_factory.mktemp("study") / "s", **TINY)


def _copy(study, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(study.path.parent, out)
    return out


def test_table_has_accuracies_gap_and_every_measure_per_model(study) -> None:
    assert [r["model"] for r in study.table] == ["small", "large"]
    for row in study.table:
        assert {"train_acc", "test_acc", "generalization_gap", "train_loss", "test_loss",
                "curve_rise", *MEASURES} <= set(row)
        run = load_run(study.path.parent / "runs" / row["model"])
        with torch.no_grad():   # independent reference: the model's own forward pass
            for split in ("train", "test"):
                x, y = run.data.split(split)
                acc = 100.0 * float((run.model(x).argmax(1) == y).double().mean())
                assert row[f"{split}_acc"] == pytest.approx(acc, abs=1e-9)
        assert row["generalization_gap"] == pytest.approx(row["train_acc"] - row["test_acc"])
        assert row["top_eigenvalue"] > 0 and row["hessian_trace"] > 0
        assert row["hessian_trace_stderr"] > 0
    out = study.path.parent
    assert json.loads((out / "table.json").read_text()) == json.loads(
        json.dumps(study.table, default=str))
    md = (out / "table.md").read_text().splitlines()
    assert md[0].startswith("| model | train acc. (%) | test acc. (%) | gap (pp)")
    assert len(md) == 2 + 2 and md[2].startswith("| small |")
    assert {p.name for p in study.figures} == {"comparison.pdf", "comparison.png"}


def test_rerun_recomputes_nothing(study, monkeypatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("recomputed a finished part")

    monkeypatch.setattr(study_mod, "_measure", forbidden)
    monkeypatch.setattr("landscape.surface.random_surface", forbidden)
    monkeypatch.setattr("landscape.surface.interpolate", forbidden)
    again = run_study(RECIPES, out=study.path.parent, figure=False, **TINY)
    assert again.computed == {"train": [], "curve": [], "surface": [], "measures": [],
                              "interpolation": []}
    assert json.dumps(again.table, default=str) == json.dumps(study.table, default=str)


def test_changed_setting_recomputes_only_what_it_changes(study, tmp_path) -> None:
    out = _copy(study, tmp_path)
    again = run_study(RECIPES, out=out, figure=False, **{**TINY, "eps": 2e-3})
    assert again.computed["measures"] == ["small/epsilon_sharpness", "large/epsilon_sharpness"]
    assert again.computed["curve"] == again.computed["surface"] == []
    assert again.computed["train"] == again.computed["interpolation"] == []
    # and a changed grid recomputes that grid's file only
    again = run_study(RECIPES, out=out, figure=False, **{**TINY, "eps": 2e-3,
                                                         "curve": "-0.5:0.5:3"})
    assert again.computed["curve"] == ["small", "large"] and again.computed["measures"] == []
    with h5py.File(out / "surfaces" / "small_curve.h5", "r") as f:
        np.testing.assert_allclose(f["x"][()], [-0.5, 0.0, 0.5])


def test_study_file_holds_each_models_surfaces_and_reads_back(study) -> None:
    loaded = load_study(study.path.parent)
    assert loaded.names == ["small", "large"]
    assert json.dumps(loaded.table, default=str) == json.dumps(study.table, default=str)
    for name in loaded.names:
        for part in ("curve", "surface"):
            with h5py.File(study.path.parent / "surfaces" / f"{name}_{part}.h5", "r") as f:
                got = (loaded.curves if part == "curve" else loaded.surfaces)[name]
                np.testing.assert_array_equal(got.values["train_loss"], f["train_loss"][()])
                np.testing.assert_array_equal(got.x, f["x"][()])
    ((a, b), line), = loaded.interpolations.items()
    assert (a, b) == ("small", "large") and line.done.all()
    # the endpoints of the interpolation are the two models' own losses
    np.testing.assert_allclose(line.values["train_loss"][[1, 3]],
                               [study.table[0]["train_loss"], study.table[1]["train_loss"]],
                               rtol=1e-5)


def test_comparison_figure_shares_axes_and_one_colour_scale(study) -> None:
    fig = plot_comparison(study.path)
    panels = [ax for ax in fig.axes if any(isinstance(c, ContourSet) for c in ax.get_children())]
    assert [ax.get_title() for ax in panels] == ["small", "large"]
    sets = [c for ax in panels for c in ax.get_children() if isinstance(c, ContourSet)]
    assert len(sets) == 2
    assert sets[0].norm.vmin == sets[1].norm.vmin and sets[0].norm.vmax == sets[1].norm.vmax
    np.testing.assert_array_equal(sets[0].levels, sets[1].levels)
    assert panels[0].get_shared_x_axes().joined(*panels)
    assert panels[0].get_shared_y_axes().joined(*panels)
    colorbars = [ax for ax in fig.axes if "increase over the centre" in ax.get_ylabel()]
    assert len(colorbars) == 1
    curve_ax = fig.axes[0]
    ys = [line.get_ydata() for line in curve_ax.get_lines()]
    np.testing.assert_allclose(ys[0], study.curves["small"].values["train_loss"])
    np.testing.assert_allclose(ys[2], study.curves["large"].values["train_loss"])
    assert all(np.isfinite(y).all() for y in ys)


def test_existing_runs_are_measured_without_training(study, tmp_path) -> None:
    runs = {"a": study.path.parent / "runs" / "small", "b": study.path.parent / "runs" / "large"}
    other = run_study(runs=runs, out=tmp_path / "runs_study", figure=False, **TINY)
    assert other.computed["train"] == [] and other.computed["curve"] == ["a", "b"]
    for mine, theirs in zip(other.table, study.table):
        assert mine["top_eigenvalue"] == pytest.approx(theirs["top_eigenvalue"], rel=1e-6)


# ------------------------------------------------------------------------------ recipes
def test_recipe_values_are_typed() -> None:
    r = parse_recipe("sb=batch_size=16,lr=0.1,nesterov=true,momentum=none,optimizer=sgd,"
                     "model_options={'widths': [8, 8]}")
    assert r.name == "sb"
    assert r.options == {"batch_size": 16, "lr": 0.1, "nesterov": True, "momentum": None,
                         "optimizer": "sgd", "model_options": {"widths": [8, 8]}}


def test_unknown_recipe_option_is_one_line_naming_the_known_ones() -> None:
    with pytest.raises(LandscapeError) as err:
        parse_recipe("sb=batch=16,lr=0.1")
    message = str(err.value)
    assert "unknown recipe option 'batch'" in message and "did you mean 'batch_size'" in message
    assert "known: " in message and "epochs" in message and "\n" not in message
    with pytest.raises(LandscapeError, match="'out' is set by the study"):
        parse_recipe("sb=out=somewhere")
    with pytest.raises(LandscapeError, match="NAME=OPTIONS"):
        parse_recipe("batch_size")
    with pytest.raises(LandscapeError, match="expected KEY=VALUE"):
        parse_recipe("sb=batch_size")
    with pytest.raises(LandscapeError, match="name 'a b'"):
        parse_recipe("a b=lr=0.1")


def test_cli_compare_bad_recipe_exits_1_with_one_line(tmp_path) -> None:
    result = CliRunner().invoke(main, ["compare", "--recipe", "a=lr=0.1", "--recipe",
                                       "b=bacth_size=4", "--out", str(tmp_path / "c")])
    assert result.exit_code == 1
    message = result.output.strip()
    assert message.startswith("Error: recipe 'b': unknown recipe option 'bacth_size'")
    assert "\n" not in message
    result = CliRunner().invoke(main, ["compare", "--recipe", "a=lr=0.1",
                                       "--out", str(tmp_path / "c")])
    assert result.exit_code == 1 and "at least two models" in result.output


def test_toml_recipe_file(tmp_path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('data = "digits"\ntrain_size = 50\ncurve = "-1:1:5"\n\n'
                    '[recipes.sb]\nbatch_size = 16\nlr = 0.1\n\n'
                    '[recipes.lb]\nbatch_size = 1024\nmodel_options = {widths = [8]}\n')
    recipes, settings = read_recipes(path)
    assert [(r.name, r.options) for r in recipes] == [
        ("sb", {"batch_size": 16, "lr": 0.1}),
        ("lb", {"batch_size": 1024, "model_options": {"widths": [8]}})]
    assert settings == {"data": "digits", "train_size": 50, "curve": "-1:1:5"}
    path.write_text('[recipes.sb]\nbatchsize = 16\n')
    with pytest.raises(LandscapeError, match="unknown recipe option 'batchsize'"):
        read_recipes(path)
    path.write_text('curv = "-1:1:5"\n[recipes.sb]\nlr = 0.1\n')
    with pytest.raises(LandscapeError, match="unknown study setting 'curv'"):
        read_recipes(path)
    path.write_text('[recipes.sb\n')
    with pytest.raises(LandscapeError, match="not valid TOML"):
        read_recipes(path)


def test_cli_compare_resumes_and_prints_json(study) -> None:
    settings = study.path.parent / "settings.toml"   # the measure settings, from a file
    settings.write_text("train_size = 100\nmodel_options = {widths = [16]}\n"
                        "trace_probes = 10\nhessian_tol = 1e-3\npac_bayes_samples = 4\n")
    args = ["compare", "--recipes", str(settings), "--out", str(study.path.parent),
            "--curve", "-1:1:5", "--surface", "-1:1:3", "--interpolation", "-0.5:1.5:5",
            "--json"]
    for r in RECIPES:
        args += ["--recipe", r]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["computed"] == {"train": [], "curve": [], "surface": [], "measures": [],
                               "interpolation": []}
    assert [r["model"] for r in out["table"]] == ["small", "large"]
    assert out["table"][1]["top_eigenvalue"] == pytest.approx(study.table[1]["top_eigenvalue"])


def test_cli_plot_draws_a_study_file_as_the_comparison(study, tmp_path) -> None:
    out = tmp_path / "cmp.png"
    result = CliRunner().invoke(main, ["plot", str(study.path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:4] == b"\x89PNG"
    result = CliRunner().invoke(main, ["plot", str(study.path), "--kind", "contour",
                                       "--out", str(out)])
    assert result.exit_code == 1 and "holds a 'study' result" in result.output
