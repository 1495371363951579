"""Optimizers by name: torch's own, and SVRG, SAG, SAM and ASAM written here.

``make_optimizer(name, params, lr=..., ...)`` builds any of :data:`OPTIMIZERS`:

=============  ==============================================================================
``sgd``        ``torch.optim.SGD`` (``momentum`` default 0, ``nesterov``)
``momentum``   SGD with heavy-ball momentum (``momentum`` default 0.9)
``nesterov``   SGD with Nesterov momentum (``momentum`` default 0.9)
``adagrad``    ``torch.optim.Adagrad``          ``rmsprop``  ``torch.optim.RMSprop``
``adadelta``   ``torch.optim.Adadelta``         ``adam`` / ``adamw``  ``torch.optim.Adam(W)``
``lbfgs``      ``torch.optim.LBFGS`` on the full batch (strong-Wolfe line search by default)
``svrg``       :class:`SVRG`, stochastic variance-reduced gradient (Johnson & Zhang, 2013)
``sag``        :class:`SAG`, stochastic average gradient (Schmidt, Le Roux & Bach, 2013)
``sam``        :class:`SAM`, sharpness-aware minimization (Foret et al., 2021) around SGD
``asam``       :class:`SAM` with ``adaptive=True``: ASAM (Kwon et al., 2021)
=============  ==============================================================================

Step protocol (what a trainer calls)
------------------------------------
Every optimizer is driven the same way: ``loss = optimizer.step(closure)``, where
``closure()`` zeroes the gradients (``optimizer.zero_grad()``), computes the loss of the
current minibatch at the current parameters, calls ``backward()`` and returns the loss (a
tensor). This is torch's closure convention; the optimizer may call it several times per
step, at different parameter values, and returns the loss of the first call (at the
parameters the step started from). ``optimizer.requires`` (a frozenset, set on every
optimizer this module builds) says what else the trainer must do:

- ``"closure"`` (all): pass ``closure`` to ``step``.
- ``"reevaluate"`` (``sam``, ``asam``, ``svrg``, ``lbfgs``): ``closure`` is called more
  than once per step, at other parameters; it must use the same data every call of that
  step (same minibatch, same augmentation; dropout masks and BatchNorm statistics are
  recomputed, as in the reference implementations).
- ``"full_batch"`` (``lbfgs``): ``closure`` computes the loss over the whole training
  set; call ``step`` once per epoch (one step runs ``max_iter`` L-BFGS iterations).
- ``"batch_index"`` (``sag``): call ``step(closure, index=i)`` where ``i`` in
  ``range(n_batches)`` names a FIXED subset of the training data (the same samples every
  time ``i`` comes back); partition the data once into ``n_batches`` batches (given to
  ``make_optimizer(..., n_batches=..., batch_sizes=...)``; ``batch_sizes`` defaults to
  equal batches, and weights the memory so that unequal batches still give the gradient of
  the sample-mean loss) and draw ``i`` at random or in a shuffled order each epoch.
- ``"snapshot"`` (``svrg``): at the start of every epoch (before its first step) call
  ``optimizer.update_snapshot(full_closure)``, where ``full_closure()`` zeroes the
  gradients and leaves in ``p.grad`` the gradient of the mean loss over the whole
  training set at the current parameters (accumulate over batches, weighted by size).

Costs per step, in gradient evaluations of one minibatch: 1 for torch's first-order
methods and SAG; 2 for SAM, ASAM and SVRG (plus one full-data gradient per epoch for SVRG);
L-BFGS about ``max_iter`` (+ line-search) full-data gradients. Memory: SAG keeps one
gradient per batch (``n_batches * P`` numbers); SVRG three copies of the parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from landscape.errors import LandscapeError, check_int, check_positive, unknown_name

Closure = Callable[[], Tensor]

OPTIMIZERS: tuple[str, ...] = (
    "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "adamw",
    "lbfgs", "svrg", "sag", "sam", "asam",
)

#: optimizers whose update of each coordinate depends only on that coordinate's history
#: (so independent problems stacked in one tensor are optimized independently).
ELEMENTWISE: frozenset[str] = frozenset(
    {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "adamw"})

_TORCH = {
    "sgd": torch.optim.SGD, "momentum": torch.optim.SGD, "nesterov": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop,
    "adadelta": torch.optim.Adadelta, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
    "lbfgs": torch.optim.LBFGS,
}
#: optimizers whose torch class has a fused step on the CPU and CUDA (see :func:`kernel_options`)
FUSED: frozenset[str] = frozenset({"sgd", "momentum", "nesterov", "adam", "adamw"})
#: ASAM's choices of the parameters scaled by ``|w| + eta`` (see :class:`SAM`)
ASAM_SCALES: tuple[str, ...] = ("all", "weights")
#: optimizers that take ``momentum``
WITH_MOMENTUM: frozenset[str] = frozenset({"sgd", "momentum", "nesterov", "rmsprop", "sam", "asam"})
_REQUIRES = {
    "lbfgs": frozenset({"closure", "reevaluate", "full_batch"}),
    "svrg": frozenset({"closure", "reevaluate", "snapshot"}),
    "sag": frozenset({"closure", "batch_index"}),
    "sam": frozenset({"closure", "reevaluate"}),
    "asam": frozenset({"closure", "reevaluate"}),
}


def _evaluate(closure: Closure | None) -> Tensor:
    if closure is None:
        raise LandscapeError("this optimizer needs optimizer.step(closure)")
    with torch.enable_grad():
        return closure()


def _grad(p: Tensor) -> Tensor:
    return torch.zeros_like(p) if p.grad is None else p.grad.detach()


class SVRG(torch.optim.Optimizer):
    """Stochastic variance-reduced gradient (Johnson & Zhang, NeurIPS 2013), option I.

    Each step uses ``v = g_B(w) - g_B(w_snap) + mu`` with ``mu`` the full gradient at the
    snapshot ``w_snap`` and ``g_B`` the minibatch gradient, then ``w -= lr * (v + wd * w)``.
    Call :meth:`update_snapshot` at the start of every epoch; ``step(closure)`` calls the
    closure at ``w`` and at ``w_snap`` (two minibatch gradients per step).
    """

    requires = _REQUIRES["svrg"]

    def __init__(self, params: Iterable, lr: float, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    def _params(self):
        for group in self.param_groups:
            for p in group["params"]:
                yield group, p

    @torch.no_grad()
    def update_snapshot(self, full_closure: Closure) -> Tensor:
        """Take the current parameters as the snapshot and store ``full_closure``'s gradient.

        Returns the full-data loss that ``full_closure`` returned.
        """
        loss = _evaluate(full_closure)
        for _, p in self._params():
            state = self.state[p]
            state["snapshot"] = p.detach().clone()
            state["full_grad"] = _grad(p).clone()
        return loss

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        """One SVRG step on the closure's minibatch; returns its loss at the current point."""
        params = list(self._params())
        if any("snapshot" not in self.state[p] for _, p in params):
            raise LandscapeError("SVRG needs optimizer.update_snapshot(full_closure) "
                                 "before its first step (and at every epoch start)")
        loss = _evaluate(closure)
        grads = [_grad(p).clone() for _, p in params]
        current = [p.detach().clone() for _, p in params]
        for _, p in params:
            p.copy_(self.state[p]["snapshot"])
        _evaluate(closure)
        for (group, p), g, w in zip(params, grads, current, strict=True):
            state = self.state[p]
            p.copy_(w)
            v = g.sub_(_grad(p)).add_(state["full_grad"])
            if group["weight_decay"]:
                v.add_(p, alpha=group["weight_decay"])
            p.add_(v, alpha=-group["lr"])
        return loss


