"""Every hash the package records: of bytes (source files, masks), of settings (canonical
JSON), of tensors' values (weights, directions) and of data sets (order-independent).

One module so that what a file recorded yesterday is computed the same way today: every
function here is pinned by a test to values recorded before it moved here. Imports no torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["canonical_json", "data_digest", "jsonable", "sample_digests", "settings_hash",
           "sha256_hex", "split_part", "values_digest"]


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` as 64 hex digits (a source file's, a parameter mask's)."""
    return hashlib.sha256(data).hexdigest()


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


def canonical_json(obj: Any) -> str:
    """The JSON text that settings are stored and hashed as: :func:`jsonable`, keys sorted,
    other objects as ``str``."""
    return json.dumps(jsonable(obj), sort_keys=True, default=str)


def settings_hash(settings: Mapping[str, Any], length: int | None = None) -> str:
    """SHA-256 of :func:`canonical_json` of ``settings``, its first ``length`` hex digits if
    given (a study's cache keys: 16; a run directory's name: 8)."""
    return sha256_hex(canonical_json(settings).encode())[:length]


def values_digest(tensors: Iterable[Any], names: Iterable[str] | None = None,
                  dtype: str = "float64") -> str:
    """The one digest of weights, buffers and directions that settings record: the first 16
    hex digits of the SHA-256 of each tensor's values cast to ``dtype`` (C order, on the
    CPU), each preceded by its name when ``names`` are given. Cost: one CPU copy per tensor."""
    import torch

    h = hashlib.sha256()
    tensors = list(tensors)
    for name, t in zip(names if names is not None else [None] * len(tensors), tensors,
                       strict=True):
        if name is not None:
            h.update(name.encode())
        h.update(t.detach().to("cpu", getattr(torch, dtype)).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def sample_digests(arrays: list[np.ndarray]) -> list[bytes]:
    """Each sample's SHA-256 (32 bytes): its rows of ``arrays`` (samples on dim 0, each
    reshaped ``[n, -1]``, C order) joined in order."""
    flat = [a.reshape(len(a), -1) for a in arrays]
    return [hashlib.sha256(b"".join(f[i].tobytes() for f in flat)).digest()
            for i in range(len(flat[0]) if flat else 0)]


def split_part(name: str, digests: list[bytes]) -> bytes:
    """One split's share of a data digest: its name, sample count and sorted sample digests
    (sorted, so that a shuffling loader digests the same every pass)."""
    return f"{name}:{len(digests)}:".encode() + b"".join(sorted(digests))


def data_digest(parts: Iterable[bytes]) -> str:
    """The digest of a data set: the SHA-256 of its splits' :func:`split_part` in order."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()
