"""HDF5 result files: format "landscape", version 1 (schema in DESIGN.md): file access.

One file per computed object. Root attributes say what the file is (``format``,
``format_version``, ``kind``, ``created``, library versions) and how it was computed
(``settings`` as JSON and its ``settings_hash``, plus free attributes such as the device
and the command line). Writers flush after every chunk of work, so a killed process loses
at most the chunk in flight; re-opening with the same settings resumes, different settings
are refused with the list of what differs.

This module opens, creates and atomically writes the files, refuses a hostile one (a global
heap that would hang HDF5, :mod:`landscape.h5heap`; links, external storage or virtual
datasets reaching outside the file), and reads attributes and datasets only after checking
their types. What each kind holds is checked by its format's validator (a
:data:`Validator`), which lives beside the format's writer; :mod:`landscape.formats` lists
them and opens a file of any kind.
"""

from __future__ import annotations

import errno
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
from landscape.h5heap import heap_fault
from landscape.hashing import canonical_json, jsonable, settings_hash
from landscape.hashing import values_digest as values_digest  # store.values_digest, as before

FORMAT = "landscape"
FORMAT_VERSION = 1


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


def versions() -> dict[str, str]:
    """Versions of the libraries that determine the numbers."""
    import torch

    from landscape.version import __version__

    return {"landscape_version": __version__, "torch_version": str(torch.__version__),
            "numpy_version": np.__version__, "h5py_version": h5py.__version__,
            "python_version": platform.python_version()}


class WriteFailure(LandscapeError):
    """A file could not be written (disk full, file-size limit, read-only filesystem)."""


def reason(err: BaseException) -> str:
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
        raise WriteFailure(f"cannot write {path}: {reason(err)}{hint}") from None


def close_quietly(f: h5py.File | None) -> None:
    """Close ``f``, ignoring the errors of a file whose last writes already failed."""
    if f is None:
        return
    try:
        f.close()
    except Exception:  # noqa: BLE001 - the write error itself has been reported
        pass


def damaged(path: str | Path, what: str) -> LandscapeError:
    """The one-line error for a file that is not what its header says (or not readable)."""
    return LandscapeError(f"{path}: {what}; the file was left untouched")


def _open(path: Path, mode: str, *, scanned: bool = False) -> h5py.File:
    """``h5py.File(path, mode)``, the one way this library opens a result file; a locked,
    read-only, unreadable or damaged file (a global heap that would hang HDF5 included,
    :func:`~landscape.h5heap.heap_fault`, not scanned again when ``scanned``: the reopen of
    a file just opened and checked read-only), or one that reaches outside itself
    (:func:`self_contained`), is a one-line LandscapeError saying which."""
    if path.is_dir():
        raise LandscapeError(f"{path}: is a directory, not a result file")
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise LandscapeError(f"{path}: no permission to read it") from None
    if not h5py.is_hdf5(path):
        raise damaged(path, "not an HDF5 file (empty, truncated or another format)")
    fault = None if scanned else heap_fault(path)
    if fault is not None:
        raise damaged(path, f"{fault} (HDF5 would loop forever reading it)")
    try:
        f = h5py.File(path, mode)
    except OSError as err:
        code = err.errno or int((re.findall(r"errno = (\d+)", str(err)) or [0])[-1])
        if code in (errno.EAGAIN, errno.EWOULDBLOCK) or "unable to lock" in str(err):
            raise LandscapeError(
                f"{path}: locked: another process has it open for writing (wait for it to "
                "finish or stop it, then rerun); the file was left untouched") from None
        if code == errno.EROFS:
            raise LandscapeError(f"{path}: on a read-only filesystem, so it cannot be opened "
                                 "for writing; copy it to a writable place") from None
        if code in (errno.EACCES, errno.EPERM):
            raise LandscapeError(f"{path}: no permission to open it for "
                                 f"{'reading' if mode == 'r' else 'writing'}") from None
        raise damaged(path, f"not a readable HDF5 file (truncated or corrupt?): "
                            f"{reason(err)}") from None
    try:
        self_contained(f, path)
    except BaseException:
        f.close()
        raise
    return f


def _outward(obj: Any) -> str | None:
    """What makes ``obj`` reach outside its file, or None: raw data in external files
    (HDF5 external storage) or a virtual dataset (which maps other files)."""
    if not isinstance(obj, h5py.Dataset):
        return None
    plist = obj.id.get_create_plist()
    if plist.get_external_count() > 0:
        return "keeps its values in another file (external storage)"
    if plist.get_layout() == h5py.h5d.VIRTUAL:
        return "is a virtual dataset (its values come from other files)"
    return None


