"""Hostile or damaged result files through the CLI (`info`, `plot`, and resume by rerunning
the command that wrote them): exit code 1, exactly one line, and the file's bytes unchanged
(sha256 before and after). Plus a locked file, a file on a read-only mount, and the other
one-line errors of issue 12 item 6 (grid size, CIFAR labels, diverged models, --sigma 0,
a user model whose output does not fit the data)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import shutil
import struct
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from landscape.cli import main
from landscape.training import train

ROOT = Path(__file__).resolve().parents[1]

SURFACE = ["surface", "--x", "-1:1:3", "--y", "-1:1:3"]
HESSIAN = ["hessian", "--top", "1", "--bottom", "1", "--trace", "--max-probes", "4",
           "--density", "--density-probes", "2", "--density-steps", "6"]
SHARPNESS = ["sharpness", "--measures", "epsilon_sharpness,fisher_rao_norm"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(*args: object) -> tuple[int, list[str], BaseException | None]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output.strip().splitlines(), result.exception


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny run and an intact file of each kind: surface, hessian, sharpness, study."""
    from landscape.study import Recipe, run_study

    tmp = tmp_path_factory.mktemp("hostile")
    run = tmp / "run"
    train(model="mlp", model_options={"widths": [4]}, dataset="spirals", train_size=40,
          epochs=1, batch_size=20, out=run, progress=False)
    files = {"run": run}
    for kind, args in (("surface", SURFACE), ("hessian", HESSIAN), ("sharpness", SHARPNESS)):
        files[kind] = tmp / f"{kind}.h5"
        code, lines, _ = _cli(*args, "--run", run, "--out", files[kind])
        assert code == 0, lines
    study = run_study([Recipe(f"sgd{i}", {"optimizer": "sgd", "epochs": 1, "lr": lr})
                       for i, lr in enumerate((0.05, 0.1))], seeds=[0],
                      out=tmp / "study", train_size=40, data="spirals",
                      model_options={"widths": [4]}, curve="-1:1:3", surface="-1:1:3",
                      interpolation="0:1:3", direction_seeds=1, measures=["epsilon_sharpness"],
                      show_progress=False, quiet=True)
    files["study"] = study.path
    return files


def _attr(key: str, value: object) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        f.attrs[key] = value
    return edit


def _replace(name: str, make: Callable[[h5py.File, str], None]) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        del f[name]
        make(f, name)
    return edit


def _delete(name: str) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        del f[name]
    return edit


def _huge(f: h5py.File, name: str, dtype: str = "f8") -> None:
    """A dataset declaring 200,000 x 200,000 values (37 GiB as bool, 298 GiB as float64)
    in chunked storage that was never written, so the file stays small."""
    f.create_dataset(name, shape=(200_000, 200_000), dtype=dtype, chunks=(64, 64))


SURFACE_VARIANTS: dict[str, Callable[[h5py.File], None]] = {
    "format_missing": _attr("format", "netcdf"),
    "format_version_text": _attr("format_version", "abc"),
    "format_version_newer": _attr("format_version", 99),
    "kind_unknown": _attr("kind", "banana"),
    "settings_bad_json": _attr("settings", "{not json"),
    "json_attrs_bad_json": _attr("json_attrs", "[oops"),
    "metrics_bad_json": _attr("metrics", "[\"train_loss\","),
    "metrics_not_names": _attr("metrics", "[1, 2]"),
    "train_loss_missing": _delete("train_loss"),
    "train_loss_shape_mismatch": _replace("train_loss", lambda f, n: f.create_dataset(
        n, data=np.zeros((2, 2)))),
    "train_loss_text": _replace("train_loss", lambda f, n: f.create_dataset(
        n, data=np.array([b"a", b"b", b"c"] * 3).reshape(3, 3))),
    "train_loss_external_link": _replace("train_loss", lambda f, n: f.__setitem__(
        n, h5py.ExternalLink("/etc/hostname", "/x"))),
    "done_group": _replace("done", lambda f, n: f.create_group(n)),
    "done_float": _replace("done", lambda f, n: f.create_dataset(n, data=np.zeros((3, 3)))),
    "done_wrong_shape": _replace("done", lambda f, n: f.create_dataset(
        n, data=np.zeros((2, 5), bool))),
    "done_huge": _replace("done", lambda f, n: _huge(f, n, "bool")),
    "x_missing": _delete("x"),
    "x_nan": _replace("x", lambda f, n: f.create_dataset(n, data=[-1.0, np.nan, 1.0])),
    "y_inf": _replace("y", lambda f, n: f.create_dataset(n, data=[-1.0, 0.0, np.inf])),
    "x_2d": _replace("x", lambda f, n: f.create_dataset(n, data=np.zeros((3, 1)))),
    "x_beyond_axis_range": _replace("x", lambda f, n: f.create_dataset(
        n, data=[-1e308, 0.0, 1e308])),
    "x_duplicate": _replace("x", lambda f, n: f.create_dataset(n, data=[0.0, 0.0, 1.0])),
    "y_unsorted": _replace("y", lambda f, n: f.create_dataset(n, data=[1.0, 0.0, -1.0])),
    "metrics_100000_names": _attr("metrics", json.dumps(["train_loss"] * 100_000)),
    "metrics_twice": _attr("metrics", json.dumps(["train_loss", "train_loss"])),
    "x_huge": _replace("x", lambda f, n: f.create_dataset(n, shape=(10**9,), dtype="f8",
                                                          chunks=(1024,))),
    "directions_wrong_length": _replace("directions/x", lambda f, n: f.create_dataset(
        n, data=np.zeros(3, np.float32))),
    "kind_hessian_with_eigenvalues_done": lambda f: f.attrs.update(kind="hessian",
                                                                   eigen_done=True),
}

