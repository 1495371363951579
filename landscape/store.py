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
import math
import os
import platform
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from landscape.errors import LandscapeError, SettingsMismatch

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


def strict_json(obj: Any) -> Any:
    """``obj`` (JSON types) with every NaN or infinite float replaced by None, so that it
    serializes as strict JSON (``null``), never as the non-standard ``NaN``/``Infinity``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    return obj


def settings_hash(settings: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``settings``."""
    text = json.dumps(jsonable(settings), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def versions() -> dict[str, str]:
    """Versions of the libraries that determine the numbers."""
    import torch

    from landscape.version import __version__

    return {"landscape_version": __version__, "torch_version": str(torch.__version__),
            "numpy_version": np.__version__, "h5py_version": h5py.__version__,
            "python_version": platform.python_version()}


class WriteFailure(LandscapeError):
    """A file could not be written (disk full, file-size limit, read-only filesystem)."""


def _reason(err: BaseException) -> str:
    """The operating system's reason inside an h5py/OS error, as a few words."""
    text = str(err)
    found = re.search(r"error message = '([^']*)'", text)
    if found:
        return found.group(1)
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return " ".join(text.split())[:200] or type(err).__name__


@contextmanager
def writing(path: str | Path, *, resumable: bool = True) -> Iterator[None]:
    """Turn an OS or HDF5 write error inside the block into a one-line :class:`WriteFailure`
    naming ``path`` (no half-reported cascade of HDF5 messages)."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        hint = ("; what was stored before is kept: free space and rerun the same command to "
                "continue" if resumable else "")
        raise WriteFailure(f"cannot write {path}: {_reason(err)}{hint}") from None


def close_quietly(f: h5py.File | None) -> None:
    """Close ``f``, ignoring the errors of a file whose last writes already failed."""
    if f is None:
        return
    try:
        f.close()
    except Exception:  # noqa: BLE001 - the write error itself has been reported
        pass


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
    return SettingsMismatch(f"{path}{what} was computed with other settings ({diff}); {hint}")


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
           attrs: Mapping[str, Any] | None = None, overwrite: bool = False,
           init: Callable[[h5py.File], None] | None = None, memory: bool = False) -> h5py.File:
    r"""Open ``path`` for writing a ``kind`` result computed with ``settings``.

    A new file gets the root attributes; an existing one with the same ``settings_hash`` is
    opened for resuming (``r+``); one with different settings raises a LandscapeError that
    names each difference, unless ``overwrite`` (then it is replaced). A file that is not a
    readable landscape file is never overwritten without ``overwrite``.

    A new file is written under a temporary name (header, then ``init(f)``: datasets whose
    space is best allocated up front) and renamed into place, so a killed or failed
    creation never leaves a partial file under ``path``. Write errors are one-line
    :class:`WriteFailure` errors. ``memory=True`` returns the file held in memory (for small
    results written in parts): nothing reaches the disk until :func:`commit`, which replaces
    the file atomically, so a full disk never leaves a half-written HDF5 file.
    """
    path = Path(path)
    digest = settings_hash(settings)
    if path.exists() and not overwrite:
        _open(path, "r").close()  # validate read-only first: a bad file is left untouched
        f = _open(path, "r+")
        if memory:
            f.close()
            f = h5py.File(path, "r+", driver="core", backing_store=False)
        try:
            _check_landscape(f, path, kind)
            if f.attrs.get("settings_hash") != digest:
                raise _other_settings(path, f.attrs.get("settings", "{}"), settings)
        except LandscapeError:
            f.close()
            raise
        return f
    with writing(path, resumable=False):
        path.parent.mkdir(parents=True, exist_ok=True)
    f = None
    try:  # the header is complete before the file has its name; built in memory, so a write
        # error leaves no half-open HDF5 file behind
        f = h5py.File(f"{path}.{os.getpid()}.image", "w", driver="core", backing_store=False)
        f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
                        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        **versions(), "settings_hash": digest})
        write_attrs(f, {"settings": dict(settings), **(attrs or {})})
        if init is not None:
            init(f)
        commit(f, path)
    except BaseException:
        close_quietly(f)
        raise
    if memory:
        return f
    close_quietly(f)
    with writing(path):
        return h5py.File(path, "r+")


def commit(f: h5py.File, path: str | Path) -> None:
    """Write the in-memory file ``f`` (see :func:`create`) to ``path``, atomically."""
    f.flush()
    atomic_write(path, f.id.get_file_image())


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace`` (crash-safe); an
    OS error is a one-line :class:`WriteFailure` and leaves no temporary file."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with writing(path, resumable=False):
            remove_orphans(path)
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def temporary_name(path: Path) -> Path:
    """``.NAME.tmpPID`` next to ``path``: where a file is written before it is renamed."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def remove_orphans(path: Path) -> None:
    """Delete the temporary files of ``path`` left by processes that no longer run (killed
    while writing); a temporary file of a live process is left alone."""
    for tmp in Path(path).parent.glob(f".{Path(path).name}.tmp*"):
        pid = tmp.name.rpartition(".tmp")[2]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except OSError:  # alive, owned by someone else
            continue


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


def allocated(group: h5py.Group, name: str, shape: tuple[int, ...], dtype: Any,
              fillvalue: Any) -> h5py.Dataset:
    """A dataset whose disk space is allocated (and filled) now, so that later writes into it
    never grow the file: a full disk fails at creation, not halfway through."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return group.create_dataset(name, shape=shape, dtype=dtype, fillvalue=fillvalue, dcpl=dcpl)


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
