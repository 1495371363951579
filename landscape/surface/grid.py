"""Coordinate ranges of 1D and 2D grids, written ``MIN:MAX:NUM`` as in ``--x -1:1:51``."""

from __future__ import annotations

import numpy as np

from landscape.errors import LandscapeError
from landscape.gridfile import MAX_COORDINATE, coordinates_fault
from landscape.store import MAX_VALUES


def parse_range(text: str | tuple | list | np.ndarray) -> np.ndarray:
    """``"MIN:MAX:NUM"`` -> ``np.linspace(MIN, MAX, NUM)`` (float64); arrays pass through.

    Zero is a valid endpoint, ``NUM`` may be even or 1 (then ``MIN == MAX`` is required).
    """
    if not isinstance(text, str):
        try:
            values = np.asarray(text, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise LandscapeError(f"coordinates {text!r} are not numbers") from None
        fault = coordinates_fault(values)
        if fault:
            raise LandscapeError(f"coordinates {values.tolist()[:6]} {fault}")
        return values
    parts = text.split(":")
    try:
        lo, hi, num = float(parts[0]), float(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        raise LandscapeError(
            f"bad range {text!r}: expected MIN:MAX:NUM, e.g. -1:1:51") from None
    if len(parts) != 3 or num < 1 or not (np.isfinite(lo) and np.isfinite(hi)):
        raise LandscapeError(f"bad range {text!r}: expected MIN:MAX:NUM with NUM >= 1")
    if num > MAX_VALUES:
        raise LandscapeError(f"bad range {text!r}: {num:,} points, more than the "
                             f"{MAX_VALUES:,} a result file holds")
    if num == 1 and lo != hi:
        raise LandscapeError(f"bad range {text!r}: one point needs MIN == MAX")
    if num > 1 and not lo < hi:
        raise LandscapeError(f"bad range {text!r}: MIN must be below MAX")
    if max(abs(lo), abs(hi)) > MAX_COORDINATE:
        raise LandscapeError(f"bad range {text!r}: beyond +-{MAX_COORDINATE:g}")
    return np.linspace(lo, hi, num)
