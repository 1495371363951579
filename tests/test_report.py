"""`landscape report`: one self-contained HTML page, checked in a real headless Chromium.

Each page loads with no console error and no network request but the file itself, the
arrays plotly holds in the page (read back through the DevTools protocol) are the HDF5 values,
and a screenshot is not blank. Chromium: the Debian package ``chromium`` (``.ci/run`` installs
it and sets LANDSCAPE_REQUIRE_BROWSER=1, so that a missing browser fails there instead of
skipping).
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from _browser import Page, browser, chromium, load
from _helpers import invoke

from landscape.report import write_report


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    chromium()
    with browser() as p:
        yield p


def _trace(page: Page, div: str, i: int, key: str) -> np.ndarray:
    """``key`` (x, y, z) of trace ``i`` of the figure ``div`` as plotly holds it in the page."""
    js = (f"(t => Array.from(t.{key}, r => (r && r.length !== undefined) ? Array.from(r) : r))"
          f"(document.getElementById('{div}')._fullData[{i}])")
    return np.array(page.evaluate(js), dtype=float)  # JSON null (NaN) -> nan


def _checked(page: Page, html: Path) -> Page:
    load(page, html)
    assert page.errors == []
    assert page.requests == [html.resolve().as_uri()]  # nothing fetched but the file itself
    from PIL import Image

    shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("L"), dtype=float)
    assert shot.std() > 10.0  # not blank: text, tables and figures on a white page
    return page


def test_surface_report_in_chromium_holds_the_stored_arrays(plot_files: dict[str, Path],
                                                           page: Page, tmp_path: Path) -> None:
    traj = tmp_path / "traj.h5"  # with each checkpoint's own loss, as trajectory() stores it
    shutil.copy(plot_files["traj"], traj)
    with h5py.File(traj, "a") as f:
        f["path/train_loss"] = own = np.array([0.9, 0.7, 0.4])
    html = write_report(traj, tmp_path / "traj.html")
    text = html.read_text()
    assert "<script src=" not in text  # plotly's JavaScript is embedded, not linked
    _checked(page, html)
    with h5py.File(plot_files["traj"]) as f:
        x, y, z, coords = (f[k][()] for k in ("x", "y", "train_loss", "path/coords"))
    ids = page.evaluate("Array.from(document.querySelectorAll('.js-plotly-plot'), d => d.id)")
    assert ids == ["surface-3d-train_loss", "surface-contour-train_loss"]
    for div in ids:
        np.testing.assert_array_equal(_trace(page, div, 0, "z"), z)
        np.testing.assert_array_equal(_trace(page, div, 0, "x"), x)
        np.testing.assert_array_equal(_trace(page, div, 0, "y"), y)
    path = np.stack([_trace(page, ids[1], 1, k) for k in "xy"], -1)
    np.testing.assert_array_equal(path, coords)  # the training path on the contours
    path3d = np.stack([_trace(page, ids[0], 1, k) for k in "xyz"], -1)
    np.testing.assert_array_equal(path3d, np.column_stack([coords, own]))  # and in 3D


def test_curve_and_hessian_reports_hold_the_stored_arrays(plot_files: dict[str, Path],
                                                         page: Page, tmp_path: Path) -> None:
    _checked(page, write_report(plot_files["curve"], tmp_path / "curve.html"))
    with h5py.File(plot_files["curve"]) as f:
        for i, name in enumerate(("train_loss", "test_loss")):
            np.testing.assert_array_equal(_trace(page, "surface-curve-loss", i, "y"), f[name][()])
            np.testing.assert_array_equal(_trace(page, "surface-curve-loss", i, "x"), f["x"][()])
    _checked(page, write_report(plot_files["hessian"], tmp_path / "hessian.html"))
    with h5py.File(plot_files["hessian"]) as f:
        np.testing.assert_array_equal(_trace(page, "hessian-eigenvalues", 0, "y"),
                                      f["eigenvalues_top"][()])
        np.testing.assert_array_equal(_trace(page, "hessian-density", 0, "x"),
                                      f["density/grid"][()])
        np.testing.assert_array_equal(_trace(page, "hessian-density", 0, "y"),
                                      f["density/density"][()])
        bottom = float(f["eigenvalues_bottom"][0])
    cells = page.evaluate("Array.from(document.querySelectorAll('td'), td => td.textContent)")
    assert f"{bottom:.6g}" in cells


def test_study_report_shows_table_curves_and_findings_when_present(
        plot_studies: dict[str, Any], page: Page, tmp_path: Path) -> None:
    study = plot_studies["pair"]
    folder = tmp_path / "pair"  # a copy: the shared study's own files stay as they are
    shutil.copytree(Path(study.path).parent, folder)
    findings = {"trend": {"slope": 0.25, "ci_low": 0.1, "ci_high": 0.4, "p": 0.01,
                          "p_holm": 0.02}, "pairs": []}
    (folder / "findings.json").write_text(json.dumps(findings))
    _checked(page, write_report(folder, tmp_path / "study.html"))
    for name in ("findings.json", "findings.md"):
        (folder / name).unlink(missing_ok=True)
    cells = page.evaluate("Array.from(document.querySelectorAll('td'), td => td.textContent)")
    assert {"trend.p_holm", "0.02"} <= set(cells)
    for row in study.table:  # every recipe's row, its train loss as mean [interval]
        loss = row["train_loss"]
        assert f"{loss['mean']:.4g} [{loss['ci_low']:.4g}, {loss['ci_high']:.4g}]" in cells
    for i, name in enumerate(study.names):  # the band: min and max over every curve
        curves = np.stack([c.values["train_loss"] for m in study.models[name] for c in m.curves])
        band = _trace(page, "study-curves", 2 * i, "y")
        n = curves.shape[1]
        np.testing.assert_allclose(band[:n], curves.max(0), rtol=0, atol=0)
        np.testing.assert_allclose(band[n:], curves.min(0)[::-1], rtol=0, atol=0)
        np.testing.assert_array_equal(_trace(page, "study-curves", 2 * i + 1, "y"),
                                      curves.mean(0))
    # and without findings the page is made all the same, with no findings section
    html = write_report(folder, tmp_path / "bare.html").read_text()
    assert "Findings" not in html


def test_report_command_and_missing_plotly_are_one_line(plot_files: dict[str, Path],
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r.html"
    r = invoke("report", str(plot_files["surface"]), "--out", str(out))
    assert r.exit_code == 0 and r.output.strip() == str(out) and out.stat().st_size > 10**6
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)  # as if not installed
    r = invoke("report", str(plot_files["surface"]), "--out", str(tmp_path / "no.html"))
    assert r.exit_code == 1 and "pip install" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_track_and_toy_reports_hold_the_stored_arrays(page: Page, tmp_path: Path) -> None:
    from landscape import train
    from landscape.analysis.track import load_track
    from landscape.toy import load_paths, run_toy

    run = train(model="mlp", model_options={"widths": [5]}, dataset="spirals", train_size=40,
                optimizer="sgd", lr=0.5, batch_size=40, steps=6, out=tmp_path / "run",
                progress=False, track="top_eigenvalue", track_every=2)
    _checked(page, write_report(run.path, tmp_path / "track.html"))  # the run directory
    track = load_track(run.path)
    np.testing.assert_array_equal(_trace(page, "track-top_eigenvalue", 0, "x"), track.step)
    np.testing.assert_array_equal(_trace(page, "track-top_eigenvalue", 0, "y"),
                                  track.measures["top_eigenvalue"])
    np.testing.assert_array_equal(_trace(page, "track-top_eigenvalue", 1, "y"), track.threshold)
    np.testing.assert_array_equal(_trace(page, "track-train_loss", 0, "y"), track.train_loss)

    run_toy("rosenbrock", ["sgd", "adam"], out=tmp_path / "toy", steps=10)
    _checked(page, write_report(tmp_path / "toy" / "paths.h5", tmp_path / "toy.html"))
    function, paths = load_paths(tmp_path / "toy" / "paths.h5")
    for i, p in enumerate(paths.values(), start=1):  # trace 0: the contours
        got = np.stack([_trace(page, "toy-paths", i, k) for k in "xy"], -1)
        np.testing.assert_array_equal(got, p.path)
        np.testing.assert_array_equal(_trace(page, "toy-losses", i - 1, "y"),
                                      p.losses - function.f_min)
