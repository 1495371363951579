"""Curvature tracked during training: sharpness, trace, gradient noise and landscapes of the path.

A :class:`Tracker` is called by the trainer after every optimizer step (and once before the
first); at the tracked steps (every ``N`` steps or epochs) it measures, on a fixed subset of
the training split, with a copy of the model (eval mode, running BatchNorm statistics; the
network, its buffers, the optimizer and every random-number state are left untouched):

- ``top_eigenvalue``: the largest Hessian eigenvalue by Lanczos, warm-started from the
  previous measurement's eigenvector (a few HVPs instead of a cold start's dozens); its
  error is the absolute residual ``||H v - lambda v||``, which bounds the distance to an
  eigenvalue of H.
- any other computed measure of :data:`landscape.analysis.measures.REGISTRY` (``trace`` is
  ``hessian_trace``; ``noise_scale`` with the run's batch size and learning rate), with its
  standard error where it has one.
- for Adam/AdamW, RMSprop and Adagrad, the top eigenvalue of the preconditioned Hessian
  ``P^-1 H`` (as the eigenvalue of ``P^-1/2 H P^-1/2``) with the optimizer's own
  preconditioner at that step, and its stability threshold (Cohen et al. 2022, "Adaptive
  gradient methods at the edge of stability"): Adam ``P = (1 - beta1^t) diag(sqrt(v_t /
  (1 - beta2^t)) + eps)``, threshold ``(2 + 2 beta1) / ((1 - beta1) lr)``; RMSprop ``P =
  diag(sqrt(v_t) + eps)``, threshold ``(2 + 2 momentum) / lr``; Adagrad ``P = diag(sqrt(G_t)
  + eps)``, threshold ``2 / lr``.
- the threshold of the raw sharpness: ``2 / lr`` for gradient descent, ``(2 + 2 beta) / lr``
  for heavy-ball momentum ``beta`` (Cohen et al. 2021, "Gradient descent on neural networks
  typically occurs at the edge of stability"); ``2 / lr`` as the reference for the others.
- landscapes of the path: the loss along the update actually taken, ``theta_t + a
  (theta_{t+1} - theta_t)`` for ``a`` on a grid beyond [0, 1] (filled in after the next
  step), and the loss on the straight line from the previous tracked point to this one.

Rows go to ``track.h5`` in the run directory (kind ``"track"``), rewritten atomically after
every measurement; the tracker's own state (eigenvectors, last tracked parameters) rides in
the run's checkpoints, so a resumed run continues the file without gaps or duplicates.
:func:`load_track` reads it back as a :class:`Track` of arrays.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor, nn

from landscape import linalg, store
from landscape.analysis.hessian import hessian_eigenvalues
from landscape.analysis.measures import REGISTRY, MeasureSettings, compute_measures
from landscape.errors import LandscapeError, check_int, check_positive, unknown_name
from landscape.objective import Objective

TRACK_FILE = "track.h5"
#: measure names accepted besides the registry's (``--track trace``)
ALIASES = {"trace": "hessian_trace"}
#: optimizers whose preconditioned sharpness is tracked
PRECONDITIONED = ("adam", "adamw", "rmsprop", "adagrad")
UNITS = ("steps", "epochs")


def trackable() -> list[str]:
    """The measures a run can track (registry order)."""
    return [name for name, m in REGISTRY.items() if m.compute is not None]


@dataclass(frozen=True)
class TrackSettings:
    """What is tracked: ``measures`` (registry names), every ``every`` ``unit`` ("steps" or
    "epochs"), on a fixed random ``subset`` of the training split (None: all of it, drawn
    from ``seed``, which also seeds every probe), Lanczos tolerance ``tol`` (relative
    residual), ``update_alphas`` (the grid of ``a`` along each update) and
    ``segment_points`` (points on the line between consecutive tracked steps)."""

    measures: tuple[str, ...] = ("top_eigenvalue",)
    every: int = 10
    unit: str = "steps"
    subset: int | None = None
    tol: float = 1e-3
    seed: int = 0
    update_alphas: tuple[float, ...] = tuple(np.round(np.linspace(-0.5, 2.0, 26), 6).tolist())
    segment_points: int = 11

    def __post_init__(self) -> None:
        check_int("track every", self.every)
        if self.unit not in UNITS:
            raise unknown_name("track unit", self.unit, UNITS)
        if self.subset is not None:
            check_int("track subset", self.subset)
        check_positive("track tol", self.tol)
        check_int("segment points", self.segment_points, 2)
        if not self.measures:
            raise LandscapeError("no measures to track")
        for m in self.measures:
            if m not in trackable():
                raise unknown_name("tracked measure", m, [*trackable(), *ALIASES])

    def interval(self, steps_per_epoch: int) -> int:
        """Optimizer steps between measurements."""
        return self.every * (steps_per_epoch if self.unit == "epochs" else 1)

    def to_dict(self) -> dict[str, Any]:
        return {"measures": list(self.measures), "every": self.every, "unit": self.unit,
                "subset": self.subset, "tol": self.tol, "seed": self.seed,
                "update_alphas": list(self.update_alphas),
                "segment_points": self.segment_points}


def parse_every(every: str | int) -> tuple[int, str]:
    """``10``, ``"10"``, ``"10steps"``, ``"2 epochs"`` -> (count, unit)."""
    if isinstance(every, int) and not isinstance(every, bool):
        return check_int("track every", every), "steps"
    found = re.fullmatch(r"\s*(\d+)\s*(steps?|epochs?)?\s*", str(every))
    if not found or int(found.group(1)) < 1:
        raise LandscapeError(f"--track-every must be N, Nsteps or Nepochs (N >= 1), got "
                             f"{every!r}")
    unit = (found.group(2) or "steps").rstrip("s") + "s"
    return int(found.group(1)), unit


def track_settings(track: str | Sequence[str] | None, every: str | int = 10,
                   subset: int | None = None, **options: Any) -> TrackSettings | None:
    """Settings from the ``train`` options (None: nothing tracked). ``track``: comma-separated
    names (``trace`` means ``hessian_trace``); ``every``: see :func:`parse_every`."""
    if track is None:
        return None
    names = [n.strip() for n in track.split(",")] if isinstance(track, str) else list(track)
    names = [ALIASES.get(n, n) for n in names if n]
    count, unit = parse_every(every)
    return TrackSettings(measures=tuple(dict.fromkeys(names)), every=count, unit=unit,
                         subset=subset, **options)


# ------------------------------------------------------------------------------ preconditioners
def _flat(opt: torch.optim.Optimizer, params: Sequence[nn.Parameter], key: str) -> Tensor | None:
    states = [opt.state.get(p, {}) for p in params]
    if any(key not in s for s in states):
        return None
    return torch.cat([s[key].detach().reshape(-1) for s in states])


def preconditioner(name: str, opt: torch.optim.Optimizer, params: Sequence[nn.Parameter]
                   ) -> tuple[Tensor | None, float]:
    """The diagonal ``[P]`` of optimizer ``name``'s preconditioner at its current step (None
    before its first step) and the stability threshold of ``P^-1 H`` (see the module
    docstring). One parameter group is assumed (the trainer builds one)."""
    group = opt.param_groups[0]
    lr, eps = float(group["lr"]), float(group.get("eps", 0.0))
    if name in ("adam", "adamw"):
        beta1, beta2 = (float(b) for b in group["betas"])
        v = _flat(opt, params, "exp_avg_sq")
        threshold = (2 + 2 * beta1) / ((1 - beta1) * lr)
        if v is None:
            return None, threshold
        t = float(opt.state[params[0]]["step"])
        return (1 - beta1 ** t) * ((v / (1 - beta2 ** t)).sqrt() + eps), threshold
    if name == "rmsprop":
        v = _flat(opt, params, "square_avg")
        beta = float(group.get("momentum", 0.0))
        if v is not None and group.get("centered"):
            v = v - _flat(opt, params, "grad_avg") ** 2
        return (None if v is None else v.sqrt() + eps), (2 + 2 * beta) / lr
    if name == "adagrad":
        total = _flat(opt, params, "sum")
        return (None if total is None else total.sqrt() + eps), 2 / lr
    raise unknown_name("preconditioned optimizer", name, PRECONDITIONED)


def sharpness_threshold(name: str, lr: float, momentum: float | None) -> float:
    """The stability threshold of the raw top Hessian eigenvalue: ``(2 + 2 beta) / lr`` for
    gradient descent with heavy-ball momentum ``beta`` (0: plain GD), ``2 / lr`` (the GD
    reference) for every other optimizer."""
    beta = float(momentum or 0.0) if name in ("sgd", "momentum") else 0.0
    if name == "momentum" and momentum is None:
        beta = 0.9
    return (2 + 2 * beta) / lr


# ------------------------------------------------------------------------------ the file
#: The 1D columns every track holds, one value per row, before its measures' columns.
COLUMNS = ("step", "epoch", "lr", "train_loss", "threshold", "seconds")
#: The 1D columns a track holds for some measures only (HVP counts, the preconditioned
#: threshold); its reader takes them when present.
TRACK_OPTIONAL = ("top_eigenvalue_hvp", "preconditioned_top_eigenvalue",
                  "preconditioned_top_eigenvalue_error", "preconditioned_top_eigenvalue_hvp",
                  "preconditioned_threshold")
#: The path landscapes of a track: (losses, their coordinates), one line of losses per row.
TRACK_LINES = (("update_loss", "update_alpha"), ("segment_loss", "segment_s"))


def track_columns(measures: list[str]) -> tuple[str, ...]:
    """The 1D columns every track of ``measures`` holds, one value per row."""
    return (*COLUMNS, *measures, *(f"{m}_error" for m in measures))


def validate_track(f: h5py.File, path: Path, attrs: Mapping[str, Any]) -> None:
    """The validator of a ``track`` file (:data:`landscape.store.Validator`): one row per
    measurement in every 1D column, one line of losses per row in the path landscapes; a
    file killed before its first row holds no columns yet."""
    track = attrs.get("settings", {}).get("track")
    if not isinstance(track, dict) or not isinstance(track.get("measures"), list) or not all(
            isinstance(m, str) for m in track["measures"]):
        raise store.damaged(path, "the settings name no tracked measures")
    if "step" not in f:
        return
    n = store.dataset(f, "step", path, dtype="iu", ndim=1).shape
    for name in track_columns(track["measures"])[1:]:  # after "step"
        store.dataset(f, name, path, shape=n)
    for name in TRACK_OPTIONAL:
        store.dataset(f, name, path, dtype="fbiu", shape=n, optional=True)
    for line, coords in TRACK_LINES:
        m = store.dataset(f, coords, path, ndim=1).shape
        store.dataset(f, line, path, shape=(*n, *m))


# ------------------------------------------------------------------------------ the tracker


class Tracker:
    """Measures curvature at tracked steps of one run and keeps ``track.h5`` (see module).

    ``x``/``y``: the training split on the device; ``optimizer``/``momentum``: the run's
    optimizer name and momentum setting; ``batch_size``: the run's (noise measures);
    ``run``: the run's settings (part of the file's settings hash); ``fresh``: start a new
    file (else continue the existing one). Cost per tracked step: the measures' costs on the
    subset, two point evaluations of the lines, plus one line evaluation after the next step.
    """

    def __init__(self, path: Path, settings: TrackSettings, *, x: Tensor, y: Tensor,
                 loss: Any, optimizer: str, momentum: float | None, batch_size: int,
                 steps_per_epoch: int, run: dict[str, Any], fresh: bool) -> None:
        self.path, self.s = Path(path), settings
        n = len(y)
        if settings.subset is not None and settings.subset > n:
            raise LandscapeError(f"--track-subset {settings.subset} is larger than the "
                                 f"{n} training samples")
        if settings.subset is None:
            self.x, self.y = x, y
        else:
            idx = torch.randperm(n, generator=torch.Generator().manual_seed(settings.seed))
            idx = idx[:settings.subset].to(x.device)
            self.x, self.y = x[idx], y[idx]
        self.loss, self.optimizer, self.momentum = loss, optimizer, momentum
        self.batch_size = min(batch_size, len(self.y))
        self.objective: Objective | None = None  # made at the first tracked step
        self.spe = steps_per_epoch
        self.interval = settings.interval(steps_per_epoch)
        self.others = [m for m in settings.measures if m != "top_eigenvalue"]
        self.precondition = optimizer in PRECONDITIONED
        self.state: dict[str, Any] = {"step": None, "theta": None, "vec": None, "pvec": None,
                                      "update_loss": None}
        alphas = np.asarray(settings.update_alphas, dtype=np.float64)
        self.alphas = alphas
        self.segment = np.linspace(0.0, 1.0, settings.segment_points)
        file_settings = {"track": settings.to_dict(), "run": run}
        attrs = {"optimizer": optimizer, "n": len(self.y),
                 "loss": loss if isinstance(loss, str) else getattr(loss, "__name__", "user"),
                 "steps_per_epoch": steps_per_epoch, "interval_steps": self.interval,
                 "preconditioned": self.precondition}
        self.file = store.create(self.path, "track", file_settings, attrs=attrs,
                                 overwrite=fresh, memory=True, validate=validate_track)
        self.rows: dict[str, list] = {k: [] for k in self.columns()}
        if not fresh and "step" in self.file:
            for k in self.rows:
                self.rows[k] = list(self.file[k][()]) if k in self.file else []

    def columns(self) -> list[str]:
        """The columns this tracker writes: :func:`track_columns`, the :data:`TRACK_OPTIONAL`
        ones of its measures, the losses of :data:`TRACK_LINES`."""
        names = [*track_columns(self.s.measures)]
        if "top_eigenvalue" in self.s.measures:
            names.append(TRACK_OPTIONAL[0])
        if self.precondition:
            names += TRACK_OPTIONAL[1:]
        return [*names, *(line for line, _ in TRACK_LINES)]

    # ------------------------------------------------------------------ resume
    def checkpoint_state(self) -> dict[str, Any]:
        """What a checkpoint keeps so that a resumed run measures exactly as an uninterrupted
        one: the last tracked step, its parameters and update line, and the warm-start
        eigenvectors."""
        return {k: (v.detach().cpu().clone() if isinstance(v, Tensor) else v)
                for k, v in self.state.items()}

    def restore(self, state: dict[str, Any] | None, step: int) -> None:
        """Continue from a checkpoint taken after ``step`` optimizer steps: rows measured
        after it are dropped (they are measured again); the last row's update line is the
        checkpoint's (not yet measured when that row is at ``step`` itself)."""
        keep = [i for i, s in enumerate(self.rows["step"]) if int(s) <= step]
        self.rows = {k: [v[i] for i in keep] for k, v in self.rows.items()}
        if state is not None:
            self.state = {**self.state, **state}
        if self.rows["step"]:
            if self.state["step"] != int(self.rows["step"][-1]):
                raise LandscapeError(f"{self.path}: the track file and the checkpoint disagree "
                                     "(last tracked step); rerun with --overwrite")
            line = self.state["update_loss"]
            self.rows["update_loss"][-1] = (np.full(len(self.alphas), np.nan) if line is None
                                            else line.numpy())

    # ------------------------------------------------------------------ the hook
    def after_step(self, net: nn.Module, opt: torch.optim.Optimizer, step: int,
                   lr: float) -> None:
        """Called after every optimizer step (``step`` taken so far; 0 before the first) with
        the learning rate of the next step; measures at tracked steps (and writes the file),
        and one step later the line along the update taken (kept with the checkpoints).
        Random-number states are restored afterwards, so the training is unchanged."""
        pending = self.state["step"] is not None and step == self.state["step"] + 1 and \
            self.rows["step"] and int(self.rows["step"][-1]) == self.state["step"]
        if not pending and step % self.interval:
            return
        device = next(net.parameters()).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            t0 = time.perf_counter()
            # one point at a time: no timing-based choice, so a resumed run's lines are the
            # same bits as an uninterrupted one's
            if self.objective is None:  # one engine for the run, moved to each step's weights
                self.objective = Objective(net, (self.x, self.y), loss=self.loss,
                                           device=device, strategy="loop")
            objective = self.objective.rebind(
                self.objective.space.flatten(net),
                {k: v.detach() for k, v in net.named_buffers()})
            if pending:
                self._update_line(objective)
            if step % self.interval == 0:
                self._measure(objective, net, opt, step, lr)
            # the row's tracking time: its measurement, its update line, the file writes
            self.rows["seconds"][-1] += time.perf_counter() - t0
            if step % self.interval == 0:
                self._write()

    def _line(self, objective: Objective, start: Tensor, end: Tensor,
              coords: np.ndarray) -> np.ndarray:
        a = torch.as_tensor(coords, dtype=start.dtype, device=start.device)[:, None]
        return objective.evaluate(start + a * (end - start))["loss"].numpy()

    def _update_line(self, objective: Objective) -> None:
        theta_t = self.state["theta"].to(objective.device, objective.dtype)
        line = self._line(objective, theta_t, objective.theta0, self.alphas)
        self.rows["update_loss"][-1] = line
        self.state["update_loss"] = torch.from_numpy(line)  # checkpoints hold tensors only

    def _measure(self, objective: Objective, net: nn.Module, opt: torch.optim.Optimizer,
                 step: int, lr: float) -> None:
        s, theta = self.s, objective.theta0
        row: dict[str, Any] = {"step": step, "epoch": step / self.spe, "lr": lr,
                               "train_loss": objective.loss(theta),
                               "threshold": sharpness_threshold(self.optimizer, lr,
                                                                self.momentum)}
        if "top_eigenvalue" in s.measures:
            e = hessian_eigenvalues(objective, theta, k=1, tol=s.tol, seed=s.seed,
                                    v0=self.state["vec"], verify=False)
            value = float(e.largest[0])
            row.update(top_eigenvalue=value,
                       top_eigenvalue_error=float(e.residuals[0]) * abs(value),
                       top_eigenvalue_hvp=e.n_hvp)
            self.state["vec"] = e.eigenvectors[0]
        if self.others:
            results = compute_measures(objective, self.others, theta, MeasureSettings(
                seed=s.seed, lr=lr, noise_batch_size=self.batch_size), show_progress=False)
            for name, res in results.items():
                row[name] = res.value
                row[f"{name}_error"] = math.nan if res.stderr is None else res.stderr
        if self.precondition:
            row.update(self._preconditioned(objective, net, opt, theta))
        previous = self.state["theta"]
        row["segment_loss"] = (np.full(len(self.segment), np.nan) if previous is None else
                               self._line(objective, previous.to(theta.device, theta.dtype),
                                          theta, self.segment))
        row["update_loss"] = np.full(len(self.alphas), np.nan)
        self.state.update(step=step, theta=theta.detach().clone(), update_loss=None)
        row["seconds"] = 0.0
        for k in self.rows:
            self.rows[k].append(row[k])

    def _preconditioned(self, objective: Objective, net: nn.Module,
                        opt: torch.optim.Optimizer, theta: Tensor) -> dict[str, float]:
        params = [p for _, p in net.named_parameters()]
        diag, threshold = preconditioner(self.optimizer, opt, params)
        out = {"preconditioned_threshold": threshold}
        if diag is None:  # before the first step there is no preconditioner
            return {**out, "preconditioned_top_eigenvalue": math.nan,
                    "preconditioned_top_eigenvalue_error": math.nan,
                    "preconditioned_top_eigenvalue_hvp": 0}
        scale = diag.to(objective.device, objective.dtype).rsqrt()

        def op(v: Tensor) -> Tensor:
            return scale * objective.hvp(theta, scale * v)

        pairs = linalg.lanczos(op, theta.numel(), 1, tol=self.s.tol, seed=self.s.seed,
                               v0=self.state["pvec"], dtype=objective.dtype,
                               device=objective.device, desc="lanczos (P^-1 H)")
        self.state["pvec"] = pairs.vectors[0].cpu()
        return {**out, "preconditioned_top_eigenvalue": float(pairs.values[0]),
                "preconditioned_top_eigenvalue_error": float(pairs.residuals[0]),
                "preconditioned_top_eigenvalue_hvp": pairs.n_matvecs}

    def _write(self) -> None:
        arrays = {k: np.asarray(v, dtype=np.int64 if k == "step" else np.float64)
                  for k, v in self.rows.items() if k not in ("update_loss", "segment_loss")}
        for k, coords in (("update_loss", self.alphas), ("segment_loss", self.segment)):
            arrays[k] = np.asarray(self.rows[k], dtype=np.float64).reshape(-1, len(coords))
        arrays["update_alpha"], arrays["segment_s"] = self.alphas, self.segment
        with store.writing(self.path):
            store.write_arrays(self.file, arrays)
            store.commit(self.file, self.path)

    def close(self) -> None:
        """Write the file a last time and release it."""
        self._write()
        store.close_quietly(self.file)