HESSIAN_VARIANTS: dict[str, Callable[[h5py.File], None]] = {
    "eigenvalues_missing": _delete("eigenvalues_top"),
    "eigenvalues_huge": _replace("eigenvalues_top", lambda f, n: f.create_dataset(
        n, shape=(10**9,), dtype="f8", chunks=(1024,))),
    "residuals_shape_mismatch": _replace("residuals_top", lambda f, n: f.create_dataset(
        n, data=np.zeros(4))),
    "eigen_done_text": _attr("eigen_done", "yes"),
    "eigen_n_hvp_text": _attr("eigen_n_hvp", "many"),
    "trace_group_missing": _delete("trace"),
    "density_grid_mismatch": _replace("density/density", lambda f, n: f.create_dataset(
        n, data=np.zeros(3))),
    "density_sigma_text": lambda f: f["density"].attrs.__setitem__("sigma", "wide"),
}

SHARPNESS_VARIANTS: dict[str, Callable[[h5py.File], None]] = {
    "measure_not_scalar": _replace("epsilon_sharpness", lambda f, n: f.create_dataset(
        n, data=np.zeros(5))),
    "measure_group": _replace("epsilon_sharpness", lambda f, n: f.create_group(n)),
}

STUDY_VARIANTS: dict[str, Callable[[h5py.File], None]] = {
    "table_bad_json": _attr("table", "[{"),
    "curve_done_group": lambda f: _replace("done", lambda g, n: g.create_group(n))(
        f["models"][next(iter(f["models"]))]["seed0"]["curve_d0"]),
    "surface_loss_huge": lambda f: _replace("train_loss", _huge)(
        f["models"][next(iter(f["models"]))]["seed0"]["surface"]),
}

def _heap_object(index: int, size: int) -> Callable[[bytes], bytes]:
    """Rewrite the header of the first object of the file's first global heap collection
    (which holds the root attributes' text) to ``index`` and ``size``."""
    def edit(data: bytes) -> bytes:
        at = data.index(b"GCOL") + 16
        return data[:at] + struct.pack("<HH4xQ", index, 0, size) + data[at + 16:]
    return edit


def _vlen_kind_9(data: bytes) -> bytes:
    """The type of the ``h5py_version`` text attribute, a variable-length string (vlen kind
    1), made kind 9 (none: HDF5 crashed reading it): one bit, as the fuzzer found."""
    text = b"h5py_version\x00\x00\x00\x00\x19\x01"
    assert data.count(text) == 1
    return data.replace(text, text[:-1] + b"\x09")


BYTES_VARIANTS: dict[str, Callable[[bytes], bytes]] = {
    "not_hdf5": lambda data: b"x,y,loss\n0,0,1.5\n" * 64,
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    # both made HDF5 2.0 loop forever in its first string-attribute read (fuzz case 772)
    "heap_free_space_of_size_0": _heap_object(0, 0),
    "heap_object_size_wrapping_to_0": _heap_object(1, 2**64 - 16),
    "attribute_of_an_unknown_vlen_kind": _vlen_kind_9,
}

