"""User-facing errors: one line, no traceback, from the CLI."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LandscapeError(Exception):
    """An error caused by the user's input (bad name, missing file, bad setting).

    The CLI prints its message as one line and exits with status 1.
    """


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> LandscapeError:
    """Error for an unknown registry name, suggesting the closest known names."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return LandscapeError(f"unknown {kind} {name!r}{hint} (known: {', '.join(choices)})")


def check_positive(name: str, value: float) -> None:
    """Raise a LandscapeError unless ``value > 0``."""
    if not value > 0:
        raise LandscapeError(f"{name} must be positive, got {value}")


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as a Python int; a LandscapeError unless it is an integer >= ``minimum``.

    The one integer check of the package: Python and numpy integers pass (``np.int64`` from
    an array is an integer to a user), bools and floats (even ``2.0``) do not."""
    import numpy as np

    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        what = {1: "a positive integer", 0: "a non-negative integer"}.get(
            minimum, f"an integer >= {minimum}")
        raise LandscapeError(f"{name} must be {what}, got {value!r}")
    return int(value)


class SettingsMismatch(LandscapeError):
    """An existing result file or run directory was computed with other settings."""


class LandscapeWarning(UserWarning):
    """Something the user should know about a result (a target not met, an unfinished run);
    the CLI prints each as one ``Warning:`` line on stderr, every time."""


class NotConvergedWarning(LandscapeWarning, RuntimeWarning):
    """An iterative estimate stopped above its tolerance (Lanczos, Hutchinson)."""
