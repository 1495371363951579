"""Evaluators of the engine: loss and metrics at a batch of points ``theta[K, P]``.

One :class:`Evaluator` per objective, chosen once when the objective is built (a fixed rule,
:func:`choose_strategy`, so that the same command gives the same numbers however loaded the
machine is):

- ``"vmap"``: ``torch.func.vmap`` over ``functional_call`` across a chunk of points, sharing
  each data batch (small models on a GPU, where one forward pass leaves the device idle);
- ``"loop"``: one point at a time, loaded into a private copy of the model whose parameters
  are views of one flat vector (one copy per point; every model on the CPU, convolutions and
  BatchNorm everywhere); on a plane, a first ``nn.Linear`` layer's output is formed from
  ``1 + D`` products per data chunk (:func:`plane_layer`).

On a CUDA out-of-memory error the evaluator halves its points per vmap call, then the data
chunk, and goes on; :meth:`Evaluator.settings` is the chunking actually in use (what result
files hash, so a file records the chunking that produced it).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from landscape.sources import call_model

T = TypeVar("T")


class Bound:
    """A model with its state bound (for a ``forward_loss`` hook): calling it is
    ``functional_call``; other attributes are the model's."""

    def __init__(self, model: nn.Module, state: dict[str, Tensor]) -> None:
        self.model, self.state = model, state

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return functional_call(self.model, self.state, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


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


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def choose_strategy(core: Any) -> str:
    """The ``auto`` rule, by model and device (no timing, so the choice never depends on
    machine load): ``loop`` on the CPU (faster than vmap there for the digits MLP as for
    LeNet, ``benchmarks/README.md``), for BatchNorm recomputation, and for convolutional or
    BatchNorm models on a GPU (they fill the device; cuDNN BatchNorm has failed under vmap);
    ``vmap`` for the remaining (small, fully connected) models on a GPU."""
    if (core.device.type == "cpu" or core.bn == "recompute" or has_batchnorm(core.model)
            or has_conv(core.model)):
        return "loop"
    return "vmap"


def plane_layer(core: Any, strategy: str) -> str | None:
    """Name of the first layer whose output on a plane is formed from products, or None. It
    must be an ``nn.Linear``, the first module with parameters or buffers that the forward
    pass calls, called once, with every parameter held by a leaf module (so its input does
    not depend on the point); loop strategy, ``bn="eval"``, not bf16, and its outputs for the
    split (three copies) under ``2**26`` numbers."""
    first = next(core.batches())[0]
    if (strategy != "loop" or core.bn != "eval" or core.precision == "bf16"
            or core.loss_fn.hook or not isinstance(first, Tensor)):
        return None
    held = [(name, m) for name, m in core.model.named_modules()
            if any(True for _ in m.parameters(recurse=False))
            or any(True for _ in m.buffers(recurse=False))]
    if not held or any(any(True for _ in m.children()) for _, m in held):
        return None
    name, layer = held[0]
    if not isinstance(layer, nn.Linear) or 3 * core.n * layer.out_features > 2**26:
        return None
    calls: list[str] = []
    handles = [m.register_forward_pre_hook(lambda _m, _i, n=n: calls.append(n))
               for n, m in held]
    try:
        with torch.no_grad():
            core.model(first[:1])
    finally:
        for h in handles:
            h.remove()
    return name if calls[:1] == [name] and calls.count(name) == 1 else None


class _Captured(Exception):
    """Stops a forward pass once the first layer's input is captured."""


class Evaluator:
    """The evaluation strategy of one objective (``"loop"`` or ``"vmap"``) and the chunking
    it uses: ``point_chunk`` points per vmap call, the objective's ``batch_size`` samples per
    data chunk; :attr:`plane_layer` as :func:`plane_layer`."""

    def __init__(self, core: Any, strategy: str, point_chunk: int) -> None:
        self.core, self.strategy, self.point_chunk = core, strategy, point_chunk
        self.plane_layer = plane_layer(core, strategy)
        self.loaded: tuple[nn.Module, Tensor] | None = None  # the loop's model, made on use
        self.bn_model: nn.Module | None = None  # bn="recompute": train-mode copy, on use

    def settings(self) -> dict[str, Any]:
        """Everything that changes the round-off of an evaluation, as in use now."""
        return {"strategy": self.strategy, "batch_size": self.core.batch_size,
                "point_chunk": self.point_chunk if self.strategy == "vmap" else None,
                "device": self.core.device.type, "first_layer_products": self.plane_layer}

    def __call__(self, points: Tensor, buffers: dict[str, Tensor] | None,
                 plane: tuple[Tensor, Tensor, Tensor] | None) -> Tensor:
        """Sums ``[K, 1 + metrics]`` (float64, this rank's data) at ``points``; ``plane``:
        ``(origin, directions[D, P], coords[K, D])`` of the points (loop strategy)."""
        core = self.core

        def run() -> Tensor:
            with core.precision_context():
                if self.strategy == "vmap":
                    return self.vmap(points, buffers)
                return self.loop(points, buffers, plane)

        def shrink() -> bool:
            if self.strategy == "vmap" and self.point_chunk > 1:
                self.point_chunk //= 2
            elif core.batch_size > 1:
                core.batch_size //= 2
            else:
                return False
            return True

        return halving_on_oom(run, shrink)

    def buffers(self) -> dict[str, Tensor]:
        """The buffers of the loop's model copy (none before it is made)."""
        return {} if self.loaded is None else dict(self.loaded[0].named_buffers())

    def loaded_model(self) -> tuple[nn.Module, Tensor]:
        """A private copy of the model whose parameters are views of one flat tensor ``[P]``:
        a point is loaded by one copy, without ``functional_call``'s per-call re-binding."""
        if self.loaded is None:
            model = copy.deepcopy(self.core.model)
            flat = self.core.theta0.clone()
            params = dict(model.named_parameters())
            for name, view in self.core.space.unflatten(flat).items():
                # no grad: autocast caches its casts of leaves that require grad, which would
                # keep the first point's weights for a whole bf16 call
                params[name].requires_grad_(False).data = view
            self.loaded = model, flat
        return self.loaded

    def recomputed_buffers(self, theta: Tensor) -> dict[str, Tensor]:
        """BatchNorm statistics of the evaluated data at ``theta`` (one train-mode pass,
        cumulative average, as ``torch.optim.swa_utils.update_bn``)."""
        core = self.core
        if self.bn_model is None:
            self.bn_model = copy.deepcopy(core.model)
            for m in self.bn_model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.momentum = None  # cumulative average over the pass
            self.bn_model.train()
        buffers = {k: v.clone() for k, v in core.buffers.items()}
        for m_name, m in self.bn_model.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                buffers[f"{m_name}.running_mean"].zero_()
                buffers[f"{m_name}.running_var"].fill_(1.0)
                buffers[f"{m_name}.num_batches_tracked"].zero_()
        state = {**core.space.unflatten(theta), **buffers}
        for x, _ in core.batches():
            call_model(Bound(self.bn_model, state), x)
        return buffers

    def first_layer_products(self, model: nn.Module, origin: Tensor, directions: Tensor,
                             ) -> list[list[Tensor]]:
        """Per data chunk, the first layer's outputs at ``origin`` and along each direction
        (weights and biases of the directions, no origin): ``1 + D`` products per chunk."""
        layer = model.get_submodule(self.plane_layer)
        parts = [self.core.space.unflatten(t) for t in (origin, *directions)]
        prefix = f"{self.plane_layer}." if self.plane_layer else ""  # "": the model itself
        weight, bias = f"{prefix}weight", f"{prefix}bias"
        captured: list[Tensor] = []

        def capture(_m: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            captured.append(inputs[0])
            raise _Captured

        handle = layer.register_forward_pre_hook(capture)
        products = []
        try:
            for x, _ in self.core.batches():
                with contextlib.suppress(_Captured):
                    model(x)
                products.append([F.linear(captured[-1], u[weight], u.get(bias)) for u in parts])
        finally:
            handle.remove()
        return products

    @torch.no_grad()
    def loop(self, points: Tensor, buffers: dict[str, Tensor] | None = None,
             plane: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
        """One point at a time, loaded into the model's flat parameters; with ``plane``
        (``points`` then only give their number) each point is formed there in place, and
        where :attr:`plane_layer` is set the first layer is ``x W0 + sum_d c_d x D_d`` (exact
        in exact arithmetic; round-off in the last bits differs from the product)."""
        core = self.core
        model, flat = self.loaded_model()
        own = dict(model.named_buffers())
        changed: set[str] = set()
        rows = []
        layer, products = None, None
        coords = None if plane is None else plane[2].tolist()
        given: list[Tensor] = []  # the first layer's output at the current point and chunk
        if plane is not None and self.plane_layer is not None:
            products = self.first_layer_products(model, plane[0], plane[1])
            # one output buffer per chunk, rewritten at each point: a fresh tensor per point,
            # alive into the next point, walked the heap up until glibc trimmed it and every
            # point page-faulted its activations back in (1.6x the time, benchmarks/README.md)
            outputs = [torch.empty_like(chunk[0]) for chunk in products]
            layer = model.get_submodule(self.plane_layer)
            layer.forward = lambda _x: given[-1]
        try:
            for k in range(len(points)):
                if plane is None:
                    flat.copy_(points[k])
                else:
                    flat.copy_(plane[0])
                    for coefficient, direction in zip(coords[k], plane[1]):
                        flat.add_(direction, alpha=coefficient)
                theta = flat
                if core.bn == "recompute":
                    buffers_k = self.recomputed_buffers(theta)
                else:
                    buffers_k = {name: b[k] for name, b in (buffers or {}).items()}
                for name, b in buffers_k.items():
                    own[name].copy_(b)
                    changed.add(name)
                total = None
                for c, (x, y) in enumerate(core.batches()):  # summed in order: the same bits
                    if layer is not None:
                        h = torch.add(products[c][0], products[c][1], alpha=coords[k][0],
                                      out=outputs[c])
                        for coefficient, along in zip(coords[k][1:], products[c][2:]):
                            h.add_(along, alpha=coefficient)
                        given[:] = [h]
                    stats = core.stats(core.loss_fn(model, x) if core.loss_fn.hook
                                       else call_model(model, x), y)
                    total = stats if total is None else total + stats
                rows.append(total)
        finally:
            for name in changed:
                own[name].copy_(core.buffers[name])
            if layer is not None and "forward" in vars(layer):
                del layer.forward
        return torch.stack(rows)

    @torch.no_grad()
    def vmap(self, points: Tensor, buffers: dict[str, Tensor] | None = None) -> Tensor:
        """``point_chunk`` points per vmap call, sharing each data chunk."""
        core = self.core

        def stats(theta: Tensor, buf: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return core.stats(core.forward(theta, x, buf), y)

        buffers = buffers or {}
        batched = vmap(stats, in_dims=(0, 0 if buffers else None, None, None))
        out = torch.zeros(points.shape[0], len(core.metric_names), dtype=torch.float64,
                          device=core.device)
        for start in range(0, points.shape[0], self.point_chunk):
            sel = slice(start, start + self.point_chunk)
            buf = {name: b[sel] for name, b in buffers.items()}
            for x, y in core.batches():
                out[sel] += batched(points[sel], buf, x, y)
        return out
