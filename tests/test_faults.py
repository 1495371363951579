"""Faults: a full disk, a read-only folder and a SIGKILL at any point leave one line, exit
code 1 and files that a rerun completes; bad input is one line; values are honest JSON."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from landscape.training import train

ROOT = Path(__file__).resolve().parents[1]

# Runs the CLI under a file-size limit (SIGXFSZ ignored, so writes fail with EFBIG) and, with
# a kill point k > 0, SIGKILLs itself at the k-th HDF5 file open, flush or file rename.
CHILD = """
import os, signal, sys, resource
limit, kill_at = int(sys.argv[1]), int(sys.argv[2])
if limit:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
import h5py
count = [0]
def hit():
    count[0] += 1
    if count[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
def after(fn):
    def wrapped(*a, **k):
        out = fn(*a, **k)
        hit()
        return out
    return wrapped
h5py.File.__init__ = after(h5py.File.__init__)
h5py.File.flush = after(h5py.File.flush)
os.replace = after(os.replace)
from landscape.cli import main
main(sys.argv[3:])
"""


def _cli(*args: object, limit: int = 0, kill_at: int = 0,
         cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", CHILD, str(limit), str(kill_at),
                           *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def _one_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr[-2000:]
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run (4-unit MLP on 40 spirals, 1 epoch)."""
    path = tmp_path_factory.mktemp("faults") / "run"
    train(model="mlp", model_options={"widths": [4]}, dataset="spirals", train_size=40,
          epochs=1, batch_size=20, out=path, progress=False)
    return path


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in ("train_loss", "train_acc", "done")}


