"""Stability to SGD noise: Frankle et al.'s (2020) instability analysis.

A parent is trained to step (or epoch) ``k``; children continue it from there and differ only
in the SGD noise (minibatch order, and augmentation where it is on): ``landscape.train(...,
spawn=(k, child_seed), spawn_unit=unit)``. Each pair of children is trained to the same
stopping rule and the error and loss barriers of the straight path between them are measured
(:func:`landscape.connect.barrier.barrier`, no alignment). Training is *stable* at ``k`` when
the barrier is about zero; the result is the barrier as a function of ``k`` with a
Student-t interval over the pairs (disjoint pairs of children, independent given the
parent). ``unit="step"`` counts optimizer steps as the paper does (it spawns at iterations,
often within the first epoch); the default ``"epoch"`` counts epochs. The unit is recorded
in ``stability.json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from landscape import store
from landscape.connect.barrier import barrier
from landscape.errors import LandscapeError, check_int, unknown_name
from landscape.stats import Interval, confidence_interval

FILE = "stability.json"
#: The barriers a study reports beside its sharpness measures: (metric, header, format).
STUDY_BARRIERS = (("test_error", "test-err. barrier", ".2%"),
                  ("train_loss", "train-loss barrier", ".3g"))
_COLUMN = re.compile(r"^instability_(test_error|train_loss)_step(\d+)$")


@dataclass
class Stability:
    """Barriers between children spawned at each ``k`` (``unit``: "epoch" or "step"): per
    metric (``test_error``, ``test_loss``, ``train_error``, ``train_loss``) the value of each
    pair and their interval, per ``k``."""

    spawn_at: list[int]
    values: dict[str, list[list[float]]]
    settings: dict[str, Any]
    path: Path
    unit: str = "epoch"

    def interval(self, metric: str = "test_error") -> list[Interval]:
        """The interval over pairs at each spawn point."""
        return [confidence_interval(v) for v in self.values[metric]]

    def to_dict(self) -> dict[str, Any]:
        return {"spawn_at": self.spawn_at, "unit": self.unit, "values": self.values,
                "intervals": {m: [i.to_dict() for i in self.interval(m)] for m in self.values},
                "settings": self.settings}


def instability(out: str | Path, *, spawn_at: Sequence[int] = (0, 1, 2, 5),
                unit: str = "epoch", pairs: int = 3, seed: int = 0, points: int = 11,
                engine: Mapping[str, Any] | None = None, show_progress: bool = True,
                **train_options: Any) -> Stability:
    """Barrier between pairs of children spawned at each ``k`` in ``spawn_at`` (epochs or,
    ``unit="step"``, optimizer steps).

    ``train_options`` go to :func:`landscape.train` (model, dataset, optimizer, lr, epochs or
    steps or target_train_loss: the stopping rule every child is trained to); ``seed`` is the
    parent's (its initialization and its order up to ``k``); children ``2i`` and ``2i + 1``
    of ``pairs`` are a pair (one pair: no interval); ``engine``: :class:`Objective` options
    of the paths (``precision``, ``device``). Runs go to ``out/runs``, paths to
    ``out/paths`` (both resumed when run again), the summary to ``out/stability.json``. Cost:
    ``2 * pairs * len(spawn_at)`` trainings and ``pairs * len(spawn_at)`` paths of ``points``.

    Example:
        >>> import tempfile
        >>> s = instability(tempfile.mkdtemp(), spawn_at=[0], pairs=2, epochs=1,
        ...                 model_options={"widths": [8]}, show_progress=False)
        >>> len(s.values["test_error"][0])
        2
    """
    from landscape.training import train
    from landscape.training.trainer import SPAWN_UNITS

    pairs = check_int("pairs", pairs)
    if unit not in SPAWN_UNITS:
        raise unknown_name("spawn unit", unit, SPAWN_UNITS)
    spawn_at = sorted({check_int(f"spawn {unit}", k, minimum=0) for k in spawn_at})
    if not spawn_at:
        raise LandscapeError(f"give at least one spawn {unit}")
    out = Path(out)
    tag = "k" if unit == "epoch" else "s"   # run and path names: k0002 (epoch), s0100 (step)
    values: dict[str, list[list[float]]] = {}
    for k in spawn_at:
        row: dict[str, list[float]] = {}
        for p in range(pairs):
            children = [train(seed=seed, spawn=(k, 2 * p + c), spawn_unit=unit,
                              out=out / "runs" / f"{tag}{k:04d}_child{2 * p + c}", resume=True,
                              progress=show_progress, **train_options) for c in range(2)]
            if children[0].history[-1][unit] <= k:
                raise LandscapeError(f"spawn {unit} {k} is not before the end of training "
                                     f"({unit} {children[0].history[-1][unit]})")
            result = barrier(children[0].model, children[1].model, data=children[0].data,
                             points=points, out=out / "paths" / f"{tag}{k:04d}_pair{p}.h5",
                             settings={"endpoints": [str(c.path) for c in children]},
                             show_progress=show_progress, **(engine or {}))
            for metric, b in result.barriers.items():
                row.setdefault(metric, []).append(b)
        for metric, v in row.items():
            values.setdefault(metric, []).append(v)
    settings = {"spawn_at": spawn_at, "unit": unit, "pairs": pairs, "seed": seed,
                "points": points, "train": store.jsonable(train_options)}
    result = Stability(spawn_at, values, settings, out / FILE, unit)
    store.atomic_write(out / FILE, json.dumps(result.to_dict(), indent=1).encode())
    return result


def load_stability(path: str | Path) -> Stability:
    """Read ``stability.json`` (or the directory holding it) written by :func:`instability`."""
    path = Path(path)
    file = path / FILE if path.is_dir() else path
    try:
        raw = json.loads(file.read_text())
        at = raw["spawn_at"] if "spawn_at" in raw else raw["spawn_epochs"]  # older files
        return Stability([int(k) for k in at],
                         {m: [[float(x) for x in v] for v in rows]
                          for m, rows in raw["values"].items()}, dict(raw["settings"]), file,
                         str(raw.get("unit", "epoch")))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise LandscapeError(f"{file}: not a stability result ({type(err).__name__})") from None


def study_column(metric: str, k: int) -> str:
    """The study's quantity name of the ``metric`` barrier between children spawned at step
    ``k`` (:data:`STUDY_BARRIERS`)."""
    return f"instability_{metric}_step{k}"


def column_header(name: str) -> tuple[str, str] | None:
    """``(table header, number format)`` of a :func:`study_column` name; None for others."""
    found = _COLUMN.match(name)
    if found is None:
        return None
    header, spec = {m: (h, f) for m, h, f in STUDY_BARRIERS}[found[1]]
    return f"{header} (step {found[2]})", spec


def per_parent(result: Stability) -> dict[str, float]:
    """The study's numbers of one parent: each :data:`STUDY_BARRIERS` metric at each spawn
    step, the mean over its pairs of children, under its :func:`study_column` name."""
    return {study_column(m, k): sum(v) / len(v) for m, _, _ in STUDY_BARRIERS
            for k, v in zip(result.spawn_at, result.values[m], strict=True)}
