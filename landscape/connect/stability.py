"""Stability to SGD noise: Frankle et al.'s (2020) instability analysis.

A parent is trained to epoch ``k``; children continue it from there and differ only in the
SGD noise (minibatch order, and augmentation where it is on): ``landscape.train(...,
spawn=(k, child_seed))``. Each pair of children is trained to the same stopping rule and the
error and loss barriers of the straight path between them are measured
(:func:`landscape.connect.barrier.barrier`, no alignment). Training is *stable* at ``k`` when
the barrier is about zero; the result is the barrier as a function of ``k`` with a
Student-t interval over the pairs (disjoint pairs of children, independent given the
parent). Deviation from the paper: ``k`` counts epochs, not iterations (the trainer draws
its order per epoch); the paper spawns at iterations, often within the first epoch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from landscape import store
from landscape.connect.barrier import barrier
from landscape.errors import LandscapeError, check_int
from landscape.stats import Interval, confidence_interval

FILE = "stability.json"


@dataclass
class Stability:
    """Barriers between children spawned at each epoch ``k``: per metric
    (``test_error``, ``test_loss``, ``train_error``, ``train_loss``) the value of each pair
    and their interval, per ``k``."""

    spawn_epochs: list[int]
    values: dict[str, list[list[float]]]
    settings: dict[str, Any]
    path: Path

    def interval(self, metric: str = "test_error") -> list[Interval]:
        """The interval over pairs at each spawn epoch."""
        return [confidence_interval(v) for v in self.values[metric]]

    def to_dict(self) -> dict[str, Any]:
        return {"spawn_epochs": self.spawn_epochs, "values": self.values,
                "intervals": {m: [i.to_dict() for i in self.interval(m)] for m in self.values},
                "settings": self.settings}


def instability(out: str | Path, *, spawn_epochs: Sequence[int] = (0, 1, 2, 5),
                pairs: int = 3, seed: int = 0, points: int = 11,
                show_progress: bool = True, **train_options: Any) -> Stability:
    """Barrier between pairs of children spawned at each epoch in ``spawn_epochs``.

    ``train_options`` go to :func:`landscape.train` (model, dataset, optimizer, lr, epochs or
    steps or target_train_loss: the stopping rule every child is trained to); ``seed`` is the
    parent's (its initialization and its order up to ``k``); children ``2i`` and ``2i + 1``
    of ``pairs`` are a pair. Runs go to ``out/runs``, paths to ``out/paths`` (both resumed
    when run again), the summary to ``out/stability.json``. Cost: ``2 * pairs *
    len(spawn_epochs)`` trainings and ``pairs * len(spawn_epochs)`` paths of ``points``.

    Example:
        >>> import tempfile
        >>> s = instability(tempfile.mkdtemp(), spawn_epochs=[0], pairs=2, epochs=1,
        ...                 model_options={"widths": [8]}, show_progress=False)
        >>> len(s.values["test_error"][0])
        2
    """
    from landscape.training import train

    pairs = check_int("pairs", pairs, minimum=2)
    spawn_epochs = sorted({check_int("spawn epoch", k, minimum=0) for k in spawn_epochs})
    if not spawn_epochs:
        raise LandscapeError("give at least one spawn epoch")
    out = Path(out)
    values: dict[str, list[list[float]]] = {}
    for k in spawn_epochs:
        row: dict[str, list[float]] = {}
        for p in range(pairs):
            children = [train(seed=seed, spawn=(k, 2 * p + c), out=out / "runs" /
                              f"k{k:04d}_child{2 * p + c}", resume=True, progress=show_progress,
                              **train_options) for c in range(2)]
            if children[0].history[-1]["epoch"] <= k:
                raise LandscapeError(f"spawn epoch {k} is not before the end of training "
                                     f"(epoch {children[0].history[-1]['epoch']})")
            result = barrier(children[0].model, children[1].model, data=children[0].data,
                             points=points, out=out / "paths" / f"k{k:04d}_pair{p}.h5",
                             settings={"endpoints": [str(c.path) for c in children]},
                             show_progress=show_progress)
            for metric, b in result.barriers.items():
                row.setdefault(metric, []).append(b)
        for metric, v in row.items():
            values.setdefault(metric, []).append(v)
    settings = {"spawn_epochs": spawn_epochs, "pairs": pairs, "seed": seed, "points": points,
                "train": store.jsonable(train_options)}
    result = Stability(spawn_epochs, values, settings, out / FILE)
    store.atomic_write(out / FILE, json.dumps(result.to_dict(), indent=1).encode())
    return result


def load_stability(path: str | Path) -> Stability:
    """Read ``stability.json`` (or the directory holding it) written by :func:`instability`."""
    path = Path(path)
    file = path / FILE if path.is_dir() else path
    try:
        raw = json.loads(file.read_text())
        return Stability([int(k) for k in raw["spawn_epochs"]],
                         {m: [[float(x) for x in v] for v in rows]
                          for m, rows in raw["values"].items()}, dict(raw["settings"]), file)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise LandscapeError(f"{file}: not a stability result ({type(err).__name__})") from None
