"""The comparison study: train recipes over several seeds under one matching rule, measure
every minimum the same way, and report each measure with a confidence interval
(``landscape compare``, ``landscape demo``).

A fair comparison of minima controls what confounds it. Every measure of sharpness tracks
the training loss (for cross-entropy the Hessian shrinks as the softmax saturates), so a
study can stop every recipe at the same full-train-split loss (``match="train-loss=L"``, held
at two consecutive checks a quarter epoch apart, so that an oscillating loss is not stopped on
a downward swing) or
after the same number of optimizer steps (``match="steps=N"``), and it records, for every
model, the rule it met, its training loss and its steps. Each recipe is trained with several
seeds; every number is reported with a 95% interval over training seeds (:mod:`landscape.stats`:
the geometric mean on the log scale for positive quantities), and every verdict is a stated
test with Holm's correction (:mod:`landscape.findings`: the trend of each measure against
lr/B first, then pairs of recipes). A ``sweep`` trains the grid of learning rates and batch
sizes that the literature says governs sharpness through their ratio (Jastrzebski et al.
2017, "Three factors influencing minima in SGD"; Smith & Le 2018; Smith et al. 2021).

For every model (recipe x seed): 1D filter-normalized curves (train and test; Li et al. 2018)
along ``direction_seeds`` random directions, the same directions for every model; a 2D
filter-normalized surface (train); and the measures of :mod:`landscape.analysis.measures`.
For every pair of recipes, the interpolation between their first-seed solutions. ``OUT``::

    runs/NAME/seedK/            the training runs (``landscape.train``)
    surfaces/*.h5               curves, surfaces and interpolations (resumable)
    stability/NAME/seedK/       children spawned from each run (``stability_steps`` only)
    study.h5                    kind "study": everything, self-contained for plotting
    comparison.pdf / .png       the comparison figure (:func:`landscape.plot.save_comparison`,
                                drawn by ``landscape compare`` and ``landscape demo``)
    table.md / table.json       per recipe: seeds, rule met, training loss, steps, accuracies
                                and every measure as mean and interval; the differences
    findings.json / .md         the tests (trends, ratio tests, pairs) and their sentences

Re-running resumes: a finished run is not retrained (a recipe whose options changed is
retrained alone), surface files continue where they stopped, and each measure is kept under
a key of its settings and a digest of the model's weights, so adding a seed or a recipe, or
changing one setting, computes only what is new.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import json
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from landscape import gridfile, store
from landscape.analysis.measures import (
    REGISTRY,
    MeasureSettings,
    compute_measures,
    measure_settings,
    names_of,
)
from landscape.connect.stability import STUDY_BARRIERS, column_header, study_column
from landscape.errors import LandscapeError, SettingsMismatch, check_int, unknown_name
from landscape.findings import COUNTED, analyse, render
from landscape.hashing import settings_hash, sha256_hex
from landscape.progress import progress
from landscape.sources import ACCURACY_UNIT
from landscape.stats import LEVEL, confidence_interval, is_positive, proportion_interval

STUDY_FORMAT = 2
#: Options of :func:`landscape.train` a recipe may not set (the study manages them).
RESERVED = ("out", "resume", "overwrite", "progress", "seed", "data_seed", "target_train_loss",
            "steps", "keep_checks")
#: Keys of a study's design (beside :class:`StudySettings`) in a TOML file.
DESIGN_KEYS = ("data", "data_dir", "data_seed", "model", "model_options", "train_size", "seeds",
               "match", "sweep")
#: The measures of every model, in table order (``curve_rise`` comes from the 1D curves).
STUDY_MEASURES = ("top_eigenvalue", "hessian_trace", "epsilon_sharpness", "adaptive_worst_l2",
                  "adaptive_average_l2", "pac_bayes_flatness", "noise_scale")
#: Per-model outcomes reported beside the measures: (key, Markdown header, format).
OUTCOMES: tuple[tuple[str, str, str], ...] = (
    ("train_loss", "train loss", ".3g"),
    ("steps", "steps", ".0f"),
    ("train_acc", "train acc.", ".1%"),
    ("test_acc", "test acc.", ".1%"),
    ("generalization_gap", "acc. gap", ".2%"),
    ("test_loss", "test loss", ".3g"),
)
#: Outcomes that are accuracies (or their difference), stored in ``ACCURACY_UNIT``.
ACCURACY_COLUMNS = ("train_acc", "test_acc", "generalization_gap")
#: Short names of swept options in recipe names (``sgd-lr0.1-bs32``).
SWEEP_TAGS = {"lr": "lr", "batch_size": "bs", "momentum": "m", "weight_decay": "wd"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")

#: The demo: plain SGD over a 2 x 2 grid of learning rate and batch size (three ratios lr/B,
#: one of them reached twice), every run stopped at the same training loss, three seeds.
DEMO = {"recipes": {"sgd": {"optimizer": "sgd"}},
        "sweep": {"lr": [0.025, 0.2], "batch_size": [32, 256]},
        "match": "train-loss=0.02", "seeds": [0, 1, 2]}


# ------------------------------------------------------------------------------ recipes
@dataclass
class Recipe:
    """A named set of :func:`landscape.train` options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


def train_options() -> list[str]:
    """The :func:`landscape.train` arguments a recipe may set."""
    from landscape.training import train

    return [p for p in inspect.signature(train).parameters if p not in RESERVED]


def check_name(name: str, what: str = "recipe") -> str:
    """A model name usable as a file and HDF5 group name, or a one-line error."""
    if not _NAME_RE.match(name or ""):
        raise LandscapeError(f"{what} name {name!r} must start with a letter or digit and hold "
                             "only letters, digits and . _ + -")
    return name