@pytest.fixture(scope="module")
def reference(run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("ref") / "s.h5"
    proc = _cli("surface", "--run", run, "--x", "-1:1:5", "--y", "-1:1:6", "--out", out)
    assert proc.returncode == 0, proc.stderr
    return _arrays(out)


def test_surface_killed_at_every_file_event_then_rerun_equals_an_uninterrupted_run(
        run: Path, reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    args = ("surface", "--run", run, "--x", "-1:1:5", "--y", "-1:1:6")
    # 1: in-memory image opened, 2: its flush, 3: renamed into place (right after
    # creation), 4: reopened for writing, 6: between the value and mask flushes of a chunk
    for k in (1, 2, 3, 4, 6):
        out = tmp_path / f"s{k}.h5"
        killed = _cli(*args, "--out", out, kill_at=k)
        assert killed.returncode == -9, (k, killed.stderr[-1000:])
        assert not out.exists() or out.stat().st_size > 1000  # never a 0/96-byte stub
        rerun = _cli(*args, "--out", out)
        assert rerun.returncode == 0, (k, rerun.stderr[-1000:])
        got = _arrays(out)
        for name, value in reference.items():
            np.testing.assert_array_equal(got[name], value, err_msg=f"kill point {k}")
        assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # orphans removed


def test_hessian_killed_right_after_creation_reruns(run: Path, tmp_path: Path) -> None:
    args = ("hessian", "--run", run, "--top", "1", "--bottom", "0", "--json")
    for k in (3,):  # renamed into place, nothing computed yet
        out = tmp_path / f"h{k}.h5"
        assert _cli(*args, "--out", out, kill_at=k).returncode == -9
        rerun = _cli(*args, "--out", out)
        assert rerun.returncode == 0, rerun.stderr[-1000:]
        assert json.loads(rerun.stdout)["eigenvalues_top"]


@pytest.mark.parametrize(("limit", "command"), [
    (3000, ["surface", "--run", "{run}", "--x", "-1:1:41", "--y", "-1:1:41",
            "--out", "{tmp}/s.h5"]),
    (12000, ["hessian", "--run", "{run}", "--top", "1", "--bottom", "1", "--trace",
             "--out", "{tmp}/h.h5"]),  # fails after the file exists, while adding results
    (3000, ["train", "--dataset", "spirals", "--train-size", "40", "--epochs", "1",
            "--widths", "4", "--out", "{tmp}/t"]),
    (3000, ["toy", "--steps", "5", "--out", "{tmp}/toy"]),
    (3000, ["plot", "{surface}", "--out", "{tmp}/p.png"]),
])
def test_disk_full_is_one_line_exit_1_and_the_rerun_completes(
        run: Path, tmp_path: Path, command: list[str], limit: int) -> None:
    surface = tmp_path / "existing.h5"
    if command[0] == "plot":
        assert _cli("surface", "--run", run, "--x", "-1:1:5", "--out", surface).returncode == 0
    args = [a.format(run=run, tmp=tmp_path, surface=surface) for a in command]
    _one_line(_cli(*args, limit=limit), "cannot write", "File too large")
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    rerun = _cli(*args, *(["--resume"] if command[0] == "train" else []))
    assert rerun.returncode == 0, rerun.stderr[-1000:]


def _read_only_target(tmp_path: Path) -> Path:
    """A folder no write can enter: chmod 555 (or, as root, a path under a plain file)."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    return blocker


@pytest.mark.parametrize("command", [
    ["surface", "--run", "{run}", "--x", "-1:1:3", "--out", "{ro}/s.h5"],
    ["hessian", "--run", "{run}", "--top", "1", "--bottom", "0", "--out", "{ro}/h.h5"],
    ["train", "--dataset", "spirals", "--train-size", "40", "--epochs", "1", "--out", "{ro}/t"],
    ["toy", "--steps", "5", "--out", "{ro}/toy"],
    ["plot", "{surface}", "--out", "{ro}/p.pdf"],
])
def test_read_only_destination_is_one_line_exit_1(run: Path, tmp_path: Path,
                                                  command: list[str]) -> None:
    surface = tmp_path / "existing.h5"
    if command[0] == "plot":
        assert _cli("surface", "--run", run, "--x", "-1:1:3", "--out", surface).returncode == 0
    ro = _read_only_target(tmp_path)
    _one_line(_cli(*[a.format(run=run, ro=ro, surface=surface) for a in command]),
              "cannot write")


def _strict(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_diverged_training_writes_strict_json_and_no_accuracy(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _cli("train", "--dataset", "spirals", "--train-size", "40", "--epochs", "2",
                "--widths", "4", "--lr", "1e30", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr[-1000:]
    history = _strict((out / "history.json").read_text())
    summary = _strict(proc.stdout)
    last = history[-1]
    assert last["train_loss"] is None and last["train_acc"] is None  # NaN: no accuracy
    assert summary["train_loss"] is None and summary["train_acc"] is None
    assert isinstance(history[0]["train_loss"], float)  # epoch 0 was finite


def test_accuracy_is_nan_where_the_loss_is_nan() -> None:
    import torch

    from landscape.training.evaluation import evaluate

    model = torch.nn.Linear(2, 3)
    x, y = torch.randn(5, 2), torch.tensor([0, 1, 2, 0, 1])
    assert math.isfinite(evaluate(model, x, y, "cross_entropy")[1])
    with torch.no_grad():
        model.weight[0, 0] = math.nan
    loss, acc = evaluate(model, x, y, "cross_entropy")
    assert math.isnan(loss) and math.isnan(acc)


def test_noise_json_is_strict(run: Path) -> None:
    proc = _cli("noise", "--run", run, "--noise-batch-size", "40", "--json")  # B = n: 0/0 terms
    assert proc.returncode == 0, proc.stderr[-1000:]
    _strict(proc.stdout)


def _edit_run_json(run: Path, dest: Path, edit) -> Path:
    import shutil

    shutil.copytree(run, dest)
    info = json.loads((dest / "run.json").read_text())
    edit(info)
    (dest / "run.json").write_text(json.dumps(info))
    return dest


@pytest.mark.parametrize(("edit", "words"), [
    (lambda i: i["config"].pop("seed"), "no integer 'seed'"),
    (lambda i: i["dataset"].update(colour="red"), "unknown dataset key 'colour'"),
    (lambda i: i.update(model=[1]), "'model' is missing or not an object"),
])
def test_damaged_run_json_is_one_line(run: Path, tmp_path: Path, edit, words: str) -> None:
    bad = _edit_run_json(run, tmp_path / "bad", edit)
    _one_line(_cli("surface", "--run", bad, "--x", "-1:1:3", "--out", tmp_path / "s.h5"),
              words)
    assert not (tmp_path / "s.h5").exists()


def test_empty_mnist_test_split_is_one_line_and_writes_no_run(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()

    def idx(name: str, magic: int, dims: tuple[int, ...]) -> None:
        head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
        (folder / name).write_bytes(head + bytes(int(np.prod(dims))))

    idx("train-images-idx3-ubyte", 2051, (2, 28, 28))
    idx("train-labels-idx1-ubyte", 2049, (2,))
    idx("t10k-images-idx3-ubyte", 2051, (0, 28, 28))
    idx("t10k-labels-idx1-ubyte", 2049, (0,))
    _one_line(_cli("train", "--dataset", "mnist", "--data-dir", folder, "--epochs", "1",
                   "--out", tmp_path / "run"), "test split has no samples")
    assert not (tmp_path / "run").exists()
