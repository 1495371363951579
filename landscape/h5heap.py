"""A bounded check of an HDF5 file's global heap collections, before HDF5 decodes any.

HDF5 keeps variable-length values (the text of every h5py string attribute, the
``DIMENSION_LIST`` of dimension scales) in *global heap collections* (signature ``GCOL``,
HDF5 file format specification, section III.E): a 16-byte header (signature, version 1,
3 reserved bytes, the collection's size in bytes) and then objects, each a 16-byte header
(index, reference count, 4 reserved bytes, size) and its data padded to 8 bytes; object 0
is the free space, whose size counts its own header and is not padded.

HDF5 (2.0.0, ``H5HG__cache_heap_deserialize``) decodes a collection by walking it object by
object, ``p = begin + need`` with ``need = 16 + align8(size)`` (or the free space's
``size``), and checks only that ``need`` does not run past the collection. A stored size
that makes ``need`` zero (a free-space size of 0, or of 8 that lands in zeroed free space,
or an object size within 23 of 2**64 that wraps to 0 when padded) never advances the walk:
the C library loops forever inside the first read of a string attribute, where no Python
signal reaches it. :func:`heap_fault` finds such collections first, with a walk of its own
that always advances.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

SIGNATURE = b"GCOL"
#: HDF5 refuses a collection smaller than this (its H5HG_MINSIZE), so one is never walked.
MIN_SIZE = 4096
#: Object indices are 16-bit, so a collection HDF5 writes holds at most 65,535 objects and
#: its free space; a walk with more steps (8-byte steps through a huge collection) is not a
#: collection at all, and is refused rather than walked (it bounds this check's cost).
MAX_STEPS = 2**16 + 1
_HEADER = struct.Struct("<4sB3xQ")
_OBJECT = struct.Struct("<HH4xQ")


def _walk_fault(data: mmap.mmap, start: int, size: int) -> str | None:
    """Why HDF5's walk of the collection at ``start`` (``size`` bytes, inside the file)
    would never end, or None when it ends (well or with an error HDF5 reports itself)."""
    p, end = start + _HEADER.size, start + size
    for _ in range(MAX_STEPS):
        if p + _OBJECT.size > end:  # a tail too small for an object header: free space
            return None
        index, _refs, length = _OBJECT.unpack_from(data, p)
        need = (_OBJECT.size + ((length + 7) & ~7) if index else length) % 2**64
        if need == 0:
            return f"object {index} at byte {p} has a size ({length}) that stops the walk"
        if need > end - p:  # HDF5 reports "ran off end of input buffer"
            return None
        p += need
    return f"more than {MAX_STEPS:,} objects"


def heap_fault(path: str | Path) -> str | None:
    """What makes a global heap collection of the file at ``path`` hang HDF5's decoder, or
    None. Every ``GCOL`` signature in the file is a candidate (HDF5 only decodes a
    collection whose signature is in place); each one HDF5 could decode (version 1, size at
    least :data:`MIN_SIZE`, inside the file) is walked as HDF5 walks it. Cost: one pass
    over the file's bytes (memory-mapped) and a few steps per collection."""
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0,
                                               access=mmap.ACCESS_READ) as data:
        at = data.find(SIGNATURE)
        while at >= 0:
            if at + _HEADER.size <= len(data):
                _sig, version, size = _HEADER.unpack_from(data, at)
                if version == 1 and MIN_SIZE <= size <= len(data) - at:
                    fault = _walk_fault(data, at, size)
                    if fault is not None:
                        return f"global heap collection at byte {at}: {fault}"
            at = data.find(SIGNATURE, at + 1)
    return None
