"""Progress bars on stderr (tqdm), shown for anything longer than a few seconds."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", leave: bool = False, disable: bool | None = None) -> Any:
    """A tqdm bar on stderr that appears only after 2 s (updated every 15 s when stderr is not a
    terminal) and is hidden with ``LANDSCAPE_QUIET=1``."""
    if disable is None:
        disable = os.environ.get("LANDSCAPE_QUIET", "") == "1"
    tty = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                delay=2.0, disable=disable, dynamic_ncols=True,
                mininterval=0.1 if tty else 15.0)  # logs (CI, nohup) get a line every 15 s
