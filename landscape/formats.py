"""Every result file format by kind: the one dispatcher from a file's ``kind`` attribute to
the validator that lives beside the format's writer (:func:`validator` names each one).

File access (opening, the checks every file passes, atomic writes) is :mod:`landscape.store`;
a writer opens its own kind with its own validator, and a reader of any kind (``landscape
info``, figures, reports) comes here. This module imports every writer (each only when a file
of its kind is checked), so it sits on the floor above them; nothing below imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py

from landscape import gridfile, store

#: The kinds of measure files (:func:`landscape.analysis.measures.save_results`).
MEASURE_KINDS = ("curvature", "sharpness", "noise", "curve")
#: The result kinds this library writes.
KINDS = (*gridfile.KINDS, "hessian", "study", "toy", "track", *MEASURE_KINDS)


def validator(kind: str) -> store.Validator:
    """The validator of ``kind`` (one of :data:`KINDS`), from beside its writer. Only that
    writer's module is imported (``landscape info`` on a surface loads no analysis code)."""
    if kind in gridfile.KINDS:
        return gridfile.validate_grid
    if kind in MEASURE_KINDS:
        from landscape.analysis.measures import validate_measures

        return validate_measures
    if kind == "hessian":
        from landscape.analysis.hessian import validate_hessian

        return validate_hessian
    if kind == "track":
        from landscape.analysis.track import validate_track

        return validate_track
    if kind == "toy":
        from landscape.toy import validate_toy

        return validate_toy
    if kind == "study":
        from landscape.study import validate_study

        return validate_study
    raise KeyError(kind)


def validate(f: h5py.File, path: Path, attrs: Mapping[str, Any]) -> None:
    """The validator of every kind (:data:`landscape.store.Validator`): the one of the file's
    ``kind``; an unknown kind is a damaged-file error."""
    kind = attrs.get("kind")
    if kind not in KINDS:
        raise store.damaged(path, f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    validator(kind)(f, path, attrs)


def open_result(path: str | Path, kind: str | tuple[str, ...] | None = None,
                mode: str = "r") -> h5py.File:
    """Open a landscape result of any kind (or one of ``kind``) read-only (``mode="r+"`` to
    add to it), checked against the format of its kind (:func:`landscape.store.open_result`).

    >>> open_result("outputs/no-such-file.h5")
    Traceback (most recent call last):
    landscape.errors.LandscapeError: outputs/no-such-file.h5: no such file
    """
    return store.open_result(path, kind, mode, validate=validate)


def describe(path: str | Path) -> dict[str, Any]:
    """Summary of a result file: kind, attributes, settings, datasets and their shapes,
    and for grids how many points are done."""
    with open_result(path) as f:
        attrs = store.read_attrs(f)
        datasets = {name: list(obj.shape) for name, obj in store.members(f, Path(path))
                    if isinstance(obj, h5py.Dataset)}
        info = {"file": str(path), "kind": attrs.get("kind"),
                "format_version": attrs.get("format_version"), "created": attrs.get("created"),
                "settings": store.read_settings(f), "datasets": datasets,
                "attrs": {k: v for k, v in attrs.items() if k not in ("settings",)}}
        if attrs["kind"] in gridfile.KINDS:  # validated: a mask of the grid's shape
            done = f["done"][()]
            info["done"], info["total"] = int(done.sum()), int(done.size)
        return info
