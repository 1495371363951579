"""The comparison study: train several recipes (or take trained runs), measure every minimum
the same way, and put the results side by side (``landscape compare``, ``landscape demo``).

For every model: the 1D filter-normalized curve (train and test, the same direction seed for
every model; Li et al. 2018), a 2D filter-normalized surface (train), the top Hessian
eigenvalue (Lanczos) and trace (Hutchinson), Keskar et al.'s epsilon-sharpness, worst- and
average-case adaptive sharpness (Andriushchenko et al. 2023), PAC-Bayes flatness (Jiang et
al. 2020) and the gradient noise scale (McCandlish et al. 2018); for every pair of models the
interpolation between them. Everything lands in ``OUT``::

    runs/NAME/                  the training runs (``landscape.train``)
    surfaces/NAME_curve.h5      1D curves, 2D surfaces and interpolations (resumable)
    surfaces/NAME_surface.h5
    surfaces/interp_A__B.h5
    study.h5                    kind "study": per model its curve, surface and measures, the
                                interpolations and the table (self-contained for plotting)
    comparison.pdf / .png       the comparison figure (:func:`landscape.plot.plot_comparison`)
    table.md / table.json       accuracies, generalization gap and every measure per model

Re-running resumes: a finished training run is not retrained, a surface file continues where
it stopped, and each measure is kept in ``study.h5`` under a key made of its settings and a
digest of the model's weights, so only what is missing or changed is computed again.

The default study (:func:`demo`) is Keskar et al. 2017's: small-batch against large-batch
SGD, same learning rate and epochs, on the embedded digits data with the default MLP.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from landscape import store
from landscape.errors import LandscapeError, check_positive
from landscape.progress import progress

STUDY_FORMAT = 1
#: Options of :func:`landscape.train` a recipe may not set (the study manages them).
RESERVED = ("out", "resume", "overwrite", "progress")
#: The measures of every model, in table order.
MEASURES = ("top_eigenvalue", "hessian_trace", "epsilon_sharpness", "adaptive_worst_l2",
            "adaptive_average_l2", "pac_bayes_flatness", "noise_scale")
#: Where the 1D curve's rise is read (filter-normalized units, both sides averaged).
RISE_AT = 0.5
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")

#: The demo: small- against large-batch SGD (Keskar et al. 2017), plain SGD, same lr and epochs.
DEMO_RECIPES = {
    "small-batch": {"optimizer": "sgd", "lr": 0.1, "batch_size": 16, "epochs": 100,
                    "save_every": 10},
    "large-batch": {"optimizer": "sgd", "lr": 0.1, "batch_size": 1024, "epochs": 100,
                    "save_every": 10},
}


# ------------------------------------------------------------------------------ recipes
@dataclass
class Recipe:
    """A named set of :func:`landscape.train` options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


def train_options() -> list[str]:
    """The :func:`landscape.train` arguments a recipe may set."""
    from landscape.train import train

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
            from landscape.errors import unknown_name

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
    known = {f.name for f in StudySettings.__dataclass_fields__.values()} | {
        "data", "data_dir", "model", "model_options", "train_size"}
    for key in doc:
        if key not in known:
            from landscape.errors import unknown_name

            raise LandscapeError(f"{path}: {unknown_name('study setting', key, known)}")
    from landscape.trust import check_recorded, is_code_spec

    for spec in [doc.get("model"), *(r.options.get("model") for r in recipes)]:
        if isinstance(spec, str) and is_code_spec(spec):  # a file's code runs only if trusted
            check_recorded(spec, None, source=path)
    return recipes, doc


