"""The surface commands of the CLI (`surface`, `interpolate`, `plane`, `trajectory`, `info`) on
real tiny training runs, and `landscape surface` under ``torchrun`` with two gloo processes.

References: each run's own model (``landscape.load_run``) evaluated with its plain forward pass
and ``torch.nn.functional.cross_entropy`` in float64; the file written by one process.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner, Result
from torch import nn
from torch.nn.utils import parameters_to_vector

from landscape.cli import main
from landscape.runs import load_run
from landscape.training import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three tiny runs (6-unit ReLU MLP on 40 spirals, 3 epochs, a checkpoint every epoch)."""
    root = tmp_path_factory.mktemp("runs")
    paths = []
    for seed in range(3):
        path = root / f"run{seed}"
        train(model="mlp", model_options={"widths": [6]}, dataset="spirals", train_size=40,
              epochs=3, batch_size=20, save_every=1, seed=seed, out=path, progress=False)
        paths.append(path)
    return paths


@torch.no_grad()
def _ref(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    m = copy.deepcopy(model).double().eval()
    return F.cross_entropy(m(x.double()), y).item()


def _invoke(*args: object) -> Result:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_cli_surface_json_summary_and_file_agree_with_the_runs_own_loss(
        runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    result = _invoke("surface", "--run", runs[0], "--x", "-1:1:5", "--y", "-1:1:3",
                     "--precision", "float64", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["kind"] == "surface" and summary["shape"] == [3, 5]
    assert summary["done"] == summary["total"] == 15 and summary["nonfinite"] == 0
    run = load_run(runs[0])
    loss = _ref(run.model, *run.data.split("train"))
    assert summary["train_loss"]["center"] == pytest.approx(loss, rel=1e-12)
    with h5py.File(out, "r") as f:
        assert f["train_loss"].shape == (3, 5) and f["done"][()].all()
        assert f["train_loss"][1, 2] == pytest.approx(loss, rel=1e-12)  # x = 0, y = 0
        assert f["directions/x"].attrs["seed"] == 0 and f["directions/y"].attrs["seed"] == 1
        assert summary["train_loss"]["min"] == pytest.approx(f["train_loss"][()].min())


def test_cli_rerun_resumes_other_settings_are_refused_unless_overwrite(
        runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    args = ["surface", "--run", runs[0], "--x", "-1:1:3", "--y", "-1:1:3", "--out", out]
    assert _invoke(*args).exit_code == 0
    before = out.read_bytes()
    assert _invoke(*args, "--json").exit_code == 0  # same settings: resumes, nothing to do
    line = _one_line_error(_invoke(*args, "--seed", "1"))
    assert "seed: 0 -> 1" in line and "--overwrite" in line
    assert out.read_bytes() == before
    result = _invoke(*args, "--seed", "1", "--overwrite", "--json")
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as f:
        assert f["directions/x"].attrs["seed"] == 1


def test_cli_strategy_and_batch_size_are_recorded_and_a_changed_one_is_refused(
        runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    args = ["surface", "--run", runs[0], "--x", "-1:1:3", "--out", out]
    assert _invoke(*args, "--strategy", "vmap", "--batch-size", "16").exit_code == 0
    before = out.read_bytes()
    line = _one_line_error(_invoke(*args, "--strategy", "loop", "--batch-size", "16"))
    assert "train.strategy: 'vmap' -> 'loop'" in line
    line = _one_line_error(_invoke(*args, "--strategy", "vmap"))
    assert "train.batch_size: 16 -> 40" in line
    assert out.read_bytes() == before
    with h5py.File(out, "r") as f:
        settings = json.loads(f.attrs["settings"])
    assert (settings["train.strategy"], settings["train.batch_size"]) == ("vmap", 16)


def test_cli_surface_on_train_and_test_splits(runs: list[Path], tmp_path: Path) -> None:
    result = _invoke("surface", "--run", runs[1], "--x", "-1:1:3", "--split", "train,test",
                     "--precision", "float64", "--out", tmp_path / "tt.h5", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    run = load_run(runs[1])
    for split in ("train", "test"):
        ref = _ref(run.model, *run.data.split(split))
        assert summary[f"{split}_loss"]["center"] == pytest.approx(ref, rel=1e-12)
    assert len(run.data.split("test")[1]) != len(run.data.split("train")[1])


def test_cli_text_report_of_a_one_dimensional_curve(runs: list[Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["surface", "--run", str(runs[0]), "--x", "-1:1:5",
                                       "--out", str(tmp_path / "c.h5")])
    assert result.exit_code == 0, repr(result.exception)
    assert "5/5 points done" in result.stdout


def test_cli_bad_range_is_a_one_line_error(runs: list[Path], tmp_path: Path) -> None:
    line = _one_line_error(_invoke("surface", "--run", runs[0], "--x", "1:-1:5",
                                   "--out", tmp_path / "bad.h5"))
    assert "bad range '1:-1:5'" in line
    line = _one_line_error(_invoke("surface", "--run", runs[0], "--x", "-1:1",
                                   "--out", tmp_path / "bad.h5"))
    assert "MIN:MAX:NUM" in line
    assert not (tmp_path / "bad.h5").exists()


def test_cli_corrupt_output_file_is_refused_and_left_unchanged(runs: list[Path],
                                                               tmp_path: Path) -> None:
    out = tmp_path / "corrupt.h5"
    out.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8)
    before = out.read_bytes()
    line = _one_line_error(_invoke("surface", "--run", runs[0], "--x", "-1:1:3", "--out", out))
    assert re.search(r"corrupt\.h5: .*(truncated|corrupt).*left untouched", line), line
    _one_line_error(_invoke("info", out))
    assert out.read_bytes() == before


def test_cli_interpolate_endpoints_equal_each_runs_loss(runs: list[Path],
                                                        tmp_path: Path) -> None:
    out = tmp_path / "i.h5"
    result = _invoke("interpolate", "--run", runs[0], "--to", runs[1], "--x", "-0.5:1.5:5",
                     "--precision", "float64", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["kind"] == "interpolation"
    a, b = load_run(runs[0]), load_run(runs[1])
    with h5py.File(out, "r") as f:
        loss = f["train_loss"][()]
        np.testing.assert_array_equal(f["x"][()], [-0.5, 0.0, 0.5, 1.0, 1.5])
    assert loss[1] == pytest.approx(_ref(a.model, *a.data.split("train")), rel=1e-12)
    # evaluated on the first run's data (the runs' seeds generate different spirals)
    assert loss[3] == pytest.approx(_ref(b.model, *a.data.split("train")), rel=1e-12)


def test_cli_plane_reproduces_the_three_runs(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "p.h5"
    result = _invoke("plane", "--run", runs[0], "--through", runs[1], runs[2], "--x", "0:1:2",
                     "--y", "0:1:2", "--precision", "float64", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as f:
        loss = f["train_loss"][()]
    data = load_run(runs[0]).data.split("train")  # evaluated on the first run's data
    for (i, j), path in (((0, 0), runs[0]), ((0, 1), runs[1]), ((1, 0), runs[2])):
        assert loss[i, j] == pytest.approx(_ref(load_run(path).model, *data), rel=1e-12)


def test_cli_trajectory_stores_the_path_and_each_checkpoints_own_loss(
        runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "t.h5"
    result = _invoke("trajectory", "--run", runs[2], "--x", "-1:1:3", "--y", "-1:1:3",
                     "--precision", "float64", "--out", out)
    assert result.exit_code == 0, result.output
    assert "explained variance" in result.stdout
    run = load_run(runs[2])
    x, y = run.data.split("train")
    final = parameters_to_vector(run.model.parameters()).detach().double()
    with h5py.File(out, "r") as f:
        assert f.attrs["kind"] == "trajectory"
        epochs = f["path/epochs"][()]
        path_loss, coords = f["path/train_loss"][()], f["path/coords"][()]
        residuals = f["path/residuals"][()]
        dirs = torch.as_tensor(np.stack([f["directions/x"][()], f["directions/y"][()]]))
        evr = json.loads(f.attrs["explained_variance_ratio"]) if isinstance(
            f.attrs["explained_variance_ratio"], str) else list(f.attrs["explained_variance_ratio"])
    np.testing.assert_array_equal(epochs, [0, 1, 2])  # epoch 3 is the final model itself
    assert evr[0] >= evr[1] > 0 and sum(evr) <= 1 + 1e-12
    for k, epoch in enumerate(epochs):
        model = run.load_checkpoint(int(epoch))
        assert path_loss[k] == pytest.approx(_ref(model, x, y), rel=1e-12)
        diff = parameters_to_vector(model.parameters()).detach().double() - final
        on_plane = torch.as_tensor(coords[k]) @ dirs.double()
        assert residuals[k] == pytest.approx((diff - on_plane).norm().item(), abs=1e-5)


def test_cli_info_prints_kind_and_completeness(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    assert _invoke("surface", "--run", runs[0], "--x", "-1:1:5", "--y", "-1:1:3",
                   "--out", out, "--json").exit_code == 0
    with h5py.File(out, "r+") as f:  # as if killed before the last three points
        done = f["done"][()]
        done[2, 2:] = False
        f["done"][...] = done
    result = _invoke("info", out)
    assert result.exit_code == 0, result.output
    assert "surface" in result.stdout and "12/15" in result.stdout
    result = _invoke("info", out, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["kind"] == "surface" and info["done"] == 12 and info["total"] == 15
    assert info["datasets"]["train_loss"] == [3, 5]
    assert info["settings"]["seed"] == 0


def test_cli_info_of_a_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    line = _one_line_error(_invoke("info", tmp_path / "none.h5"))
    assert "none.h5" in line and "does not exist" in line


# ---------------------------------------------------------------------------------------
# torchrun: two gloo processes write the file one process writes
TORCHRUN_SCRIPT = textwrap.dedent("""
    import json, os
    import torch.distributed as dist
    from landscape.cli import main
    from landscape.objective import Objective

    original, points = Objective.evaluate, [0]

    def counting(self, pts, *args, **kwargs):
        points[0] += pts.shape[0] if pts.dim() == 2 else 1
        return original(self, pts, *args, **kwargs)

    Objective.evaluate = counting
    status = "ok"
    try:
        main(json.loads(os.environ["CLI_ARGS"]), standalone_mode=False)
    except BaseException as err:  # record what each rank's command did
        status = f"{type(err).__name__}: {err}"
    name = os.path.join(os.environ["STATUS_DIR"], f"rank{os.environ['RANK']}.json")
    with open(name, "w") as f:
        json.dump({"status": status, "points": points[0]}, f)
    if dist.is_initialized():
        dist.destroy_process_group()
""")


@pytest.fixture(scope="module")
def torchrun_surface(runs: list[Path], tmp_path_factory: pytest.TempPathFactory,
                     ) -> tuple[Path, dict[str, dict], list[str]]:
    root = tmp_path_factory.mktemp("torchrun")
    script = root / "cli.py"
    script.write_text(TORCHRUN_SCRIPT)
    args = ["surface", "--run", str(runs[0]), "--x", "-1:1:5", "--y", "-1:1:5",
            "--precision", "float64", "--out", str(root / "two.h5"), "--json"]
    env = {**os.environ, "CLI_ARGS": json.dumps(args), "STATUS_DIR": str(root),
           "LANDSCAPE_QUIET": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", str(script)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = {p.stem: json.loads(p.read_text()) for p in root.glob("rank*.json")}
    return root / "two.h5", ranks, args


def test_torchrun_two_gloo_processes_write_the_same_file_as_one_process(
        torchrun_surface: tuple[Path, dict[str, dict], list[str]], tmp_path: Path) -> None:
    two, ranks, args = torchrun_surface
    assert set(ranks) == {"rank0", "rank1"} and ranks["rank0"]["status"] == "ok", ranks
    # both ranks evaluated grid points; rank 0 also the centre; 25 grid points in all
    assert ranks["rank0"]["points"] > 1 and ranks["rank1"]["points"] > 0, ranks
    assert ranks["rank0"]["points"] + ranks["rank1"]["points"] == 25 + 1, ranks
    one = tmp_path / "one.h5"
    result = _invoke(*args[:-3], "--out", one)
    assert result.exit_code == 0, result.output
    with h5py.File(one, "r") as f, h5py.File(two, "r") as g:
        names = set()
        f.visit(names.add)
        other = set()
        g.visit(other.add)
        assert names == other
        for name in names:
            if not isinstance(f[name], h5py.Dataset):
                continue
            a, b = f[name][()], g[name][()]
            if name in ("train_loss", "train_acc"):  # kernels may differ in the last bits
                np.testing.assert_allclose(b, a, rtol=1e-12, atol=0, err_msg=name)
            else:
                np.testing.assert_array_equal(b, a, err_msg=name)
        assert g["done"][()].all()
        for key in ("settings_hash", "kind", "seed"):
            assert f.attrs[key] == g.attrs[key]
        assert g.attrs["center_train_loss"] == pytest.approx(f.attrs["center_train_loss"],
                                                             rel=1e-12)


def test_torchrun_every_rank_of_the_surface_command_exits_cleanly(
        torchrun_surface: tuple[Path, dict[str, dict], list[str]]) -> None:
    _, ranks, _ = torchrun_surface
    assert {k: v["status"] for k, v in ranks.items()} == {"rank0": "ok", "rank1": "ok"}
