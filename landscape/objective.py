"""The engine: loss and metrics of one model on one dataset at many parameter points.

Every measurement in ``landscape`` (surfaces, Hessians, sharpness, gradient noise) is a
function of a flat parameter vector ``theta[P]`` (see :mod:`landscape.params`), evaluated by
:class:`Objective`. The data are kept resident on the device; evaluation is chunked over
points and over data so memory stays bounded.

Two evaluation strategies, chosen by a fixed rule when the objective is built
(``strategy="auto"``, see :meth:`Objective._choose_strategy`), so that the same command gives
the same numbers however loaded the machine is:

- ``"vmap"``: ``torch.func.vmap`` over ``functional_call`` across a chunk of points, sharing
  each data batch (small models on a GPU, where one forward pass leaves the device idle);
- ``"loop"``: one point at a time, loaded into a private copy of the model whose parameters
  are views of one flat vector (one copy per point; every model on the CPU, convolutions and
  BatchNorm everywhere).

BatchNorm: ``bn="eval"`` uses the model's running statistics (Li et al. 2018's reference
choice); ``bn="recompute"`` re-estimates them at every point from the evaluated data, as
``torch.optim.swa_utils.update_bn`` does (one train-mode pass, cumulative average of the batch
statistics), then evaluates in eval mode.

Precision: ``float64`` (reference), ``float32``, ``tf32`` (float32 storage, TF32 matmuls and
convolutions on NVIDIA GPUs; identical to float32 on the CPU) and ``bf16`` (float32 storage,
bfloat16 autocast of loss evaluations; the loss is reduced in float32; gradients and
Hessian products stay in float32). Measured errors are in ``benchmarks/README.md``.
Derivatives always use the running BatchNorm statistics (``bn="eval"``).
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value, jvp, vmap

from landscape import distributed, per_sample
from landscape.errors import LandscapeError, check_positive, unknown_name
from landscape.params import ParamSpace
from landscape.sources import Loss, Source, accuracy, call_model, metric, take
from landscape.sources import per_sample as per_sample_form

PRECISIONS = ("float64", "float32", "tf32", "bf16")
BN_MODES = ("eval", "recompute")
STRATEGIES = ("auto", "vmap", "loop")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available (this rank's GPU under torchrun), else CPU; an
    unknown or unavailable device is a LandscapeError."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise LandscapeError(f"unknown device {device!r} (use auto, cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LandscapeError(f"device {device!r} requested but CUDA is not available "
                             "(use --device cpu or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise LandscapeError(f"device {device!r} does not exist "
                             f"({torch.cuda.device_count()} CUDA device(s))")
    return dev


class _Bound:
    """The model with its state bound, for a ``forward_loss`` hook: calling it is
    ``functional_call``; other attributes are the model's."""

    def __init__(self, model: nn.Module, state: dict[str, Tensor]) -> None:
        self._model, self._state = model, state

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return functional_call(self._model, self._state, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


@contextlib.contextmanager
def _cuda_tf32(enabled: bool) -> Iterator[None]:
    """Allow (or forbid) TF32 matmuls and convolutions inside the block."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


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
    import functools

    @functools.wraps(fn)
    def wrapper(objective: Any, *args: Any, data: Any = None, loss: Any = None,
                **kwargs: Any) -> Any:
        options = {} if loss is None else {"loss": loss}
        return fn(as_objective(objective, data, **options), *args, **kwargs)
    return wrapper


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


class _Captured(Exception):
    """Stops a forward pass once the first layer's input is captured."""


T = TypeVar("T")


def halving_on_oom(run: Callable[[], T], shrink: Callable[[], bool]) -> T:
    """``run()``, retried after ``shrink()`` on each CUDA out-of-memory error; ``shrink``
    halves a chunk size and returns False when nothing is left to halve (then the error
    propagates)."""
    while True:
        try:
            return run()
        except torch.cuda.OutOfMemoryError:  # (torch.OutOfMemoryError only from 2.5)
            if not shrink():
                raise
            torch.cuda.empty_cache()


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

    All losses are means over the whole split, over samples (or target elements, see
    ``mean_over``), exactly, whatever the batching. ``counts`` tracks the cost in passes over the
    split: ``forward`` (one per point evaluated), ``grad``, ``hvp`` and ``per_sample``.
    """

    def __init__(self, model: nn.Module, data: Any, *, split: str = "train",
                 loss: str | Callable | None = None, forward_loss: Callable | None = None,
                 metrics: dict[str, Callable] | None = None, mean_over: str | None = None,
                 bn: str = "eval", precision: str = "float32",
                 device: str | torch.device | None = "auto", batch_size: int | None = None,
                 point_chunk: int | None = None, strategy: str = "auto",
                 hvp_method: str = "double_backward", memory_budget: int | None = None,
                 data_budget: int | None = None, shard: bool | None = None) -> None:
        if precision not in PRECISIONS:
            raise unknown_name("precision", precision, PRECISIONS)
        if bn not in BN_MODES:
            raise unknown_name("bn mode", bn, BN_MODES)
        if strategy not in STRATEGIES:
            raise unknown_name("strategy", strategy, STRATEGIES)
        for name, value in (("batch_size", batch_size), ("point_chunk", point_chunk),
                            ("memory_budget", memory_budget)):
            if value is not None:
                check_positive(name, value)
        if hvp_method not in ("fwd_rev", "double_backward"):
            raise unknown_name("hvp method", hvp_method, ("fwd_rev", "double_backward"))
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
        self.precision, self.bn = precision, bn
        self.hvp_method = hvp_method
        self.memory_budget = memory_budget
        self._activation_numel: int | None = None
        self.space = ParamSpace.from_model(model)
        self.model = copy.deepcopy(model).to(self.device, self.dtype).eval()
        self.buffers = {k: v.detach() for k, v in self.model.named_buffers()}
        self.theta0 = self.space.flatten(self.model).to(self.device, self.dtype)
        counts = torch.tensor([self.source.n, self.source.elements], dtype=torch.float64,
                              device=self.device)
        self.n, elements = (int(c) for c in self.all_reduce(counts).tolist())
        self.weight_total = elements if self.loss_fn.mean_over == "elements" else self.n
        if self.n == 0:
            raise LandscapeError("the data split is empty")
        gpu = self.device.type == "cuda"
        conv_on_cpu = not gpu and _has_conv(self.model)
        self.batch_size = batch_size or min(self.n, 128 if conv_on_cpu else 8192 if gpu else 4096)
        budget = 2**20 if gpu else 2**16
        self.point_chunk = point_chunk or max(1, min(256, budget // self.batch_size))
        self.is_classification = "acc" in self.metrics
        self.has_bn = _has_batchnorm(self.model)
        self.counts: dict[str, float] = {"forward": 0.0, "grad": 0.0, "hvp": 0.0,
                                         "per_sample": 0.0}
        if bn == "recompute" and strategy == "vmap":
            raise LandscapeError("bn='recompute' evaluates one point at a time: use the loop "
                                 "strategy (or auto)")
        self.strategy = self._choose_strategy() if strategy == "auto" else strategy
        self._loaded: tuple[nn.Module, Tensor] | None = None  # the loop's model, made on use
        self.plane_layer = self._plane_layer()
        if bn == "recompute":
            self._bn_model = copy.deepcopy(self.model)
            for m in self._bn_model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.momentum = None  # cumulative average over the pass
            self._bn_model.train()

    # ----------------------------------------------------------------------------------
    # construction helpers
    @classmethod
    def from_run(cls, run: Any, split: str = "train", *, subset: int | None = None,
                 seed: int = 0, **kwargs: Any) -> Objective:
        """Objective of a loaded run (``landscape.load_run(DIR)``: anything with ``model`` and
        ``data``) on one of its splits; ``subset``: a fixed random subset of that many samples
        from ``seed``. The engine loads no files: callers load the run."""
        if not hasattr(run, "model") or not hasattr(run, "data"):
            raise LandscapeError(f"Objective.from_run needs a loaded run "
                                 f"(landscape.load_run(DIR)), got {type(run).__name__}")
        objective = cls(run.model, run.data, split=split, **kwargs)
        return objective if subset is None else objective.subset(int(subset), seed=seed)

    def subset(self, idx: Tensor | int, seed: int = 0) -> Objective:
        """Same settings on a fixed subset: indices, or ``n`` samples drawn with ``seed``."""
        if isinstance(idx, int):
            if not 0 < idx <= self.n:
                raise LandscapeError(f"subset size must be in 1..{self.n}, got {idx}")
            gen = torch.Generator().manual_seed(seed)
            idx = torch.randperm(self.n, generator=gen)[:idx]
        idx = torch.as_tensor(idx, dtype=torch.long).cpu()
        new = copy.copy(self)
        mine = self._local(idx)[1] if self.sharded else idx
        new.source = Source(self.source.rows(mine, self.batch_size) if mine.numel() else
                            self._empty(), self.device, self.dtype, 2**62,
                            whole=self.source.whole)
        counts = torch.tensor([new.source.n, new.source.elements], dtype=torch.float64,
                              device=self.device)
        new.n, elements = (int(c) for c in self.all_reduce(counts).tolist())
        new.weight_total = elements if self.loss_fn.mean_over == "elements" else new.n
        new.batch_size = min(self.batch_size, new.n)
        new.counts = dict.fromkeys(self.counts, 0.0)
        return new

    def with_precision(self, precision: str) -> Objective:
        """The same objective in another precision (a copy of the model in its dtype; the
        data cast per batch), kept for reuse: float64 checks of float32 round-off."""
        twins = self.__dict__.setdefault("_twins", {})
        if precision == self.precision:
            return self
        if precision not in twins:
            twin = copy.copy(self)
            twin.precision = precision
            twin.dtype = torch.float64 if precision == "float64" else torch.float32
            twin.model = copy.deepcopy(self.model).to(twin.dtype)
            twin.buffers = {k: v.detach() for k, v in twin.model.named_buffers()}
            twin.theta0 = self.theta0.to(twin.dtype)
            twin.source = copy.copy(self.source)
            twin.source.dtype = twin.dtype
            twin._loaded, twin._twins, twin._exclusive = None, {}, None
            if self.bn == "recompute":
                twin._bn_model = copy.deepcopy(self._bn_model).to(twin.dtype)
            twins[precision] = twin
        return twins[precision]

    def settings(self) -> dict[str, Any]:
        """The settings that determine the numbers (hashed in result files). The device is
        not one of them (a run may resume on another device); files keep it as an attribute."""
        return {"loss": self.loss_name, "bn": self.bn, "precision": self.precision,
                "n": self.n, **({"mean_over": self.loss_fn.mean_over}
                                if self.loss_fn.mean_over != "samples" else {}),
                **({"metrics": sorted(self.metrics)} if set(self.metrics) - {"acc"} else {})}

    @property
    def x(self) -> Any:
        """The inputs on the device (resident data only)."""
        return self._resident()[0]

    @property
    def y(self) -> Tensor:
        """The targets on the device (resident data only)."""
        return self._resident()[1]

    def _resident(self) -> tuple[Any, Tensor]:
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

    def _offsets(self) -> list[int]:
        """Global index of each rank's first sample (rank-major order), and the total."""
        sizes = distributed.all_gather(self.source.n) if self.sharded else [self.source.n]
        out = [0]
        for size in sizes:
            out.append(out[-1] + size)
        return out

    def _local(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """(positions in ``idx``, local indices) of the samples of ``idx`` this rank holds."""
        rank = distributed.rank_and_world()[0] if self.sharded else 0
        offsets = self._offsets()
        lo, hi = offsets[rank], offsets[rank + 1]
        pos = ((idx >= lo) & (idx < hi)).nonzero().flatten()
        return pos, idx[pos] - lo

    def _empty(self) -> tuple[Any, Tensor]:
        """A batch of no samples shaped like the first one (a rank holding none of a subset)."""
        inputs, targets = self.source.rows(torch.zeros(1, dtype=torch.long), self.batch_size)
        return take(inputs, slice(0, 0)), targets[:0]

    def evaluation_settings(self) -> dict[str, Any]:
        """:meth:`settings` plus everything that changes the round-off of :meth:`evaluate`:
        the strategy, the data chunk size, the points per vmap call and the device type (hashed
        in surface files, so that a resumed file is bit-identical to an uninterrupted one)."""
        return {**self.settings(), "strategy": self.strategy, "batch_size": self.batch_size,
                "point_chunk": self.point_chunk if self.strategy == "vmap" else None,
                "device": self.device.type, "first_layer_products": self.plane_layer}

    # ----------------------------------------------------------------------------------
    # the forward pass: nothing else calls the model
    @contextlib.contextmanager
    def precision_context(self, derivative: bool = False) -> Iterator[None]:
        """TF32 and bf16 autocast as the precision asks; derivatives are never autocast to
        bf16 (its BatchNorm backward fails under vmap), they run in float32 storage."""
        if derivative and self.bn == "recompute":
            raise LandscapeError("derivatives need bn='eval' (running statistics); "
                                 "bn='recompute' is for loss evaluation only")
        with contextlib.ExitStack() as stack:
            if self.device.type == "cuda":
                stack.enter_context(_cuda_tf32(self.precision == "tf32"))
            if self.precision == "bf16" and not derivative:
                stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
            yield

    def forward(self, theta: Tensor, x: Any, buffers: dict[str, Tensor] | None = None,
                ) -> Any:
        """Model outputs at flat parameters ``theta[P]`` on inputs ``x`` (eval mode).

        ``buffers`` overrides some or all of the model's buffers (BatchNorm statistics).
        ``x``: a tensor, tuple (``model(*x)``) or dict (``model(**x)``); with a
        ``forward_loss`` hook, the whole batch, and the result is the hook's value.
        """
        state = {**self.space.unflatten(theta), **self.buffers, **(buffers or {})}
        return self._apply(state, x)

    def _apply(self, state: dict[str, Tensor], x: Any) -> Any:
        if self.loss_fn.hook:
            return self.loss_fn(_Bound(self.model, state), x)
        if isinstance(x, Tensor):
            return functional_call(self.model, state, (x,))
        return call_model(_Bound(self.model, state), x)

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

    def _stats(self, out: Any, y: Tensor) -> Tensor:
        """``[loss sum, metric sums...]`` of one data chunk (float64), in units of weight."""
        w = self.loss_fn.weight(y)
        return torch.stack([self.loss_fn.total(out, y).double(),
                            *(m.total(out, y).double() if m.has_per_sample
                              else m.fn(out, y).double() * w for m in self.metrics.values())])

    def _recomputed_buffers(self, theta: Tensor) -> dict[str, Tensor]:
        buffers = {k: v.clone() for k, v in self.buffers.items()}
        for m_name, m in self._bn_model.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                buffers[f"{m_name}.running_mean"].zero_()
                buffers[f"{m_name}.running_var"].fill_(1.0)
                buffers[f"{m_name}.num_batches_tracked"].zero_()
        state = {**self.space.unflatten(theta), **buffers}
        for x, _ in self.batches():
            call_model(_Bound(self._bn_model, state), x)
        return buffers

    # ----------------------------------------------------------------------------------
    # evaluation at many points
    def _loaded_model(self) -> tuple[nn.Module, Tensor]:
        """A private copy of the model whose parameters are views of one flat tensor ``[P]``:
        a point is loaded by one copy, without ``functional_call``'s per-call re-binding."""
        if self._loaded is None:
            model = copy.deepcopy(self.model)
            flat = self.theta0.clone()
            params = dict(model.named_parameters())
            for name, view in self.space.unflatten(flat).items():
                # no grad: autocast caches its casts of leaves that require grad, which would
                # keep the first point's weights for a whole bf16 call
                params[name].requires_grad_(False).data = view
            self._loaded = model, flat
        return self._loaded

    def _plane_layer(self) -> str | None:
        """Name of the first layer whose output :meth:`evaluate_plane` forms from products, or
        None. It must be an ``nn.Linear``, the first module with parameters or buffers that the
        forward pass calls, called once, with every parameter held by a leaf module (so its
        input does not depend on the point); loop strategy, ``bn="eval"``, not bf16, and its
        outputs for the split (three copies) under ``2**26`` numbers."""
        if (self.strategy != "loop" or self.bn != "eval" or self.precision == "bf16"
                or self.loss_fn.hook or not isinstance(next(self.batches())[0], Tensor)):
            return None
        held = [(name, m) for name, m in self.model.named_modules()
                if any(True for _ in m.parameters(recurse=False))
                or any(True for _ in m.buffers(recurse=False))]
        if not held or any(any(True for _ in m.children()) for _, m in held):
            return None
        name, layer = held[0]
        if not isinstance(layer, nn.Linear) or 3 * self.n * layer.out_features > 2**26:
            return None
        calls: list[str] = []
        handles = [m.register_forward_pre_hook(lambda _m, _i, n=n: calls.append(n))
                   for n, m in held]
        try:
            with torch.no_grad():
                self.model(next(iter(self.batches()))[0][:1])
        finally:
            for h in handles:
                h.remove()
        return name if calls[:1] == [name] and calls.count(name) == 1 else None

    def _first_layer_products(self, model: nn.Module, origin: Tensor, directions: Tensor,
                              ) -> list[list[Tensor]]:
        """Per data chunk, the first layer's outputs at ``origin`` and along each direction
        (weights and biases of the directions, no origin): ``1 + D`` products per chunk."""
        layer = model.get_submodule(self.plane_layer)
        parts = [self.space.unflatten(t) for t in (origin, *directions)]
        prefix = f"{self.plane_layer}." if self.plane_layer else ""  # "": the model itself
        weight, bias = f"{prefix}weight", f"{prefix}bias"
        captured: list[Tensor] = []

        def capture(_m: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            captured.append(inputs[0])
            raise _Captured

        handle = layer.register_forward_pre_hook(capture)
        products = []
        try:
            for x, _ in self.batches():
                with contextlib.suppress(_Captured):
                    model(x)
                products.append([F.linear(captured[-1], u[weight], u.get(bias)) for u in parts])
        finally:
            handle.remove()
        return products

    @torch.no_grad()
    def _eval_loop(self, points: Tensor, buffers: dict[str, Tensor] | None = None,
                   plane: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
        """``plane``: ``(origin, directions[D, P], coords[K, D])`` of ``points``, whose first
        layer is then ``x W0 + sum_d c_d x D_d`` (exact in exact arithmetic; round-off in the
        last bits differs from the product at each point)."""
        model, flat = self._loaded_model()
        own = dict(model.named_buffers())
        changed: set[str] = set()
        rows = []
        layer, products, coords = None, None, None
        if plane is not None:
            products = self._first_layer_products(model, plane[0], plane[1])
            coords = plane[2].tolist()
            layer = model.get_submodule(self.plane_layer)
        try:
            for k, theta in enumerate(points):
                flat.copy_(theta)
                if self.bn == "recompute":
                    buffers_k = self._recomputed_buffers(theta)
                else:
                    buffers_k = {name: b[k] for name, b in (buffers or {}).items()}
                for name, b in buffers_k.items():
                    own[name].copy_(b)
                    changed.add(name)
                total = None
                for c, (x, y) in enumerate(self.batches()):  # summed in order: the same bits
                    if layer is not None:
                        h = products[c][0].clone()
                        for coefficient, along in zip(coords[k], products[c][1:]):
                            h.add_(along, alpha=coefficient)
                        layer.forward = lambda _x, h=h: h  # the first layer's output, given
                    stats = self._stats(self.loss_fn(model, x) if self.loss_fn.hook
                                        else call_model(model, x), y)
                    total = stats if total is None else total + stats
                rows.append(total)
        finally:
            for name in changed:
                own[name].copy_(self.buffers[name])
            if layer is not None and "forward" in vars(layer):
                del layer.forward
        return torch.stack(rows)

    @torch.no_grad()
    def _eval_vmap(self, points: Tensor, buffers: dict[str, Tensor] | None = None) -> Tensor:
        def stats(theta: Tensor, buf: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return self._stats(self.forward(theta, x, buf), y)

        buffers = buffers or {}
        batched = vmap(stats, in_dims=(0, 0 if buffers else None, None, None))
        out = torch.zeros(points.shape[0], len(self.metric_names), dtype=torch.float64,
                          device=self.device)
        for start in range(0, points.shape[0], self.point_chunk):
            sel = slice(start, start + self.point_chunk)
            buf = {name: b[sel] for name, b in buffers.items()}
            for x, y in self.batches():
                out[sel] += batched(points[sel], buf, x, y)
        return out

    def _choose_strategy(self) -> str:
        """The ``auto`` rule, by model and device (no timing, so the choice never depends on
        machine load): ``loop`` on the CPU (faster than vmap there for the digits MLP as for
        LeNet, ``benchmarks/README.md``), for BatchNorm recomputation, and for convolutional or
        BatchNorm models on a GPU (they fill the device; cuDNN BatchNorm has failed under
        vmap); ``vmap`` for the remaining (small, fully connected) models on a GPU."""
        if (self.device.type == "cpu" or self.bn == "recompute" or self.has_bn
                or _has_conv(self.model)):
            return "loop"
        return "vmap"

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def evaluate_plane(self, origin: Tensor, directions: Tensor, coords: Tensor,
                       buffers: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """:meth:`evaluate` at ``origin[P] + coords[K, D] @ directions[D, P]``.

        Where :attr:`plane_layer` is set (a first ``nn.Linear`` layer), a point's first-layer
        output is ``x W0 + sum_d c_d x D_d``: ``1 + D`` products per data chunk and call serve
        all K points instead of one product per point (equal to :meth:`evaluate` to float
        round-off; the saving is in ``benchmarks/README.md``).
        """
        origin = torch.as_tensor(origin).to(self.device, self.dtype)
        directions = torch.as_tensor(directions).to(self.device, self.dtype)
        coords = torch.as_tensor(coords).to(self.device, self.dtype)
        points = origin + coords @ directions
        if self.plane_layer is None:
            return self.evaluate(points, buffers)
        return self.evaluate(points, buffers, _plane=(origin, directions, coords))

    def evaluate(self, points: Tensor, buffers: dict[str, Tensor] | None = None,
                 _plane: tuple[Tensor, Tensor, Tensor] | None = None) -> dict[str, Tensor]:
        """Mean loss (and accuracy, for classification) at each of ``points[K, P]``.

        ``buffers`` optionally gives per-point buffers ``name -> [K, ...]`` (e.g. BatchNorm
        statistics interpolated between two models); the others stay the model's.
        Returns float64 CPU tensors of shape [K]. Cost: K forward passes over the split.
        On a CUDA out-of-memory error the chunk sizes are halved and the call goes on.
        """
        points = torch.as_tensor(points)
        if points.dim() == 1:
            points = points[None]
        self.space.check(points)
        points = points.to(self.device, self.dtype)
        if buffers:
            unknown = set(buffers) - set(self.buffers)
            if unknown:
                raise LandscapeError(f"unknown buffers {sorted(unknown)}")
            buffers = {k: v.to(self.device, self.buffers[k].dtype) for k, v in buffers.items()}
        def run() -> Tensor:
            with self.precision_context():
                if self.strategy == "vmap":
                    return self._eval_vmap(points, buffers)
                return self._eval_loop(points, buffers, _plane)

        def shrink() -> bool:
            if self.strategy == "vmap" and self.point_chunk > 1:
                self.point_chunk //= 2
            elif self.batch_size > 1:
                self.batch_size //= 2
            else:
                return False
            return True

        sums = halving_on_oom(run, shrink)
        self.counts["forward"] += points.shape[0]
        sums = self.all_reduce(sums).cpu() / self.weight_total
        result = {"loss": sums[:, 0]}
        for i, name in enumerate(self.metrics, 1):  # no metric where the loss is NaN
            result[name] = torch.where(sums[:, 0].isnan(), torch.nan, sums[:, i])
        return result

    def loss(self, theta: Tensor) -> float:
        """Mean loss over the split at ``theta[P]``."""
        return float(self.evaluate(theta[None])["loss"][0])

    # ----------------------------------------------------------------------------------
    # derivatives, summed over data chunks with weights chunk_size / n
    def _check(self, theta: Tensor) -> Tensor:
        self.space.check(theta)
        return torch.as_tensor(theta).to(self.device, self.dtype)

    def loss_and_grad(self, theta: Tensor) -> tuple[float, Tensor]:
        """Mean loss and its gradient [P] at ``theta``. Cost: one forward+backward pass; one
        host synchronization (the loss is accumulated on the device)."""
        theta = self._check(theta)
        fn = grad_and_value(self.batch_loss)
        total_g = torch.zeros_like(theta)
        total_l = torch.zeros((), dtype=torch.float64, device=self.device)
        with self.precision_context(derivative=True):
            for x, y in self.batches():
                g, value = fn(theta, x, y)
                w = self.loss_fn.weight(y)
                total_g += w * g
                total_l += w * value.double()
        self.all_reduce(total_g)
        self.counts["grad"] += 1
        return self.all_reduce(total_l).item() / self.weight_total, total_g / self.weight_total

    def grad(self, theta: Tensor) -> Tensor:
        """Gradient [P] of the mean loss at ``theta``."""
        return self.loss_and_grad(theta)[1]

    def _block(self, theta: Tensor, v: Tensor, products: Callable) -> Tensor:
        """Chunk-weighted sum of ``products(theta, vs[K, P], x, y) -> [K, P]`` for ``v[P]`` or
        a block ``v[K, P]``: each data chunk is visited once for the whole block."""
        theta = self._check(theta)
        v = torch.as_tensor(v).to(self.device, self.dtype)
        self.space.check(v)
        single = v.dim() == 1
        vs = v[None] if single else v
        out = torch.zeros_like(vs)
        with self.precision_context(derivative=True):
            for x, y in self.batches():
                out += self.loss_fn.weight(y) * products(theta, vs, x, y)
        out = self.all_reduce(out) / self.weight_total
        self.counts["hvp"] += vs.shape[0]
        return out[0] if single else out

    def _hvp_fwd_rev(self, theta: Tensor, vs: Tensor, x: Tensor, y: Tensor) -> Tensor:
        def one(v: Tensor) -> Tensor:
            return jvp(lambda t: grad(self.batch_loss)(t, x, y), (theta,), (v,))[1]
        return vmap(one)(vs)

    def _hvp_double_backward(self, theta: Tensor, vs: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """One forward pass and one gradient graph for the chunk; one second backward pass
        through it per vector."""
        with torch.enable_grad():
            t = theta.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.batch_loss(t, x, y), t, create_graph=True)
            last = vs.shape[0] - 1
            return torch.stack([torch.autograd.grad(g, t, grad_outputs=v,
                                                    retain_graph=k < last)[0]
                                for k, v in enumerate(vs)])

    def hvp(self, theta: Tensor, v: Tensor, method: str | None = None) -> Tensor:
        """Hessian-vector product of the mean loss: ``v[P] -> Hv``, or a block ``v[K, P]``.

        A block visits each data chunk once. ``method``: ``"double_backward"`` (the default:
        one forward pass and one ``create_graph`` gradient per chunk, then one backward pass
        through that graph per vector) or ``"fwd_rev"`` (``torch.func.jvp`` of ``grad``,
        vectorized over the block by ``vmap``). Their measured costs are in
        ``benchmarks/README.md``.
        """
        method = method or self.hvp_method
        if method == "double_backward":
            return self._block(theta, v, self._hvp_double_backward)
        return self._block(theta, v, self._hvp_fwd_rev)

    def _ggn(self, theta: Tensor, vs: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """``J^T H_out J v`` for each v from one forward pass: ``J v`` is the derivative of the
        linear map ``u -> J^T u`` (a backward pass with ``create_graph``) along v."""
        with torch.enable_grad():
            t = theta.detach().requires_grad_(True)
            out = self.forward(t, x)
            u = torch.zeros_like(out, requires_grad=True)
            (jtu,) = torch.autograd.grad(out, t, u, create_graph=True)
            z = out.detach().requires_grad_(True)
            (gz,) = torch.autograd.grad(self.loss_fn.total(z, y) / self.loss_fn.weight(y), z,
                                        create_graph=True)
            products = []
            for v in vs:
                (jv,) = torch.autograd.grad(jtu, u, v, retain_graph=True)
                (hjv,) = torch.autograd.grad(gz, z, jv, retain_graph=True)
                products.append(torch.autograd.grad(out, t, hjv, retain_graph=True)[0])
        return torch.stack(products)

    def ggn_vp(self, theta: Tensor, v: Tensor) -> Tensor:
        """Generalized Gauss-Newton product ``J^T H_out J v`` (positive semi-definite).

        For cross-entropy this is the Fisher information (Martens 2020). Same shapes as
        :meth:`hvp`; one forward pass per data chunk for the whole block. Needs a loss of the
        model's output (not a ``forward_loss`` hook).
        """
        if self.loss_fn.hook:
            raise LandscapeError("the Gauss-Newton product needs a loss of the model's output, "
                                 "not a forward_loss hook")
        return self._block(theta, v, self._ggn)

    def per_sample_chunk(self, numel: int) -> int:
        """Samples per vmap call of :meth:`per_sample_grads` for ``numel`` parameters
        (:func:`landscape.per_sample.chunk_size`)."""
        return per_sample.chunk_size(self, numel)

    def per_sample_grads(self, theta: Tensor, idx: Tensor | None = None,
                         names: tuple[str, ...] | None = None) -> Tensor:
        """Gradients of each sample's loss, shape [len(idx), P] (all samples by default), or
        only of the parameters ``names`` (flat in the space's order; the others held fixed).

        One pass over the data, :meth:`per_sample_chunk` samples per vmap call. Needs the
        per-sample form of the loss (:class:`landscape.sources.Loss`); each sample's loss is
        scaled so that their mean is the loss. Sharded data: each rank computes the samples it
        holds, summed (:func:`landscape.per_sample.grads`).
        """
        return per_sample.grads(self, theta, idx, names)

    def per_sample_sq_norms(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Mean gradient ``[P]`` and each sample's squared gradient norm ``||grad loss_i||^2``
        (``[n]``, float64), without forming per-sample gradients where the layer allows
        (Linear, Conv2d, eval-mode BatchNorm whose parameters no other code reads:
        :mod:`landscape.per_sample`).

        Cost: one forward+backward pass (``counts["grad"]``), plus per-sample gradients of the
        parameters of other layers (``counts["per_sample"]``) when there are any.
        """
        return per_sample.sq_norms_of(self, theta)