# ------------------------------------------------------------------------------ settings
@dataclass
class StudySettings:
    """How each model is measured (the same for every model of a study).

    Grids are ``MIN:MAX:NUM`` ranges; ``seed`` draws the surface directions (the same for
    every model) and seeds every Monte Carlo measure. ``hessian_tol``: relative residual of
    the top eigenpair; ``trace_rtol``/``trace_probes``: Hutchinson's stopping rule;
    ``eps``: Keskar's box size; ``rho_worst``/``rho_average``: adaptive l2 radii;
    ``pac_bayes_target``: the training-error increase PAC-Bayes flatness allows;
    ``noise_batch_size``: the batch size B of the noise measures (None: each recipe's own).
    """

    curve: str = "-1:1:41"
    surface: str = "-1:1:31"
    interpolation: str = "-0.5:1.5:41"
    seed: int = 0
    hessian_tol: float = 1e-4
    trace_rtol: float = 0.05
    trace_probes: int = 200
    eps: float = 1e-3
    rho_worst: float = 0.1
    rho_average: float = 0.05
    pac_bayes_target: float = 0.1
    pac_bayes_samples: int = 32
    noise_batch_size: int | None = None
    precision: str = "float32"
    device: str = "auto"

    def engine(self) -> dict[str, Any]:
        return {"precision": self.precision, "device": self.device}


# ------------------------------------------------------------------------------ results
@dataclass
class Study:
    """A comparison study as stored in ``study.h5`` (see the module docstring).

    ``table``: one row per model (:data:`TABLE_COLUMNS`); ``curves``/``surfaces``: the 1D
    and 2D results per model; ``interpolations``: ``{(a, b): curve}``; ``computed``: what
    this call had to compute (empty lists when everything was already there).
    """

    path: Path
    names: list[str]
    table: list[dict[str, Any]]
    curves: dict[str, Any]
    surfaces: dict[str, Any]
    interpolations: dict[tuple[str, str], Any]
    settings: dict[str, Any] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    computed: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0


#: Table columns: (key, Markdown header, format).
TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("model", "model", "s"),
    ("train_acc", "train acc. (%)", ".2f"),
    ("test_acc", "test acc. (%)", ".2f"),
    ("generalization_gap", "gap (pp)", ".2f"),
    ("train_loss", "train loss", ".4g"),
    ("test_loss", "test loss", ".4g"),
    ("top_eigenvalue", "top Hessian eig.", ".4g"),
    ("hessian_trace", "Hessian trace", ".4g"),
    ("epsilon_sharpness", "eps-sharpness", ".4g"),
    ("adaptive_worst_l2", "adaptive worst l2", ".4g"),
    ("adaptive_average_l2", "adaptive avg. l2", ".4g"),
    ("pac_bayes_flatness", "PAC-Bayes 1/sigma^2", ".4g"),
    ("noise_scale", "noise scale B", ".4g"),
    ("curve_rise", f"1D rise at +-{RISE_AT:g}", ".4g"),
)