CASES = ([("surface", n, e) for n, e in SURFACE_VARIANTS.items()]
         + [("hessian", n, e) for n, e in HESSIAN_VARIANTS.items()]
         + [("sharpness", n, e) for n, e in SHARPNESS_VARIANTS.items()]
         + [("study", n, e) for n, e in STUDY_VARIANTS.items()]
         + [(k, n, e) for k in ("surface", "hessian") for n, e in BYTES_VARIANTS.items()])

RESUME = {"surface": SURFACE, "hessian": HESSIAN, "sharpness": SHARPNESS}


def _damaged(base: dict[str, Path], kind: str, name: str, edit: Callable, tmp: Path) -> Path:
    path = tmp / f"{kind}-{name}.h5"
    shutil.copyfile(base[kind], path)
    if name in BYTES_VARIANTS:
        path.write_bytes(edit(path.read_bytes()))
    else:
        with h5py.File(path, "r+") as f:
            edit(f)
    return path


def _one_line(code: int, lines: list[str], exc: BaseException | None, path: Path) -> str:
    assert isinstance(exc, SystemExit) and code == 1, (code, lines, exc)  # no traceback
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert str(path) in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(("kind", "name", "edit"), CASES, ids=[f"{k}-{n}" for k, n, _ in CASES])
def test_damaged_file_is_one_line_exit_1_and_left_untouched(
        base: dict[str, Path], tmp_path: Path, kind: str, name: str, edit: Callable) -> None:
    path = _damaged(base, kind, name, edit, tmp_path)
    before = _sha(path)
    commands = [["info", path], ["info", path, "--json"], ["plot", path, "--out",
                                                           tmp_path / "fig.png"]]
    if kind in RESUME:
        commands.append([*RESUME[kind], "--run", base["run"], "--out", path])
    for args in commands:
        _one_line(*_cli(*args), path)
        assert _sha(path) == before, args
    assert not (tmp_path / "fig.png").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_intact_files_pass_info_plot_and_resume(base: dict[str, Path], tmp_path: Path) -> None:
    """The validation refuses nothing this tool writes (the control for the cases above)."""
    for kind in ("surface", "hessian", "sharpness", "study"):
        assert _cli("info", base[kind])[0] == 0, kind
    for kind in ("surface", "hessian", "study"):
        code, lines, _ = _cli("plot", base[kind], "--out", tmp_path / f"{kind}.png")
        assert code == 0, lines
    for kind, args in RESUME.items():
        copy = tmp_path / f"{kind}.h5"
        shutil.copyfile(base[kind], copy)
        code, lines, _ = _cli(*args, "--run", base["run"], "--out", copy)
        assert code == 0, lines