def self_contained(f: h5py.File, path: Path) -> None:
    """Refuse a file that reaches outside itself, before anything of it is read or written:
    a soft, external or user-defined link, a dataset whose values live in another file
    (external storage) or a virtual dataset. Such a file could show another file's bytes as
    results, or have a resume write into another file. Reads metadata only."""
    try:
        links = _links(f)
        outward = next((f"'{name}' is a link to elsewhere" for name, link in links
                        if not isinstance(link, h5py.HardLink)), None)
        for name, obj in [] if outward is not None else members(f, path):
            why = _outward(obj)
            if why is not None:
                outward = f"dataset '{name}' {why}"
                break
    except (OSError, RuntimeError, SystemError, ValueError, KeyError) as err:
        raise damaged(path, f"its structure cannot be read ({reason(err)})") from None
    if outward is not None:
        raise damaged(path, outward)


def _links(f: h5py.File) -> list[tuple[str, Any]]:
    """Every (name, link) in ``f``; listed first, because nothing may raise inside HDF5's
    iteration (an exception there comes out as a SystemError)."""
    links: list[tuple[str, Any]] = []
    f.visititems_links(lambda name, link: links.append((name, link)))
    return links


def members(f: h5py.Group, path: Path) -> list[tuple[str, Any]]:
    """Every (name, group or dataset) in ``f`` (a file or group), opened outside HDF5's
    iteration; one that cannot be opened is a one-line damaged-file error."""
    try:
        return [(name, f[name]) for name, _ in _links(f)]
    except (OSError, RuntimeError, SystemError, ValueError, KeyError) as err:
        raise damaged(path, f"its structure cannot be read ({reason(err)})") from None


#: The most values a stored grid or small array (eigenvalues, trace samples, a density) may
#: declare. No result comes near it (a 10,001 x 10,001 grid is 1e8 points); a larger
#: declaration is damage or an attack, refused before anything is read. Arrays with one value
#: per parameter (origin, directions, eigenvectors) are checked against each other instead.
MAX_VALUES = 10**8

_DTYPES = {"f": "floating-point", "biu": "boolean or integer", "iu": "integer",
           "fbiu": "numeric"}

#: A format's validator, ``validate(f, path, attrs)``: checks the structure of an open file of
#: its kind (``attrs``: its root attributes, read) before any of it is used, from metadata
#: and coordinates only; a fault is a :func:`damaged` error. Each lives beside its format's
#: writer; :mod:`landscape.formats` maps every kind to its validator.
Validator = Callable[[h5py.File, Path, Mapping[str, Any]], None]


def _check_landscape(f: h5py.File, path: Path, kind: str | tuple[str, ...] | None,
                     validate: Validator) -> None:
    """Check an open result file before any of it is used (that it reaches nothing outside
    itself was checked as it was opened, :func:`self_contained`): the header (format,
    version, a kind among ``kind`` if given), every attribute decodable, the settings a JSON
    object; then the structure of its kind (``validate``). A LandscapeError names the file
    and the first fault."""
    attrs = read_attrs(f)
    if attrs.get("format") != FORMAT:
        raise LandscapeError(f"{path}: not a landscape result file (no format='{FORMAT}')")
    version = attrs.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise damaged(path, f"format_version {version!r} is not an integer")
    if version > FORMAT_VERSION:
        raise LandscapeError(
            f"{path}: format version {version} is newer than this "
            f"library's ({FORMAT_VERSION}); upgrade landscape")
    found = attrs.get("kind")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds and found not in kinds:
        raise LandscapeError(
            f"{path}: holds a {found!r} result, expected {' or '.join(kinds)}")
    for _, obj in members(f, path):
        read_attrs(obj)
    if not isinstance(f.attrs.get("settings", "{}"), str) or not isinstance(
            attrs.get("settings", {}), dict):
        raise damaged(path, "attribute 'settings' is not a JSON object")
    if not isinstance(attrs.get("settings_hash", ""), str):
        raise damaged(path, "attribute 'settings_hash' is not text")
    validate(f, path, attrs)


# --- What validators check, for every format ------------------------------------------------