def check_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` if every key is a :func:`landscape.train` argument, else a one-line error."""
    known = train_options()
    for key in options:
        if key in RESERVED:
            raise LandscapeError(f"recipe {name!r}: option {key!r} is set by the study itself")
        if key not in known:
            err = unknown_name("recipe option", key, known)
            raise LandscapeError(f"recipe {name!r}: {err}")
    return dict(options)


def parse_value(text: str) -> Any:
    """``"32"`` -> 32, ``"0.1"`` -> 0.1, ``"true"`` -> True, ``"none"`` -> None,
    ``"[64,64]"`` -> [64, 64]; anything else stays a string."""
    text = text.strip()
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets and quotes."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p for p in (s.strip() for s in parts) if p]


def parse_options(text: str, what: str = "options") -> dict[str, Any]:
    """``"batch_size=32,lr=0.1,optimizer=sgd"`` -> a dict (values by :func:`parse_value`)."""
    out: dict[str, Any] = {}
    for item in _split_top_level(text):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LandscapeError(f"{what}: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(value)
    return out


def parse_recipe(text: str) -> Recipe:
    """``"NAME=batch_size=32,lr=0.1"`` -> ``Recipe("NAME", {...})``; options are checked."""
    name, sep, rest = text.partition("=")
    if not sep:
        raise LandscapeError(f"a recipe is NAME=OPTIONS (e.g. sb=batch_size=16,lr=0.1), "
                             f"got {text!r}")
    name = check_name(name.strip())
    return Recipe(name, check_options(name, parse_options(rest, f"recipe {name!r}")))


def read_recipes(path: str | Path) -> tuple[list[Recipe], dict[str, Any]]:
    """Recipes from a TOML file: ``[recipes.NAME]`` tables of :func:`landscape.train` options,
    and/or top-level study settings (``data``, ``model``, ``model_options``,
    ``train_size``, ``curve``, ``surface``, ``interpolation``, ``seed``, ...).

    Returns ``(recipes, settings)``. Python 3.11+ reads TOML with ``tomllib``; 3.10 needs the
    ``tomli`` package.
    """
    path = Path(path)
    try:
        import tomllib  # type: ignore[import-not-found]
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[import-not-found,no-redef]
        except ModuleNotFoundError:
            raise LandscapeError("reading a TOML recipe file on Python 3.10 needs the 'tomli' "
                                 "package (pip install tomli), or pass --recipe options"
                                 ) from None
    if not path.is_file():
        raise LandscapeError(f"{path}: no such recipe file")
    try:
        doc = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise LandscapeError(f"{path}: not valid TOML: {err}") from None
    tables = doc.pop("recipes", {})
    if not isinstance(tables, dict) or not (tables or doc):
        raise LandscapeError(f"{path}: no [recipes.NAME] tables and no study settings")
    recipes = []
    for name, options in tables.items():
        check_name(name)
        if not isinstance(options, dict):
            raise LandscapeError(f"{path}: recipes.{name} must be a table of options")
        recipes.append(Recipe(name, check_options(name, options)))
    known = {f.name for f in fields(StudySettings)} | set(DESIGN_KEYS)
    for key in doc:
        if key not in known:
            raise LandscapeError(f"{path}: {unknown_name('study setting', key, known)}")
    from landscape.trust import check_recorded, is_code_spec

    keys = ("model", "data", "dataset", "loss", "forward_loss")
    for kind, spec in [*((k, doc.get(k)) for k in keys),
                       *((k, r.options.get(k)) for r in recipes for k in keys)]:
        if isinstance(spec, str) and is_code_spec(spec):  # a file's code runs only if trusted
            check_recorded(spec, None, source=path, hashed=False,
                           kind={"model": "model", "data": "data",
                                 "dataset": "data"}.get(kind, "loss"))
    return recipes, doc


# ------------------------------------------------------------------------------ the design
def parse_seeds(seeds: str | int | Sequence[int]) -> list[int]:
    """``"0,1,2"``, ``3`` (seeds 0, 1, 2) or a list -> distinct non-negative seeds."""
    if isinstance(seeds, str):
        try:
            seeds = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise LandscapeError(f"seeds are comma-separated integers, got {seeds!r}") from None
    elif isinstance(seeds, int | np.integer) and not isinstance(seeds, bool):
        seeds = list(range(check_int("number of seeds", seeds)))
    out = [check_int("seed", s, minimum=0) for s in seeds]
    if not out or len(set(out)) != len(out):
        raise LandscapeError(f"seeds must be distinct and at least one, got {out}")
    return out


def parse_match(match: str | None) -> dict[str, Any]:
    """The matching rule as :func:`landscape.train` options: ``"train-loss=0.02"`` ->
    ``{"target_train_loss": 0.02}``, ``"steps=4500"`` -> ``{"steps": 4500}``, None -> {}."""
    if match is None or str(match).strip().lower() in ("", "none"):
        return {}
    key, sep, value = str(match).partition("=")
    key = key.strip().replace("_", "-")
    try:
        if sep and key == "train-loss":
            target = float(value)
            if not np.isfinite(target) or target <= 0:
                raise ValueError
            return {"target_train_loss": target}
        if sep and key == "steps":
            return {"steps": check_int("--match steps", int(value))}
    except ValueError:
        pass
    raise LandscapeError(f"a matching rule is train-loss=L (L > 0) or steps=N, got {match!r}")


def parse_sweep(items: Sequence[str] | Mapping[str, Sequence[Any]] | None,
                ) -> dict[str, list[Any]]:
    """``["lr=0.025,0.2", "batch_size=32,256"]`` (or a mapping) -> ``{option: values}``;
    each option must be a :func:`landscape.train` argument a recipe may set."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        pairs = [(k, list(v) if isinstance(v, list | tuple) else [v]) for k, v in items.items()]
    else:
        pairs = []
        for item in items:
            key, sep, values = item.partition("=")
            if not sep or not values.strip():
                raise LandscapeError(f"a sweep is OPTION=V1,V2,..., got {item!r}")
            pairs.append((key.strip(), [parse_value(v) for v in _split_top_level(values)]))
    out: dict[str, list[Any]] = {}
    for key, values in pairs:
        check_options("sweep", {key: None})
        if key in out or not values:
            raise LandscapeError(f"sweep option {key!r} is given twice or without values")
        out[key] = values
    return out


def expand_sweep(recipes: Sequence[Recipe], sweep: Mapping[str, Sequence[Any]]) -> list[Recipe]:
    """Each recipe crossed with the sweep grid, named ``NAME-lr0.1-bs32`` (without recipes:
    ``lr0.1-bs32``); the swept values win over the recipe's own."""
    if not sweep:
        return list(recipes)
    out = []
    for base in recipes or [Recipe("", {})]:
        for combo in itertools.product(*sweep.values()):
            opts = dict(zip(sweep, combo))
            tag = "-".join(f"{SWEEP_TAGS.get(k, k)}{v:g}" if isinstance(v, float) else
                           f"{SWEEP_TAGS.get(k, k)}{v}" for k, v in opts.items())
            name = check_name(f"{base.name}-{tag}" if base.name else tag)
            out.append(Recipe(name, check_options(name, {**base.options, **opts})))
    return out


# ------------------------------------------------------------------------------ settings
@dataclass
class StudySettings(MeasureSettings):
    """How each model is measured (the same for every model of a study), beside the
    measure settings of :class:`~landscape.analysis.measures.MeasureSettings`.

    Grids are ``MIN:MAX:NUM`` ranges. ``seed`` is the first direction seed and seeds every
    Monte Carlo measure; the 1D curves use directions ``seed, seed + 1, ...``
    (``direction_seeds`` of them), the 2D surface direction seed ``seed``. ``rise_at``:
    where the 1D rise is read (filter-normalized units, both sides averaged).
    ``measures``: registry names. ``max_epochs``: the epoch cap of a ``train-loss`` match for
    a recipe that sets no ``epochs`` of its own.

    ``checkpoints``: every measure (and the 1D rise) is taken at this many consecutive
    checkpoints ending with the stop, and a run's value is their arithmetic mean, so that a
    rule that stops on one phase of an oscillation (the edge of stability) does not decide a
    measure. Under a ``train-loss`` match they are the weights at the last target checks
    (``keep_checks`` of :func:`landscape.train`: a quarter epoch apart by default; the last
    two are both <= the target, that is the rule); otherwise the stop and the saved epochs
    before it (epoch 0 excluded). The within-run spread (max / min over the checkpoints) is
    reported beside each measure and flagged in the findings where it is as large as a
    claimed difference. The 1D rise at a checkpoint before the stop is read from a
    three-point curve ``-rise_at, 0, rise_at`` along the same direction seeds (the same
    numbers as the full curve's at those points). 1: the stop alone.

    ``workers``: on a CPU, the runs are trained, and their measures at the stop and at the
    checkpoints taken, in this many processes at once (a tiny model runs on one thread, so
    a second core is otherwise idle); the numbers are the same bit for bit, every model's
    curves, surface and measures being computed with the intra-op threads its training used
    (run.json's ``threads``: one for a tiny model such as the digits MLP, whose measures took
    4x the CPU time and 2x the wall time on two threads of a shared 2-core machine).

    ``stability_steps`` (default none: off): optimizer steps ``k`` at which each trained
    seed's run is the parent of ``stability_pairs`` pairs of children (Frankle et al.'s
    instability analysis, :mod:`landscape.connect.stability`: same seed, the parent's first
    ``k`` steps bit for bit, then each child's own minibatch order, trained to the study's
    matching rule); the test-error and train-loss barriers of the straight path between
    children (``stability_points`` points) are reported per seed (the mean over its pairs)
    beside the measures, and tested like them. Cost per seed and ``k``: ``2 *
    stability_pairs`` trainings and as many paths.
    """

    curve: str = "-1:1:41"
    surface: str = "-1:1:21"
    interpolation: str = "-0.5:1.5:41"
    direction_seeds: int = 3
    rise_at: float = 0.5
    measures: tuple[str, ...] = STUDY_MEASURES
    max_epochs: int = 1000
    checkpoints: int = 3
    workers: int = 1
    stability_steps: tuple[int, ...] = ()
    stability_pairs: int = 1
    stability_points: int = 11
    precision: str = "float32"
    device: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("direction_seeds", self.direction_seeds)
        check_int("max_epochs", self.max_epochs)
        if not self.rise_at > 0:
            raise LandscapeError(f"rise_at must be positive, got {self.rise_at}")
        if isinstance(self.measures, str):
            self.measures = tuple(m.strip() for m in self.measures.split(",") if m.strip())
        self.measures = tuple(self.measures)
        check_int("checkpoints", self.checkpoints)
        check_int("workers", self.workers)
        known = names_of(("curvature", "sharpness", "noise"))
        for m in self.measures:
            if m not in known:
                raise unknown_name("study measure", m, known)
        steps = self.stability_steps
        if isinstance(steps, str):
            try:
                steps = [int(k) for k in steps.split(",") if k.strip()]
            except ValueError:
                raise LandscapeError("stability_steps are comma-separated step counts, got "
                                     f"{steps!r}") from None
        self.stability_steps = tuple(sorted({check_int("stability step", k, minimum=0)
                                             for k in steps}))
        check_int("stability_pairs", self.stability_pairs)
        check_int("stability_points", self.stability_points, minimum=2)

    def engine(self) -> dict[str, Any]:
        return {"precision": self.precision, "device": self.device}

    def quantities(self) -> list[str]:
        """The per-model numbers reported with intervals, in table order."""
        return [k for k, _, _ in OUTCOMES] + list(self.measures) + ["curve_rise"] \
            + self.stability_columns()

    def stability_columns(self) -> list[str]:
        """The barriers between spawned children, per metric and spawn step."""
        return [study_column(m, k) for m, _, _ in STUDY_BARRIERS for k in self.stability_steps]


# ------------------------------------------------------------------------------ results
@dataclass
class ModelResult:
    """One training seed of one recipe: its run, how it stopped, its curves (one per
    direction seed), its 2D surface, its measures and its per-seed ``row`` of numbers."""

    name: str
    seed: int
    run: str
    stopping: dict[str, Any]
    curves: list[Any]
    surface: Any
    measures: dict[str, dict[str, Any]]
    row: dict[str, Any]


@dataclass
class Study:
    """A comparison study as stored in ``study.h5`` (see the module docstring).

    ``names``: the recipes; ``table``: one row per recipe (:func:`format_table`); ``models``:
    per recipe the :class:`ModelResult` of each seed; ``interpolations``: ``{(a, b): curve}``
    between first-seed solutions; ``design``: seeds, match rule, sweep; ``computed``: what
    this call had to compute.
    """

    path: Path
    names: list[str]
    table: list[dict[str, Any]]
    models: dict[str, list[ModelResult]]
    interpolations: dict[tuple[str, str], Any]
    settings: dict[str, Any] = field(default_factory=dict)
    design: dict[str, Any] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    computed: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    findings: dict[str, Any] = field(default_factory=dict)


def _cell(stat: Mapping[str, Any] | None, spec: str) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    text = format(float(stat["mean"]), spec)
    if stat.get("ci_low") is not None:
        text += f" [{format(float(stat['ci_low']), spec)}, {format(float(stat['ci_high']), spec)}]"
    return text


def _match_cell(row: Mapping[str, Any]) -> str:
    met = row.get("met", [])
    rule = row.get("match") or "epochs"
    if all(met):
        return f"{rule} ({len(met)}/{len(met)} met)"
    return f"{rule} (**{sum(met)}/{len(met)} met: target NOT reached**)"


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The study table as Markdown: one row per recipe, every number as ``mean [low, high]``
    (the 95% interval over training seeds), then for each quantity the pairs of recipes that
    differ under the Holm-corrected tests of :mod:`landscape.findings`, and the others by
    verdict."""
    if not rows:
        return ""
    quantities = [q for q in rows[0] if isinstance(rows[0][q], dict) and "mean" in rows[0][q]]
    header = {k: (h, spec) for k, h, spec in OUTCOMES}
    header.update({m: (REGISTRY[m].header, ".4g") for m in REGISTRY})
    header.update({q: h for q in quantities if (h := column_header(q))})
    cols = [q for q in quantities if q in header]
    lines = ["| recipe | seeds | match | " + " | ".join(header[q][0] for q in cols) + " |",
             "|---|---|---|" + "---:|" * len(cols)]
    for r in rows:
        seeds = ",".join(str(s) for s in r.get("seeds", []))
        cells = [_cell(r.get(q), header[q][1]) for q in cols]
        lines.append(f"| {r['model']} | {seeds} | {_match_cell(r)} | " + " | ".join(cells) + " |")
    level = f"{100 * LEVEL:g}%"
    lines += ["", f"Mean [{level} interval] over training seeds: the geometric mean and its "
              "log-scale interval for positive quantities, the pooled accuracy and its exact "
              "binomial interval for accuracies. Differences (Welch tests, on logs for "
              "positive quantities; accuracies by Fisher's exact test on counts; Holm-adjusted "
              "p < 0.05 within each quantity's pairs; findings.md has the effects):", ""]
    for q in cols:
        verdicts: dict[str, list[str]] = {}
        for i, a in enumerate(rows):
            for b in rows[i + 1:]:
                v = a.get("differences", {}).get(q, {}).get(b["model"])
                if v in (">", "<"):
                    verdicts.setdefault("", []).append(f"{a['model']} {v} {b['model']}")
                elif v is not None:
                    verdicts.setdefault(f"{v}: ", []).append(f"{a['model']} vs {b['model']}")
        text = "; ".join(k + ", ".join(v) for k, v in sorted(verdicts.items()))
        lines.append(f"- {header[q][0]}: {text or 'one recipe only'}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ storage
def _digest(obj: Any) -> str:
    return settings_hash(obj, 16)


_SKIP_ATTRS = ("settings_hash", "format", "format_version", "created")


def _write_surface(group: h5py.Group, surface: Any, key: str,
                   attrs: Mapping[str, Any] | None = None) -> None:
    """Copy a surface's coordinates, values, mask and attributes into ``group``."""
    for name in list(group):
        del group[name]
    arrays = {"x": surface.x, "done": surface.done,
              **{k: v for k, v in surface.values.items() if k not in ("x", "y")}}
    if surface.y is not None:
        arrays["y"] = surface.y
    arrays.update({k.replace("/", "_"): v for k, v in surface.extras.items()})
    store.write_arrays(group, arrays)
    for k in list(group.attrs):
        del group.attrs[k]
    store.write_attrs(group, {**{k: v for k, v in surface.attrs.items()
                                 if k not in _SKIP_ATTRS}, **(attrs or {}),
                              "key": key, "source": str(surface.path)})


def _read_surface(group: h5py.Group, where: str) -> Any:
    from landscape.surface import Surface

    attrs = store.read_attrs(group)
    done = group["done"][()].astype(bool)
    values = {k: group[k][()] for k in group
              if k not in ("x", "y", "done") and group[k].shape == done.shape}
    extras = {k.replace("path_", "path/", 1): group[k][()] for k in group
              if k.startswith("path_")}
    return Surface(Path(where), group["x"][()], group["y"][()] if "y" in group else None,
                   values, done, attrs, extras)


def _read_model(group: h5py.Group, name: str, seed: int, where: str) -> ModelResult:
    attrs = store.read_attrs(group)
    curves = [_read_surface(group[k], f"{where}/{k}")
              for k in sorted((k for k in group if k.startswith("curve_d")),
                              key=lambda k: int(k[7:]))]
    measures = {}
    for m in group.get("measures", {}):
        a = store.read_attrs(group["measures"][m])
        measures[m] = {"value": float(group["measures"][m][()]), "stderr": a.get("stderr"),
                       "cost": a.get("cost", {}), "extra": a.get("extra", {})}
    surface = _read_surface(group["surface"], f"{where}/surface") if "surface" in group else None
    return ModelResult(name, seed, attrs.get("run", ""), attrs.get("stopping", {}), curves,
                       surface, measures, attrs.get("row", {}))


def _validate_study_grid(group: h5py.Group, path: Path) -> None:
    """A grid as :func:`_write_surface` copies it: coordinates, done mask, numeric arrays."""
    gridfile.check_grid(group, path)
    for name in group:
        store.dataset(group, name, path, dtype="fbiu")


def validate_study(f: h5py.File, path: Path, attrs: Mapping[str, Any]) -> None:
    """The validator of a ``study`` file (:data:`landscape.store.Validator`): the table a JSON
    list of rows, ``models/<name>/seed<N>`` groups holding grids and scalar measures, the
    interpolations grids with their pair of endpoints; a study killed midway holds a part."""
    store.names(attrs, "names", path, [])
    table = attrs.get("table", "[]")
    try:
        rows = json.loads(table) if isinstance(table, str) else table
    except ValueError:
        rows = None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise store.damaged(path, "attribute 'table' is not a JSON list of rows")
    for name in ("design", "study_settings"):
        store.check_mapping(attrs, name, path)
    models = store.subgroup(f, "models", path) if "models" in f else {}
    for name in models:
        model = store.subgroup(models, name, path)
        for seed in model:
            group = store.subgroup(model, seed, path)
            if not re.fullmatch(r"seed\d+", seed):
                raise store.damaged(path, f"'{group.name}' is not a seed<N> group")
            for key in group:
                if key == "surface" or re.fullmatch(r"curve_d\d+", key):
                    _validate_study_grid(store.subgroup(group, key, path), path)
                elif key == "measures":
                    measures = store.subgroup(group, key, path)
                    for m in measures:
                        store.dataset(measures, m, path, shape=())
    interpolations = store.subgroup(f, "interpolations", path) if "interpolations" in f else {}
    for label in interpolations:
        group = store.subgroup(interpolations, label, path)
        _validate_study_grid(group, path)
        ends = store.read_attrs(group).get("endpoints")
        if not isinstance(ends, list) or len(ends) != 2:
            raise store.damaged(path, f"'{group.name}' has no pair of 'endpoints'")


def load_study(path: str | Path) -> Study:
    """Read a ``study.h5`` file (or the study directory holding one) back."""
    path = Path(path)
    if path.is_dir():
        path = path / "study.h5"
    with store.open_result(path, kind="study", validate=validate_study) as f:
        attrs = store.read_attrs(f)
        if attrs.get("study_format") != STUDY_FORMAT:
            raise LandscapeError(f"{path}: a study file of format {attrs.get('study_format')}"
                                 f"; this version reads format {STUDY_FORMAT} (re-run it)")
        names, design = list(attrs.get("names", [])), dict(attrs.get("design", {}))
        if not names or "table" not in attrs:
            raise LandscapeError(f"{path}: the study is not finished; re-run it to complete it")
        models: dict[str, list[ModelResult]] = {}
        for name in names:
            group = f.get(f"models/{name}")
            if group is None:
                raise LandscapeError(f"{path}: model {name!r} is missing; re-run the study")
            seeds = sorted(int(k[4:]) for k in group if k.startswith("seed"))
            models[name] = [_read_model(group[f"seed{k}"], name, k,
                                        f"{path}:models/{name}/seed{k}") for k in seeds]
        interps = {}
        for label in f.get("interpolations", {}):
            g = f["interpolations"][label]
            a, b = store.read_attrs(g)["endpoints"]
            interps[(a, b)] = _read_surface(g, f"{path}:interpolations/{label}")
        table, findings = (json.loads(a) if isinstance(a, str) else a
                           for a in (attrs["table"], attrs.get("findings", "{}")))
        return Study(path, names, list(table), models, interps,
                     settings=attrs.get("study_settings", {}), design=design,
                     findings=findings)


# ------------------------------------------------------------------------------ the study
class _Log:
    """Progress lines on stderr, stamped with the seconds since the study started."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet or os.environ.get("LANDSCAPE_QUIET", "") == "1"
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(f"[study {time.perf_counter() - self.t0:6.1f} s] {msg}", file=sys.stderr,
                  flush=True)


def _match_options(match: Mapping[str, Any], recipe: Recipe, max_epochs: int,
                   checkpoints: int) -> dict[str, Any]:
    """The :func:`landscape.train` options that apply the matching rule to ``recipe`` (and
    keep the weights at the last ``checkpoints`` checks of a target loss)."""
    if "steps" in match:
        return {"steps": match["steps"], "epochs": None}
    if "target_train_loss" in match:
        return {"target_train_loss": match["target_train_loss"],
                "epochs": recipe.options.get("epochs") or max_epochs,
                **({"keep_checks": checkpoints} if checkpoints > 1 else {})}
    return {}


def _per_seed_row(run: Any, curves: Sequence[Any], measures: Mapping[str, Mapping[str, Any]],
                  rise_at: float, before: Mapping[str, Sequence[float]],
                  steps: Sequence[int]) -> dict[str, Any]:
    """The numbers of one model: losses and accuracies at the trained weights (the curves'
    centre, evaluated by the engine), steps and epochs, and every measure and the 1D rise
    (averaged over the direction seeds) as the mean over the checkpoints: ``before`` (each
    one's values at the checkpoints of optimizer ``steps`` before the stop) and the stop.
    ``at_checkpoints[m]`` holds the series, oldest first, ``spread[m]`` its max / min (None
    unless it has two or more finite values, all positive)."""
    center = curves[0].attrs
    row: dict[str, Any] = {}
    for split in ("train", "test"):
        loss, acc = center.get(f"center_{split}_loss"), center.get(f"center_{split}_acc")
        row[f"{split}_loss"] = None if loss is None else float(loss)
        row[f"{split}_acc"] = None if acc is None else float(acc)   # ACCURACY_UNIT
    row["generalization_gap"] = (None if None in (row["train_acc"], row["test_acc"])
                                 else row["train_acc"] - row["test_acc"])
    sizes = center.get("settings", {})
    row.update(train_n=sizes.get("train.n"), test_n=sizes.get("test.n"))  # examples per split
    stopping = run.stopping
    row.update(steps=stopping["steps"], epochs=stopping["epochs"], met=bool(stopping["met"]))
    rises = [c.rise("train_loss", rise_at) for c in curves]
    row["curve_rises"] = rises
    at_stop = {**{m: res["value"] for m, res in measures.items()},
               "curve_rise": float(np.mean(rises))}
    row["checkpoint_steps"] = [*steps, stopping["steps"]]
    row["at_checkpoints"], row["spread"] = {}, {}
    for m, value in at_stop.items():
        series = [float(v) for v in (*before.get(m, ()), value)]
        row["at_checkpoints"][m] = [v if np.isfinite(v) else None for v in series]
        row[m] = float(np.mean(series))
        ok = [v for v in series if np.isfinite(v)]
        row["spread"][m] = max(ok) / min(ok) if len(ok) > 1 and min(ok) > 0 else None
    return {k: None if isinstance(v, float) and not np.isfinite(v) else v  # JSON: null
            for k, v in row.items()}


def _interval(q: str, results: Sequence[ModelResult], log: bool) -> dict[str, Any]:
    """A quantity's summary over seeds: an accuracy with example counts as the pooled
    proportion and its exact binomial interval; a positive quantity (``log``) as the geometric
    mean with its log-scale interval; else the mean with its Student-t interval."""
    values = [r.row.get(q) for r in results]
    if q not in COUNTED:
        return {**confidence_interval(values, log=log).to_dict(), "values": values}
    examples = [r.row.get(f"{q[:-4]}_n") for r in results]
    if values and None not in (*values, *examples):
        ci = proportion_interval(sum(round(v * n) for v, n in zip(values, examples, strict=True)),
                                 sum(examples))
        return {**ci.to_dict(), "values": values, "examples": examples}
    return {**confidence_interval(values).to_dict(), "values": values}


def _recipe_row(recipe: Recipe, common: Mapping[str, Any], match: str | None,
                results: Sequence[ModelResult], quantities: Sequence[str],
                logs: Mapping[str, bool]) -> dict[str, Any]:
    options = {**common, **recipe.options}
    row: dict[str, Any] = {"model": recipe.name, "recipe": options,
                           "seeds": [r.seed for r in results], "match": match,
                           "met": [bool(r.row.get("met")) for r in results]}
    lr, b = options.get("lr"), options.get("batch_size")
    if isinstance(lr, int | float) and isinstance(b, int):
        row.update(lr=lr, batch_size=b, lr_over_b=lr / b)
    for q in quantities:
        row[q] = {**_interval(q, results, logs.get(q, False)),
                  **({"unit": ACCURACY_UNIT} if q in ACCURACY_COLUMNS else {})}
        spreads = [r.row.get("spread", {}).get(q) for r in results]
        if any(v is not None for v in spreads):   # within-run spread, per seed
            row[q]["spread"] = spreads
            row[q]["at_checkpoints"] = [r.row["at_checkpoints"][q] for r in results]
    return row


def _labels(quantities: Sequence[str]) -> dict[str, str]:
    """The table header of each quantity."""
    header = {k: h for k, h, _ in OUTCOMES} | {m: e.header for m, e in REGISTRY.items()}
    header.update({q: h[0] for q in quantities if (h := column_header(q))})
    return {q: header[q] for q in quantities if q in header}


def _complete(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run."""
    from landscape.runs import read_run_json

    try:
        return (run_dir / "run.json").exists() and \
            read_run_json(run_dir).get("status") == "complete"
    except LandscapeError:
        return False


def _train_run(options: Mapping[str, Any], run_dir: Path, overwrite: bool, show_progress: bool
               ) -> tuple[Any, list[str], bool]:
    """:func:`landscape.train` of a study run: resumed (or reused) unless ``overwrite``,
    retrained when its options changed. Returns the run, the warnings' messages and whether
    it was retrained for changed options."""
    from landscape.training import train

    changed = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = None
        if not overwrite:
            try:
                run = train(**options, out=run_dir, resume=True, progress=show_progress)
            except SettingsMismatch:
                changed = True
        if run is None:
            run = train(**options, out=run_dir, overwrite=True, progress=show_progress)
    return run, [str(w.message) for w in caught], changed


def _plain(res: Any) -> dict[str, Any]:
    """A :class:`MeasureResult` as the study keeps it (the extras that are scalars)."""
    return {"value": float(res.value), "stderr": res.stderr, "cost": res.cost,
            "extra": {k: v for k, v in res.extra.items()
                      if isinstance(v, int | float | bool | str)}}


def _weights_digest(model: Any) -> str:
    """The digest of a model's parameters and buffers that keys every part of a study."""
    state = [*model.named_parameters(), *model.named_buffers()]
    return store.values_digest([t for _, t in state], [n for n, _ in state])


def _measure(run: Any, names: Sequence[str], s: MeasureSettings, engine: Mapping[str, Any],
             on_result: Any) -> None:
    """:func:`compute_measures` of ``run``'s model on its training split, with the intra-op
    threads its training used (run.json's ``threads``: one for a tiny model, where more
    threads only add synchronization), so that every process computes the same numbers."""
    from landscape.objective import Objective
    from landscape.training.trainer import num_threads

    with num_threads(run.info.get("threads")):
        objective = Objective.from_run(run, split="train", **engine)
        compute_measures(objective, list(names), settings=s, show_progress=False,
                         on_result=on_result)


def _measure_job(run_dir: str, file: str | None, names: Sequence[str],
                 settings: Mapping[str, Any], engine: Mapping[str, Any], trust: bool
                 ) -> dict[str, dict[str, Any]]:
    """In a worker process: the measures ``names`` of the run in ``run_dir`` at its stop (or
    at the checkpoint ``file``)."""
    from dataclasses import replace

    from landscape.runs import load_run

    run = load_run(run_dir, trust=trust)
    if file is not None:
        run = replace(run, model=run.load_checkpoint(file))
    out: dict[str, dict[str, Any]] = {}
    _measure(run, names, StudySettings(**settings), engine,
             lambda name, res: out.__setitem__(name, _plain(res)))
    return out


class _Runner:
    """One run of a study: the open ``study.h5``, the settings, what was computed."""

    def __init__(self, f: h5py.File, path: Path, s: StudySettings, common: Mapping[str, Any],
                 match: Mapping[str, Any], overwrite: bool, show_progress: bool, log: _Log,
                 bar: Any) -> None:
        self.f, self.path, self.s, self.common, self.match = f, path, s, common, match
        self.overwrite = self.overwrite_runs = overwrite
        self.pending: set[tuple[str, int]] = set()   # trained by train_ahead, not yet read
        self.pool: Any = None   # worker processes (``workers``), started by workers()
        self.ahead: dict[str, Any] = {}   # weights digest -> measures computed by a worker
        self.show_progress, self.log, self.bar = show_progress, log, bar
        self.engine = s.engine()
        self.surf_dir = path.parent / "surfaces"
        self.computed: dict[str, list[str]] = {"train": [], "curve": [], "surface": [],
                                               "measures": [], "interpolation": [],
                                               "stability": []}

    def options(self, recipe: Recipe, seed: int) -> dict[str, Any]:
        """The :func:`landscape.train` options of ``recipe`` with ``seed``."""
        return {**self.common, **recipe.options,
                **_match_options(self.match, recipe, self.s.max_epochs, self.s.checkpoints),
                "seed": seed}

    def run_options(self, recipe: Recipe, seed: int) -> tuple[dict[str, Any], Path]:
        """:meth:`options` of ``recipe`` with ``seed``, and its folder."""
        return self.options(recipe, seed), self.path.parent / "runs" / recipe.name / f"seed{seed}"

    def workers(self) -> Any:
        """The pool of ``workers`` processes on a CPU (started on first use; None with one
        worker or on a GPU): a tiny model's training and measures run on one thread each, so
        a second core is otherwise idle."""
        import concurrent.futures
        import multiprocessing

        import torch

        workers = min(self.s.workers, os.cpu_count() or 1)
        if self.pool is None and workers > 1 and self.s.device in ("auto", "cpu") and \
                not torch.cuda.is_available():
            self.pool = concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"))
        return self.pool

    def train_ahead(self, jobs: Sequence[tuple[Recipe, int]]) -> None:
        """Train the runs of ``jobs`` not yet complete in the worker processes (each the same
        bit for bit as one trained here); :meth:`train` then finds them complete."""
        todo = [j for j in jobs if self.overwrite or not _complete(self.run_options(*j)[1])]
        if len(todo) < 2 or self.workers() is None:
            return
        self.pending.update((r.name, k) for r, k in todo)
        self.log(f"training {len(todo)} runs in {self.s.workers} processes")
        futures = [self.pool.submit(_train_run, *self.run_options(*j), self.overwrite, False)
                   for j in todo]
        for future in futures:
            future.result()
        self.overwrite_runs = False   # every run is fresh now

    def measure_ahead(self, models: Sequence[tuple[h5py.Group, Any, str]]) -> None:
        """Submit the missing measures of every ``(group, run, digest)`` model, at its stop
        and at its checkpoints, to the worker processes; :meth:`measures` collects them."""
        if self.workers() is None:   # (no pool: nothing is loaded ahead)
            return
        for g, run, digest in models:
            points = [(g, None, digest)]
            for step, file in self.checkpoint_files(run):
                points.append((g.require_group(f"checkpoints/step_{step}"), str(file),
                               _weights_digest(run.load_checkpoint(file))))
            for group, file, at in points:
                s, keys = self.measure_keys(run, at)
                missing = self.missing(group, keys)
                if missing:
                    self.ahead[at] = self.pool.submit(
                        _measure_job, str(run.path), file, missing, asdict(s), self.engine,
                        bool(getattr(run, "trust", False)))

    def train(self, recipe: Recipe, seed: int) -> Any:
        """The run of ``recipe`` with ``seed``: reused when complete, resumed when stopped,
        retrained (alone) when its options changed."""
        options, run_dir = self.run_options(recipe, seed)
        complete = _complete(run_dir) and (recipe.name, seed) not in self.pending
        run, caught, changed = _train_run(options, run_dir, self.overwrite_runs,
                                          self.show_progress)
        if changed:
            self.log(f"{recipe.name} seed {seed}: options changed, retraining")
        for message in caught:   # a run the workers just trained is complete, of course
            if (recipe.name, seed) not in self.pending or "already complete" not in message:
                self.log(f"{recipe.name} seed {seed}: WARNING {message}")
        if not complete:
            self.computed["train"].append(f"{recipe.name}/seed{seed}")
        self.bar.update(1)
        return run

    def stability(self, recipe: Recipe, seed: int) -> dict[str, float]:
        """The barriers between children of ``recipe``'s run with ``seed``, spawned at each
        ``stability_steps`` step (:func:`landscape.connect.stability.per_parent`), kept in
        ``stability/NAME/seedK`` (resumed; redone when the recipe's options changed)."""
        from landscape.connect.stability import instability, per_parent

        s = self.s
        where = self.path.parent / "stability" / recipe.name / f"seed{seed}"
        options = {k: v for k, v in self.options(recipe, seed).items() if k != "seed"}
        kwargs = {"spawn_at": s.stability_steps, "unit": "step", "pairs": s.stability_pairs,
                  "seed": seed, "points": s.stability_points, "engine": self.engine,
                  "show_progress": self.show_progress, **options}
        if self.overwrite:
            shutil.rmtree(where, ignore_errors=True)
        fresh = not (where / "stability.json").exists()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = instability(where, **kwargs)
            except SettingsMismatch:   # the recipe changed: its children are stale
                fresh = True
                shutil.rmtree(where)
                result = instability(where, **kwargs)
        for w in caught:
            if "already complete" not in str(w.message):
                self.log(f"{recipe.name} seed {seed} children: WARNING {w.message}")
        if fresh:
            self.computed["stability"].append(f"{recipe.name}/seed{seed}")
        self.bar.update(len(s.stability_steps))
        return per_parent(result)

    def _stored(self, group: h5py.Group | None, key: str, where: str) -> Any:
        """The stored copy of a finished surface part with this key, else None."""
        if (not self.overwrite and group is not None and group.attrs.get("key") == key
                and bool(group["done"][()].all())):
            return _read_surface(group, where)
        return None

    def surface(self, g: h5py.Group, label: str, run: Any, digest: str, part: str,
                direction: int = 0) -> Any:
        """One 1D curve (train and test), the 2D surface (train) or the three-point curve
        of the 1D rise (``part="rise"``, train) of a model."""
        from landscape.surface import random_surface

        s = self.s
        x, y, split = {"curve": (s.curve, None, "train,test"),
                       "rise": (f"{-s.rise_at:g}:{s.rise_at:g}:3", None, "train"),
                       "surface": (s.surface, s.surface, "train")}[part]
        seed = s.seed + direction
        key = _digest({"part": part, "x": x, "y": y, "seed": seed, "weights": digest,
                       **self.engine})
        sub = "surface" if part == "surface" else f"{part}_d{direction}"
        result = self._stored(g.get(sub), key, f"{self.path}:{g.name}/{sub}")
        if result is None:
            self.log(f"{label}: " + (f"1D {part} (direction seed {seed})" if y is None
                                     else "2D surface"))
            file = self.surf_dir / f"{label.replace('/', '-')}-{sub}.h5"
            result = _owned_file(random_surface, file, self.overwrite or sub in g, run, x=x,
                                 y=y, seed=seed,
                                 split=split, show_progress=self.show_progress, **self.engine)
            _write_surface(g.require_group(sub), result, key)
            self.computed["surface" if part == "surface" else "curve"].append(f"{label}/{sub}")
        self.bar.update(1)
        return result

    def measure_keys(self, run: Any, digest: str) -> tuple[MeasureSettings, dict[str, str]]:
        """The settings of ``run``'s measures (the noise measures take the recipe's own batch
        size and learning rate unless set) and each measure's key at weights ``digest``."""
        s = self.s.replace(noise_batch_size=self.s.noise_batch_size or
                           int(run.config.get("batch_size") or 128),
                           lr=self.s.lr or float(run.config.get("lr") or 0.1))
        return s, {m: _digest({**measure_settings(m, s), **self.engine, "weights": digest})
                   for m in s.measures}

    def missing(self, g: h5py.Group, keys: Mapping[str, str]) -> list[str]:
        """The measures of ``keys`` not kept in ``g["measures"]`` under their key."""
        group = g.get("measures")
        return [m for m, key in keys.items() if self.overwrite or group is None
                or m not in group or group[m].attrs.get("key") != key]

    def measures(self, g: h5py.Group, label: str, run: Any, digest: str
                 ) -> dict[str, dict[str, Any]]:
        """Every measure of the settings, each kept in ``g["measures"]`` under a key of its
        settings (computed here, or collected from a worker process)."""
        s, keys = self.measure_keys(run, digest)
        group = g.require_group("measures")
        missing = self.missing(g, keys)
        results: dict[str, dict[str, Any]] = {}
        for m in keys:
            if m not in missing:
                a = store.read_attrs(group[m])
                results[m] = {"value": float(group[m][()]), "stderr": a.get("stderr"),
                              "cost": a.get("cost", {}), "extra": a.get("extra", {})}
                self.bar.update(1)

        def keep(name: str, res: dict[str, Any]) -> None:
            results[name] = res
            store.write_arrays(group, {name: np.float64(res["value"])}, attrs={name: {
                "key": keys[name], "stderr": res["stderr"], "cost": res["cost"],
                "extra": res["extra"], "settings": measure_settings(name, s)}})
            self.f.flush()
            self.computed["measures"].append(f"{label}/{name}")
            self.bar.update(1)

        if missing:
            self.log(f"{label}: {', '.join(m.replace('_', ' ') for m in missing)}")
            future = self.ahead.pop(digest, None)
            if future is not None:
                done = future.result()
                for m in missing:
                    keep(m, done[m])
            else:
                _measure(run, missing, s, self.engine, lambda n, res: keep(n, _plain(res)))
        return {m: results[m] for m in keys}

    def checkpoint_files(self, run: Any) -> list[tuple[int, Path]]:
        """The ``checkpoints - 1`` checkpoints before the stop, oldest first, as (optimizer
        step, file): the kept target checks, else the saved epochs (epoch 0 excluded)."""
        n = self.s.checkpoints - 1
        if not n:
            return []
        found = [(k, f) for k, f in run.checks() if k < run.stopping["steps"]][-n:]
        if not found:
            at = {h["epoch"]: h["step"] for h in run.history}
            found = [(at[e], f) for e, f in run.checkpoints() if e > 0][:-1][-n:]
        return found

    def around(self, g: h5py.Group, label: str, run: Any
               ) -> tuple[dict[str, list[float]], list[int]]:
        """Every measure and the 1D rise at the ``checkpoints - 1`` checkpoints before the
        stop (see :class:`StudySettings`), oldest first, and their optimizer steps."""
        from dataclasses import replace

        s, n = self.s, self.s.checkpoints - 1
        found = self.checkpoint_files(run)
        self.bar.update((len(s.measures) + s.direction_seeds) * (n - len(found)))
        out: dict[str, list[float]] = {m: [] for m in (*s.measures, "curve_rise")}
        for step, file in found:
            model = run.load_checkpoint(file)
            digest = _weights_digest(model)
            at, where = replace(run, model=model), f"{label}/step{step}"
            group = g.require_group(f"checkpoints/step_{step}")
            for m, res in self.measures(group, where, at, digest).items():
                out[m].append(res["value"])
            out["curve_rise"].append(float(np.mean([
                self.surface(group, where, at, digest, "rise", d).rise("train_loss", s.rise_at)
                for d in range(s.direction_seeds)])))
        return out, [step for step, _ in found]

    def interpolation(self, a: str, b: str, runs: Mapping[str, Any],
                      digests: Mapping[str, str]) -> Any:
        """The line from ``a``'s first-seed model (t=0) to ``b``'s (t=1), train and test;
        None when the two architectures differ."""
        from landscape.surface import interpolate

        label = f"{a}__{b}"
        key = _digest({"part": "interpolation", "x": self.s.interpolation,
                       "weights": [digests[a], digests[b]], **self.engine})
        group = self.f.require_group("interpolations")
        where = f"{self.path}:interpolations/{label}"
        result = self._stored(group.get(label), key, where)
        if result is None:
            if runs[a].model.state_dict().keys() != runs[b].model.state_dict().keys():
                self.log(f"interpolation {a} -> {b} skipped: different architectures")
                self.bar.update(1)
                return None
            self.log(f"interpolation {a} -> {b}")
            computed = _owned_file(interpolate, self.surf_dir / f"interp_{label}.h5",
                                   self.overwrite or label in group, runs[a], runs[b],
                                   x=self.s.interpolation,
                                   split="train,test", show_progress=self.show_progress,
                                   **self.engine)
            _write_surface(group.require_group(label), computed, key, {"endpoints": [a, b]})
            result = _read_surface(group[label], where)
            self.computed["interpolation"].append(label)
        self.bar.update(1)
        return result


def _data_digest(run: Any) -> str:
    """SHA-256 of the run's training split (the user data's digest of both splits)."""
    if run.data.spec.get("user"):
        return run.data.spec["digest"]
    x, y = run.data.split("train")
    return sha256_hex(x.numpy().tobytes() + y.numpy().tobytes())


def _check_same_data(runs: Mapping[str, Any]) -> None:
    """Refuse models trained on different data: the training splits must be identical
    (a digest of their tensors; the seed can change a ``train_size`` subset or a synthetic
    dataset, but not the fixed digits split)."""
    digests = {label: _data_digest(run) for label, run in runs.items()}
    first = next(iter(digests))
    for label, d in digests.items():
        if d != digests[first]:
            spec = getattr(runs[label].data, "spec", {})
            raise LandscapeError(f"model {label!r} was trained on other data ({spec}) than "
                                 f"{first!r}; compare models on one dataset (a train_size "
                                 "subset or a synthetic dataset changes with the seed)")


def run_study(recipes: Sequence[Recipe | str] = (), runs: Mapping[str, str | Path] | None = None,
              *, data: str = "digits", data_dir: str | Path | None = None,
              model: str | None = None, model_options: Mapping[str, Any] | None = None,
              train_size: int | None = None, data_seed: int = 0,
              seeds: str | int | Sequence[int] = (0,),
              match: str | None = None, sweep: Any = None, out: str | Path = "outputs/compare",
              settings: StudySettings | None = None, overwrite: bool = False,
              show_progress: bool = True, quiet: bool = False,
              **setting_overrides: Any) -> Study:
    """Train each recipe with each seed under one matching rule, measure every model, and
    write ``study.h5`` and the tables (see the module docstring); the figure is the plot
    layer's (:func:`landscape.plot.save_comparison`, which ``landscape compare`` calls).

    ``recipes``: :class:`Recipe`\\ s or ``"NAME=OPTIONS"`` strings, trained with
    ``data``/``model``/``model_options``/``train_size`` plus their own options (which win),
    every seed on the same data (a ``train_size`` subset or synthetic data drawn from
    ``data_seed``);
    ``sweep``: ``{option: values}`` (or ``["lr=0.1,0.2", ...]``) crossed with every recipe;
    ``seeds``: training seeds (a list, ``"0,1,2"``, or a count); ``match``:
    ``"train-loss=L"`` (every run stops once its full-train-split loss is <= L at two
    consecutive checks, checked every quarter epoch or every ``target_check_every`` steps of
    the recipe: :func:`landscape.train`'s rule; capped at the recipe's ``epochs`` or
    ``max_epochs``) or ``"steps=N"``; ``runs``:
    ``{name: run directory}`` of models already trained (one seed each, no matching).
    ``settings`` (or keyword overrides of its fields) say how each model is measured;
    ``overwrite`` retrains every recipe and recomputes every part. Cost:
    the training, then per model a few hundred forward passes for the curves and surface and
    a few hundred gradient/HVP passes for the measures.
    """
    from landscape.runs import load_run
    from landscape.training.trainer import num_threads

    t0 = time.perf_counter()
    log = _Log(quiet)
    s = (settings or StudySettings()).replace(**setting_overrides)
    seeds = parse_seeds(seeds)
    match_opts = parse_match(match)
    recipes = [parse_recipe(r) if isinstance(r, str) else
               Recipe(check_name(r.name), check_options(r.name, r.options)) for r in recipes]
    recipes = expand_sweep(recipes, parse_sweep(sweep))
    for rec in recipes if s.stability_steps else ():
        if {"spawn", "spawn_unit"} & set(rec.options):
            raise LandscapeError(f"recipe {rec.name!r} sets spawn: stability_steps spawns the "
                                 "children itself")
    run_dirs = {check_name(k, "run"): Path(v) for k, v in (runs or {}).items()}
    names = [r.name for r in recipes] + list(run_dirs)
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise LandscapeError(f"model name {sorted(dup)[0]!r} is given twice")
    if len(names) < 2:
        raise LandscapeError(f"a comparison needs at least two models, got {len(names)} "
                             "(give --recipe NAME=OPTIONS, --sweep or --run NAME=DIR)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    common = {k: v for k, v in {"dataset": data, "data_dir": data_dir, "train_size": train_size,
                                "data_seed": data_seed, "model": model,
                                "model_options": None if model_options is None
                                else dict(model_options)}.items() if v is not None}
    design = {"seeds": seeds, "match": match, "sweep": parse_sweep(sweep),
              "recipes": {r.name: {**common, **r.options} for r in recipes},
              "runs": {k: str(v) for k, v in run_dirs.items()}, "level": LEVEL}
    n_models = len(recipes) * len(seeds) + len(run_dirs)
    parts = n_models * (s.direction_seeds + 1 + len(s.measures) + len(s.stability_steps)
                        + (s.checkpoints - 1) * (len(s.measures) + s.direction_seeds)) \
        + len(names) * (len(names) - 1) // 2   # measuring parts: curves, surface, measures...
    disable = None if show_progress else True  # one bar per phase: each its own rate and ETA
    bar = progress(total=n_models, desc="study: training", unit="run", disable=disable)
    path = out / "study.h5"
    quantities = s.quantities()
    results: dict[str, list[ModelResult]] = {}
    first_runs: dict[str, Any] = {}
    r: _Runner | None = None
    try:
        with store.create(path, "study", {"study_format": STUDY_FORMAT},
                          validate=validate_study) as f:
            if f.attrs.get("study_format", STUDY_FORMAT) != STUDY_FORMAT:
                raise LandscapeError(f"{path}: an older study file; use another --out")
            store.write_attrs(f, {"study_format": STUDY_FORMAT, "study_settings": asdict(s),
                                  "names": names, "design": design})
            for key in ("table", "findings"):
                if key in f.attrs:
                    del f.attrs[key]
            r = _Runner(f, path, s, common, match_opts, overwrite, show_progress, log, bar)
            trained: dict[tuple[str, int], Any] = {}
            by_name = {rec.name: rec for rec in recipes}
            r.train_ahead([(recipe, seed) for recipe in recipes for seed in seeds])
            for recipe in recipes:
                log(f"{recipe.name}: training seeds {','.join(map(str, seeds))} "
                    f"({', '.join(f'{k}={v}' for k, v in recipe.options.items())})")
                for seed in seeds:
                    trained[(recipe.name, seed)] = r.train(recipe, seed)
            for name, run_dir in run_dirs.items():
                log(f"{name}: loading run {run_dir}")
                trained[(name, -1)] = load_run(run_dir)
                bar.update(1)
            bar.close()
            bar = r.bar = progress(total=parts, desc="study: measuring", unit="part",
                                   disable=disable)
            _check_same_data({f"{n}/seed{k}": run for (n, k), run in trained.items()})
            digests = {key: _weights_digest(run.model) for key, run in trained.items()}
            r.measure_ahead([(f.require_group(f"models/{n}/seed{max(k, 0)}"), run,
                              digests[(n, k)]) for (n, k), run in trained.items()])
            for (name, seed), run in trained.items():
                label = f"{name}/seed{max(seed, 0)}"
                g = f.require_group(f"models/{label}")
                digest = digests[(name, seed)]
                if name not in first_runs:
                    first_runs[name] = (run, digest)
                with num_threads(run.info.get("threads")):   # as its training (and _measure)
                    curves = [r.surface(g, label, run, digest, "curve", d)
                              for d in range(s.direction_seeds)]
                    surface = r.surface(g, label, run, digest, "surface")
                    measures = r.measures(g, label, run, digest)
                    row = _per_seed_row(run, curves, measures, s.rise_at,
                                        *r.around(g, label, run))
                    if s.stability_steps and seed >= 0:   # a trained recipe: children
                        row.update(r.stability(by_name[name], seed))
                store.write_attrs(g, {"run": str(run.path), "weights_sha": digest,
                                      "stopping": run.stopping, "row": row})
                f.flush()
                results.setdefault(name, []).append(ModelResult(
                    name, max(seed, 0), str(run.path), run.stopping, curves, surface,
                    measures, row))
            logs = {q: q not in ACCURACY_COLUMNS and is_positive(  # a fraction's difference
                [m.row.get(q) for ms in results.values() for m in ms]) for q in quantities}
            rows = [_recipe_row(rec, common, match, results[rec.name], quantities, logs)
                    for rec in recipes]
            rows += [_recipe_row(Recipe(n, {"run": str(d)}), {}, None, results[n], quantities,
                                 logs) for n, d in run_dirs.items()]
            findings = analyse(rows, [*s.measures, "curve_rise", *s.stability_columns()],
                               _labels(quantities))
            interps = {}
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    with num_threads(first_runs[a][0].info.get("threads")):
                        result = r.interpolation(a, b,
                                                 {n: v[0] for n, v in first_runs.items()},
                                                 {n: v[1] for n, v in first_runs.items()})
                    if result is not None:
                        interps[(a, b)] = result
            store.write_attrs(f, {"table": json.dumps(store.jsonable(rows), default=str),
                                  "findings": json.dumps(store.jsonable(findings))})
    finally:
        bar.close()
        if r is not None and r.pool is not None:
            r.pool.shutdown(cancel_futures=True)
    study = Study(path, names, rows, results, interps, asdict(s), design, computed=r.computed,
                  findings=findings)
    _write_tables(study, out)
    study.seconds = time.perf_counter() - t0
    return study


def _owned_file(fn: Any, file: Path, replace: bool, *args: Any, **kwargs: Any) -> Any:
    """Compute a surface file the study owns: resume it, or replace it when it was computed
    with other settings or ``replace`` is set (the study's copy is stale)."""
    if not replace:
        try:
            return fn(*args, out=file, overwrite=False, **kwargs)
        except SettingsMismatch:
            pass
    return fn(*args, out=file, overwrite=True, **kwargs)


def _write_tables(study: Study, out: Path) -> None:
    (out / "table.md").write_text(format_table(study.table) + "\n")
    for name, obj in (("table", study.table), ("findings", study.findings)):
        (out / f"{name}.json").write_text(json.dumps(store.jsonable(obj), indent=2,
                                                     default=str) + "\n")
    (out / "findings.md").write_text(render(study.findings) + "\n")


def parse_run(text: str) -> tuple[str, Path]:
    """``"NAME=DIR"`` (or just ``"DIR"``, named after its folder) -> ``(name, Path(DIR))``."""
    name, sep, folder = text.partition("=")
    if not sep:
        name, folder = Path(text).name, text
    if not folder.strip():
        raise LandscapeError(f"a run is NAME=DIR, got {text!r}")
    return check_name(name.strip(), "run"), Path(folder.strip())


def study_from_options(recipes: Sequence[str] = (), recipe_file: str | Path | None = None,
                       runs: Sequence[str] = (), **options: Any) -> Study:
    """:func:`run_study` from command-line style inputs: ``NAME=OPTIONS`` recipe strings, a
    TOML recipe file (its top-level settings apply unless given in ``options``), ``NAME=DIR``
    runs; ``options`` whose value is None (or empty) are left to the file or the defaults."""
    recs = [parse_recipe(r) for r in recipes]
    merged: dict[str, Any] = {}
    if recipe_file is not None:
        from_file, merged = read_recipes(recipe_file)
        recs = from_file + recs
    merged.update({k: v for k, v in options.items() if v is not None and v != ()})
    if isinstance(merged.get("model_options"), str):
        merged["model_options"] = parse_options(merged["model_options"], "--model-options")
    return run_study(recs, dict(parse_run(r) for r in runs), **merged)


def demo(out: str | Path = "outputs/demo", *, show_progress: bool = True,
         quiet: bool = False, **overrides: Any) -> Study:
    """The default study: plain SGD on the embedded digits with the default MLP, learning
    rates 0.025 and 0.2 crossed with batch sizes 32 and 256 (lr/B from 1e-4 to 6e-3), every
    run stopped at a full-train-split loss of 0.02, seeds 0, 1 and 2 (trained in two
    processes), every measure the mean over three checks ending at the stop.

    About 5 CPU-minutes (339 s of CPU time on a shared 2-core CPU, where the demo measured at
    the stop alone took 186 s side by side; its wall time was the same, the second core
    doing the extra work); the trend tests detect log-log slopes of about 0.07-0.16 for the
    sharpness measures (0.42 for the noise scale), findings.md says which per measure.
    ``overrides``: :func:`run_study` keywords (``seeds``, ``match``, ``sweep``) and
    :class:`StudySettings` fields.
    """
    options = {"seeds": DEMO["seeds"], "match": DEMO["match"], "sweep": DEMO["sweep"],
               "workers": 2, **overrides}
    recipes = [Recipe(name, dict(opts)) for name, opts in DEMO["recipes"].items()]
    return run_study(recipes, out=out, show_progress=show_progress, quiet=quiet, **options)


__all__ = ["DEMO", "STUDY_MEASURES", "ModelResult", "Recipe", "Study", "StudySettings",
           "demo", "expand_sweep", "format_table", "load_study", "parse_match", "parse_options",
           "parse_recipe", "parse_run", "parse_seeds", "parse_sweep", "read_recipes",
           "run_study", "study_from_options", "train_options"]
