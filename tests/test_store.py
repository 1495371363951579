"""HDF5 store: creation attributes, resume, refusal of other settings, corrupt files."""

from __future__ import annotations

import hashlib
import json
import struct
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from landscape import __version__, formats, store
from landscape.errors import LandscapeError

SETTINGS = {"lr": 0.125, "seed": 0, "grid": [-1.0, 1.0, 21], "model": {"name": "mlp"}}


def create(path: Path, kind: str, settings: dict, **options: object) -> h5py.File:
    """:func:`landscape.store.create` with the validator of every kind (files of several kinds
    are made here)."""
    return store.create(path, kind, settings, validate=formats.validate, **options)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _valid_file(path: Path, kind: str = "surface") -> None:
    """A landscape file big enough that half of it misses real data."""
    with create(path, kind, SETTINGS, attrs={"metrics": ["train_loss"]}) as f:
        store.write_arrays(f, {"train_loss": np.linspace(0.0, 1.0, 4096).reshape(64, 64),
                               "x": np.linspace(-1.0, 1.0, 64), "y": np.linspace(-1, 1, 64),
                               "done": np.ones((64, 64), bool)})


def test_create_writes_format_kind_versions_and_settings_hash(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "r.h5"  # parent folders are created
    with create(path, "surface", SETTINGS, attrs={"device": "cpu"}) as f:
        assert f.mode == "r+"
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
    assert attrs["format"] == "landscape"
    assert int(attrs["format_version"]) == 1
    assert attrs["kind"] == "surface"
    assert attrs["device"] == "cpu"
    assert attrs["torch_version"] == torch.__version__
    assert attrs["h5py_version"] == h5py.__version__
    assert attrs["numpy_version"] == np.__version__
    assert attrs["landscape_version"] == __version__
    assert datetime.fromisoformat(attrs["created"]).tzinfo is not None
    assert json.loads(attrs["settings"]) == SETTINGS
    digest = attrs["settings_hash"]
    assert isinstance(digest, str) and len(digest) == 64 and int(digest, 16) >= 0
    assert digest == store.settings_hash(SETTINGS)


def test_settings_hash_depends_on_values_not_key_order() -> None:
    reordered = dict(reversed(list(SETTINGS.items())))
    assert store.settings_hash(reordered) == store.settings_hash(SETTINGS)
    assert store.settings_hash({**SETTINGS, "lr": 0.25}) != store.settings_hash(SETTINGS)
    assert store.settings_hash({**SETTINGS, "extra": None}) != store.settings_hash(SETTINGS)
    nested = {**SETTINGS, "model": {"name": "mlp", "widths": [8]}}
    assert store.settings_hash(nested) != store.settings_hash(SETTINGS)


def test_reopening_with_same_settings_resumes_with_old_data(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    with create(path, "surface", SETTINGS, attrs={"metrics": []}) as f:
        store.write_arrays(f, {"done": np.array([True, False, False]), "x": np.arange(3.0)})
        created = f.attrs["created"]
    # equivalent settings: other key order, tuple for list, numpy scalars
    again = {"model": {"name": "mlp"}, "grid": (-1.0, 1.0, np.int64(21)),
             "seed": np.int64(0), "lr": np.float64(0.125)}
    with create(path, "surface", again) as f:
        assert f.mode == "r+"
        assert f.attrs["created"] == created
        np.testing.assert_array_equal(f["done"][()], [True, False, False])
        store.write_arrays(f, {"done": np.array([True, True, False]), "more": np.arange(3)})
    with formats.open_result(path, "surface") as f:
        np.testing.assert_array_equal(f["done"][()], [True, True, False])
        np.testing.assert_array_equal(f["more"][()], [0, 1, 2])


def test_different_settings_raise_naming_key_and_both_values(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    _valid_file(path)
    before = _sha(path)
    with pytest.raises(LandscapeError) as err:
        create(path, "surface", {**SETTINGS, "lr": 0.5})
    message = str(err.value)
    assert "lr" in message and "0.125" in message and "0.5" in message
    assert "seed" not in message and "grid" not in message  # only what differs
    assert "\n" not in message
    with pytest.raises(LandscapeError) as err:
        create(path, "surface", {**SETTINGS, "optimizer": "sam"})
    assert "optimizer" in str(err.value) and "sam" in str(err.value)
    assert _sha(path) == before
    with formats.open_result(path) as f:  # still readable afterwards
        assert f["train_loss"].shape == (64, 64)


def test_overwrite_replaces_file_with_new_settings(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    _valid_file(path)
    new = {**SETTINGS, "lr": 0.5}
    with create(path, "hessian", new, overwrite=True) as f:
        assert "train_loss" not in f and "x" not in f
        assert f.attrs["kind"] == "hessian"
    with formats.open_result(path, "hessian") as f:
        assert store.read_settings(f) == new
        assert f.attrs["settings_hash"] == store.settings_hash(new)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", [
    "truncated", "not_hdf5",
    "empty",
])
def test_corrupt_file_raises_and_is_left_unchanged(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "r.h5"
    if damage == "truncated":
        _valid_file(path)
        _truncate(path)
    elif damage == "not_hdf5":
        path.write_text("x,y,loss\n0,0,1.5\n" * 50)
    else:
        path.write_bytes(b"")
    before = _sha(path)
    with pytest.raises(LandscapeError):
        formats.open_result(path)
    with pytest.raises(LandscapeError):
        formats.open_result(path, "surface")
    with pytest.raises(LandscapeError):
        create(path, "surface", SETTINGS)
    assert _sha(path) == before


def test_overwrite_replaces_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    _valid_file(path)
    _truncate(path)
    create(path, "sharpness", SETTINGS, overwrite=True).close()
    with formats.open_result(path, "sharpness") as f:
        assert store.read_settings(f) == SETTINGS


def test_hdf5_file_that_is_not_a_landscape_file_is_refused_and_unchanged(
        tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(100)
    before = _sha(path)
    with pytest.raises(LandscapeError, match="landscape"):
        formats.open_result(path)
    with pytest.raises(LandscapeError, match="landscape"):
        create(path, "surface", SETTINGS)
    assert _sha(path) == before


def test_open_result_wrong_kind_names_both_kinds(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    _valid_file(path, kind="surface")
    with pytest.raises(LandscapeError) as err:
        formats.open_result(path, "hessian")
    assert "surface" in str(err.value) and "hessian" in str(err.value)
    with pytest.raises(LandscapeError) as err:
        create(path, "hessian", SETTINGS)
    assert "surface" in str(err.value) and "hessian" in str(err.value)
    with formats.open_result(path, ("hessian", "surface")) as f:
        assert f.attrs["kind"] == "surface"


def test_open_result_is_read_only(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    _valid_file(path)
    with formats.open_result(path) as f:
        assert f.mode == "r"
        with pytest.raises((OSError, ValueError, KeyError)):
            f.create_dataset("new", data=np.arange(3))


def test_open_result_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(LandscapeError):
        formats.open_result(tmp_path / "nope.h5")


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    _valid_file(path)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(LandscapeError, match="99"):
        formats.open_result(path)


def test_write_arrays_replaces_datasets_and_sets_their_attrs(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    with create(path, "surface", SETTINGS, attrs={"metrics": []}) as f:
        store.write_arrays(f, {"x": np.arange(5.0), "done": np.ones(5, bool)})
        store.write_arrays(f, {"a": np.zeros((2, 3))})
        store.write_arrays(f, {"a": np.arange(5.0)}, attrs={"a": {"units": "nats",
                                                                    "layout": {"n": [1, 2]}}})
    with formats.open_result(path) as f:
        np.testing.assert_array_equal(f["a"][()], np.arange(5.0))
        assert store.read_attrs(f["a"]) == {"units": "nats", "layout": {"n": [1, 2]}}


NESTED = {"name": "resnet", "widths": [16, 32], "options": {"skip": True, "depth": 20},
          "labels": ["a", "b"], "none": None, "ratio": 0.5}


def test_attrs_round_trip_dicts_and_string_lists(tmp_path: Path) -> None:
    values = {"spec": NESTED, "names": ["conv1.weight", "fc.bias"],
              "shapes": [[4, 1, 3, 3], [10]], "mixed": [1, "two", 3.0],
              "text": "landscape surface --steps 21", "count": 7, "scale": 0.25, "flag": True}
    with create(tmp_path / "r.h5", "surface", SETTINGS) as f:
        store.write_attrs(f, values)
        got = store.read_attrs(f)
    for key, value in values.items():
        assert got[key] == value, key
        assert type(got[key]) is type(value), key
    assert got["settings"] == SETTINGS


def test_attrs_numeric_lists_round_trip_values(tmp_path: Path) -> None:
    with create(tmp_path / "r.h5", "surface", SETTINGS) as f:
        store.write_attrs(f, {"ints": [1, 2, 3], "floats": (0.5, -1.5)})
        got = store.read_attrs(f)
    np.testing.assert_array_equal(got["ints"], [1, 2, 3])
    np.testing.assert_array_equal(got["floats"], [0.5, -1.5])


def test_write_attrs_skips_none(tmp_path: Path) -> None:
    with create(tmp_path / "r.h5", "surface", SETTINGS) as f:
        store.write_attrs(f, {"seed": None, "loss": "mse"})
        assert "seed" not in f.attrs and f.attrs["loss"] == "mse"


def test_attrs_numeric_lists_read_back_as_json_able_lists(tmp_path: Path) -> None:
    with create(tmp_path / "r.h5", "surface", SETTINGS) as f:
        store.write_attrs(f, {"ints": [1, 2, 3], "floats": [0.5, -1.5]})
        got = store.read_attrs(f)
    assert json.loads(json.dumps(got))["ints"] == [1, 2, 3]
    assert got["ints"] == [1, 2, 3] and got["floats"] == [0.5, -1.5]


def test_attrs_dict_with_numpy_array_round_trips(tmp_path: Path) -> None:
    with create(tmp_path / "r.h5", "surface", SETTINGS) as f:
        store.write_attrs(f, {"spec": {"input_shape": np.array([1, 8, 8])}})
        got = store.read_attrs(f)
    assert got["spec"] == {"input_shape": [1, 8, 8]}


def test_attrs_plain_string_that_looks_like_json_round_trips(tmp_path: Path) -> None:
    with create(tmp_path / "r.h5", "surface", SETTINGS) as f:
        store.write_attrs(f, {"note": "[1, 2]"})
        got = store.read_attrs(f)
    assert got["note"] == "[1, 2]"


def test_values_digest_is_the_sha256_of_names_and_cast_values_in_order() -> None:
    w = torch.tensor([[1.5, -2.0]], dtype=torch.float32)
    steps = torch.tensor(7)  # an integer buffer (BatchNorm's num_batches_tracked)
    raw = b"w" + np.array([1.5, -2.0]).tobytes() + b"steps" + np.array([7.0]).tobytes()
    assert store.values_digest([w, steps], ["w", "steps"]) == hashlib.sha256(raw).hexdigest()[:16]
    raw32 = np.array([1.5, -2.0], dtype=np.float32).tobytes()
    assert store.values_digest([w], dtype="float32") == hashlib.sha256(raw32).hexdigest()[:16]
    assert store.values_digest([steps, w]) != store.values_digest([w, steps])


def _collection(objects: list[tuple[int, int]], size: int = 4096) -> bytes:
    """A global heap collection of ``size`` bytes whose objects have these (index, size)
    headers, each followed by its padded data (none for a free space, or a size beyond the
    collection), the rest zeros (as HDF5 leaves free space)."""
    body = b"".join(struct.pack("<HH4xQ", index, 0, length)
                    + bytes(-(-length // 8) * 8 if index and length < size else 0)
                    for index, length in objects)
    return (b"GCOL\x01\x00\x00\x00" + struct.pack("<Q", size) + body).ljust(size, b"\x00")


@pytest.mark.parametrize(("objects", "stuck"), [
    ([(1, 9), (2, 7), (0, 4096 - 16 - 24 - 24)], False),  # as HDF5 writes it
    ([(1, 9), (0, 0)], True),  # a free space of size 0: HDF5 never advances
    ([(1, 9), (0, 8)], True),  # a free space of 8 lands in zeros: an object of size 0
    ([(1, 2**64 - 20)], True),  # 16 + the padded size is 2**64: a step of 0
    ([(1, 2**64 - 40)], False),  # a step beyond the collection: HDF5 reports that itself
    ([(1, 9), (0, 3)], True),  # a misaligned free space also lands in zeros
    ([(1, 9), (0, 4096 - 16 - 24 - 1)], False),  # 1 byte short of the end: HDF5 reports it
])
def test_heap_fault_finds_exactly_the_collections_whose_walk_never_advances(
        tmp_path: Path, objects: list[tuple[int, int]], stuck: bool) -> None:
    from landscape.h5heap import heap_fault

    path = tmp_path / "heap.bin"
    path.write_bytes(b"\x00" * 100 + _collection(objects) + b"tail")
    fault = heap_fault(path)
    assert (fault is not None) == stuck, fault
    if stuck:
        assert fault.startswith("global heap collection at byte 100: object ")


def test_heap_fault_bounds_its_walk_and_ignores_signatures_hdf5_would_not_decode(
        tmp_path: Path) -> None:
    """A collection of more 8-byte steps than HDF5 ever writes objects is refused after
    :data:`MAX_STEPS` steps; a signature of another version, too small a size, or a size
    beyond the file is left to HDF5 (which refuses it itself)."""
    from landscape.h5heap import MAX_STEPS, heap_fault

    path = tmp_path / "heap.bin"
    size = 16 * (MAX_STEPS + 2)  # free-space objects of size 8 after free-space objects
    path.write_bytes(b"GCOL\x01\x00\x00\x00" + struct.pack("<Q", size)
                     + struct.pack("<HH4xQ", 0, 0, 8) * (size // 16))
    assert heap_fault(path) == f"global heap collection at byte 0: more than {MAX_STEPS:,} objects"
    for header in (b"GCOL\x02\x00\x00\x00" + struct.pack("<Q", 4096),
                   b"GCOL\x01\x00\x00\x00" + struct.pack("<Q", 4095),
                   b"GCOL\x01\x00\x00\x00" + struct.pack("<Q", 4097)):
        path.write_bytes(header.ljust(4096, b"\x00"))
        assert heap_fault(path) is None, header


def test_every_file_this_tool_writes_has_sound_global_heaps(tmp_path: Path) -> None:
    from landscape.h5heap import heap_fault

    _valid_file(tmp_path / "a.h5")
    with create(tmp_path / "a.h5", "surface", SETTINGS) as f:  # resumed: attributes
        store.write_attrs(f, {"note": "x" * 10_000, "labels": ["a"] * 500})  # rewritten
    data = (tmp_path / "a.h5").read_bytes()
    assert data.count(b"GCOL") >= 2  # the long text went into a second collection
    assert heap_fault(tmp_path / "a.h5") is None
    with formats.open_result(tmp_path / "a.h5") as f:
        assert store.read_attrs(f)["labels"] == ["a"] * 500


def test_every_file_opened_or_created_is_checked_by_its_kinds_validator() -> None:
    """Each ``store.create`` / ``store.open_result`` in the package names the validator that
    :mod:`landscape.formats` dispatches to for the kind(s) it names (read from the source; a
    kind held in a local variable is checked by the dispatcher's table only), so a file is
    checked alike by its writer, its readers and ``landscape info``."""
    import ast
    import importlib

    root = Path(formats.__file__).parent
    validators = {kind: formats.validator(kind) for kind in formats.KINDS}
    calls = 0
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        module = importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__"
                                                  else parts))
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("create", "open_result")
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "store"):
                continue
            calls += 1
            where = f"{path.name}:{node.lineno}"
            given = {k.arg: k.value for k in node.keywords}
            assert "validate" in given, where
            scope = vars(module)
            validator = eval(compile(ast.Expression(given["validate"]), where, "eval"), scope)
            if validator is formats.validate:
                continue
            kind = given.get("kind", node.args[1] if len(node.args) > 1 else None)
            assert kind is not None, f"{where}: a kind's own validator, but any kind accepted"
            assert validator in validators.values(), where
            try:
                kinds = eval(compile(ast.Expression(kind), where, "eval"), scope)
            except NameError:  # the kind is a function's argument
                continue
            kinds = (kinds,) if isinstance(kinds, str) else kinds
            assert all(validators[k] is validator for k in kinds), (where, kinds)
    assert calls >= 12  # the calls were really found