def _member(group: h5py.Group, name: str, path: Path) -> Any:
    """``group[name]`` (None if absent); a soft or external link (which could lead into
    another file) is refused."""
    link = group.get(name, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        raise damaged(path, f"'{group.name.rstrip('/')}/{name}' is a link to elsewhere")
    return group[name]


def subgroup(group: h5py.Group, name: str, path: Path) -> h5py.Group:
    """The group ``group[name]``, present and a group."""
    obj = _member(group, name, path)
    if not isinstance(obj, h5py.Group):
        what = "missing" if obj is None else "a dataset, not a group"
        raise damaged(path, f"group '{group.name.rstrip('/')}/{name}' is {what}")
    return obj


def dataset(group: h5py.Group, name: str, path: Path, *, dtype: str = "f",
            ndim: int | None = None, shape: tuple[int, ...] | None = None,
            limit: int | None = MAX_VALUES, optional: bool = False) -> h5py.Dataset | None:
    """The dataset ``group[name]`` after checking (metadata only, nothing read) that it is a
    dataset of the ``dtype`` kinds (numpy kind letters), ``ndim``, ``shape``, and at most
    ``limit`` values; ``optional``: None when absent."""
    obj = _member(group, name, path)
    where = f"'{group.name.rstrip('/')}/{name}'"
    if obj is None:
        if optional:
            return None
        raise damaged(path, f"dataset {where} is missing")
    if not isinstance(obj, h5py.Dataset):
        raise damaged(path, f"{where} is a {type(obj).__name__.lower()}, not a dataset")
    try:
        kind = obj.dtype.kind
    except (ValueError, TypeError, RuntimeError) as err:  # a damaged type message (e.g. an
        # exponent bias no numpy float has)
        raise damaged(path, f"dataset {where} has a damaged type ({err})") from None
    if kind not in dtype:
        raise damaged(path, f"dataset {where} holds {obj.dtype}, not "
                            f"{_DTYPES[dtype]} values")
    if ndim is not None and obj.ndim != ndim:
        raise damaged(path, f"dataset {where} has {obj.ndim} dimensions, not {ndim}")
    if shape is not None and obj.shape != tuple(shape):
        raise damaged(path, f"dataset {where} has shape {obj.shape}, expected {tuple(shape)}")
    if limit is not None and math.prod(obj.shape) > limit:
        raise damaged(path, f"dataset {where} declares {math.prod(obj.shape):,} values, "
                            f"more than the {limit:,} any result holds")
    return obj


def check_number(attrs: Mapping[str, Any], key: str, path: Path, where: str = "",
                 integer: bool = False, optional: bool = False) -> None:
    """Attribute ``key`` is a number (an integer); ``optional``: or absent, or null."""
    value = attrs.get(key)
    if optional and value is None:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise damaged(path, f"attribute '{key}'{where} is {value!r}, not "
                            f"{'an integer' if integer else 'a number'}")


def check_mapping(attrs: Mapping[str, Any], key: str, path: Path, where: str = "") -> None:
    """Attribute ``key`` is a JSON object, or absent."""
    if not isinstance(attrs.get(key, {}), dict):
        raise damaged(path, f"attribute '{key}'{where} is not a JSON object")


#: The most names a list attribute (metrics, labels) may hold; results hold a handful.
MAX_NAMES = 1000


def names(attrs: Mapping[str, Any], key: str, path: Path, default: Any = None) -> list[str]:
    """The list of distinct names in attribute ``key`` (at most :data:`MAX_NAMES`)."""
    found = attrs.get(key, default)
    if not isinstance(found, list) or not all(isinstance(n, str) for n in found):
        raise damaged(path, f"attribute '{key}' is {str(found)[:60]!r}, not a list of names")
    if len(found) > MAX_NAMES:
        raise damaged(path, f"attribute '{key}' lists {len(found):,} names, more than "
                            f"{MAX_NAMES:,}")
    if len(set(found)) != len(found):
        raise damaged(path, f"attribute '{key}' lists a name twice")
    return found


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
    try:
        recorded = json.loads(old or "{}")
    except (TypeError, ValueError):
        raise damaged(f.filename, f"the settings of '{name}' are not JSON") from None
    if settings_hash(recorded) != settings_hash(settings):
        raise _other_settings(Path(f.filename), old, settings, f" holds {what} that",
                              "use --overwrite to redo it")
    return False


def mark_part(f: h5py.File, name: str, settings: Mapping[str, Any]) -> None:
    """Record the settings of the part ``f[name]`` (see :func:`claim_part`) and flush."""
    f[name].attrs["settings"] = canonical_json(settings)
    f.flush()


def create(path: str | Path, kind: str, settings: Mapping[str, Any],
           attrs: Mapping[str, Any] | None = None, overwrite: bool = False,
           init: Callable[[h5py.File], None] | None = None, memory: bool = False, *,
           validate: Validator) -> h5py.File:
    r"""Open ``path`` for writing a ``kind`` result computed with ``settings``.

    A new file gets the root attributes; an existing one with the same ``settings_hash`` is
    opened for resuming (``r+``) once it passed the ``kind``'s ``validate``; one with different
    settings raises a LandscapeError that names each difference, unless ``overwrite`` (then
    it is replaced). A file that is not a readable landscape file is never overwritten
    without ``overwrite``.

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
        with _open(path, "r") as f:  # validated read-only first: a bad file is left untouched
            _check_landscape(f, path, kind, validate)
            if f.attrs.get("settings_hash") != digest:
                raise _other_settings(path, f.attrs.get("settings", "{}"), settings)
        f = _open(path, "r+", scanned=True)
        if memory:
            f.close()
            f = h5py.File(path, "r+", driver="core", backing_store=False)
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


def atomic_write(path: str | Path, data: bytes, sync: bool = True) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace`` (crash-safe); an
    OS error is a one-line :class:`WriteFailure` and leaves no temporary file. ``sync``:
    ``fsync`` before the rename (durable across an OS crash, ~15 ms a file on a shared disk);
    without it the write is still atomic for a killed process."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with writing(path, resumable=False):
            remove_orphans(path)
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                if sync:
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
                mode: str = "r", *, validate: Validator) -> h5py.File:
    """Open a landscape result read-only (or ``mode="r+"`` to add to it), checking its header,
    its kind (one of ``kind``, if given) and its structure (``validate``: the validator of
    the kinds it takes, or :func:`landscape.formats.validate`, which dispatches on the kind,
    through :func:`landscape.formats.open_result`)."""
    path = Path(path)
    if not path.exists():
        raise LandscapeError(f"{path}: no such file")
    f = _open(path, "r")  # validated read-only first: a bad file is left untouched
    try:
        _check_landscape(f, path, kind, validate)
    except BaseException:
        f.close()
        raise
    if mode == "r":
        return f
    f.close()
    return _open(path, mode, scanned=True)


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


#: HDF5's dimension-scale bookkeeping (object references: for other readers such as xarray),
#: with the type class each must have; never read here, only its type is checked.
SCALE_ATTRS = {"DIMENSION_LIST": h5py.h5t.VLEN, "REFERENCE_LIST": h5py.h5t.COMPOUND}
#: The type classes of every other attribute: numbers, text, booleans (an HDF5 enum).
_PLAIN = (h5py.h5t.INTEGER, h5py.h5t.FLOAT, h5py.h5t.STRING, h5py.h5t.ENUM)


def _plain(obj: h5py.File | h5py.Group | h5py.Dataset, key: str) -> Any:
    """Attribute ``key`` of ``obj`` after checking its type (metadata only): numbers, text or
    booleans, as h5py writes them. Anything else (a damaged type message can turn a string
    into a variable-length sequence, which crashed HDF5 as it was read) is a ValueError."""
    kind = obj.attrs.get_id(key).get_type()
    if kind.get_class() not in _PLAIN:
        raise ValueError(f"of HDF5 type class {kind.get_class()}, not a number or text")
    return obj.attrs[key]


def read_attrs(obj: h5py.File | h5py.Group | h5py.Dataset) -> dict[str, Any]:
    """Attributes as plain Python values (JSON-encoded ones decoded, arrays as lists), the
    dimension-scale lists :data:`SCALE_ATTRS` left out; an attribute that cannot be read or
    decoded, or of another type, is a LandscapeError naming the file and it."""
    key = "json_attrs"
    try:
        json_keys = json.loads(_plain(obj, key) if key in obj.attrs else "[]")
        if not isinstance(json_keys, list) or not all(isinstance(k, str) for k in json_keys):
            raise ValueError("not a list of names")
        out: dict[str, Any] = {}
        for key in obj.attrs:
            if key == "json_attrs":
                continue
            if key in SCALE_ATTRS:
                kind = obj.attrs.get_id(key).get_type()
                if kind.get_class() != SCALE_ATTRS[key] or (
                        key == "DIMENSION_LIST" and kind.get_super().get_class()
                        != h5py.h5t.REFERENCE):
                    raise ValueError("not a list of object references")
                continue
            value = _plain(obj, key)
            if isinstance(value, bytes):
                value = value.decode()
            if key in json_keys:
                value = json.loads(value)
            elif isinstance(value, np.generic | np.ndarray):
                value = value.tolist()
            if isinstance(value, str) or key in json_keys:  # text that is not UTF-8 (h5py
                json.dumps(value, ensure_ascii=False).encode()  # keeps bad bytes as
            out[key] = value  # surrogates; a JSON escape can make one) cannot be printed
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as err:  # a damaged
        # attribute table (RuntimeError from h5py's iteration), JSONDecodeError, UnicodeError
        where = "" if obj.name == "/" else f" of '{obj.name}'"
        raise damaged(obj.file.filename, f"attribute '{key}'{where} cannot be read or "
                                         f"decoded ({' '.join(str(err).split())[:80]})") from None
    return out


def read_settings(f: h5py.File) -> dict[str, Any]:
    """The settings a result was computed with."""
    return read_attrs(f).get("settings", {})

