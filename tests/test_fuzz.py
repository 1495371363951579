"""A seeded fuzzer of the files this tool reads: valid run directories and surface, Hessian,
study, track and toy files, each mutated (bit flips, truncation, changed or deleted
attributes and datasets, external storage, virtual datasets and links into another file,
damaged run.json / history.json / weights / checkpoints), then ``info``, ``plot`` and the
resume (the command that wrote the file; on a run directory ``surface --run`` and, in one
case in :data:`TRAIN_EVERY`, ``train --resume`` with one more epoch) in this process.

Every command must succeed or fail with exactly one ``Error:`` line and exit code 1 (no
traceback); a failed command, ``info`` and ``plot`` leave every input byte unchanged; the
unrelated file the mutations point at never changes. ``LANDSCAPE_FUZZ_CASES`` sets the number
of cases (default :data:`CI_CASES`, a quarter of them plotted; the README's reliability
section gives the figures), ``LANDSCAPE_FUZZ_FIRST`` the first one's number.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from _helpers import invoke, killed_at_epoch

from landscape.training import train

#: Cases in every CI run; with ``LANDSCAPE_FUZZ_CASES`` set, that many, each also plotted.
CI_CASES = 150
CASES = int(os.environ.get("LANDSCAPE_FUZZ_CASES", CI_CASES))
#: The first case's number (``LANDSCAPE_FUZZ_FIRST``), to run a long fuzz in parts.
FIRST = int(os.environ.get("LANDSCAPE_FUZZ_FIRST", 0))
#: In CI, one case in PLOT_EVERY is also plotted (one study case in 4 x PLOT_EVERY: a figure
#: costs 0.3-5 s, reading and resuming 0.1 s); every case when the number of cases is set.
PLOT_EVERY = 1 if "LANDSCAPE_FUZZ_CASES" in os.environ else 4
SURFACE = ["surface", "--x", "-1:1:3", "--y", "-1:1:3"]
HESSIAN = ["hessian", "--top", "1", "--bottom", "0", "--trace", "--max-probes", "3"]
RESUME = {"surface": SURFACE, "hessian": HESSIAN}
#: The run every case starts from (as ``train`` arguments, and as the command resuming it).
RUN = dict(model="mlp", model_options={"widths": [4]}, dataset="spirals", train_size=40,
           epochs=2, batch_size=20, track="top_eigenvalue", track_every=2)
TRAIN = ["train", "--model", "mlp", "--widths", "4", "--dataset", "spirals", "--train-size",
         "40", "--epochs", "2", "--batch-size", "20", "--track", "top_eigenvalue",
         "--track-every", "2", "--resume"]
#: The toy file every toy case starts from: ``toy`` rerun on it rewrites it (and its figure).
TOY = ["toy", "--function", "quadratic", "--optimizer", "sgd,adam", "--steps", "10",
       "--format", "png"]
#: One run case in TRAIN_EVERY starts from the same run killed in its last epoch, and also
#: resumes its training (0.5 s).
TRAIN_EVERY = 4


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, plot_studies: dict[str, Any]
         ) -> dict[str, Path]:
    """A tracked tiny run (its track.h5), the same run killed in its last epoch, a surface
    and a Hessian file of it, a study file, a toy file, and a victim file that mutated files
    point into (a few seconds, plus the shared study)."""
    root = tmp_path_factory.mktemp("fuzz")
    run = root / "run"
    train(**RUN, out=run, progress=False)
    with pytest.MonkeyPatch.context() as patch:
        killed_at_epoch(patch, 2, lambda: train(**RUN, out=root / "killed", progress=False))
    files = {"run": run, "killed": root / "killed", "track": run / "track.h5",
             "study": plot_studies["pair"].path, "toy": root / "toy" / "paths.h5"}
    for kind, args in RESUME.items():
        files[kind] = root / f"{kind}.h5"
        result = invoke(*args, "--run", run, "--out", files[kind])
        assert result.exit_code == 0, result.output
    result = invoke(*TOY, "--out", files["toy"].parent)
    assert result.exit_code == 0, result.output
    files["victim"] = root / "victim.bin"
    files["victim"].write_bytes(bytes(range(256)) * 16)
    files["victim_h5"] = root / "victim.h5"
    shutil.copyfile(files["surface"], files["victim_h5"])
    return files


# ------------------------------------------------------------------------------ mutations
def _values(rng: random.Random) -> Any:
    """A value an attribute or a JSON field could be given."""
    return rng.choice([
        "", "x", "{not json", "[1, 2]", '["train_loss", "train_loss"]', -1, 0, 2**62,
        float("nan"), float("inf"), 1e308, [1, 2], [], {}, None, True, "\udcff"[:0] + "é",
        json.dumps(["m"] * 5000), [10**9] * 3, {"name": None}, "../../etc/passwd",
    ])


def _attribute_value(rng: random.Random) -> Any:
    value = _values(rng)
    if value is None or isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, list):
        return np.asarray(value if value else [0.0])
    return value


def _objects(f: h5py.File) -> list[Any]:
    found: list[Any] = [f]
    f.visititems(lambda name, obj: found.append(obj))
    return found


def _replacement(rng: random.Random, dset: h5py.Dataset, victims: dict[str, Path],
                 group: h5py.Group, name: str) -> str:
    """Replace ``dset`` by something else; what it became."""
    shape, dtype = dset.shape, dset.dtype
    del group[name]
    choice = rng.randrange(9)
    label = ["external-storage", "virtual", "external-link", "soft-link", "group", "text",
             "shape", "values", "dtype"][choice]
    if choice == 0:  # external storage: the values live in the victim file
        size = max(1, int(np.prod(shape))) * max(dtype.itemsize, 1)
        group.create_dataset(name, shape=shape or (1,), dtype=dtype if dtype.kind in "fiub"
                             else "f8", external=[(str(victims["victim"]), 0, size * 8)])
    elif choice == 1:  # a virtual dataset over the victim HDF5 file
        layout = h5py.VirtualLayout(shape=(3, 3), dtype="f8")
        layout[...] = h5py.VirtualSource(str(victims["victim_h5"]), "train_loss", shape=(3, 3))
        group.create_virtual_dataset(name, layout)
    elif choice == 2:
        group[name] = h5py.ExternalLink(str(victims["victim_h5"]), "train_loss")
    elif choice == 3:
        group[name] = h5py.SoftLink("/" + rng.choice(["x", "nowhere", "done"]))
    elif choice == 4:
        group.create_group(name)
    elif choice == 5:
        group.create_dataset(name, data=np.array([b"a", b"bc"]))
    elif choice == 6:
        group.create_dataset(name, data=rng.choice([np.zeros(0), np.float64(1.0),
                                                    np.zeros((2, 2, 2))]))
    elif choice == 7:
        data = np.full(shape or (1,), rng.choice([np.nan, np.inf, -1e308, 0.0]))
        group.create_dataset(name, data=data.astype(dtype) if dtype.kind == "f" else data)
    else:
        values = np.arange(int(np.prod(shape))).reshape(shape) if shape else np.arange(1)
        group.create_dataset(name, data=values.astype(rng.choice(["i8", "u1", "f2", "?"])))
    return label


def _mutate_h5(rng: random.Random, path: Path, victims: dict[str, Path]) -> str:
    """One random mutation of the HDF5 file ``path``; its description."""
    how = rng.choice(["flip", "flip", "truncate", "attribute", "attribute", "dataset",
                      "dataset", "delete"])
    if how in ("flip", "truncate"):
        data = bytearray(path.read_bytes())
        if how == "truncate":
            path.write_bytes(bytes(data[: rng.randrange(len(data))]))
            return how
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(min(len(data), 4096) if rng.random() < 0.5 else len(data))
            data[i] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        return how
    with h5py.File(path, "r+") as f:
        objects = _objects(f)
        if how == "attribute":
            obj = rng.choice([o for o in objects if len(o.attrs)] or [f])
            key = rng.choice([*obj.attrs.keys(), "extra"])
            obj.attrs[key] = _attribute_value(rng)
            return f"attribute {obj.name}:{key}"
        datasets = [o for o in objects if isinstance(o, h5py.Dataset)]
        if how == "dataset" and datasets:
            dset = rng.choice(datasets)
            group, name = dset.parent, dset.name.rpartition("/")[2]
            name_before = dset.name
            return f"dataset {name_before} {_replacement(rng, dset, victims, group, name)}"
        victim = rng.choice(objects[1:] or objects)
        if victim is f:
            del f.attrs[rng.choice(list(f.attrs))]
            return "delete root attribute"
        name = victim.name
        del f[name]
        return f"delete {name}"


def _json_paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    paths = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            paths += _json_paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:4]):
            paths += _json_paths(v, (*prefix, i))
    return paths


def _mutate_run(rng: random.Random, run: Path, victims: dict[str, Path]) -> str:
    """One random mutation of the run directory ``run``; its description."""
    checkpoint = max((run / "checkpoints").glob("epoch_*.pt")).relative_to(run).as_posix()
    target = rng.choice([name for name in ("run.json", "run.json", "run.json", "history.json",
                                           "model.pt", "track.h5", checkpoint)
                         if (run / name).exists()])
    file = run / target
    if target == "track.h5":
        return "track.h5 " + _mutate_h5(rng, file, victims)
    if target.endswith(".json") and rng.random() < 0.8:
        record = json.loads(file.read_text())
        path = rng.choice(_json_paths(record)[1:])
        holder = record
        for key in path[:-1]:
            holder = holder[key]
        if rng.random() < 0.2:
            del holder[path[-1]]
            file.write_text(json.dumps(record))
            return f"{target} delete {'/'.join(map(str, path))}"
        holder[path[-1]] = _values(rng)
        file.write_text(json.dumps(record))
        return f"{target} {'/'.join(map(str, path))}"
    data = bytearray(file.read_bytes())
    if rng.random() < 0.5:
        file.write_bytes(bytes(data[: rng.randrange(len(data))]))
        return f"{target} truncated"
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    file.write_bytes(bytes(data))
    return f"{target} bit flips"


# ------------------------------------------------------------------------------ checks
def _digest(path: Path) -> dict[str, str]:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _run(args: list[Any], what: str) -> bool:
    """Run the CLI; True on success, after checking that a failure is one line, exit 1."""
    result = invoke(*args)
    if result.exit_code == 0:
        return True
    lines = result.output.strip().splitlines()
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, (
        what, args, result.exception, result.output[-2000:])
    errors = [ln for ln in lines if not ln.startswith("Warning: ")]
    assert len(errors) == 1 and errors[0].startswith("Error: "), (what, args, lines)
    return False


#: The kind of each case, in turn: a study file (larger: reading one takes 0.3 s) and a toy
#: file (its rerun draws a figure) in one case of sixteen each.
KINDS = ("surface", "hessian", "run", "track") * 3 + ("toy", "study", "run", "track")


@pytest.mark.parametrize("case", range(FIRST, FIRST + CASES))
def test_mutated_file_is_handled_in_one_line_and_left_untouched(
        base: dict[str, Path], tmp_path: Path, case: int) -> None:
    rng = random.Random(case)
    kind = KINDS[case % len(KINDS)]
    victims = {k: base[k] for k in ("victim", "victim_h5")}
    before_victims = {k: _digest(v) for k, v in victims.items()}
    if kind == "run":
        killed = (case // len(KINDS)) % TRAIN_EVERY == 0
        target = tmp_path / "run"
        shutil.copytree(base["killed" if killed else "run"], target)
        what = _mutate_run(rng, target, victims)
        commands: list[tuple[list[Any], bool]] = [
            (["info", target], False),
            ([*SURFACE, "--run", target, "--out", tmp_path / "new.h5"], False)]
        if killed:
            commands.append(([*TRAIN, "--out", target], True))
    else:
        target = tmp_path / ("paths.h5" if kind == "toy" else f"{kind}.h5")
        shutil.copyfile(base[kind], target)
        what = _mutate_h5(rng, target, victims)
        commands = [(["info", target, *(["--json"] if case % 2 else [])], False)]
        if (case // len(KINDS)) % (PLOT_EVERY * (4 if kind == "study" else 1)) == 0:
            commands.append((["plot", target, "--out", tmp_path / "fig.png"], False))
        if kind in RESUME:
            commands.append(([*RESUME[kind], "--run", base["run"], "--out", target], True))
        elif kind == "toy":
            commands.append(([*TOY, "--out", tmp_path], True))
    for args, may_write in commands:
        before = _digest(target)
        ok = _run(args, what)
        if not (ok and may_write):
            assert _digest(target) == before, (what, args)
    assert {k: _digest(v) for k, v in victims.items()} == before_victims, what


def test_the_mutator_draws_every_kind_of_damage(base: dict[str, Path], tmp_path: Path) -> None:
    """The harness is not idle: over the CI cases it draws bit flips, truncations, attribute
    and dataset changes (external storage, virtual datasets, links) and damaged run files."""
    seen: set[str] = set()
    victims = {k: base[k] for k in ("victim", "victim_h5")}
    for case in range(CI_CASES):
        rng = random.Random(case)
        kind = KINDS[case % len(KINDS)]
        if kind == "run":
            target = tmp_path / f"run{case}"
            shutil.copytree(base["run"], target)
            seen.add(_mutate_run(rng, target, victims).split()[0])
        else:
            target = tmp_path / f"{case}.h5"
            shutil.copyfile(base[kind], target)
            words = _mutate_h5(rng, target, victims).split()
            seen.update((words[0], words[-1]))
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink()
    assert {"flip", "truncate", "attribute", "dataset", "delete", "run.json", "history.json",
            "model.pt", "track.h5", "checkpoints/epoch_0002.pt", "external-storage", "virtual",
            "external-link"} <= seen, seen



def _regroup(name: str) -> Any:
    def edit(f: h5py.File) -> None:
        del f[name]
        f.create_group(name)
    return edit


def _odd_float(name: str) -> Any:
    """Replace dataset ``name`` by one of float64 layout with an exponent bias no numpy type
    has (h5py cannot even name its dtype)."""
    def edit(f: h5py.File) -> None:
        shape = f[name].shape
        del f[name]
        kind = h5py.h5t.IEEE_F64LE.copy()
        kind.set_ebias(16384)
        h5py.h5d.create(f.id, name.encode(), kind, h5py.h5s.create_simple(shape))
    return edit


#: What the fuzzer found, each kept as a case: (file, edit, whether ``info``, ``plot`` and the
#: resume each succeed).
FOUND: dict[str, tuple[str, Any, tuple[bool, ...]]] = {
    "track_hvp_column_a_group": ("track", _regroup("top_eigenvalue_hvp"), (False, False)),
    "track_unknown_298_GB_dataset_never_read": ("track", lambda f: f.create_dataset(
        "extra", shape=(200_000, 200_000), dtype="f8", chunks=(64, 64)), (True, True)),
    "hessian_eigen_settings_not_an_object": (
        "hessian", lambda f: f.attrs.__setitem__("eigen_settings", '"text"'), (False,) * 3),
    "killed_run_track_file_of_another_format": (
        "killed", lambda f: f.attrs.__setitem__("format", "netcdf"), (False,)),
    "toy_steps_to_tol_empty_text": (
        "toy", lambda f: f["sgd/path"].attrs.__setitem__("steps_to_tol", ""), (False,) * 3),
    "toy_text_attribute_not_utf8": ("toy", lambda f: f.attrs.create(
        "function", b"ada\xed", dtype=h5py.string_dtype()), (False,) * 3),
    "study_second_seed_without_surface": (
        "study", lambda f: f.__delitem__("models/small/seed1/surface"), (True, False)),
    "surface_float_of_an_unknown_layout": ("surface", _odd_float("x"), (False,) * 3),
}


@pytest.mark.parametrize("name", FOUND)
def test_what_the_fuzzer_found_is_one_line_or_success_and_leaves_inputs_untouched(
        base: dict[str, Path], tmp_path: Path, name: str) -> None:
    """A failing command is one line, exit 1, and changes no input byte (a refused
    ``train --resume`` once rewrote run.json before its track file was checked)."""
    kind, edit, outcomes = FOUND[name]
    if kind == "killed":
        target = tmp_path / "run"
        shutil.copytree(base["killed"], target)
        file = target / "track.h5"
        commands = [[*TRAIN, "--out", target]]
    else:
        target = file = tmp_path / base[kind].name
        shutil.copyfile(base[kind], target)
        commands = [["info", target], ["plot", target, "--out", tmp_path / "fig.png"]]
        if kind in RESUME:
            commands.append([*RESUME[kind], "--run", base["run"], "--out", target])
        elif kind == "toy":
            commands.append([*TOY, "--out", tmp_path])
    with h5py.File(file, "r+") as f:
        edit(f)
    for args, succeeds in zip(commands, outcomes, strict=True):
        before = _digest(target)
        assert _run(args, name) == succeeds, args
        assert _digest(target) == before, args
