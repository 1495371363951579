"""Progress bars on stderr (tqdm), shown for anything longer than a few seconds."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm.auto import tqdm

_CURSOR_MOVES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _Lines:
    """A stream for tqdm when stderr is a file or a pipe: each redraw becomes one whole line
    (tqdm's carriage returns and blank erasures dropped), so bars never run into log lines."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        text = _CURSOR_MOVES.sub("", text)  # nested bars move the cursor up and back ("[A")
        for piece in text.replace("\n", "\r").split("\r"):
            if piece.strip():
                self.stream.write(piece.rstrip() + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", leave: bool = False, disable: bool | None = None) -> Any:
    """A tqdm bar on stderr that appears only after 2 s (one line every 15 s when stderr is not
    a terminal) and is hidden with ``LANDSCAPE_QUIET=1``."""
    if disable is None:
        disable = os.environ.get("LANDSCAPE_QUIET", "") == "1"
    tty = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave,
                file=sys.stderr if tty else _Lines(sys.stderr), delay=2.0, disable=disable,
                dynamic_ncols=tty, ncols=None if tty else 100,
                mininterval=0.1 if tty else 15.0)  # logs (CI, nohup) get a line every 15 s