# ------------------------------------------------------------------------------ reading
@dataclass
class Track:
    """A run's tracked curvature, one entry per tracked step (arrays of length R).

    ``step`` (optimizer steps taken), ``epoch`` (``step / steps_per_epoch``), ``lr`` (of the
    next step), ``train_loss`` (on the tracking subset), ``threshold`` (of the raw top
    eigenvalue, see :func:`sharpness_threshold`), ``seconds`` (tracking time of the row:
    measurement, update line, file writes but the last);
    ``measures[name]`` and ``errors[name]`` (NaN: no error estimate); ``hvp[name]``: HVPs of
    a Lanczos measurement (``top_eigenvalue``, ``preconditioned_top_eigenvalue``);
    ``preconditioned`` / ``preconditioned_threshold`` (adaptive optimizers, else None);
    ``update_alpha[A]``, ``update_loss[R, A]``: the loss at ``theta_t + a (theta_{t+1} -
    theta_t)`` (NaN where not measured); ``segment_s[S]``, ``segment_loss[R, S]``: the loss
    on the line from the previous tracked point (row 0: NaN).
    """

    path: Path
    step: np.ndarray
    epoch: np.ndarray
    lr: np.ndarray
    train_loss: np.ndarray
    threshold: np.ndarray
    seconds: np.ndarray
    measures: dict[str, np.ndarray]
    errors: dict[str, np.ndarray]
    hvp: dict[str, np.ndarray]
    update_alpha: np.ndarray
    update_loss: np.ndarray
    segment_s: np.ndarray
    segment_loss: np.ndarray
    preconditioned: np.ndarray | None = None
    preconditioned_threshold: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def sharpness(self) -> tuple[np.ndarray, np.ndarray, str]:
        """(values, threshold, name) of the sharpness that has a stability threshold: the
        preconditioned top eigenvalue for adaptive optimizers, else the top eigenvalue."""
        if self.preconditioned is not None:
            return self.preconditioned, self.preconditioned_threshold, \
                "preconditioned_top_eigenvalue"
        if "top_eigenvalue" not in self.measures:
            raise LandscapeError(f"{self.path}: top_eigenvalue was not tracked")
        return self.measures["top_eigenvalue"], self.threshold, "top_eigenvalue"

    def line_minimum(self) -> np.ndarray:
        """Per row, the ``a`` of the least loss along the update (units of the step taken;
        about 1/2 when the step jumps across a quadratic valley to the mirror point, below
        1/2 when it raised the loss): the grid minimum refined by the parabola through it and
        its neighbours (an end of the grid when the minimum is there). NaN where the update
        line was not measured."""
        a, out = self.update_alpha, np.full(len(self.step), np.nan)
        for r, loss in enumerate(self.update_loss):
            if not np.isfinite(loss).all():
                continue
            i = int(np.argmin(loss))
            if i in (0, len(a) - 1):  # at the end of the grid: "at least" / "at most"
                out[r] = a[i]
                continue
            (x0, x1, x2), (y0, y1, y2) = a[i - 1:i + 2], loss[i - 1:i + 2]
            denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
            c2 = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
            c1 = (x2 ** 2 * (y0 - y1) + x1 ** 2 * (y2 - y0) + x0 ** 2 * (y1 - y2)) / denom
            out[r] = -c1 / (2 * c2) if c2 > 0 and x0 <= -c1 / (2 * c2) <= x2 else a[i]
        return out