class SAG(torch.optim.Optimizer):
    """Stochastic average gradient (Schmidt, Le Roux & Bach, Math. Prog. 2017 / arXiv 2013).

    Keeps the last gradient ``y_i`` (mean over its samples) of each of ``n_batches`` fixed
    batches and their weighted sum ``d = sum_i a_i y_i`` with ``a_i = |B_i| k / n`` (``k``
    batches, ``n`` samples; ``a_i = 1`` for equal batches); a step on batch ``i`` sets
    ``d += a_i (g_i - y_i)``, ``y_i = g_i`` and ``w -= lr * (d / m + wd * w)`` with ``m`` the
    sum of ``a_j`` over the batches seen so far (the paper's normalization in the first
    pass). Once every batch has been seen, ``d / m`` is the gradient of the sample-mean loss
    at the stored points, so SAG converges to the minimizer of the training loss also when
    the batches differ in size (an unweighted sum of batch means would converge to the
    minimizer of ``sum_i L_{B_i}``, which weights each sample by ``1 / |B_i|``).
    ``batch_sizes`` (default: all equal) gives ``|B_i|``. Call ``step(closure, index=i)``.
    Memory: ``n_batches`` copies of the parameters.
    """

    requires = _REQUIRES["sag"]

    def __init__(self, params: Iterable, lr: float, n_batches: int,
                 weight_decay: float = 0.0, batch_sizes: Sequence[int] | None = None) -> None:
        n_batches = check_int("SAG's n_batches", n_batches)
        sizes = [1] * n_batches if batch_sizes is None else [
            check_int("SAG's batch size", s) for s in batch_sizes]
        if len(sizes) != n_batches:
            raise LandscapeError(f"SAG needs {n_batches} batch sizes, got {batch_sizes!r}")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})
        self.n_batches = n_batches
        self.weights = [s * n_batches / sum(sizes) for s in sizes]   # exactly 1.0 if equal

    @torch.no_grad()
    def step(self, closure: Closure | None = None, *,  # type: ignore[override]
             index: int | None = None) -> Tensor:
        """One SAG step with the closure's gradient as the new memory of batch ``index``."""
        if index is None or not 0 <= int(index) < self.n_batches:
            raise ValueError(f"SAG.step needs index in range({self.n_batches}), got {index!r}")
        index = int(index)
        a = self.weights[index]
        loss = _evaluate(closure)
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if "table" not in state:
                    state["table"] = torch.zeros((self.n_batches, *p.shape), dtype=p.dtype,
                                                 device=p.device)
                    state["sum"] = torch.zeros_like(p)
                    state["seen"] = torch.zeros(self.n_batches, dtype=p.dtype,
                                                device=p.device)
                if "weights" not in state:  # new, or a state saved before batches were weighted
                    state["weights"] = torch.tensor(self.weights, dtype=p.dtype, device=p.device)
                    state["sum"] = torch.einsum("k,k...->...", state["weights"], state["table"])
                g = _grad(p)
                state["sum"].add_(g, alpha=a).sub_(state["table"][index], alpha=a)
                state["table"][index].copy_(g)
                state["seen"][index] = 1
                update = state["sum"] / (state["seen"] * state["weights"]).sum()
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                p.add_(update, alpha=-group["lr"])
        return loss


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimization (Foret et al., ICLR 2021) and ASAM (Kwon et al., ICML 2021).

    A step computes ``g = grad L(w)`` (first closure call), moves to ``w + e`` with
    ``e = rho * g / ||g||`` (SAM) or, adaptive, ``e = rho * T^2 g / ||T g||`` with
    ``T = |w| + eta`` elementwise (ASAM), computes ``grad L(w + e)`` (second call), returns
    to ``w`` and lets the base optimizer step with that gradient. ``||.||`` is the norm over
    all parameters (1e-12 is added to it). ``adaptive`` is a per-group setting: in a group
    with ``adaptive=False`` the parameters are perturbed along ``g`` itself (``T = 1``), and
    their ``g`` enters the common norm unscaled.

    The authors' code (github.com/SamsungLabs/ASAM, ``asam.py``) scales by ``T`` only the
    parameters whose name contains ``"weight"`` (linear and convolution weights, and the
    scales of normalization layers); every other parameter (biases) gets ``e = rho * g /
    ||v||`` with ``v`` the concatenation of ``T g`` (weights) and ``g`` (the others), and 1e-16
    is added to the norm. Its ``ASAM`` class defaults to ``rho=0.5, eta=0.01``; its CIFAR
    script defaults to ``--eta 0.0`` (the README's commands do not set it) with rho 0.5
    (CIFAR-10) or 1.0 (CIFAR-100). :func:`make_optimizer` builds ``asam`` with
    ``asam_scale="all"`` (default: ``T`` on every tensor, biases included, one group) or
    ``asam_scale="weights"`` (the authors' rule: two groups split by name, given named
    parameters). Defaults here: SAM ``rho=0.05``; ASAM ``rho=0.5, eta=0.01``. The base
    optimizer (default ``torch.optim.SGD``) shares this optimizer's ``param_groups``, so
    learning-rate schedules act on both; its state (momentum buffers) is what
    ``state_dict`` saves.
    """

    requires = _REQUIRES["sam"]

    def __init__(self, params: Iterable, base: type[torch.optim.Optimizer] = torch.optim.SGD,
                 *, rho: float = 0.05, adaptive: bool = False, eta: float = 0.01,
                 **base_options: Any) -> None:
        super().__init__(params, {"rho": rho, "adaptive": adaptive, "eta": eta,
                                  **base_options})
        self.base = base(self.param_groups, **base_options)
        self.param_groups = self.base.param_groups

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        """One SAM/ASAM step; returns the minibatch loss at the unperturbed parameters."""
        loss = _evaluate(closure)
        scaled = []  # (p, T g or g, T or None)
        for group in self.param_groups:
            for p in group["params"]:
                g = _grad(p)
                t = p.abs().add_(group["eta"]) if group["adaptive"] else None
                scaled.append((group, p, g * t if t is not None else g.clone(), t))
        norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(tg) for _, _, tg, _ in scaled]))
        for group, p, tg, t in scaled:
            e = tg.mul_(group["rho"] / (norm + 1e-12))
            if t is not None:
                e.mul_(t)
            self.state[p]["e"] = e
            p.add_(e)
        _evaluate(closure)
        for _, p, _, _ in scaled:
            p.sub_(self.state[p].pop("e"))
        self.base.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict)
        self.param_groups = self.base.param_groups


def kernel_options(name: str, model: nn.Module) -> dict[str, bool]:
    """The trainer's choice of torch's step kernels for optimizer ``name`` on ``model``:
    ``{"fused": True}`` (one kernel updates every tensor; the same update, its rounding may
    differ from the per-tensor loop's in the last bit, where a multiply-add is contracted)
    for :data:`FUSED` when every parameter is a floating-point tensor on the CPU or CUDA,
    ``{"foreach": True}`` (the per-tensor loop's numbers bit for bit, fewer kernel launches)
    for torch's other elementwise optimizers, else (and with a sparse embedding) {}.
    Torch's CPU default is the per-tensor loop: a momentum step of the digits MLP takes
    ~180 us that way, ~110 us fused."""
    params = list(model.parameters())
    if not params or any(getattr(m, "sparse", False) for m in model.modules()
                         if isinstance(m, nn.Embedding | nn.EmbeddingBag)):
        return {}   # torch's own choice for sparse gradients
    if name in FUSED and all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                             for p in params):
        return {"fused": True}
    return {"foreach": True} if name in ELEMENTWISE else {}


def make_optimizer(name: str, params: Iterable, *, lr: float, momentum: float | None = None,
                   nesterov: bool = False, weight_decay: float = 0.0,
                   rho: float | None = None, **options: Any) -> torch.optim.Optimizer:
    """Build optimizer ``name`` (one of :data:`OPTIMIZERS`) over ``params``.

    ``momentum`` (sgd: 0, momentum/nesterov: 0.9, rmsprop/sam/asam: 0) is refused by
    optimizers without one; ``rho`` is the SAM/ASAM radius (default 0.05 for SAM, and
    0.5 for ASAM, Kwon et al.'s CIFAR setting); ``eta`` (ASAM, default 0.01) and
    ``base`` (the optimizer SAM/ASAM wraps, default ``"sgd"``) and ``asam_scale`` (ASAM:
    ``"all"`` scales every tensor by ``|w| + eta``, ``"weights"`` only those whose name
    contains ``"weight"``, as the authors' code does; see :class:`SAM`) go in ``options``,
    as do torch's own options (``betas``, ``eps``, ``alpha``, ``history_size``, ...) and
    SAG's required ``n_batches`` and optional ``batch_sizes`` (see :class:`SAG`).
    ``params`` are tensors or ``(name, tensor)`` pairs (``model.named_parameters()``; the
    names are needed by ``asam_scale="weights"`` only). The result has ``requires`` (see the
    module docstring).
    Cost: O(1); state is allocated lazily on the first step.
    """
    if name not in OPTIMIZERS:
        raise unknown_name("optimizer", name, OPTIMIZERS)
    check_positive("learning rate", lr)
    if weight_decay < 0:
        raise LandscapeError(f"weight decay must be >= 0, got {weight_decay}")
    if momentum is not None and momentum != 0 and name not in WITH_MOMENTUM:
        raise LandscapeError(f"optimizer {name!r} has no momentum (got momentum={momentum})")
    if momentum is not None and not 0 <= momentum < 1:
        raise LandscapeError(f"momentum must be in [0, 1), got {momentum}")
    if nesterov and name not in {"sgd", "nesterov", "sam", "asam"}:
        raise LandscapeError(f"optimizer {name!r} has no Nesterov option")
    if rho is not None and name not in {"sam", "asam"}:
        raise LandscapeError(f"rho is the SAM/ASAM radius; optimizer {name!r} has none")
    scale = options.pop("asam_scale", "all")
    if scale not in ASAM_SCALES:
        raise unknown_name("ASAM scale", scale, ASAM_SCALES)
    if scale != "all" and name != "asam":
        raise LandscapeError(f"asam_scale is an option of optimizer 'asam', not {name!r}")
    params = list(params)
    names = None
    if params and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str)
                      for p in params):
        names, params = [n for n, _ in params], [p for _, p in params]

    def build(cls: type[torch.optim.Optimizer], **kwargs: Any) -> torch.optim.Optimizer:
        try:
            return cls(params, **kwargs, **options)
        except TypeError as err:
            raise LandscapeError(f"bad option for optimizer {name!r}: {err}") from None
        except ValueError as err:
            raise LandscapeError(f"optimizer {name!r}: {err}") from None

    if name in {"sgd", "momentum", "nesterov"}:
        mu = momentum if momentum is not None else (0.0 if name == "sgd" else 0.9)
        nest = nesterov or name == "nesterov"
        if nest and mu == 0:
            raise LandscapeError("Nesterov momentum needs momentum > 0")
        opt = build(torch.optim.SGD, lr=lr, momentum=mu, nesterov=nest,
                    weight_decay=weight_decay)
    elif name == "rmsprop":
        opt = build(torch.optim.RMSprop, lr=lr, momentum=momentum or 0.0,
                    weight_decay=weight_decay)
    elif name == "lbfgs":
        if weight_decay:
            raise LandscapeError("lbfgs has no weight decay; add the L2 term to the loss")
        options.setdefault("line_search_fn", "strong_wolfe")
        opt = build(torch.optim.LBFGS, lr=lr)
    elif name in _TORCH:
        opt = build(_TORCH[name], lr=lr, weight_decay=weight_decay)
    elif name == "svrg":
        opt = build(SVRG, lr=lr, weight_decay=weight_decay)
    elif name == "sag":
        if "n_batches" not in options:
            raise LandscapeError("sag needs n_batches (the number of fixed batches)")
        opt = build(SAG, lr=lr, weight_decay=weight_decay)
    else:  # sam, asam
        base_name = options.pop("base", "sgd")
        if base_name not in ELEMENTWISE:
            raise unknown_name(f"{name} base optimizer", base_name, ELEMENTWISE)
        adaptive = name == "asam"
        radius = rho if rho is not None else (0.5 if adaptive else 0.05)
        check_positive(f"{name} radius rho", radius)
        eta = options.pop("eta", 0.01)
        if eta < 0:
            raise LandscapeError(f"ASAM eta must be >= 0, got {eta}")
        base_kw: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay}
        if _TORCH[base_name] is torch.optim.SGD:
            mu = momentum if momentum is not None else (0.0 if base_name == "sgd" else 0.9)
            base_kw.update(momentum=mu, nesterov=nesterov or base_name == "nesterov")
        elif momentum:
            raise LandscapeError(f"momentum is not an option of the {base_name!r} base")
        if scale == "weights":  # the authors' rule: T on tensors named "...weight..." only
            if names is None:
                raise LandscapeError("asam_scale='weights' needs named parameters "
                                     "(model.named_parameters())")
            groups = [{"params": [p for n, p in zip(names, params, strict=True)
                                  if ("weight" in n) == flag], "adaptive": flag}
                      for flag in (True, False)]
            params = [g for g in groups if g["params"]]
        opt = build(SAM, base=_TORCH[base_name], rho=radius, adaptive=adaptive, eta=eta,
                    **base_kw)
    opt.requires = _REQUIRES.get(name, frozenset({"closure"}))  # type: ignore[attr-defined]
    return opt
