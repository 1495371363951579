"""Optimizer paths on analytic test functions (``landscape toy``).

The functions (:data:`FUNCTIONS`, built by :func:`make_function`) are torch functions of
``w[..., n]`` (any leading batch shape), float64, with gradients from autograd:

- ``quadratic``: ``f(w) = 1/2 sum_i l_i (Q^T w)_i^2`` with eigenvalues ``l`` given as
  ``eigenvalues`` (n-D) or from ``kappa`` (default 10): ``dim`` (default 2) values spaced
  geometrically from ``1/kappa`` to 1; ``angle`` (degrees, 2D) rotates the eigenvectors
  ``Q`` away from the axes (default 0: ``Q = I``). Minimum 0 at 0.
- ``rosenbrock``: ``sum_i 100 (w_{i+1} - w_i^2)^2 + (1 - w_i)^2`` (n-D, ``dim``); minimum
  0 at ``(1, ..., 1)`` in a curved, flat-bottomed valley.
- ``beale``: ``(1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2``; minimum 0
  at (3, 0.5).
- ``saddle``: ``(x^2 - y^2)/2 + y^4/4``: a strict saddle at the origin between two minima
  (0, +-1) of value -1/4 (the quartic keeps it bounded below).
- ``himmelblau``: ``(x^2 + y - 11)^2 + (x + y^2 - 7)^2``: four minima of value 0.
- ``wide-narrow``: ``-exp(-|w - a|^2 / (2 s_w^2)) - exp(-|w - b|^2 / (2 s_n^2)) +
  c/2 max(0, |w| - R)^2`` with a wide well at ``a = (-2, 0)`` (``s_w = 0.6``) and a narrow
  one at ``b = (2, 0)`` (``s_n = 0.15``) of equal depth 1 (each Gaussian adds less than
  3e-10 at the other's centre), and a quadratic wall (``c = 1``) outside radius ``R = 3.5``
  that keeps noisy paths bounded without changing the wells. Curvatures at the minima:
  ``1/s_w^2 = 2.8`` and ``1/s_n^2 = 44``; the default start is next to the narrow one.

Each function has a default start, plotting box and default learning rate per optimizer
family (:meth:`ToyFunction.default_lr`: chosen so the default pictures show each method's
character, not tuned to be optimal).

:func:`run_optimizer` runs any optimizer of :mod:`landscape.training.optimizers` (the names
and options of ``landscape train``) from a start point, with optional additive Gaussian
gradient noise of standard deviation ``noise`` per coordinate (a fresh draw per step from
a seeded generator; the noiseless value is recorded) to emulate minibatch gradients.
The variance-reduced methods see the noise as minibatches would give it: SAG's batch
``i`` of ``n_batches`` (default 10) always carries the same fixed, zero-mean draw, and
SVRG's two gradients of a step (at the point and at the snapshot, refreshed every
``n_batches`` steps with the noiseless gradient) share one draw.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from landscape import store
from landscape.errors import LandscapeError, LandscapeWarning, check_positive, unknown_name
from landscape.training.optimizers import ELEMENTWISE, OPTIMIZERS, WITH_MOMENTUM, make_optimizer

FUNCTIONS: tuple[str, ...] = ("quadratic", "rosenbrock", "beale", "saddle", "himmelblau",
                              "wide-narrow")
DTYPE = torch.float64

_ADAPTIVE = {"adam", "adamw"}


@dataclass(frozen=True, eq=False)
class ToyFunction:
    """An analytic test function ``f(w[..., n]) -> [...]`` with its plotting defaults.

    ``minima`` are the known minimizers, ``f_min`` the minimum value, ``box`` the plotting
    range ``((x0, x1), (y0, y1))`` (2D only), ``log_levels`` whether contours are
    log-spaced, ``lr`` the default step per optimizer family, ``spec`` the JSON-able
    arguments of :func:`make_function` that rebuild it.
    """

    name: str
    fn: Callable[[Tensor], Tensor]
    dim: int
    start: tuple[float, ...]
    minima: tuple[tuple[float, ...], ...]
    f_min: float
    box: tuple[tuple[float, float], tuple[float, float]] | None
    log_levels: bool
    lr: Mapping[str, float]
    spec: Mapping[str, Any]
    description: str = ""

    def __call__(self, w: Tensor) -> Tensor:
        """Values at ``w[..., dim]`` (float64), differentiable."""
        w = torch.as_tensor(w, dtype=DTYPE)
        if w.shape[-1:] != (self.dim,):
            raise LandscapeError(f"{self.name} takes points of dimension {self.dim}, "
                                 f"got shape {tuple(w.shape)}")
        return self.fn(w)

    def grad(self, w: Tensor) -> Tensor:
        """Gradient at ``w[..., dim]`` by autograd (one backward pass)."""
        w = torch.as_tensor(w, dtype=DTYPE).detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self(w).sum(), w)
        return g

    def default_lr(self, optimizer: str) -> float:
        """The default learning rate of ``optimizer`` on this function."""
        if optimizer in ("lbfgs", "adadelta"):
            return 1.0
        if optimizer in ("momentum", "nesterov", "adagrad"):
            return self.lr["momentum" if optimizer != "adagrad" else "adagrad"]
        if optimizer == "rmsprop":  # no bias correction: its first step is 10x lr
            return 0.3 * self.lr["adaptive"]
        return self.lr["adaptive" if optimizer in _ADAPTIVE else "sgd"]


def _lr(sgd: float, momentum: float, adaptive: float, adagrad: float) -> dict[str, float]:
    """Default steps: plain SGD (also SAM, SVRG, SAG), heavy ball, Adam(W), Adagrad."""
    return {"sgd": sgd, "momentum": momentum, "adaptive": adaptive, "adagrad": adagrad}


def _rotation(angle_deg: float) -> Tensor:
    a = math.radians(angle_deg)
    return torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=DTYPE)


def make_function(name: str = "quadratic", *, kappa: float | None = None,
                  eigenvalues: Sequence[float] | None = None, dim: int | None = None,
                  angle: float = 0.0) -> ToyFunction:
    """Build test function ``name`` (one of :data:`FUNCTIONS`; see the module docstring).

    ``kappa`` (2D quadratic, default 10), ``eigenvalues`` (n-D quadratic), ``dim``
    (rosenbrock: n >= 2; quadratic: ``dim`` eigenvalues spaced geometrically from
    ``1/kappa`` to 1), ``angle`` (2D quadratic rotation, degrees).
    """
    if name not in FUNCTIONS:
        raise unknown_name("function", name, FUNCTIONS)
    if name != "quadratic" and (kappa is not None or eigenvalues is not None or angle):
        raise LandscapeError("kappa, eigenvalues and angle are options of the quadratic only")
    if name not in ("quadratic", "rosenbrock") and dim not in (None, 2):
        raise LandscapeError(f"{name} is two-dimensional (got dim={dim})")
    if name == "quadratic":
        return _quadratic(kappa, eigenvalues, dim, angle)
    if name == "rosenbrock":
        n = 2 if dim is None else int(dim)
        if n < 2:
            raise LandscapeError(f"rosenbrock needs dim >= 2, got {dim}")

        def rosenbrock(w: Tensor) -> Tensor:
            x, y = w[..., :-1], w[..., 1:]
            return (100 * (y - x**2) ** 2 + (1 - x) ** 2).sum(-1)

        start = tuple(-1.2 if i % 2 == 0 else 1.0 for i in range(n))
        return ToyFunction("rosenbrock", rosenbrock, n, start, ((1.0,) * n,), 0.0,
                           ((-2.0, 2.0), (-1.0, 3.0)) if n == 2 else None, True,
                           _lr(2e-3, 1e-3, 0.1, 0.5), {"name": name, "dim": n},
                           "Rosenbrock's valley, minimum 0 at (1, ..., 1)")
    if name == "beale":
        def beale(w: Tensor) -> Tensor:
            x, y = w[..., 0], w[..., 1]
            return ((1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2
                    + (2.625 - x + x * y**3) ** 2)

        return ToyFunction("beale", beale, 2, (0.5, 1.5), ((3.0, 0.5),), 0.0,
                           ((-1.0, 4.5), (-1.5, 2.0)), True, _lr(0.01, 1e-3, 0.1, 0.5),
                           {"name": name}, "Beale's function, minimum 0 at (3, 0.5)")
    if name == "saddle":
        def saddle(w: Tensor) -> Tensor:
            x, y = w[..., 0], w[..., 1]
            return 0.5 * (x**2 - y**2) + 0.25 * y**4

        return ToyFunction("saddle", saddle, 2, (-2.0, 0.01), ((0.0, 1.0), (0.0, -1.0)), -0.25,
                           ((-2.5, 2.5), (-1.6, 1.6)), False, _lr(0.1, 0.01, 0.1, 0.3),
                           {"name": name},
                           "(x^2 - y^2)/2 + y^4/4: saddle at 0, minima -1/4 at (0, +-1)")
    if name == "himmelblau":
        def himmelblau(w: Tensor) -> Tensor:
            x, y = w[..., 0], w[..., 1]
            return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2

        minima = ((3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186),
                  (3.584428, -1.848126))
        return ToyFunction("himmelblau", himmelblau, 2, (0.0, 0.0), minima, 0.0,
                           ((-5.0, 5.0), (-5.0, 5.0)), True, _lr(0.01, 1e-3, 0.1, 0.3),
                           {"name": name}, "Himmelblau's function, four minima of value 0")
    return _wide_narrow()


def _quadratic(kappa: float | None, eigenvalues: Sequence[float] | None, dim: int | None,
               angle: float) -> ToyFunction:
    if eigenvalues is not None:
        if kappa is not None:
            raise LandscapeError("give either kappa or eigenvalues, not both")
        eig = torch.tensor([float(v) for v in eigenvalues], dtype=DTYPE)
        if eig.numel() < 1 or bool((eig <= 0).any()):
            raise LandscapeError(f"eigenvalues must be positive, got {list(eigenvalues)}")
        if dim is not None and dim != eig.numel():
            raise LandscapeError(f"dim={dim} but {eig.numel()} eigenvalues were given")
    else:
        kappa = 10.0 if kappa is None else float(kappa)
        if not kappa >= 1:
            raise LandscapeError(f"kappa must be >= 1, got {kappa}")
        n = 2 if dim is None else int(dim)
        check_positive("dim", n)
        eig = torch.logspace(-math.log10(kappa), 0, n, dtype=DTYPE) if n > 1 else \
            torch.ones(1, dtype=DTYPE)
    n = eig.numel()
    if angle and n != 2:
        raise LandscapeError("angle rotates a 2D quadratic only")
    rot = _rotation(angle) if n == 2 else torch.eye(n, dtype=DTYPE)

    def quadratic(w: Tensor) -> Tensor:
        z = w @ rot
        return 0.5 * (eig * z * z).sum(-1)

    lmin, lmax = float(eig.min()), float(eig.max())
    start = (-4.0, 1.5) if n == 2 else (1.0,) * n
    spec: dict[str, Any] = {"name": "quadratic", "eigenvalues": eig.tolist()}
    if angle:
        spec["angle"] = float(angle)
    return ToyFunction(
        "quadratic", quadratic, n, start, ((0.0,) * n,), 0.0,
        ((-5.0, 5.0), (-2.5, 2.5)) if n == 2 else None, True,
        _lr(1.8 / lmax, 0.18 / lmax, 0.1, 0.5), spec,
        f"1/2 w^T diag({', '.join(f'{v:.4g}' for v in eig.tolist())}) w, "
        f"kappa = {lmax / lmin:.4g}")


WIDE = (-2.0, 0.0)
NARROW = (2.0, 0.0)
WIDE_WIDTH, NARROW_WIDTH = 0.6, 0.15
WALL_RADIUS, WALL_CURVATURE = 3.5, 1.0


def _wide_narrow() -> ToyFunction:
    a = torch.tensor(WIDE, dtype=DTYPE)
    b = torch.tensor(NARROW, dtype=DTYPE)

    def wide_narrow(w: Tensor) -> Tensor:
        wide = torch.exp(-((w - a) ** 2).sum(-1) / (2 * WIDE_WIDTH**2))
        narrow = torch.exp(-((w - b) ** 2).sum(-1) / (2 * NARROW_WIDTH**2))
        r = torch.linalg.vector_norm(w, dim=-1)
        wall = 0.5 * WALL_CURVATURE * torch.clamp(r - WALL_RADIUS, min=0) ** 2
        return -wide - narrow + wall

    f_min = float(wide_narrow(torch.stack([a, b])).min())  # -1 - 2.3e-10 (the tails)
    return ToyFunction("wide-narrow", wide_narrow, 2, (NARROW[0] + 0.1, NARROW[1] + 0.1),
                       (WIDE, NARROW), f_min, ((-3.5, 3.5), (-2.0, 2.0)), False,
                       _lr(0.03, 3e-3, 0.03, 0.1), {"name": "wide-narrow"},
                       "a wide and a narrow Gaussian well of equal depth 1")


def as_function(function: ToyFunction | str | Mapping[str, Any]) -> ToyFunction:
    """A :class:`ToyFunction` from itself, a name, or a ``spec`` mapping."""
    if isinstance(function, ToyFunction):
        return function
    if isinstance(function, str):
        return make_function(function)
    spec = dict(function)
    return make_function(spec.pop("name"), **spec)


@dataclass
class ToyPath:
    """One optimizer's path: ``path[steps+1, n]`` and noiseless ``losses[steps+1]``.

    For a batch of ``R`` independent runs (start of shape ``[R, n]``): ``path[steps+1, R, n]``,
    ``losses[steps+1, R]`` and ``steps_to_tol`` an int array (-1: never). ``steps_to_tol``
    is the first step at which ``f - f_min <= tol`` (None: never).
    """

    label: str
    optimizer: str
    path: np.ndarray
    losses: np.ndarray
    tol: float
    steps_to_tol: int | None | np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> np.ndarray:
        """The last point(s)."""
        return self.path[-1]

    def summary(self, function: ToyFunction | None = None) -> dict[str, Any]:
        """JSON-able summary: final point and loss, steps to tolerance, settings."""
        def clean(x: Any) -> Any:
            arr = np.asarray(x, dtype=float)
            out = np.where(np.isfinite(arr), arr, np.nan).tolist()
            if isinstance(out, list):
                return [None if isinstance(v, float) and math.isnan(v) else v for v in out]
            return None if math.isnan(out) else out

        steps = self.steps_to_tol
        out: dict[str, Any] = {
            "optimizer": self.optimizer, "lr": self.settings.get("lr"),
            "final_point": clean(self.final), "final_loss": clean(self.losses[-1]),
            "steps_to_tol": steps.tolist() if isinstance(steps, np.ndarray) else steps,
            "tol": self.tol,
        }
        if function is not None and self.path.ndim == 2:
            out["loss_gap"] = clean(self.losses[-1] - function.f_min)
            if np.isfinite(self.final).all():
                dist = [float(np.linalg.norm(self.final - np.asarray(m))) for m in function.minima]
                nearest = int(np.argmin(dist))
                out["nearest_minimum"] = list(function.minima[nearest])
                out["distance_to_minimum"] = dist[nearest]
        return out


def _first_below(gaps: np.ndarray, tol: float) -> np.ndarray:
    hit = gaps <= tol
    return np.where(hit.any(0), hit.argmax(0), -1)


def run_optimizer(function: ToyFunction | str, optimizer: str, *,
                  start: Sequence[float] | np.ndarray | Tensor | None = None, steps: int = 100,
                  lr: float | None = None, noise: float = 0.0, seed: int = 0,
                  tol: float = 1e-6, label: str | None = None,
                  **optimizer_options: Any) -> ToyPath:
    """Run ``optimizer`` (a name of :data:`OPTIMIZERS`) for ``steps`` steps on ``function``.

    ``start`` defaults to the function's; a ``[R, n]`` start runs R independent copies at
    once (elementwise optimizers only: sgd, momentum, nesterov, adagrad, rmsprop,
    adadelta, adam, adamw). ``lr`` defaults to the function's default for that optimizer;
    ``optimizer_options`` go to :func:`make_optimizer` (``momentum``, ``rho``, ``betas``,
    ...). ``noise``: standard deviation of the additive Gaussian gradient noise. One
    L-BFGS step is one iteration (``max_iter=1``, ``max_eval=25``) with its line search.
    Cost: ``steps`` (x2 for SAM/ASAM/SVRG) autograd gradients of ``f``.
    """
    f = as_function(function)
    if optimizer not in OPTIMIZERS:
        raise unknown_name("optimizer", optimizer, OPTIMIZERS)
    if steps < 0 or int(steps) != steps:
        raise LandscapeError(f"steps must be a non-negative integer, got {steps}")
    if noise < 0:
        raise LandscapeError(f"noise must be >= 0, got {noise}")
    w0 = torch.as_tensor(np.asarray(f.start if start is None else start, dtype=float),
                         dtype=DTYPE).clone()
    if w0.ndim not in (1, 2) or w0.shape[-1] != f.dim:
        raise LandscapeError(f"start must have shape [{f.dim}] or [runs, {f.dim}] for "
                             f"{f.name}, got {list(w0.shape)}")
    if w0.ndim == 2 and optimizer not in ELEMENTWISE:
        raise LandscapeError(f"batched runs need an elementwise optimizer; {optimizer!r} "
                             "couples the coordinates (run the starts one by one)")
    lr = f.default_lr(optimizer) if lr is None else float(lr)
    options = dict(optimizer_options)
    n_batches = int(options.pop("n_batches", 10))
    if optimizer == "sag":
        options["n_batches"] = n_batches
    if optimizer == "lbfgs":
        options.setdefault("max_iter", 1)
        options.setdefault("max_eval", 25)  # line-search evaluations per iteration
    w = w0.clone().requires_grad_(True)
    opt = make_optimizer(optimizer, [w], lr=lr, **options)
    gen = torch.Generator().manual_seed(int(seed))
    pool = None
    if optimizer == "sag" and noise:
        pool = noise * torch.randn((n_batches, *w.shape), generator=gen, dtype=DTYPE)
        pool -= pool.mean(0)

    xi: Tensor | None = None

    def closure() -> Tensor:
        opt.zero_grad()
        loss = f(w).sum()
        loss.backward()
        if xi is not None:
            w.grad.add_(xi)
        return loss

    def full_closure() -> Tensor:
        opt.zero_grad()
        loss = f(w).sum()
        loss.backward()
        return loss

    points = [w0.numpy().copy()]
    for k in range(int(steps)):
        if "snapshot" in opt.requires and k % n_batches == 0:
            opt.update_snapshot(full_closure)
        if "batch_index" in opt.requires:
            index = int(torch.randint(n_batches, (1,), generator=gen))
            xi = None if pool is None else pool[index]
            opt.step(closure, index=index)
        else:
            xi = noise * torch.randn(w.shape, generator=gen, dtype=DTYPE) if noise else None
            opt.step(closure)
        points.append(w.detach().numpy().copy())
    path = np.stack(points)
    with torch.no_grad():
        losses = f(torch.from_numpy(path)).numpy()
    with np.errstate(invalid="ignore"):
        first = _first_below(losses - f.f_min, tol)
    steps_to_tol: int | None | np.ndarray = first
    if path.ndim == 2:
        steps_to_tol = None if first < 0 else int(first)
    settings = {"optimizer": optimizer, "lr": lr, "steps": int(steps), "noise": float(noise),
                "seed": int(seed), "tol": float(tol), "start": w0.tolist(),
                "options": {k: v for k, v in optimizer_options.items()}}
    return ToyPath(label or optimizer, optimizer, path, losses, float(tol), steps_to_tol,
                   settings)


def compare_optimizers(function: ToyFunction | str,
                       optimizers: Sequence[str] | Mapping[str, Mapping[str, Any]], *,
                       start: Sequence[float] | None = None, steps: int = 100,
                       lr: float | Mapping[str, float] | None = None, noise: float = 0.0,
                       seed: int = 0, tol: float = 1e-6) -> dict[str, ToyPath]:
    """Run several optimizers from the same start with the same noise seed.

    ``optimizers``: names, or ``{label: {"optimizer": name, "lr": ..., **options}}`` to
    compare settings of one optimizer; ``lr``: one value for all, or one per label.
    Returns ``{label: ToyPath}`` in the given order.
    """
    f = as_function(function)
    if isinstance(optimizers, str):
        optimizers = [optimizers]
    if not isinstance(optimizers, Mapping):
        optimizers = {name: {"optimizer": name} for name in optimizers}
    if not optimizers:
        raise LandscapeError("no optimizer to run")
    out: dict[str, ToyPath] = {}
    for label, spec in optimizers.items():
        spec = dict(spec)
        name = spec.pop("optimizer", label)
        step = spec.pop("lr", None)
        if step is None:
            step = lr.get(label) if isinstance(lr, Mapping) else lr
        out[label] = run_optimizer(f, name, start=start, steps=steps, lr=step, noise=noise,
                                   seed=seed, tol=tol, label=label, **spec)
    return out


# ------------------------------------------------------------------ results on disk

def save_paths(paths: Mapping[str, ToyPath], path: str | Path,
               function: ToyFunction | str, *, overwrite: bool = False,
               attrs: Mapping[str, Any] | None = None) -> Path:
    """Write the paths to an HDF5 result of kind ``"toy"``: ``<label>/path``, ``<label>/loss``.

    Each ``path`` dataset carries the optimizer, its settings and ``steps_to_tol``
    (:func:`validate_toy` checks the layout before a file is read or resumed).
    """
    f = as_function(function)
    settings = {"function": dict(f.spec),
                "paths": {label: {"optimizer": p.optimizer, **p.settings}
                          for label, p in paths.items()}}
    with store.create(path, "toy", settings, attrs={"function": f.name, "labels":
                                                   list(paths), **(attrs or {})},
                      overwrite=overwrite, memory=True, validate=validate_toy) as h5:
        for label, p in paths.items():
            steps = p.steps_to_tol
            meta = {"optimizer": p.optimizer, "settings": p.settings, "tol": p.tol,
                    "steps_to_tol": -1 if steps is None else steps}
            store.write_arrays(h5, {f"{label}/path": p.path, f"{label}/loss": p.losses},
                               attrs={f"{label}/path": meta})
        store.commit(h5, path)
    return Path(path)


def validate_toy(f: h5py.File, path: Path, attrs: Mapping[str, Any]) -> None:
    """The validator of a ``toy`` file (:data:`landscape.store.Validator`): per label of
    ``labels``, a path of points, one loss per point, and the path's optimizer, settings,
    tolerance and step count (a list of them for a batch of starts)."""
    if "function" not in attrs.get("settings", {}):
        raise store.damaged(path, "the settings name no function")
    for label in store.names(attrs, "labels", path):
        group = store.subgroup(f, label, path)
        n = store.dataset(group, "path", path).shape
        store.dataset(group, "loss", path, shape=n[:-1])
        meta = store.read_attrs(group["path"])
        store.check_number(meta, "tol", path, f" of '{label}/path'")
        steps = meta.get("steps_to_tol")
        if not all(isinstance(s, int) and not isinstance(s, bool)
                   for s in (steps if isinstance(steps, list) and len(n) > 2 else [steps])):
            raise store.damaged(path, f"attribute 'steps_to_tol' of '{label}/path' is "
                                      f"{str(steps)[:40]!r}, not a step count")
        if not isinstance(meta.get("settings"), dict) or "optimizer" not in meta:
            raise store.damaged(path, f"'{label}/path' lacks its optimizer or settings")


def load_paths(path: str | Path) -> tuple[ToyFunction, dict[str, ToyPath]]:
    """Read a ``"toy"`` result: the function and ``{label: ToyPath}``."""
    with store.open_result(path, "toy", validate=validate_toy) as h5:
        settings = store.read_settings(h5)
        root = store.read_attrs(h5)
        f = as_function(settings["function"])
        out: dict[str, ToyPath] = {}
        for label in root["labels"]:
            meta = store.read_attrs(h5[f"{label}/path"])
            arr = h5[f"{label}/path"][()]
            steps = meta["steps_to_tol"]
            if arr.ndim == 2:
                steps = None if int(steps) < 0 else int(steps)
            else:
                steps = np.asarray(steps)
            out[label] = ToyPath(label, meta["optimizer"], arr, h5[f"{label}/loss"][()],
                                 float(meta["tol"]), steps, dict(meta["settings"]))
    return f, out


#: A suboptimality above this counts as diverged (left out of the figures, which could not
#: even draw it on a log axis).
DIVERGED = 1e100


def diverged(gap: np.ndarray) -> bool:
    """Whether the suboptimality ``gap`` (one value, or one per run) is not finite or above
    :data:`DIVERGED` anywhere."""
    return bool(np.any(~np.isfinite(gap) | (np.abs(gap) > DIVERGED)))


def run_toy(function: str = "quadratic", optimizers: Sequence[str] = ("sgd", "momentum", "adam"),
            *, out: str | Path = "outputs/toy", kappa: float | None = None,
            eigenvalues: Sequence[float] | None = None, dim: int | None = None,
            angle: float = 0.0, steps: int = 200, lr: float | Sequence[float] | None = None,
            momentum: float | None = None, rho: float | None = None, noise: float = 0.0,
            seed: int = 0, start: Sequence[float] | None = None, tol: float = 1e-6,
            overwrite: bool = False, command: str | None = None) -> dict[str, Any]:
    """What ``landscape toy`` computes: run the optimizers, write ``out/paths.h5``, summarize
    (the figures are :func:`landscape.plot.toy.save_toy_figures` of that file).

    ``lr``: one value, or one per optimizer (None: each optimizer's default on the
    function). ``momentum`` goes to the optimizers that have one, ``rho`` to SAM/ASAM.
    Returns the JSON summary ``{"function", "files", "optimizers": {label: summary}}``.
    """
    f = make_function(function, kappa=kappa, eigenvalues=eigenvalues, dim=dim, angle=angle)
    optimizers = list(optimizers)
    if not optimizers:
        raise LandscapeError("no optimizer to run")
    for name in optimizers:
        if name not in OPTIMIZERS:
            raise unknown_name("optimizer", name, OPTIMIZERS)
    if len(set(optimizers)) != len(optimizers):
        raise LandscapeError(f"an optimizer is listed twice: {', '.join(optimizers)}")
    if lr is None or isinstance(lr, int | float):
        lrs = [lr] * len(optimizers)
    else:
        lrs = list(lr)
        if len(lrs) == 1:
            lrs = lrs * len(optimizers)
        if len(lrs) != len(optimizers):
            raise LandscapeError(f"{len(lrs)} learning rates for {len(optimizers)} optimizers")
    specs: dict[str, dict[str, Any]] = {}
    for name, step in zip(optimizers, lrs, strict=True):
        spec: dict[str, Any] = {"optimizer": name, "lr": step}
        if momentum is not None and name in WITH_MOMENTUM:
            spec["momentum"] = momentum
        if rho is not None and name in ("sam", "asam"):
            spec["rho"] = rho
        specs[name] = spec
    paths = compare_optimizers(f, specs, start=start, steps=steps, noise=noise, seed=seed,
                               tol=tol)
    gone = [label for label, p in paths.items() if diverged(np.asarray(p.losses)[-1] - f.f_min)]
    if gone:
        warnings.warn(f"{', '.join(gone)} diverged (final loss not finite or above "
                      f"{DIVERGED:g}): lower the learning rate", LandscapeWarning, stacklevel=2)
    out = Path(out)
    files = [save_paths(paths, out / "paths.h5", f, overwrite=overwrite,
                        attrs={"command": command} if command else None)]
    return {"function": {**f.spec, "description": f.description, "f_min": f.f_min},
            "steps": steps, "noise": noise, "seed": seed,
            "files": [str(p) for p in files],
            "optimizers": {label: p.summary(f) for label, p in paths.items()}}


def parse_floats(text: str | None, what: str) -> list[float] | None:
    """``"1,2.5,3"`` -> ``[1.0, 2.5, 3.0]`` (None stays None); a bad number is a LandscapeError."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LandscapeError(f"{what} must be comma-separated numbers, got {text!r}") from None
