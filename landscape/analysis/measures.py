"""One definition per measure: the registry that the API, the CLI, the study, its tables and
its figures all read.

A :class:`Measure` names a number the tool reports about a minimum, how it is computed (a
function of an :class:`~landscape.objective.Objective`, a point and :class:`MeasureSettings`),
which settings it reads, and how it is shown (column header, figure label, units). Measures
of one ``family`` come out of one computation (the noise statistics share one pass of
per-sample gradients) and are computed once by :func:`compute_measures`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from landscape import store
from landscape.analysis.hessian import hessian_eigenvalues, hessian_trace, require_finite
from landscape.analysis.noise import gradient_noise
from landscape.analysis.sharpness import (
    BATCH_SIZE,
    DEFAULT_RHO,
    MeasureResult,
    adaptive_sharpness,
    epsilon_sharpness,
    fisher_rao_norm,
    pac_bayes_flatness,
    sam_sharpness,
)
from landscape.errors import LandscapeError, check_int, check_positive, unknown_name
from landscape.objective import Objective, accepts_model


@dataclass
class MeasureSettings:
    """Settings of every measure (each measure reads the fields listed in its entry).

    ``seed`` seeds every random start, probe and Monte Carlo sample. ``hessian_tol``: relative
    residual of the top eigenpair (Lanczos); ``trace_method``: ``"hutch++"`` (a budget of
    ``trace_probes`` HVPs; its error per budget is in benchmarks/README.md) or
    ``"hutchinson"`` (stops at ``trace_rtol`` or ``trace_probes``); ``eps``: Keskar's box
    size, ``eps_patience``/``eps_max_starts``: its restart rule (R starts without gain);
    ``rho_*``: radii of the adaptive (relative to ``|theta|``) and SAM measures;
    ``sharpness_batch_size``: the batch size m of the worst-case measures (default 128, the
    authors'; None: the whole split as one batch); ``pac_bayes_target``: the increase of the
    training error PAC-Bayes flatness allows; ``noise_batch_size``/``lr``: the batch size B
    and learning rate of the SGD noise measures (None: the run's own, else 128 / 0.1).
    """

    seed: int = 0
    hessian_tol: float = 1e-4
    trace_method: str = "hutch++"
    trace_rtol: float = 0.05
    trace_probes: int = 150
    eps: float = 1e-3
    eps_patience: int = 8
    eps_max_starts: int = 32
    rho_worst_l2: float = DEFAULT_RHO["adaptive_worst_l2"]
    rho_worst_linf: float = DEFAULT_RHO["adaptive_worst_linf"]
    rho_average_l2: float = DEFAULT_RHO["adaptive_average_l2"]
    rho_sam: float = DEFAULT_RHO["sam_sharpness"]
    sharpness_batch_size: int | None = BATCH_SIZE
    pac_bayes_target: float = 0.1
    pac_bayes_samples: int = 32
    noise_batch_size: int | None = None
    lr: float | None = None

    def __post_init__(self) -> None:
        for name in ("hessian_tol", "trace_rtol", "eps", "rho_worst_l2", "rho_worst_linf",
                     "rho_average_l2", "rho_sam", "pac_bayes_target"):
            check_positive(name, getattr(self, name))
        for name in ("trace_probes", "pac_bayes_samples", "sharpness_batch_size", "eps_patience",
                     "eps_max_starts", "noise_batch_size"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name))
        if self.lr is not None:
            check_positive("lr", self.lr)
        if self.trace_method not in ("hutch++", "hutchinson"):
            raise unknown_name("trace method", self.trace_method, ("hutch++", "hutchinson"))

    def replace(self, **changes: Any) -> Any:
        """A copy (of the same class) with ``changes``; an unknown name is a one-line error."""
        known = {f.name for f in fields(self)}
        for key in changes:
            if key not in known:
                raise unknown_name("setting", key, sorted(known))
        return type(self)(**{**asdict(self), **changes})


Compute = Callable[[Any, "Tensor | None", MeasureSettings], "MeasureResult | dict"]


@dataclass(frozen=True)
class Measure:
    """A registered measure: ``compute(objective, theta, settings)`` returns its
    :class:`MeasureResult` (or, for a family, a dict of every member's result); ``kind`` is
    ``"curvature"``, ``"sharpness"``, ``"noise"`` or ``"curve"`` (read off the 1D curves, no
    compute); ``sharpness`` says whether a larger value means a sharper minimum (the measures a
    sharpness figure compares)."""

    name: str
    kind: str
    header: str
    label: str
    units: str
    settings: tuple[str, ...]
    compute: Compute | None = None
    family: str | None = None
    sharpness: bool = True


def _top_eigenvalue(objective: Any, theta: Tensor | None, s: MeasureSettings) -> MeasureResult:
    e = hessian_eigenvalues(objective, theta, k=1, which="largest", tol=s.hessian_tol,
                            seed=s.seed, return_vectors=False)
    return MeasureResult("top_eigenvalue", float(e.largest[0]), None,
                         {"tol": s.hessian_tol, "seed": s.seed}, {"hvp": float(e.n_hvp)},
                         {"residual": float(e.residuals[0]), "converged": bool(e.converged[0])})


def _hessian_trace(objective: Any, theta: Tensor | None, s: MeasureSettings) -> MeasureResult:
    t = hessian_trace(objective, theta, method=s.trace_method, rtol=s.trace_rtol,
                      max_probes=s.trace_probes, min_probes=min(10, s.trace_probes),
                      seed=s.seed)
    return MeasureResult("hessian_trace", float(t.estimate),
                         None if t.stderr is None else float(t.stderr),
                         {"method": s.trace_method, "rtol": s.trace_rtol,
                          "max_probes": s.trace_probes, "seed": s.seed},
                         {"hvp": float(t.n_hvp)}, {"n_probes": int(t.n_probes)})


def _epsilon(objective: Any, theta: Tensor | None, s: MeasureSettings) -> MeasureResult:
    return epsilon_sharpness(objective, theta, eps=s.eps, seed=s.seed, patience=s.eps_patience,
                             max_starts=s.eps_max_starts)


def _adaptive(kind: str, norm: str) -> Compute:
    def compute(objective: Any, theta: Tensor | None, s: MeasureSettings) -> MeasureResult:
        rho = getattr(s, f"rho_{kind}_{norm}")
        return adaptive_sharpness(objective, theta, rho=rho, norm=norm, kind=kind,
                                  batch_size=s.sharpness_batch_size if kind == "worst"
                                  else None, seed=s.seed)
    return compute


def _sam(objective: Any, theta: Tensor | None, s: MeasureSettings) -> MeasureResult:
    return sam_sharpness(objective, theta, rho=s.rho_sam)


def _pac_bayes(objective: Any, theta: Tensor | None, s: MeasureSettings) -> MeasureResult:
    """Error criterion for classification, loss otherwise; NaN (with the reason in
    ``extra["error"]``) when no noise level meets the target."""
    criterion = "error" if objective.is_classification else "loss"
    try:
        return pac_bayes_flatness(objective, theta, target=s.pac_bayes_target, seed=s.seed,
                                  n_samples=s.pac_bayes_samples, criterion=criterion)
    except LandscapeError as err:
        return MeasureResult("pac_bayes_flatness", math.nan, None,
                             {"criterion": criterion, "target": s.pac_bayes_target,
                              "seed": s.seed}, {}, {"error": str(err)})


def _fisher_rao(objective: Any, theta: Tensor | None, s: MeasureSettings) -> MeasureResult:
    return fisher_rao_norm(objective, theta)


def _noise(objective: Any, theta: Tensor | None, s: MeasureSettings) -> dict[str, MeasureResult]:
    batch = s.noise_batch_size or min(128, objective.n)
    return gradient_noise(objective, theta, batch_size=batch,
                          lr=0.1 if s.lr is None else s.lr).measures()


_NOISE = ("noise_batch_size", "lr")
#: Every measure, in table order.
REGISTRY: dict[str, Measure] = {m.name: m for m in (
    Measure("top_eigenvalue", "curvature", "top Hessian eig.", "top Hessian eigenvalue",
            "loss / param$^2$", ("hessian_tol", "seed"), _top_eigenvalue),
    Measure("hessian_trace", "curvature", "Hessian trace", "Hessian trace",
            "loss / param$^2$", ("trace_method", "trace_rtol", "trace_probes", "seed"),
            _hessian_trace),
    Measure("epsilon_sharpness", "sharpness", "eps-sharpness (lower bound)",
            "$\\epsilon$-sharpness", "% of 1 + loss",
            ("eps", "eps_patience", "eps_max_starts", "seed"), _epsilon),
    Measure("adaptive_worst_l2", "sharpness", "adaptive worst l2", "adaptive worst $\\ell_2$",
            "loss", ("rho_worst_l2", "sharpness_batch_size", "seed"), _adaptive("worst", "l2")),
    Measure("adaptive_worst_linf", "sharpness", "adaptive worst linf",
            "adaptive worst $\\ell_\\infty$", "loss",
            ("rho_worst_linf", "sharpness_batch_size", "seed"), _adaptive("worst", "linf")),
    Measure("adaptive_average_l2", "sharpness", "adaptive avg. l2", "adaptive avg. $\\ell_2$",
            "loss", ("rho_average_l2", "seed"), _adaptive("average", "l2")),
    Measure("sam_sharpness", "sharpness", "SAM sharpness", "SAM sharpness", "loss",
            ("rho_sam",), _sam),
    Measure("pac_bayes_flatness", "sharpness", "PAC-Bayes 1/sigma^2",
            "PAC-Bayes $1/\\sigma^2$", "1 / param$^2$",
            ("pac_bayes_target", "pac_bayes_samples", "seed"), _pac_bayes),
    Measure("fisher_rao_norm", "sharpness", "Fisher-Rao norm^2", "Fisher-Rao norm$^2$",
            "loss$^2$", (), _fisher_rao),
    Measure("curve_rise", "curve", "1D rise", "1D filter-normalized rise", "loss", ()),
    Measure("grad_norm_sq", "noise", "|G|^2", "$|G|^2$", "loss$^2$ / param$^2$", _NOISE,
            _noise, "noise", False),
    Measure("trace_cov", "noise", "tr(Sigma)", "tr$(\\Sigma)$", "loss$^2$ / param$^2$", _NOISE,
            _noise, "noise", False),
    Measure("noise_scale", "noise", "noise scale B", "noise scale $B_{simple}$", "samples",
            _NOISE, _noise, "noise", False),
    Measure("implicit_regularizer", "noise", "implicit reg.", "implicit regularizer", "loss",
            _NOISE, _noise, "noise", False),
    Measure("gradient_diversity", "noise", "grad. diversity", "gradient diversity", "1",
            _NOISE, _noise, "noise", False),
    Measure("gradient_snr", "noise", "grad. SNR", "gradient SNR", "1", _NOISE, _noise,
            "noise", False),
)}


def names_of(kind: str | Sequence[str]) -> list[str]:
    """The registered measures of one kind (or several), in table order."""
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    return [m.name for m in REGISTRY.values() if m.kind in kinds]


def parse_measures(measures: str | Iterable[str], choices: Sequence[str]) -> list[str]:
    """``"all"`` or comma-separated names (or a list) -> validated list in registry order."""
    names = ([m.strip() for m in measures.split(",") if m.strip()]
             if isinstance(measures, str) else list(measures))
    if not names:
        raise LandscapeError("no measures given")
    if names == ["all"]:
        return list(choices)
    for name in names:
        if name not in choices:
            raise unknown_name("measure", name, choices)
    return [m for m in choices if m in names]


def measure_settings(name: str, settings: MeasureSettings) -> dict[str, Any]:
    """The settings a measure's value depends on (a key for storing it)."""
    return {"measure": name, **{k: getattr(settings, k) for k in REGISTRY[name].settings}}


class _Centred(Objective):
    """An objective that computes its loss (with the metrics) and its gradient at one point,
    ``centre``, once each: a later call there returns a copy of the first result, the same
    numbers bit for bit (the same computation). Other points, batches of points and subsets
    (objectives of their own, with caches of their own) are computed as usual."""

    centre: Tensor

    @classmethod
    def around(cls, objective: Objective, theta: Tensor | None) -> Objective:
        """``objective`` sharing one cache at ``theta`` (default: its own parameters); itself
        if it already does (so the caller's check of the centre is shared too)."""
        centre = objective.theta0 if theta is None else torch.as_tensor(theta).to(
            objective.device, objective.dtype)
        if isinstance(objective, _Centred) and objective._at(centre):
            return objective
        new = copy.copy(objective)  # own cache and evaluator; model, data and counts shared
        new.__class__, new.centre = cls, centre.detach().clone()
        return new

    def _at(self, theta: Tensor) -> bool:
        return (theta.shape == self.centre.shape and theta.dtype == self.centre.dtype
                and theta.device == self.centre.device and torch.equal(theta, self.centre))

    def _once(self, what: str, compute: Callable[[], Any]) -> Any:
        done = self.cache.setdefault("centre", {})
        if what not in done:
            done[what] = compute()
        return done[what]

    def loss_and_grad(self, theta: Tensor) -> tuple[float, Tensor]:
        if not self._at(theta):
            return super().loss_and_grad(theta)
        loss, grad = self._once("loss_and_grad", lambda: super(_Centred, self).loss_and_grad(
            theta))
        return loss, grad.clone()

    def evaluate(self, points: Tensor, buffers: dict[str, Tensor] | None = None,
                 _plane: tuple[Tensor, Tensor, Tensor] | None = None) -> dict[str, Tensor]:
        if buffers is not None or _plane is not None or points.dim() != 2 or len(
                points) != 1 or not self._at(points[0]):
            return super().evaluate(points, buffers, _plane)
        stats = self._once("evaluate", lambda: super(_Centred, self).evaluate(points))
        return {k: v.clone() for k, v in stats.items()}


@accepts_model
def compute_measures(objective: Any, names: Iterable[str], theta: Tensor | None = None,
                     settings: MeasureSettings | None = None, show_progress: bool = True,
                     on_result: Callable[[str, MeasureResult], None] | None = None,
                     ) -> dict[str, MeasureResult]:
    """Each named measure at ``theta`` (default: the model's own parameters), keyed by name.

    A family (the noise statistics) is computed once for all its members; ``on_result(name,
    result)`` is called as each one is ready (to keep it before the next starts). The loss
    (with the metrics) and the gradient at ``theta`` are computed once and shared by the
    measures (a result's ``cost`` counts what its measure computed). Cost: the sum of the
    measures' costs (each result's ``cost``, in passes over the data).
    """
    from landscape.progress import progress

    objective = _Centred.around(objective, theta)
    s = settings or MeasureSettings()
    names = parse_measures(names, [m for m, e in REGISTRY.items() if e.compute])
    out: dict[str, MeasureResult] = {}
    done: dict[str, dict[str, MeasureResult]] = {}
    for name in progress(names, desc="measures", unit="measure",
                         disable=None if show_progress else True):
        entry = REGISTRY[name]
        if entry.family is None:
            res = entry.compute(objective, theta, s)
        else:
            if entry.family not in done:
                done[entry.family] = entry.compute(objective, theta, s)
            res = done[entry.family][name]
        res.name = name
        out[name] = res
        if on_result is not None:
            on_result(name, res)
    return out


#: The ``--rho`` names of the radii (a measure name -> its :class:`MeasureSettings` field).
RHO_FIELDS = {"adaptive_worst_l2": "rho_worst_l2", "adaptive_worst_linf": "rho_worst_linf",
              "adaptive_average_l2": "rho_average_l2", "sam_sharpness": "rho_sam"}


def parse_rho(text: str | None) -> dict[str, float]:
    """``"0.05"`` (every radius) or ``"adaptive_worst_l2=0.1,sam_sharpness=0.02"`` ->
    :class:`MeasureSettings` fields; None or empty -> {} (the defaults)."""
    if text is None or not str(text).strip():
        return {}
    text = str(text).strip()
    try:
        if "=" not in text:
            return dict.fromkeys(RHO_FIELDS.values(), float(text))
        out = {}
        for part in text.split(","):
            name, _, value = part.partition("=")
            if name.strip() not in RHO_FIELDS:
                raise unknown_name("rho measure", name.strip(), RHO_FIELDS)
            out[RHO_FIELDS[name.strip()]] = float(value)
        return out
    except ValueError:
        raise LandscapeError(f"--rho must be a number or name=number pairs, got {text!r}") from None


def format_results(results: Mapping[str, MeasureResult]) -> str:
    """An aligned text table: measure, value, standard error, cost (passes over the data)."""
    rows = [("measure", "value", "stderr", "cost (passes)")]
    for name, res in results.items():
        stderr = "" if res.stderr is None else f"{res.stderr:.4g}"
        cost = ", ".join(f"{k} {v:.4g}" for k, v in res.cost.items())
        rows.append((name, f"{res.value:.6g}", stderr, cost))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join([r[0].ljust(widths[0]), r[1].rjust(widths[1]), r[2].rjust(widths[2]),
                        r[3]]).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def validate_measures(f: h5py.File, path: Path, attrs: Mapping[str, Any]) -> None:
    """The validator of the measures' kinds (:data:`landscape.store.Validator`): every
    member a scalar dataset."""
    for name in f:
        store.dataset(f, name, path, shape=())


def save_results(path: str | Path, kind: str, results: Mapping[str, MeasureResult],
                 settings: Mapping[str, Any], attrs: Mapping[str, Any] | None = None,
                 overwrite: bool = False) -> None:
    """Write each result as a scalar dataset ``name`` (attrs: stderr, settings, cost, extra)
    in a result file of ``kind`` (one of :data:`landscape.formats.MEASURE_KINDS`) whose root
    ``settings`` decide resume versus refusal (:func:`landscape.store.create`)."""
    with store.create(path, kind, settings, attrs=attrs, overwrite=overwrite,
                      memory=True, validate=validate_measures) as f:
        store.write_arrays(f, {n: np.float64(r.value) for n, r in results.items()},
                           attrs={n: {"stderr": r.stderr, "settings": r.settings,
                                      "cost": r.cost, "extra": r.extra}
                                  for n, r in results.items()})
        store.commit(f, path)


def measures_of_run(run: Any, measures: str | Iterable[str], settings: MeasureSettings | None
                    = None, *, kind: str = "sharpness", split: str = "train",
                    subset: int | None = None, device: str = "auto", precision: str = "float32",
                    out: str | Path | None = None, overwrite: bool = False,
                    command: str | None = None) -> dict[str, MeasureResult]:
    """:func:`compute_measures` at a run's final model (``landscape sharpness`` and
    ``landscape noise``); ``out``: keep them in an HDF5 file of ``kind`` with their settings.
    ``settings.seed`` also draws the ``subset``."""
    from landscape.runs import as_run

    s = settings or MeasureSettings()
    names = parse_measures(measures, names_of(kind))
    objective = _Centred.around(Objective.from_run(as_run(run), split, subset=subset,
                                                   seed=s.seed, device=device,
                                                   precision=precision), None)
    require_finite(objective, None, f"every {kind} measure")
    results = compute_measures(objective, names, settings=s)
    if out is not None:
        run_path = str(Path(run).resolve()) if not hasattr(run, "model") else str(run.path)
        file_settings = {"run": run_path, "measures": names, "split": split, "subset": subset,
                         **{k: v for n in names for k, v in measure_settings(n, s).items()
                            if k != "measure"},
                         "objective": objective.settings()}
        save_results(out, kind, results, file_settings,
                     attrs={"command": command, "device": str(objective.device)},
                     overwrite=overwrite)
    return results


__all__ = ["REGISTRY", "RHO_FIELDS", "Measure", "MeasureSettings", "compute_measures",
           "format_results", "measure_settings", "measures_of_run", "names_of",
           "parse_measures", "parse_rho", "save_results"]
