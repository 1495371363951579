"""`landscape curvature` adds the extreme Hessian eigenvalues of every grid point to a surface
file; checked against the full Hessian of a tiny float64 model."""

import json
from pathlib import Path

import h5py
import numpy as np
import torch
from _helpers import flat_loss
from click.testing import CliRunner

from landscape import load_run, train
from landscape.cli import main


def _run_and_surface(tmp_path: Path, width: int, train_size: int, epochs: int,
                     name: str, *surface_args: str) -> tuple[Path, Path]:
    """A tiny spirals MLP run and a surface of it written by the CLI (``surface_args``)."""
    run_dir = tmp_path / "run"
    train(model="mlp", model_options={"widths": [width]}, dataset="spirals",
          train_size=train_size, epochs=epochs, batch_size=20, out=run_dir, progress=False)
    surface = tmp_path / name
    result = CliRunner().invoke(main, ["surface", "--run", str(run_dir), *surface_args,
                                       "--out", str(surface)])
    assert result.exit_code == 0, result.output
    return run_dir, surface


def test_curvature_map_command_matches_full_hessian_at_each_point(tmp_path: Path) -> None:
    run_dir, surface = _run_and_surface(tmp_path, 5, 60, 2, "s.h5", "--x", "-1:1:3", "--y",
                                        "0:1:2", "--precision", "float64")
    runner = CliRunner()
    result = runner.invoke(main, ["curvature", "--run", str(run_dir), "--surface", str(surface),
                                  "--precision", "float64", "--tol", "1e-8", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["done"] == summary["total"] == 6

    run = load_run(run_dir)
    model = run.model.double().eval()
    xs, ys = run.data.split("train")
    loss = flat_loss(model, xs.double(), ys)

    with h5py.File(surface, "r") as f:
        x, y = f["x"][()], f["y"][()]
        origin, dx, dy = (torch.from_numpy(f[k][()]).double()
                          for k in ("origin", "directions/x", "directions/y"))
        hmax, hmin = f["hessian_max"][()], f["hessian_min"][()]
    exact = np.zeros((len(y), len(x), 2))
    for i, b in enumerate(y):
        for j, a in enumerate(x):
            theta = origin + a * dx + b * dy
            hessian = torch.func.hessian(loss)(theta)
            eig = torch.linalg.eigvalsh(hessian).numpy()
            exact[i, j] = eig[-1], eig[0]
    np.testing.assert_allclose(np.stack([hmax, hmin], -1), exact, rtol=1e-6)
    # the printed ranges: of lambda_max, and of |lambda_min / lambda_max| where lambda_max > 0
    np.testing.assert_allclose(summary["hessian_max"], [exact[..., 0].min(),
                                                        exact[..., 0].max()], rtol=1e-6)
    ratio = np.abs(exact[..., 1] / exact[..., 0])[exact[..., 0] > 0]
    np.testing.assert_allclose(summary["abs_min_over_max"], [ratio.min(), ratio.max()],
                               rtol=1e-5)


def test_curvature_map_of_a_1d_curve_is_a_one_line_error(tmp_path: Path) -> None:
    run_dir, curve = _run_and_surface(tmp_path, 5, 40, 1, "c.h5", "--x", "-1:1:3")
    result = CliRunner().invoke(main, ["curvature", "--run", str(run_dir), "--surface", str(curve)])
    assert result.exit_code == 1
    assert "2D surface" in result.output and len(result.output.strip().splitlines()) == 1


def test_curvature_arrays_carry_the_surfaces_dimension_scales(plot_files: dict) -> None:
    """Every array of one grid is labelled (y, x) alike, so readers such as xarray agree."""
    import h5py

    with h5py.File(plot_files["surface"]) as f:
        scales = {name: [[s.name for s in d.values()] for d in f[name].dims]
                  for name in ("train_loss", "done", "hessian_max", "hessian_min",
                               "hessian_done")}
    assert all(v == [["/y"], ["/x"]] for v in scales.values()), scales


def test_ratio_plot_of_a_partial_curvature_map_says_so(plot_files: dict, tmp_path: Path) -> None:
    import shutil

    import h5py
    from click.testing import CliRunner

    from landscape.cli import main

    path = tmp_path / "partial.h5"
    shutil.copyfile(plot_files["surface"], path)
    with h5py.File(path, "r+") as f:
        f["hessian_done"][0, :] = False
        missing = f["hessian_done"].shape[1]
        total = f["hessian_done"].size
    result = CliRunner().invoke(main, ["plot", str(path), "--kind", "ratio", "--out",
                                       str(tmp_path / "ratio.png")])
    assert result.exit_code == 0, result.output
    assert (f"Warning: {path}: the curvature map is partial ({total - missing} of {total} "
            "points computed; the rest blank): rerun the curvature command to complete it"
            ) in result.stderr.splitlines()


def test_curvature_map_reads_only_the_surface_buffers_the_model_has_each_checked_first(
        tmp_path: Path) -> None:
    """Members of a surface's ``buffers`` group that name no buffer of the model are never
    read (a 298 GB dataset there costs nothing); one that does must be numeric and of the
    buffer's shape, else one line; a ``buffers/origin`` that is not a group is one line."""
    from types import SimpleNamespace

    import pytest

    from landscape.analysis.hessian import _surface_buffers
    from landscape.errors import LandscapeError

    run_dir, surface = _run_and_surface(tmp_path, 3, 20, 1, "s.h5", "--x", "-1:1:2", "--y",
                                        "0:0:1")
    with h5py.File(surface, "r+") as f:
        f.create_dataset("buffers/origin/huge", shape=(200_000, 200_000), dtype="f8",
                         chunks=(64, 64))
        f.create_dataset("buffers/x/text", data=np.array([b"a", b"bc"]))
    result = CliRunner().invoke(main, ["curvature", "--run", str(run_dir), "--surface",
                                       str(surface), "--tol", "1e-2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["done"] == 2

    model = SimpleNamespace(buffers={"bn.running_var": torch.ones(3, dtype=torch.float64)})
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f.create_dataset("buffers/origin/bn.running_var", data=[2.0, 3.0, 4.0])
        f.create_dataset("buffers/x/bn.running_var", data=[0.5, 0.5, 0.5])
        origin, steps = _surface_buffers(f, tmp_path / "b.h5", model)
        assert origin["bn.running_var"].tolist() == [2.0, 3.0, 4.0]
        assert steps["x"]["bn.running_var"].tolist() == [0.5] * 3 and steps["y"] == {}
        for edit in ("shape", "text", "dataset"):
            del f["buffers/origin"]
            data = {"shape": [1.0, 2.0], "text": np.array([b"a", b"b", b"c"])}.get(edit)
            if data is None:
                f["buffers/origin"] = [1.0]
            else:
                f.create_dataset("buffers/origin/bn.running_var", data=data)
            with pytest.raises(LandscapeError, match="b.h5: '/buffers/origin") as err:
                _surface_buffers(f, tmp_path / "b.h5", model)
            assert "\n" not in str(err.value)