def track_path(run_or_file: str | Path) -> Path:
    """``RUN_DIR/track.h5`` for a run directory, the path itself for a file."""
    path = Path(run_or_file)
    return path / TRACK_FILE if path.is_dir() else path


def load_track(run_or_file: str | Path) -> Track:
    """Read the track of a run directory (or a ``track.h5`` file) as a :class:`Track`."""
    path = track_path(run_or_file)
    if not path.exists():
        raise LandscapeError(f"{path}: no track (train with --track to record one)")
    with store.open_result(path, "track", validate=validate_track) as f:
        settings, attrs = store.read_settings(f), store.read_attrs(f)
        if "step" not in f:
            raise LandscapeError(f"{path}: the track has no rows yet")
        names = settings["track"]["measures"]
        known = (*track_columns(names), *TRACK_OPTIONAL,
                 *(name for line in TRACK_LINES for name in line))
        data = {k: f[k][()] for k in known if k in f}  # the validated columns only
    pre = "preconditioned_top_eigenvalue"
    lanczos = [m for m in ("top_eigenvalue", pre) if f"{m}_hvp" in data]
    return Track(
        path=path, step=data["step"], epoch=data["epoch"], lr=data["lr"],
        train_loss=data["train_loss"], threshold=data["threshold"], seconds=data["seconds"],
        measures={m: data[m] for m in names}, errors={m: data[f"{m}_error"] for m in names},
        hvp={m: data[f"{m}_hvp"] for m in lanczos},
        update_alpha=data["update_alpha"], update_loss=data["update_loss"],
        segment_s=data["segment_s"], segment_loss=data["segment_loss"],
        preconditioned=data.get(pre), preconditioned_threshold=data.get(
            "preconditioned_threshold"), settings=settings, attrs=attrs)


__all__ = ["ALIASES", "PRECONDITIONED", "TRACK_FILE", "Track", "TrackSettings", "Tracker",
           "load_track", "parse_every", "preconditioner", "sharpness_threshold",
           "track_path", "track_settings", "trackable"]
