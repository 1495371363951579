"""The engine core: loss and metrics of one model on one dataset as functions of ``theta``.

Every measurement in ``landscape`` (surfaces, Hessians, sharpness, gradient noise) is a
function of a flat parameter vector ``theta[P]`` (see :mod:`landscape.params`), computed
through :class:`Objective`: the data (resident on the device, or streamed), the loss, the
forward pass, the batches and the reductions. The evaluators (loop, vmap, first-layer
plane) are in :mod:`landscape.evaluate`, the derivative products in
:mod:`landscape.operators`, per-sample work in :mod:`landscape.per_sample`; the methods
that name them delegate there.

BatchNorm: ``bn="eval"`` uses the running statistics (Li et al. 2018's reference choice);
``bn="recompute"`` re-estimates them at every point from the evaluated data, as
``torch.optim.swa_utils.update_bn`` does, then evaluates in eval mode. Derivatives always
use the running statistics. Precision: ``float64`` (reference), ``float32``, ``tf32``
(TF32 matmuls and convolutions on NVIDIA GPUs; float32 on the CPU) and ``bf16`` (bfloat16
autocast of loss evaluations only); measured errors in ``benchmarks/README.md``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from landscape import distributed, operators, per_sample
from landscape.device import precision_context, resolve_device
from landscape.errors import LandscapeError, check_positive, unknown_name
from landscape.evaluate import Bound, Evaluator, choose_strategy, has_batchnorm, has_conv
from landscape.params import ParamSpace
from landscape.sources import Loss, Source, accuracy, call_model, metric
from landscape.sources import per_sample as per_sample_form

PRECISIONS = ("float64", "float32", "tf32", "bf16")
BN_MODES = ("eval", "recompute")
STRATEGIES = ("auto", "vmap", "loop")


def as_objective(target: Any, data: Any = None, **options: Any) -> Objective:
    """``target`` itself if it is an :class:`Objective`, else an Objective of the plain
    ``nn.Module`` ``target`` on ``data`` (any source, see :class:`Objective`; ``options``
    as its keywords, e.g. ``loss``)."""
    if isinstance(target, Objective):
        if data is not None or options:
            raise LandscapeError("data= and loss= go with a model, not with an Objective")
        return target
    if isinstance(target, nn.Module):
        if data is None:
            raise LandscapeError(f"a {type(target).__name__} model needs data=: (inputs, "
                                 "targets) tensors, a Dataset or a DataLoader")
        return Objective(target, data, **options)
    raise LandscapeError(f"expected an Objective or an nn.Module with data=, got "
                         f"{type(target).__name__}")


def accepts_model(fn: Callable) -> Callable:
    """Lets analysis ``fn(objective, ...)`` take a plain ``nn.Module`` with ``data=`` (and
    optionally ``loss=``) instead of an :class:`Objective`."""
    @functools.wraps(fn)
    def wrapper(objective: Any, *args: Any, data: Any = None, loss: Any = None,
                **kwargs: Any) -> Any:
        options = {} if loss is None else {"loss": loss}
        return fn(as_objective(objective, data, **options), *args, **kwargs)
    return wrapper


class Objective:
    """Loss and metrics of ``model`` on one data split, as functions of flat parameters.

    Args:
        model: the network; it is copied, never modified.
        data: a :class:`landscape.data.Dataset` (anything with ``split(name)``), an
            ``(inputs, targets)`` pair of tensors (inputs a tensor, tuple or dict), a
            ``torch.utils.data.Dataset`` or any re-iterable of batches such as a DataLoader
            (:mod:`landscape.sources`).
        split: ``"train"`` or ``"test"`` when ``data`` is a Dataset.
        loss: ``"cross_entropy"``, ``"mse"`` or a callable ``loss_fn(output, target)``
            returning the batch mean (or unreduced losses: :class:`landscape.sources.Loss`);
            default from the dataset, else from the targets' dtype.
        forward_loss: instead of ``loss``, a hook ``forward_loss(model, batch)`` for models
            that compute their own loss; the batch is the source's batch as it is.
        metrics: ``{name: fn(output, target)}`` averaged like the loss (default: ``acc``,
            the accuracy, for integer targets; ``{}`` for none).
        mean_over: ``"samples"`` or ``"elements"`` (target elements: a token-level loss).
        data_budget: bytes of data kept resident on the device (default:
            :data:`landscape.sources.DATA_BUDGET_FRACTION` of its free memory); larger data
            are streamed.
        shard: hold only this rank's share of the data under ``torch.distributed``, with
            losses, gradients and Hessian products all-reduced (default: when the data do not
            fit ``data_budget`` and there is more than one rank).
        bn: ``"eval"`` or ``"recompute"`` (see module docstring).
        precision: ``"float64" | "float32" | "tf32" | "bf16"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        batch_size: samples per data chunk (default: 128 for convolutional models on the
            CPU, else the whole split up to 4096 on the CPU and 8192 on a GPU).
        point_chunk: points per vmap call (default: as many as keep ``point_chunk *
            batch_size`` under ``2**16`` on the CPU, ``2**20`` on a GPU).
        strategy: ``"auto"`` (a rule by model and device), ``"vmap"`` or ``"loop"``.
        memory_budget: bytes for one vmap call of per-sample gradients (default: a quarter
            of the free GPU memory, 16 MiB on the CPU, the fastest measured).

    Losses are exact means over the split (samples or target elements), whatever the
    batching. ``counts``: the cost in passes over the split (``forward`` per point).
    """

    def __init__(self, model: nn.Module, data: Any, *, split: str = "train",
                 loss: str | Callable | None = None, forward_loss: Callable | None = None,
                 metrics: dict[str, Callable] | None = None, mean_over: str | None = None,
                 bn: str = "eval", precision: str = "float32",
                 device: str | torch.device | None = "auto", batch_size: int | None = None,
                 point_chunk: int | None = None, strategy: str = "auto",
                 hvp_method: str = "double_backward", memory_budget: int | None = None,
                 data_budget: int | None = None, shard: bool | None = None) -> None:
        for what, value, allowed in (("precision", precision, PRECISIONS), ("bn mode", bn,
                                     BN_MODES), ("strategy", strategy, STRATEGIES),
                                     ("hvp method", hvp_method, tuple(operators.HVP_METHODS))):
            if value not in allowed:
                raise unknown_name(what, value, allowed)
        for name, value in (("batch_size", batch_size), ("point_chunk", point_chunk),
                            ("memory_budget", memory_budget)):
            if value is not None:
                check_positive(name, value)
        if hasattr(data, "split") and callable(data.split):
            if loss is None and forward_loss is None:
                loss = getattr(data, "loss", None)
                forward_loss = getattr(data, "forward_loss", None)
            data = data.split(split)
        self.device = resolve_device(device)
        self.dtype = torch.float64 if precision == "float64" else torch.float32
        rank, world = distributed.rank_and_world()
        whole = forward_loss is not None
        self.source = Source(data, self.device, self.dtype, data_budget, whole=whole)
        self.sharded = bool(world > 1 and (not self.source.resident if shard is None
                                           else shard))
        if self.sharded:
            self.source = Source(data, self.device, self.dtype, data_budget, (rank, world),
                                 whole=whole)
        first_targets = next(self.source.batches(1), (None, None))[1]
        self.loss_fn = Loss(loss, forward_loss, target_float=self.source.target_float,
                            target_dim=1 if first_targets is None else first_targets.dim(),
                            mean_over=mean_over)
        self.loss_name = self.loss_fn.name
        if metrics is None:
            metrics = ({"acc": per_sample_form(accuracy)} if not whole
                       and first_targets is not None and not first_targets.is_floating_point()
                       else {})
        self.metrics = {k: metric(f, self.loss_fn.mean_over) for k, f in metrics.items()}
        self.precision, self.bn, self.hvp_method = precision, bn, hvp_method
        self.memory_budget = memory_budget
        self.cache: dict[str, Any] = {}  # derived state of helper modules (graphs, layers)
        self.space = ParamSpace.from_model(model)
        self.model = copy.deepcopy(model).to(self.device, self.dtype).eval()
        self.buffers = {k: v.detach() for k, v in self.model.named_buffers()}
        self.theta0 = self.space.flatten(self.model).to(self.device, self.dtype)
        self.count()
        if self.n == 0:
            raise LandscapeError("the data split is empty")
        gpu = self.device.type == "cuda"
        self.batch_size = batch_size or min(self.n, 8192 if gpu else 128 if has_conv(
            self.model) else 4096)
        budget = 2**20 if gpu else 2**16
        self.is_classification = "acc" in self.metrics
        self.counts = dict.fromkeys(("forward", "grad", "hvp", "per_sample"), 0.0)
        if bn == "recompute" and strategy == "vmap":
            raise LandscapeError("bn='recompute' evaluates one point at a time: use the loop "
                                 "strategy (or auto)")
        strategy = choose_strategy(self) if strategy == "auto" else strategy
        self.evaluator = Evaluator(self, strategy, point_chunk or max(1, min(256, budget //
                                                                               self.batch_size)))

    # construction helpers ----------------------------------------------------------------
    @classmethod
    def from_run(cls, run: Any, split: str = "train", *, subset: int | None = None,
                 seed: int = 0, **kwargs: Any) -> Objective:
        """Objective of a loaded run (anything with ``model`` and ``data``) on one split;
        ``subset``: a fixed random subset of that many samples from ``seed``."""
        if not hasattr(run, "model") or not hasattr(run, "data"):
            raise LandscapeError(f"Objective.from_run needs a loaded run "
                                 f"(landscape.load_run(DIR)), got {type(run).__name__}")
        objective = cls(run.model, run.data, split=split, **kwargs)
        return objective if subset is None else objective.subset(int(subset), seed=seed)

    def __copy__(self) -> Objective:
        """A shallow copy with its own evaluator and cache (the model and data shared)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__, cache={}, evaluator=copy.copy(self.evaluator))
        new.evaluator.core = new
        return new

    def rebind(self, theta: Tensor, buffers: dict[str, Tensor] | None = None) -> Objective:
        """This objective at a new origin ``theta0`` and buffers (a training step's weights and
        BatchNorm statistics), nothing rebuilt; returns self."""
        self.theta0 = self.as_point(theta).clone()
        for copies in (self.buffers, self.evaluator.buffers()):  # (the loop's own, if made)
            for name in copies.keys() & (buffers or {}).keys():
                copies[name].copy_(buffers[name])
        self.cache.pop("graph", None)
        return self

    def subset(self, idx: Tensor | int, seed: int = 0) -> Objective:
        """Same settings on a fixed subset: indices, or ``n`` samples drawn with ``seed``."""
        if isinstance(idx, int):
            if not 0 < idx <= self.n:
                raise LandscapeError(f"subset size must be in 1..{self.n}, got {idx}")
            gen = torch.Generator().manual_seed(seed)
            idx = torch.randperm(self.n, generator=gen)[:idx]
        idx = torch.as_tensor(idx, dtype=torch.long).cpu()
        new = copy.copy(self)
        mine = self.source.local(idx)[1]
        new.source = Source(self.source.rows(mine, self.batch_size) if mine.numel() else
                            self.source.empty(), self.device, self.dtype, 2**62,
                            whole=self.source.whole)
        new.count()
        new.batch_size = min(self.batch_size, new.n)
        new.counts = dict.fromkeys(self.counts, 0.0)
        return new

    def with_precision(self, precision: str) -> Objective:
        """The same objective in another precision (a copy of the model in its dtype; the
        data cast per batch), kept for reuse: float64 checks of float32 round-off."""
        twins = self.cache.setdefault("twins", {})
        if precision == self.precision:
            return self
        if precision not in twins:
            twin = copy.copy(self)
            twin.precision = precision
            twin.dtype = torch.float64 if precision == "float64" else torch.float32
            twin.model = copy.deepcopy(self.model).to(twin.dtype)
            twin.buffers = {k: v.detach() for k, v in twin.model.named_buffers()}
            twin.theta0 = self.theta0.to(twin.dtype)
            twin.source = self.source.as_dtype(twin.dtype)
            twin.evaluator.loaded = twin.evaluator.bn_model = None
            twins[precision] = twin
        return twins[precision]

    def count(self) -> None:
        """Set ``n`` (samples over all ranks) and ``weight_total`` (the mean's denominator)."""
        counts = torch.tensor([self.source.n, self.source.elements], dtype=torch.float64,
                              device=self.device)
        self.n, elements = (int(c) for c in self.all_reduce(counts).tolist())
        self.weight_total = elements if self.loss_fn.mean_over == "elements" else self.n

    def settings(self) -> dict[str, Any]:
        """The settings that determine the numbers (hashed in result files). The device is
        not one of them (a run may resume on another device); files keep it as an attribute."""
        return {"loss": self.loss_name, "bn": self.bn, "precision": self.precision,
                "n": self.n, **({"mean_over": self.loss_fn.mean_over}
                                if self.loss_fn.mean_over != "samples" else {}),
                **({"metrics": sorted(self.metrics)} if set(self.metrics) - {"acc"} else {})}

    @property
    def has_bn(self) -> bool:
        """Whether the model has BatchNorm layers."""
        return has_batchnorm(self.model)

    @property
    def x(self) -> Any:
        """The inputs on the device (resident data only)."""
        return self.resident_data()[0]

    @property
    def y(self) -> Tensor:
        """The targets on the device (resident data only)."""
        return self.resident_data()[1]

    def resident_data(self) -> tuple[Any, Tensor]:
        """``(inputs, targets)`` of the whole split on the device; an error when streamed."""
        if not self.source.resident or self.sharded:
            raise LandscapeError("the data are streamed or sharded: iterate over them instead")
        return self.source.rows(torch.arange(self.n), self.batch_size)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """``("loss", *metrics)``: the keys of :meth:`evaluate`'s result."""
        return ("loss", *self.metrics)

    # ----------------------------------------------------------------------------------
    # data-parallel helpers (no-ops unless sharded)
    def all_reduce(self, t: Tensor) -> Tensor:
        """``t`` summed over the ranks when the data are sharded (in place), else ``t``."""
        if self.sharded:
            torch.distributed.all_reduce(t)
        return t

    def evaluation_settings(self) -> dict[str, Any]:
        """:meth:`settings` plus the evaluator's chunking as in use (what surface files hash,
        so that a resumed file is bit-identical to an uninterrupted one)."""
        return {**self.settings(), **self.evaluator.settings()}

    strategy = property(lambda self: self.evaluator.strategy,
                        doc='``"loop"`` or ``"vmap"``: the evaluator chosen at construction.')
    point_chunk = property(lambda self: self.evaluator.point_chunk,
                           doc="Points per vmap call of the evaluator.")
    plane_layer = property(lambda self: self.evaluator.plane_layer,
                           doc="The first layer :meth:`evaluate_plane` forms from products, "
                               "or None (:func:`landscape.evaluate.plane_layer`).")

    # ----------------------------------------------------------------------------------
    # the forward pass: nothing else calls the model
    def precision_context(self, derivative: bool = False) -> contextlib.AbstractContextManager:
        """TF32 and bf16 autocast as the precision asks
        (:func:`landscape.device.precision_context`); derivatives need ``bn="eval"``."""
        if derivative and self.bn == "recompute":
            raise LandscapeError("derivatives need bn='eval' (running statistics); "
                                 "bn='recompute' is for loss evaluation only")
        return precision_context(self.device, self.precision, derivative)

    def forward(self, theta: Tensor, x: Any, buffers: dict[str, Tensor] | None = None,
                ) -> Any:
        """Model outputs at flat parameters ``theta[P]`` on inputs ``x`` (eval mode).

        ``buffers`` overrides some or all of the model's buffers (BatchNorm statistics).
        ``x``: a tensor, tuple (``model(*x)``) or dict (``model(**x)``); with a
        ``forward_loss`` hook, the whole batch, and the result is the hook's value.
        """
        return self.apply({**self.space.unflatten(theta), **self.buffers, **(buffers or {})}, x)

    def apply(self, state: dict[str, Tensor], x: Any) -> Any:
        """The model (or the ``forward_loss`` hook) on ``x`` with every parameter and buffer
        given by ``state`` (name -> tensor)."""
        if self.loss_fn.hook:
            return self.loss_fn(Bound(self.model, state), x)
        if isinstance(x, Tensor):
            return functional_call(self.model, state, (x,))
        return call_model(Bound(self.model, state), x)

    def batch_loss(self, theta: Tensor, x: Any, y: Tensor) -> Tensor:
        """Mean loss over a batch (per sample or target element); differentiable with
        ``torch.func`` transforms."""
        return self.loss_fn.total(self.forward(theta, x), y) / self.loss_fn.weight(y)

    def sample_losses(self, theta: Tensor, x: Any, y: Tensor) -> Tensor:
        """Each sample's loss ``[B]``, scaled so that their mean over the split is the loss
        (``n / weight_total``: 1 for means over samples). Needs the per-sample form."""
        return self.loss_fn.samples(self.forward(theta, x), y) * (self.n / self.weight_total)

    def batches(self) -> Iterator[tuple[Any, Tensor]]:
        """The split's ``(inputs, targets)`` on the device, in chunks of ``batch_size``
        samples (resident slices, or streamed), in a fixed order."""
        yield from self.source.batches(self.batch_size)

    def stats(self, out: Any, y: Tensor) -> Tensor:
        """``[loss sum, metric sums...]`` of one data chunk (float64), in units of weight."""
        w = self.loss_fn.weight(y)
        return torch.stack([self.loss_fn.total(out, y).double(),
                            *(m.total(out, y).double() if m.has_per_sample
                              else m.fn(out, y).double() * w for m in self.metrics.values())])

    # ----------------------------------------------------------------------------------
    # evaluation at many points (landscape.evaluate)
    def evaluate_plane(self, origin: Tensor, directions: Tensor, coords: Tensor,
                       buffers: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """:meth:`evaluate` at ``origin[P] + coords[K, D] @ directions[D, P]``; the loop forms
        each point in place (no ``[K, P]`` tensor), and where :attr:`plane_layer` is set the
        first layer's output from ``1 + D`` products per data chunk (``benchmarks/README.md``)."""
        origin, directions, coords = (torch.as_tensor(t).to(self.device, self.dtype)
                                      for t in (origin, directions, coords))
        if self.strategy == "vmap":
            return self.evaluate(origin + coords @ directions, buffers)
        return self.evaluate(origin.expand(len(coords), -1), buffers,  # (a view: the count)
                             _plane=(origin, directions, coords))

    def evaluate(self, points: Tensor, buffers: dict[str, Tensor] | None = None,
                 _plane: tuple[Tensor, Tensor, Tensor] | None = None) -> dict[str, Tensor]:
        """Mean loss (and accuracy, for classification) at each of ``points[K, P]``.

        ``buffers`` optionally gives per-point buffers ``name -> [K, ...]`` (e.g. BatchNorm
        statistics interpolated between two models); the others stay the model's.
        Returns float64 CPU tensors of shape [K]. Cost: K forward passes over the split.
        On a CUDA out-of-memory error the chunk sizes are halved and the call goes on.
        """
        points = torch.as_tensor(points)
        points = points[None] if points.dim() == 1 else points
        self.space.check(points)
        return self._means(self.evaluator(points.to(self.device, self.dtype),
                                          self._point_buffers(buffers), _plane))

    def _point_buffers(self, buffers: dict[str, Tensor] | None) -> dict[str, Tensor] | None:
        if buffers and set(buffers) - set(self.buffers):
            raise LandscapeError(f"unknown buffers {sorted(set(buffers) - set(self.buffers))}")
        return buffers and {k: v.to(self.device, self.buffers[k].dtype)
                            for k, v in buffers.items()}

    def _means(self, sums: Tensor) -> dict[str, Tensor]:
        """``{"loss": [K], metric: [K]}`` from the evaluator's sums (all ranks)."""
        self.counts["forward"] += sums.shape[0]
        sums = self.all_reduce(sums).cpu() / self.weight_total
        result = {"loss": sums[:, 0]}
        for i, name in enumerate(self.metrics, 1):  # no metric where the loss is NaN
            result[name] = torch.where(sums[:, 0].isnan(), torch.nan, sums[:, i])
        return result

    def loss(self, theta: Tensor) -> float:
        """Mean loss over the split at ``theta[P]``."""
        return float(self.evaluate(theta[None])["loss"][0])

    # ----------------------------------------------------------------------------------
    # derivatives (landscape.operators) and per-sample work (landscape.per_sample)
    def as_point(self, theta: Tensor) -> Tensor:
        """``theta[P]`` checked against the parameter space, on the device in the dtype."""
        self.space.check(theta)
        return torch.as_tensor(theta).to(self.device, self.dtype)

    def loss_and_grad(self, theta: Tensor) -> tuple[float, Tensor]:
        """Mean loss and its gradient [P] at ``theta``. Cost: one forward+backward pass; one
        host synchronization (the loss is accumulated on the device)."""
        return operators.loss_and_grad(self, theta)

    def grad(self, theta: Tensor) -> Tensor:
        """Gradient [P] of the mean loss at ``theta``."""
        return self.loss_and_grad(theta)[1]

    def hvp(self, theta: Tensor, v: Tensor, method: str | None = None) -> Tensor:
        """Hessian-vector product of the mean loss: ``v[P] -> Hv``, or a block ``v[K, P]``
        (each data chunk visited once). ``method``: a kernel of
        :data:`landscape.operators.HVP_METHODS` (default ``double_backward``, whose gradient
        graph is kept between calls at one point when the split is one resident chunk)."""
        return operators.summed(self, theta, v,
                                operators.HVP_METHODS[method or self.hvp_method])

    def ggn_vp(self, theta: Tensor, v: Tensor) -> Tensor:
        """Generalized Gauss-Newton product ``J^T H_out J v`` (positive semi-definite; the
        Fisher for cross-entropy, Martens 2020), shapes as :meth:`hvp`. Needs a loss of the
        model's output (not a ``forward_loss`` hook)."""
        if self.loss_fn.hook:
            raise LandscapeError("the Gauss-Newton product needs a loss of the model's output, "
                                 "not a forward_loss hook")
        return operators.summed(self, theta, v, operators.ggn)

    def per_sample_chunk(self, numel: int) -> int:
        """Samples per vmap call of :meth:`per_sample_grads` (``numel`` parameters)."""
        return per_sample.chunk_size(self, numel)

    def per_sample_grads(self, theta: Tensor, idx: Tensor | None = None,
                         names: tuple[str, ...] | None = None) -> Tensor:
        """Gradients of each sample's loss ``[len(idx), P]`` (all samples by default), or of
        the parameters ``names`` only: :func:`landscape.per_sample.grads` (one data pass)."""
        return per_sample.grads(self, theta, idx, names)

    def per_sample_sq_norms(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Mean gradient ``[P]`` and each sample's squared gradient norm ``[n]`` (float64),
        from one backward pass where the layers allow (:func:`landscape.per_sample.sq_norms_of`;
        cost ``counts["grad"]`` plus ``counts["per_sample"]`` for other layers)."""
        return per_sample.sq_norms_of(self, theta)
