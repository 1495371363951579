"""HDF5 result files: format "landscape", version 1 (schema in DESIGN.md).

One file per computed object. Root attributes say what the file is (``format``,
``format_version``, ``kind``, ``created``, library versions) and how it was computed
(``settings`` as JSON and its ``settings_hash``, plus free attributes such as the device
and the command line). Writers flush after every chunk of work, so a killed process loses
at most the chunk in flight; re-opening with the same settings resumes, different settings
are refused with the list of what differs.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from landscape.errors import LandscapeError

FORMAT = "landscape"
FORMAT_VERSION = 1


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy values, tuples and paths turned into JSON types."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic | np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def settings_hash(settings: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``settings``."""
    text = json.dumps(jsonable(settings), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def versions() -> dict[str, str]:
    """Versions of the libraries that determine the numbers."""
    import torch

    from landscape import __version__

    return {"landscape_version": __version__, "torch_version": str(torch.__version__),
            "numpy_version": np.__version__, "h5py_version": h5py.__version__,
            "python_version": platform.python_version()}


def _open(path: Path, mode: str) -> h5py.File:
    if not h5py.is_hdf5(path):
        raise LandscapeError(f"{path}: not an HDF5 file (empty, truncated or another format); "
                             "it was left untouched")
    try:
        return h5py.File(path, mode)
    except OSError as err:
        raise LandscapeError(
            f"{path}: not a readable HDF5 file (truncated or corrupt?): {err}; "
            "it was left untouched") from None


def _check_landscape(f: h5py.File, path: Path, kind: str | tuple[str, ...] | None) -> None:
    if f.attrs.get("format") != FORMAT:
        raise LandscapeError(f"{path}: not a landscape result file (no format='{FORMAT}')")
    if int(f.attrs.get("format_version", -1)) > FORMAT_VERSION:
        raise LandscapeError(
            f"{path}: format version {f.attrs['format_version']} is newer than this "
            f"library's ({FORMAT_VERSION}); upgrade landscape")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds and f.attrs.get("kind") not in kinds:
        raise LandscapeError(
            f"{path}: holds a {f.attrs.get('kind')!r} result, expected {' or '.join(kinds)}")


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for every key whose value differs."""
    old, new = jsonable(old), jsonable(new)
    return [f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _other_settings(path: Path, old: str, new: Mapping[str, Any], what: str = "",
                    hint: str = "use --overwrite to replace it or choose another --out",
                    ) -> LandscapeError:
    diff = "; ".join(differences(json.loads(old or "{}"), new))
    return LandscapeError(f"{path}{what} was computed with other settings ({diff}); {hint}")


def claim_part(f: h5py.File, name: str, settings: Mapping[str, Any], what: str,
               overwrite: bool = False) -> bool:
    """For a part of an open file computed with its own ``settings`` (``f[name]``, e.g. a
    curvature map in a surface file): True when it is absent or ``overwrite`` (the caller
    writes it afresh, then records the settings with :func:`mark_part`), False when it holds
    the same settings (resume), a LandscapeError naming the differences otherwise."""
    if name not in f or overwrite:
        return True
    old = f[name].attrs.get("settings", "")
    if settings_hash(json.loads(old or "{}")) != settings_hash(settings):
        raise _other_settings(Path(f.filename), old, settings, f" holds {what} that",
                              "use --overwrite to redo it")
    return False


def mark_part(f: h5py.File, name: str, settings: Mapping[str, Any]) -> None:
    """Record the settings of the part ``f[name]`` (see :func:`claim_part`) and flush."""
    f[name].attrs["settings"] = json.dumps(jsonable(settings), sort_keys=True, default=str)
    f.flush()


def create(path: str | Path, kind: str, settings: Mapping[str, Any],
           attrs: Mapping[str, Any] | None = None, overwrite: bool = False) -> h5py.File:
    """Open ``path`` for writing a ``kind`` result computed with ``settings``.

    A new file gets the root attributes; an existing one with the same ``settings_hash`` is
    opened for resuming (``r+``); one with different settings raises a LandscapeError that
    names each difference, unless ``overwrite`` (then it is replaced). A file that is not a
    readable landscape file is never overwritten without ``overwrite``.
    """
    path = Path(path)
    digest = settings_hash(settings)
    if path.exists() and not overwrite:
        _open(path, "r").close()  # validate read-only first: a bad file is left untouched
        f = _open(path, "r+")
        try:
            _check_landscape(f, path, kind)
            if f.attrs.get("settings_hash") != digest:
                raise _other_settings(path, f.attrs.get("settings", "{}"), settings)
        except LandscapeError:
            f.close()
            raise
        return f
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    f = h5py.File(path, "w")
    f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    **versions(), "settings_hash": digest})
    write_attrs(f, {"settings": dict(settings), **(attrs or {})})
    f.flush()
    return f


def write_attrs(obj: h5py.File | h5py.Group | h5py.Dataset, attrs: Mapping[str, Any]) -> None:
    """Set attributes; dicts and lists holding strings or lists are stored as JSON text
    (their names listed in the ``json_attrs`` attribute, so :func:`read_attrs` decodes them)."""
    json_keys = set(json.loads(obj.attrs.get("json_attrs", "[]")))
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, Mapping) or (
                isinstance(value, list | tuple) and any(isinstance(v, str | list) for v in value)):
            value = json.dumps(jsonable(value), default=str)
            json_keys.add(key)
        else:
            json_keys.discard(key)
        obj.attrs[key] = value
    obj.attrs["json_attrs"] = json.dumps(sorted(json_keys))


def open_result(path: str | Path, kind: str | tuple[str, ...] | None = None,
                mode: str = "r") -> h5py.File:
    """Open a landscape result read-only (or ``mode="r+"`` to add to it), checking format
    and (optionally) kind."""
    path = Path(path)
    if not path.exists():
        raise LandscapeError(f"{path}: no such file")
    if mode != "r":
        _open(path, "r").close()  # validate read-only first: a bad file is left untouched
    f = _open(path, mode)
    try:
        _check_landscape(f, path, kind)
    except LandscapeError:
        f.close()
        raise
    return f


def write_arrays(group: h5py.File | h5py.Group, arrays: Mapping[str, Any],
                 attrs: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Write (or replace) datasets ``name -> array`` under ``group`` and flush."""
    for name, value in arrays.items():
        if name in group:
            del group[name]
        group.create_dataset(name, data=np.asarray(value))
        if attrs and name in attrs:
            write_attrs(group[name], attrs[name])
    group.file.flush()


def read_attrs(obj: h5py.File | h5py.Group | h5py.Dataset) -> dict[str, Any]:
    """Attributes as plain Python values (JSON-encoded ones decoded, arrays as lists)."""
    json_keys = set(json.loads(obj.attrs.get("json_attrs", "[]")))
    out: dict[str, Any] = {}
    for key, value in obj.attrs.items():
        if key == "json_attrs":
            continue
        if isinstance(value, bytes):
            value = value.decode()
        if key in json_keys:
            value = json.loads(value)
        elif isinstance(value, np.generic | np.ndarray):
            value = value.tolist()
        out[key] = value
    return out


def read_settings(f: h5py.File) -> dict[str, Any]:
    """The settings a result was computed with."""
    return json.loads(f.attrs.get("settings", "{}"))


def describe(path: str | Path) -> dict[str, Any]:
    """Summary of a result file: kind, attributes, settings, datasets and their shapes,
    and for grids how many points are done."""
    with open_result(path) as f:
        attrs = read_attrs(f)
        datasets: dict[str, list[int]] = {}
        f.visititems(lambda name, obj: datasets.__setitem__(name, list(obj.shape))
                     if isinstance(obj, h5py.Dataset) else None)
        info = {"file": str(path), "kind": attrs.get("kind"),
                "format_version": attrs.get("format_version"), "created": attrs.get("created"),
                "settings": read_settings(f), "datasets": datasets,
                "attrs": {k: v for k, v in attrs.items() if k not in ("settings",)}}
        if "done" in f:
            done = f["done"][()]
            info["done"], info["total"] = int(done.sum()), int(done.size)
        return info