def _fmt(value: Any, spec: str, stderr: Any = None) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    if spec == "s":
        return str(value)
    text = format(float(value), spec)
    if stderr is not None and np.isfinite(stderr):
        text += f" ± {format(float(stderr), '.2g')}"
    return text


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The study table as Markdown, one row per model (``±``: Monte Carlo standard error)."""
    cols = [c for c in TABLE_COLUMNS if any(c[0] in r for r in rows)]
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |",
             "|" + "|".join("---" if k == "model" else "---:" for k, _, _ in cols) + "|"]
    for r in rows:
        cells = [_fmt(r.get(k), spec, r.get(f"{k}_stderr")) for k, _, spec in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ storage
def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(store.jsonable(obj), sort_keys=True, default=str)
                          .encode()).hexdigest()[:16]


def _weights_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


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


def _open_study(path: Path) -> h5py.File:
    return store.create(path, "study", {"study_format": STUDY_FORMAT})


def load_study(path: str | Path) -> Study:
    """Read a ``study.h5`` file (or the study directory holding one) back."""
    path = Path(path)
    if path.is_dir():
        path = path / "study.h5"
    with store.open_result(path, kind="study") as f:
        attrs = store.read_attrs(f)
        names = list(attrs.get("names", []))
        if not names or "models" not in f:
            raise LandscapeError(f"{path}: the study holds no finished model yet")
        curves, surfaces = {}, {}
        for name in names:
            g = f["models"].get(name)
            if g is None or "curve" not in g or "surface" not in g:
                raise LandscapeError(f"{path}: model {name!r} is not finished (no curve or "
                                     "surface); re-run the study to complete it")
            curves[name] = _read_surface(g["curve"], f"{path}:{name}/curve")
            surfaces[name] = _read_surface(g["surface"], f"{path}:{name}/surface")
        interps = {}
        for label in f.get("interpolations", {}):
            g = f["interpolations"][label]
            a, b = store.read_attrs(g)["endpoints"]
            interps[(a, b)] = _read_surface(g, f"{path}:interpolations/{label}")
        table = json.loads(attrs.get("table", "[]")) if isinstance(attrs.get("table"), str) \
            else list(attrs.get("table", []))
        return Study(path, names, table, curves, surfaces, interps,
                     settings=attrs.get("study_settings", {}))


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


def _train_or_load(recipe: Recipe, common: Mapping[str, Any], out: Path, overwrite: bool,
                   show_progress: bool) -> tuple[Any, bool]:
    """The recipe's run in ``out/runs/NAME``: trained, resumed, or (if complete) reused."""
    from landscape.train import train
    from landscape.train.run import read_run_json

    run_dir = out / "runs" / recipe.name
    complete = False
    if (run_dir / "run.json").exists() and (run_dir / "model.pt").exists():
        try:
            complete = read_run_json(run_dir).get("status") == "complete"
        except LandscapeError:
            complete = False
    options = {**common, **recipe.options}
    run = train(**options, out=run_dir, resume=not overwrite, overwrite=overwrite,
                progress=show_progress)
    return run, overwrite or not complete


def _measure(name: str, run: Any, objective: Any, s: StudySettings) -> dict[str, Any]:
    """One measure of one model: ``{"value", "stderr", "cost", "extra"}``."""
    from landscape.analysis.hessian import hessian_eigenvalues, hessian_trace
    from landscape.analysis.noise import gradient_noise
    from landscape.analysis.sharpness import (
        adaptive_sharpness,
        epsilon_sharpness,
        pac_bayes_flatness,
    )

    if name == "top_eigenvalue":
        e = hessian_eigenvalues(objective, k=1, which="largest", tol=s.hessian_tol,
                                seed=s.seed, return_vectors=False)
        return {"value": float(e.largest[0]), "stderr": None, "cost": {"hvp": e.n_hvp},
                "extra": {"residual": float(e.residuals[0]),
                          "converged": bool(e.converged[0])}}
    if name == "hessian_trace":
        t = hessian_trace(objective, rtol=s.trace_rtol, max_probes=s.trace_probes,
                          min_probes=min(10, s.trace_probes), seed=s.seed)
        return {"value": t.estimate, "stderr": t.stderr, "cost": {"hvp": t.n_hvp},
                "extra": {"n_probes": t.n_probes}}
    if name == "noise_scale":
        bs = s.noise_batch_size or int(run.config.get("batch_size", 128))
        lr = float(run.config.get("lr", 0.1))
        r = gradient_noise(objective, batch_size=min(bs, objective.n), lr=lr)
        return {"value": r.value, "stderr": None, "cost": r.cost,
                "extra": {"implicit_regularizer": r.implicit_regularizer,
                          "trace_cov": r.trace_cov, "grad_norm_sq": r.grad_norm_sq,
                          "batch_size": min(bs, objective.n), "lr": lr}}
    if name == "epsilon_sharpness":
        r = epsilon_sharpness(objective, eps=s.eps, seed=s.seed)
    elif name == "adaptive_worst_l2":
        r = adaptive_sharpness(objective, rho=s.rho_worst, norm="l2", kind="worst",
                               seed=s.seed)
    elif name == "adaptive_average_l2":
        r = adaptive_sharpness(objective, rho=s.rho_average, norm="l2", kind="average",
                               seed=s.seed)
    elif name == "pac_bayes_flatness":
        r = pac_bayes_flatness(objective, target=s.pac_bayes_target, seed=s.seed,
                               n_samples=s.pac_bayes_samples,
                               criterion="error" if objective.is_classification else "loss")
    else:  # pragma: no cover - MEASURES is fixed
        raise LandscapeError(f"unknown measure {name!r}")
    extra = {k: v for k, v in r.extra.items() if isinstance(v, int | float | bool | str)}
    return {"value": float(r.value), "stderr": r.stderr, "cost": r.cost, "extra": extra}