def test_locked_file_is_reported_as_locked(base: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "locked.h5"
    shutil.copyfile(base["surface"], path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import h5py, sys, time\nf = h5py.File(sys.argv[1], 'r+')\n"
         "print('open', flush=True)\ntime.sleep(60)", str(path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        for args in (["info", path], ["plot", path, "--out", tmp_path / "p.png"],
                     [*SURFACE, "--run", base["run"], "--out", path]):
            line = _one_line(*_cli(*args), path)
            assert "locked" in line and "corrupt" not in line, line
    finally:
        holder.kill()
        holder.wait()


def test_read_only_mount_is_reported_as_such(base: dict[str, Path], tmp_path: Path) -> None:
    """Resuming a file on a read-only bind mount (a user and mount namespace) says so; info
    and plot read it."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("no unprivileged mount namespaces here")
    folder = tmp_path / "ro"
    folder.mkdir()
    shutil.copyfile(base["surface"], folder / "s.h5")
    before = _sha(folder / "s.h5")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cli = f"{sys.executable} -m landscape.cli"
    script = (f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && "
              f"{cli} info {folder}/s.h5 >/dev/null && "
              f"{cli} {' '.join(SURFACE)} --run {base['run']} --out {folder}/s.h5")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True,
                          text=True, env=env, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-2000:]
    assert "read-only filesystem" in lines[0] and "corrupt" not in lines[0], lines[0]
    assert _sha(folder / "s.h5") == before


@pytest.mark.parametrize(("grid", "words"), [
    (["--x", "-1:1:100000000000"], "100,000,000,000 points"),
    (["--x", "-1:1:100000", "--y", "-1:1:100000"], "10,000,000,000 points (100000 x 100000)"),
])
def test_huge_grid_is_refused_up_front_and_writes_nothing(
        base: dict[str, Path], tmp_path: Path, grid: list[str], words: str) -> None:
    out = tmp_path / "g.h5"
    t0 = time.perf_counter()
    code, lines, exc = _cli("surface", "--run", base["run"], *grid, "--out", out)
    assert isinstance(exc, SystemExit) and code == 1 and len(lines) == 1, lines
    assert words in lines[0], lines[0]
    assert time.perf_counter() - t0 < 30  # refused, not attempted (was 45 s, MemoryError)
    assert list(tmp_path.iterdir()) == []


def test_cifar_label_beyond_int64_is_one_line(tmp_path: Path) -> None:
    from landscape.data import load_dataset
    from landscape.errors import LandscapeError

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2**70]}
        (folder / name).write_bytes(pickle.dumps(batch))
    with pytest.raises(LandscapeError, match=r"data_batch_1: expected 'labels' as a list of "
                                             r"integers in 0\.\.9") as err:
        load_dataset("cifar10", data_dir=folder)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def diverged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nan") / "run"
    train(model="mlp", model_options={"widths": [4]}, dataset="spirals", train_size=40,
          epochs=2, batch_size=20, lr=1e30, out=path, progress=False)
    return path


@pytest.mark.parametrize("command", [
    ["hessian", "--top", "1", "--bottom", "0", "--out", "{tmp}/h.h5"],
    ["sharpness"],
    ["noise"],
])
def test_diverged_model_is_one_line_before_any_work(
        diverged: Path, tmp_path: Path, command: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import landscape.objective as objective

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("heavy work started on a diverged model")

    for name in ("hvp", "grad", "per_sample_grads"):
        monkeypatch.setattr(objective.Objective, name, refuse)
    args = [a.format(tmp=tmp_path) for a in command]
    code, lines, exc = _cli(*args, "--run", diverged)
    assert isinstance(exc, SystemExit) and code == 1 and len(lines) == 1, (lines, exc)
    assert "NaN or infinite parameters" in lines[0] and "diverged" in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []  # no result file started


def test_sigma_zero_is_refused_before_any_lanczos(base: dict[str, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import landscape.objective as objective

    def no_hvp(*args: object, **kwargs: object) -> None:
        raise AssertionError("an HVP was computed before --sigma was checked")

    monkeypatch.setattr(objective.Objective, "hvp", no_hvp)
    out = tmp_path / "h.h5"
    code, lines, exc = _cli("hessian", "--run", base["run"], "--density", "--sigma", "0",
                            "--out", out)
    assert isinstance(exc, SystemExit) and code == 1, (lines, exc)
    assert lines == ["Error: sigma must be positive, got 0.0"]
    assert not out.exists()


USER_MODELS = """
from torch import nn
def wrong_inputs(**kw):
    return nn.Linear(3, 2)
def flat_outputs(**kw):
    return nn.Sequential(nn.Linear(2, 1), nn.Flatten(0))
def fits(**kw):
    return nn.Linear(2, 2)
"""


@pytest.mark.parametrize(("factory", "words"), [
    ("wrong_inputs", "cannot take the inputs of dataset 'spirals' (shape (2, 2)): mat1 and "
                     "mat2 shapes cannot be multiplied"),
    ("flat_outputs", "gives outputs of shape (2,) for inputs of shape (2, 2) of dataset "
                     "'spirals', which needs (2, 2 or more) logits"),
])
def test_user_model_that_does_not_fit_is_one_line_and_the_retry_runs(
        tmp_path: Path, factory: str, words: str) -> None:
    (tmp_path / "models.py").write_text(USER_MODELS)
    out = tmp_path / "run"
    common = ["--dataset", "spirals", "--train-size", "40", "--epochs", "1", "--out", out]
    code, lines, exc = _cli("train", "--model", f"{tmp_path}/models.py:{factory}", *common)
    assert isinstance(exc, SystemExit) and code == 1 and len(lines) == 1, (lines, exc)
    assert words in lines[0], lines[0]
    assert not out.exists()  # nothing half-written blocks the retry
    code, lines, _ = _cli("train", "--model", f"{tmp_path}/models.py:fits", *common)
    assert code == 0, lines


def _external_storage(f: h5py.File, name: str, victims: dict[str, Path]) -> None:
    """``name`` keeps its values in the raw bytes of another (writable) file."""
    shape, dtype = f[name].shape, f[name].dtype
    del f[name]
    f.create_dataset(name, shape=shape, dtype=dtype,
                     external=[(str(victims["raw"]), 0, math.prod(shape) * dtype.itemsize)])


def _virtual(f: h5py.File, name: str, victims: dict[str, Path]) -> None:
    """``name`` is a virtual dataset mapping the same dataset of another HDF5 file."""
    shape, dtype = f[name].shape, f[name].dtype
    del f[name]
    layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
    layout[...] = h5py.VirtualSource(str(victims["h5"]), name, shape=shape)
    f.create_virtual_dataset(name, layout)


def _external_link(f: h5py.File, name: str, victims: dict[str, Path]) -> None:
    del f[name]
    f[name] = h5py.ExternalLink(str(victims["h5"]), name)


OUTWARD = {"external_storage": (_external_storage, "external storage"),
           "virtual_dataset": (_virtual, "virtual dataset"),
           "external_link": (_external_link, "link to elsewhere")}
OUTWARD_TARGETS = {"surface": ("train_loss", "done"), "hessian": ("eigenvalues_top",),
                   "study": ("models/{model}/seed0/surface/train_loss",)}


@pytest.mark.parametrize("kind", list(OUTWARD_TARGETS))
@pytest.mark.parametrize("layout", list(OUTWARD))
def test_file_reaching_into_another_file_is_refused_and_neither_file_changes(
        base: dict[str, Path], tmp_path: Path, kind: str, layout: str) -> None:
    """External storage, a virtual dataset or an external link: info, plot and the resume
    (``--out`` the file) refuse it with one line; neither it nor the other file changes
    (a resume used to write the grid's losses into the other file's first bytes)."""
    victims = {"raw": tmp_path / "victim.bin", "h5": tmp_path / "victim.h5"}
    victims["raw"].write_bytes(bytes(range(256)) * 4)
    shutil.copyfile(base[kind], victims["h5"])
    path = tmp_path / f"{kind}-{layout}.h5"
    shutil.copyfile(base[kind], path)
    make, words = OUTWARD[layout]
    with h5py.File(path, "r+") as f:
        for name in OUTWARD_TARGETS[kind]:
            make(f, name.format(model=next(iter(f.get("models", [""])))), victims)
    before = {p: _sha(p) for p in (path, *victims.values())}
    for args in (["info", path], ["info", path, "--json"],
                 ["plot", path, "--out", tmp_path / "fig.png"],
                 *([[*RESUME[kind], "--run", base["run"], "--out", path]] if kind in RESUME
                   else [])):
        line = _one_line(*_cli(*args), path)
        assert words in line, line
        assert {p: _sha(p) for p in before} == before, args
    assert not (tmp_path / "fig.png").exists()


def _edit_run(run: Path, dest: Path, edit: Callable[[dict], None]) -> Path:
    shutil.copytree(run, dest)
    info = json.loads((dest / "run.json").read_text())
    edit(info)
    (dest / "run.json").write_text(json.dumps(info))
    return dest


def _set(*keys: str, value: object) -> Callable[[dict], None]:
    def edit(info: dict) -> None:
        for key in keys[:-1]:
            info = info[key]
        info[keys[-1]] = value
    return edit


RUN_RECORDS: dict[str, tuple[Callable[[dict], None], str]] = {
    "data_sizes_text": (_set("data_sizes", value="abc"), "data_sizes is 'abc'"),
    "options_list": (_set("model", "options", value=[1, 2]), "model options are list"),
    "num_outputs_huge": (_set("model", "num_outputs", value=10**12), "num_outputs 1,000,000"),
    "input_shape_huge": (_set("model", "input_shape", value=[10**6, 10**6]),
                         "1,000,000,000,000 values per sample"),
    "widths_huge": (_set("model", "options", "widths", value=[10**9]),
                    "would have 5,000,000,002 parameters"),
    "user_data_empty": (_set("dataset", value={"user": True, "data": {}}),
                        "user data record is {}"),
    "user_data_list": (_set("dataset", value={"user": True, "data": [1]}),
                       "user data record is [1]"),
    "format_version_99": (_set("format_version", value=99), "run format version 99 is newer"),
    "format_version_text": (_set("format_version", value="1"), "format_version '1'"),
}


@pytest.mark.parametrize("name", list(RUN_RECORDS))
def test_damaged_run_record_is_one_line_before_any_work(base: dict[str, Path], tmp_path: Path,
                                                        name: str) -> None:
    edit, words = RUN_RECORDS[name]
    run = _edit_run(base["run"], tmp_path / "run", edit)
    code, lines, exc = _cli(*SURFACE, "--run", run, "--out", tmp_path / "s.h5")
    assert isinstance(exc, SystemExit) and code == 1 and len(lines) == 1, (lines, exc)
    assert words in lines[0], lines[0]
    assert not (tmp_path / "s.h5").exists()
    code, lines, exc = _cli("info", run)  # info reads the record only: it may show it
    assert isinstance(exc, SystemExit) or exc is None, exc


@pytest.mark.parametrize("history", ["[1, 2]", '{"epoch": 1}', "[{]"])
def test_damaged_history_is_one_line_in_info(base: dict[str, Path], tmp_path: Path,
                                             history: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    (run / "history.json").write_text(history)
    code, lines, exc = _cli("info", run)
    assert isinstance(exc, SystemExit) and code == 1 and len(lines) == 1, (lines, exc)
    assert "history.json is damaged" in lines[0], lines[0]


@pytest.mark.parametrize("dtype", ["int64", "float16", "float64"])
def test_weights_of_another_dtype_are_refused_not_cast(base: dict[str, Path], tmp_path: Path,
                                                       dtype: str) -> None:
    import torch

    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    state = torch.load(run / "model.pt", weights_only=True)
    torch.save({k: v.to(getattr(torch, dtype)) for k, v in state.items()}, run / "model.pt")
    code, lines, exc = _cli(*SURFACE, "--run", run, "--out", tmp_path / "s.h5")
    assert isinstance(exc, SystemExit) and code == 1 and len(lines) == 1, (lines, exc)
    assert f"holds torch.{dtype}, the model expects torch.float32" in lines[0], lines[0]


def test_pickled_checkpoint_refusal_gives_no_unsafe_advice(base: dict[str, Path],
                                                           tmp_path: Path) -> None:
    import torch

    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    torch.save({"weights": torch.zeros(1), "obj": _Pickled()}, run / "model.pt")
    code, lines, exc = _cli(*SURFACE, "--run", run, "--out", tmp_path / "s.h5")
    assert isinstance(exc, SystemExit) and code == 1 and len(lines) == 1, (lines, exc)
    assert "never unpickled" in lines[0] and "weights_only" not in lines[0], lines[0]
    assert "state_dict" in lines[0]


class _Pickled:
    def __reduce__(self) -> tuple:
        return (os.getcwd, ())


@pytest.mark.parametrize(("args", "words"), [
    (["--vmin", "nan"], "vmin must be a finite number, got nan"),
    (["--vmax", "inf"], "vmax must be a finite number, got inf"),
    (["--levels", "100000000"], "100,000,000 contour levels, more than the 1,000"),
    (["--levels", "0,nan,1"], "contour levels must be finite numbers"),
])
def test_bad_plot_scale_is_one_line_at_once(base: dict[str, Path], tmp_path: Path,
                                            args: list[str], words: str) -> None:
    t0 = time.perf_counter()
    code, lines, exc = _cli("plot", base["surface"], *args, "--out", tmp_path / "p.png")
    assert isinstance(exc, SystemExit) and code == 1 and len(lines) == 1, (lines, exc)
    assert words in lines[0], lines[0]
    assert time.perf_counter() - t0 < 10 and not (tmp_path / "p.png").exists()


def test_huge_widths_are_refused_before_any_allocation(tmp_path: Path) -> None:
    code, lines, exc = _cli("train", "--model", "mlp", "--widths", "1000000000", "--dataset",
                            "spirals", "--train-size", "40", "--out", tmp_path / "run")
    assert isinstance(exc, SystemExit) and code == 1 and len(lines) == 1, (lines, exc)
    assert "would have 5,000,000,002 parameters, more than 1,000,000,000" in lines[0]
    assert not (tmp_path / "run").exists()


def test_toy_with_a_diverging_learning_rate_warns_in_one_line(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:  # what the CLI passes through
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, ["toy", "--lr", "1e10", "--steps", "60", "--out",
                                           tmp_path / "toy"])
    assert result.exit_code == 0, result.output
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], caught
    assert [ln for ln in result.stderr.splitlines() if "diverged" in ln] == [
        "Warning: sgd, momentum diverged (final loss not finite or above 1e+100): lower the "
        "learning rate"]