def _measure_settings(name: str, s: StudySettings) -> dict[str, Any]:
    keys = {"top_eigenvalue": ("hessian_tol", "seed"),
            "hessian_trace": ("trace_rtol", "trace_probes", "seed"),
            "epsilon_sharpness": ("eps", "seed"), "adaptive_worst_l2": ("rho_worst", "seed"),
            "adaptive_average_l2": ("rho_average", "seed"),
            "pac_bayes_flatness": ("pac_bayes_target", "pac_bayes_samples", "seed"),
            "noise_scale": ("noise_batch_size",)}[name]
    return {"measure": name, **{k: getattr(s, k) for k in keys}, **s.engine()}


def _center(surface: Any, metric: str) -> float | None:
    v = surface.attrs.get(f"center_{metric}")
    return None if v is None else float(v)


def _row(name: str, recipe: Mapping[str, Any], curve: Any,
         measures: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    from landscape.plot.curves import curve_rise

    row: dict[str, Any] = {"model": name, "recipe": dict(recipe)}
    for split in ("train", "test"):
        row[f"{split}_loss"] = _center(curve, f"{split}_loss")
        acc = _center(curve, f"{split}_acc")
        row[f"{split}_acc"] = None if acc is None else 100.0 * acc
    if row["train_acc"] is not None and row["test_acc"] is not None:
        row["generalization_gap"] = row["train_acc"] - row["test_acc"]
    row["loss_gap"] = (None if row["test_loss"] is None or row["train_loss"] is None
                       else row["test_loss"] - row["train_loss"])
    for m, res in measures.items():
        row[m] = res["value"]
        if res.get("stderr") is not None:
            row[f"{m}_stderr"] = res["stderr"]
        if m == "noise_scale":
            row["implicit_regularizer"] = res["extra"].get("implicit_regularizer")
    try:
        row["curve_rise"] = curve_rise(curve, at=RISE_AT)
    except LandscapeError:
        row["curve_rise"] = None
    return {k: None if isinstance(v, float) and not np.isfinite(v) else v  # JSON: null
            for k, v in row.items()}


class _Runner:
    """One run of a study: the open ``study.h5``, the settings, what was computed."""

    def __init__(self, f: h5py.File, path: Path, s: StudySettings, overwrite: bool,
                 show_progress: bool, log: _Log, bar: Any) -> None:
        self.f, self.path, self.s, self.overwrite = f, path, s, overwrite
        self.show_progress, self.log, self.bar = show_progress, log, bar
        self.engine = s.engine()
        self.surf_dir = path.parent / "surfaces"
        self.computed: dict[str, list[str]] = {"train": [], "curve": [], "surface": [],
                                               "measures": [], "interpolation": []}

    def _stored(self, group: h5py.Group | None, key: str, where: str) -> Any:
        """The stored copy of a finished surface part with this key, else None."""
        if group is not None and group.attrs.get("key") == key and bool(group["done"][()].all()):
            return _read_surface(group, where)
        return None

    def surface(self, name: str, run: Any, digest: str, part: str) -> Any:
        """The model's 1D curve (train and test) or 2D surface (train), same seed for all."""
        from landscape.surface import random_surface

        s = self.s
        x, y, split = (s.curve, None, "train,test") if part == "curve" else \
            (s.surface, s.surface, "train")
        key = _digest({"part": part, "x": x, "y": y, "seed": s.seed, "weights": digest,
                       **self.engine})
        g = self.f["models"][name]
        result = self._stored(g.get(part), key, f"{self.path}:{name}/{part}")
        if result is None:
            self.log(f"{name}: {'1D curve' if part == 'curve' else '2D surface'}")
            result = _owned_file(random_surface, self.surf_dir / f"{name}_{part}.h5",
                                 self.overwrite or part in g, run, x=x, y=y, seed=s.seed,
                                 split=split, show_progress=self.show_progress, **self.engine)
            _write_surface(g.require_group(part), result, key)
            self.computed[part].append(name)
        self.bar.update(1)
        return result

    def measures(self, name: str, run: Any, digest: str) -> dict[str, dict[str, Any]]:
        """Every measure of :data:`MEASURES`, each kept under a key of its settings."""
        from landscape.objective import Objective

        objective = None
        results: dict[str, dict[str, Any]] = {}
        group = self.f["models"][name].require_group("measures")
        for m in MEASURES:
            settings = _measure_settings(m, self.s)
            key = _digest({**settings, "weights": digest})
            ds = group.get(m)
            if ds is not None and ds.attrs.get("key") == key:
                a = store.read_attrs(ds)
                results[m] = {"value": float(ds[()]), "stderr": a.get("stderr"),
                              "cost": a.get("cost", {}), "extra": a.get("extra", {})}
            else:
                self.log(f"{name}: {m.replace('_', ' ')}")
                if objective is None:
                    objective = Objective.from_run(run, split="train", **self.engine)
                try:
                    res = _measure(m, run, objective, self.s)
                except LandscapeError as err:  # e.g. PAC-Bayes unbounded: kept as n/a
                    self.log(f"{name}: {m} not available: {err}")
                    res = {"value": float("nan"), "stderr": None, "cost": {},
                           "extra": {"error": str(err)}}
                results[m] = res
                store.write_arrays(group, {m: np.float64(res["value"])}, attrs={m: {
                    "key": key, "stderr": res["stderr"], "cost": res["cost"],
                    "extra": res["extra"], "settings": settings}})
                self.computed["measures"].append(f"{name}/{m}")
            self.bar.update(1)
        return results

    def interpolation(self, a: str, b: str, runs: Mapping[str, Any],
                      digests: Mapping[str, str]) -> Any:
        """The line from model ``a`` (t=0) to ``b`` (t=1), train and test; None when the
        two architectures differ."""
        from landscape.surface import interpolate

        label = f"{a}__{b}"
        key = _digest({"part": "interpolation", "x": self.s.interpolation,
                       "weights": [digests[a], digests[b]], **self.engine})
        group = self.f.require_group("interpolations")
        where = f"{self.path}:interpolations/{label}"
        result = self._stored(group.get(label), key, where)
        if result is None:
            self.log(f"interpolation {a} -> {b}")
            try:
                computed = _owned_file(interpolate, self.surf_dir / f"interp_{label}.h5",
                                       self.overwrite or label in group, runs[a], runs[b],
                                       x=self.s.interpolation, split="train,test",
                                       show_progress=self.show_progress, **self.engine)
            except LandscapeError as err:
                if "different architecture" not in str(err):
                    raise
                self.log(f"interpolation {a} -> {b} skipped: {err}")
                self.bar.update(1)
                return None
            _write_surface(group.require_group(label), computed, key, {"endpoints": [a, b]})
            result = _read_surface(group[label], where)
            self.computed["interpolation"].append(label)
        self.bar.update(1)
        return result


def _check_same_data(names: Sequence[str], runs: Mapping[str, Any]) -> None:
    """Refuse models trained on different data: the training splits must be identical
    (a digest of their tensors; the seed can change a ``train_size`` subset or a synthetic
    dataset, but not the fixed digits split)."""
    def digest(run: Any) -> str:
        x, y = run.data.split("train")
        return hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()

    first = digest(runs[names[0]])
    for name in names[1:]:
        if digest(runs[name]) != first:
            spec = getattr(runs[name].data, "spec", {})
            raise LandscapeError(f"model {name!r} was trained on other data ({spec}) than "
                                 f"{names[0]!r}; compare models on one dataset")


def run_study(recipes: Sequence[Recipe | str] = (), runs: Mapping[str, str | Path] | None = None,
              *, data: str = "digits", data_dir: str | Path | None = None,
              model: str | None = None, model_options: Mapping[str, Any] | None = None,
              train_size: int | None = None, out: str | Path = "outputs/compare",
              settings: StudySettings | None = None, overwrite: bool = False,
              figure: bool = True, show_progress: bool = True, quiet: bool = False,
              **setting_overrides: Any) -> Study:
    """Train (or load) each model and measure it; write ``study.h5``, the figure and tables.

    ``recipes``: :class:`Recipe`\\ s or ``"NAME=OPTIONS"`` strings, trained with
    ``data``/``model``/``model_options``/``train_size`` plus their own options (which win);
    ``runs``: ``{name: run directory}`` of models already trained (same dataset). At least
    two models. ``settings`` (or keyword overrides of its fields) say how each is measured.
    ``overwrite`` retrains the recipes and recomputes every part. Cost: the training, then
    per model about a hundred forward passes over the train split for the curves and
    surface plus a few hundred gradient/HVP passes for the measures.
    """
    from landscape.train.run import load_run

    t0 = time.perf_counter()
    log = _Log(quiet)
    s = settings or StudySettings()
    if setting_overrides:
        unknown = set(setting_overrides) - set(StudySettings.__dataclass_fields__)
        if unknown:
            from landscape.errors import unknown_name

            raise unknown_name("study setting", sorted(unknown)[0],
                               StudySettings.__dataclass_fields__)
        s = StudySettings(**{**asdict(s), **setting_overrides})
    check_positive("trace_probes", s.trace_probes)
    recipes = [parse_recipe(r) if isinstance(r, str) else
               Recipe(check_name(r.name), check_options(r.name, r.options)) for r in recipes]
    run_dirs = {check_name(k, "run"): v for k, v in (runs or {}).items()}
    names = [r.name for r in recipes] + list(run_dirs)
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise LandscapeError(f"model name {sorted(dup)[0]!r} is given twice")
    if len(names) < 2:
        raise LandscapeError(f"a comparison needs at least two models, got {len(names)} "
                             "(give --recipe NAME=OPTIONS or --run NAME=DIR)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    common = {k: v for k, v in {"dataset": data, "data_dir": data_dir, "train_size": train_size,
                                "model": model, "model_options": None if model_options is None
                                else dict(model_options)}.items() if v is not None}
    path = out / "study.h5"
    bar = progress(total=len(names) * (3 + len(MEASURES)) + len(names) * (len(names) - 1) // 2,
                   desc="study", unit="part", disable=None if show_progress else True)
    loaded: dict[str, Any] = {}
    recipe_of: dict[str, dict[str, Any]] = {}
    try:
        with _open_study(path) as f:
            r = _Runner(f, path, s, overwrite, show_progress, log, bar)
            store.write_attrs(f, {"study_settings": asdict(s), "names": names})
            for recipe in recipes:
                log(f"{recipe.name}: training "
                    f"({', '.join(f'{k}={v}' for k, v in recipe.options.items())})")
                loaded[recipe.name], trained = _train_or_load(recipe, common, out, overwrite,
                                                              show_progress)
                if trained:
                    r.computed["train"].append(recipe.name)
                recipe_of[recipe.name] = {**common, **recipe.options}
                bar.update(1)
            for name, run_dir in run_dirs.items():
                log(f"{name}: loading run {run_dir}")
                loaded[name] = load_run(run_dir)
                recipe_of[name] = {"run": str(run_dir), **loaded[name].config}
                bar.update(1)
            _check_same_data(names, loaded)
            digests = {n: _weights_digest(loaded[n].model) for n in names}
            rows, curves, surfaces = {}, {}, {}
            for name in names:
                g = f.require_group("models").require_group(name)
                store.write_attrs(g, {"recipe": recipe_of[name], "run": str(loaded[name].path),
                                      "weights_sha": digests[name]})
                curves[name] = r.surface(name, loaded[name], digests[name], "curve")
                surfaces[name] = r.surface(name, loaded[name], digests[name], "surface")
                measures = r.measures(name, loaded[name], digests[name])
                rows[name] = _row(name, recipe_of[name], curves[name], measures)
                store.write_attrs(g, {"row": rows[name]})
                f.flush()
            interps = {}
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    result = r.interpolation(a, b, loaded, digests)
                    if result is not None:
                        interps[(a, b)] = result
            table = [rows[n] for n in names]
            store.write_attrs(f, {"table": json.dumps(store.jsonable(table), default=str)})
    finally:
        bar.close()
    study = Study(path, names, table, curves, surfaces, interps, asdict(s), computed=r.computed)
    _write_tables(study, out)
    if figure:
        from landscape.plot.compare import plot_comparison
        from landscape.plot.style import save_figure

        fig = plot_comparison(study)
        study.figures = [save_figure(fig, out / "comparison.pdf"),
                         save_figure(fig, out / "comparison.png", dpi=200)]
    study.seconds = time.perf_counter() - t0
    return study


def _owned_file(fn: Any, file: Path, replace: bool, *args: Any, **kwargs: Any) -> Any:
    """Compute a surface file the study owns: resume it, or replace it when it was computed
    with other settings (or is unreadable) or ``replace`` is set (the study's copy is stale)."""
    if not replace:
        try:
            return fn(*args, out=file, overwrite=False, **kwargs)
        except LandscapeError as err:
            if not str(err).startswith(str(file)):
                raise
    return fn(*args, out=file, overwrite=True, **kwargs)


def _write_tables(study: Study, out: Path) -> None:
    (out / "table.md").write_text(format_table(study.table) + "\n")
    (out / "table.json").write_text(json.dumps(store.jsonable(study.table), indent=2,
                                               default=str) + "\n")


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
    runs; ``options`` whose value is None are left to the file or the defaults."""
    recs = [parse_recipe(r) for r in recipes]
    merged: dict[str, Any] = {}
    if recipe_file is not None:
        from_file, merged = read_recipes(recipe_file)
        recs = from_file + recs
    merged.update({k: v for k, v in options.items() if v is not None})
    if isinstance(merged.get("model_options"), str):
        merged["model_options"] = parse_options(merged["model_options"], "--model-options")
    return run_study(recs, dict(parse_run(r) for r in runs), **merged)


def demo(out: str | Path = "outputs/demo", *, show_progress: bool = True,
         quiet: bool = False, **overrides: Any) -> Study:
    """The default study: small-batch (16) against large-batch (1024) plain SGD, lr 0.1,
    100 epochs each, on the embedded digits data with the default MLP (Keskar et al. 2017).

    A few minutes on a 2-core CPU. ``overrides``: :class:`StudySettings` fields.
    """
    recipes = [Recipe(name, dict(opts)) for name, opts in DEMO_RECIPES.items()]
    return run_study(recipes, out=out, show_progress=show_progress, quiet=quiet, **overrides)


__all__ = ["DEMO_RECIPES", "MEASURES", "Recipe", "Study", "StudySettings", "TABLE_COLUMNS",
           "demo", "format_table", "load_study", "parse_options", "parse_recipe", "parse_run",
           "read_recipes", "run_study", "study_from_options", "train_options"]
