"""Evaluators of the engine: loss and metrics at a batch of points ``theta[K, P]``.

One :class:`Evaluator` per objective, chosen once when the objective is built (a fixed rule,
:func:`choose_strategy`, so that the same command gives the same numbers however loaded the
machine is):

- ``"vmap"``: ``torch.func.vmap`` over ``functional_call`` across a chunk of points, sharing
  each data batch (small models on a GPU, where one forward pass leaves the device idle);
- ``"loop"``: one point at a time, loaded into a private copy of the model whose parameters
  are views of one flat vector (one copy per point; every model on the CPU, convolutions and
  BatchNorm everywhere); on a plane, a first ``nn.Linear`` layer's output is formed from
  ``1 + D`` products per data chunk (:func:`plane_layer`); a model that is a chain of
  ``Flatten``/``Linear``/activation modules (an MLP) is replayed into buffers kept across
  points (:func:`chain`, :class:`Replay`: the same bits, no allocation per point).

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


def replaceable(core: Any, strategy: str, first: Any) -> bool:
    """Whether the loop may form the model's outputs other than by calling it (a first layer
    from products, a replayed chain): loop strategy, not bf16 (autocast), no ``forward_loss``
    hook, tensor inputs (``first``: the first chunk's)."""
    return (strategy == "loop" and core.precision != "bf16" and not core.loss_fn.hook
            and isinstance(first, Tensor))


def plane_layer(core: Any, strategy: str, first: Any) -> str | None:
    """Name of the first layer whose output on a plane is formed from products, or None. It
    must be an ``nn.Linear``, the first module with parameters or buffers that the forward
    pass calls on ``first`` (the first chunk's inputs), called once, with every parameter held
    by a leaf module (so its input does not depend on the point); :func:`replaceable`,
    ``bn="eval"``, and its outputs for the split (three copies) under ``2**26`` numbers."""
    if not replaceable(core, strategy, first) or core.bn != "eval":
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


def combine(out: Tensor, origin: Tensor, along: list[Tensor], coefficients: list[float],
            ) -> Tensor:
    """``out = origin + sum_d coefficients[d] * along[d]``, summed in that order, written into
    ``out`` (no allocation; the same bits as a copy followed by in-place adds)."""
    if not along:
        return out.copy_(origin)
    torch.add(origin, along[0], alpha=coefficients[0], out=out)
    for coefficient, tensor in zip(coefficients[1:], along[1:]):
        out.add_(tensor, alpha=coefficient)
    return out


#: Elementwise activations that a replayed chain applies in place: module type -> function.
IN_PLACE: dict[type, Callable[[Tensor], Tensor]] = {
    nn.ReLU: torch.relu_, nn.Tanh: torch.tanh_, nn.Sigmoid: torch.sigmoid_}
#: The module types of a chain (:func:`chain`).
CHAIN = (nn.Flatten, nn.Linear, *IN_PLACE)


def chain(core: Any, strategy: str, first: Any) -> list[str] | None:
    """Names of the leaf modules that the model's forward pass on ``first`` calls, in order,
    when it is nothing but that chain: each an ``nn.Flatten``, ``nn.Linear`` (of a 2-D input)
    or an activation of :data:`IN_PLACE`, without hooks, called once on the previous one's
    output (the first on the input), the last one's output the model's, and :class:`Replay`
    gives the model's own outputs bit for bit; else None (and where not
    :func:`replaceable`)."""
    model = core.model
    names = {m: name for name, m in model.named_modules() if next(m.children(), None) is None}
    if not replaceable(core, strategy, first) or any(type(m) not in CHAIN for m in names):
        return None  # (before any forward pass)
    probe = first[:8]
    calls: list[tuple[nn.Module, tuple[Any, ...], Any]] = []
    handles = [m.register_forward_hook(lambda m, i, o: calls.append((m, i, o))) for m in names]
    try:
        with torch.no_grad():
            out = model(probe)
    finally:
        for h in handles:
            h.remove()
    previous: Any = probe
    for m, inputs, output in calls:
        if (m._forward_hooks or m._forward_pre_hooks or len(inputs) != 1
                or inputs[0] is not previous or (type(m) is nn.Linear and inputs[0].dim() != 2)):
            return None
        previous = output
    steps = [m for m, _, _ in calls]
    if not steps or out is not previous or len(set(steps)) != len(steps):
        return None
    with torch.no_grad():
        same = torch.equal(Replay(steps)(probe), out)
    return [names[m] for m in steps] if same else None


class Replay:
    """A chain's forward pass (:func:`chain`) without allocations: each ``nn.Linear`` writes
    into its own buffer, kept across calls (grown to the largest chunk), and activations apply
    in place to those buffers. The same kernels as the modules, so the same bits; a fresh
    ``[chunk, width]`` tensor per module and point costs page faults once glibc trims its heap
    (``benchmarks/README.md``)."""

    def __init__(self, steps: list[nn.Module]) -> None:
        self.steps = steps
        self.outputs: dict[nn.Module, Tensor] = {}  # each layer's buffer

    def __call__(self, x: Tensor, start: int = 0, owned: bool = False) -> Tensor:
        """The chain's output on ``x`` from step ``start`` on; ``owned``: ``x`` is a buffer that
        may be overwritten (else the first activation before a layer is called as usual)."""
        for m in self.steps[start:]:
            if type(m) is nn.Linear:
                rows, buffer = x.shape[0], self.outputs.get(m)
                if buffer is None or buffer.shape[0] < rows:
                    buffer = self.outputs[m] = x.new_empty(rows, m.out_features)
                out = buffer if buffer.shape[0] == rows else buffer[:rows]
                x = (torch.mm(x, m.weight.t(), out=out) if m.bias is None
                     else torch.addmm(m.bias, x, m.weight.t(), out=out))
                owned = True
            elif owned and type(m) in IN_PLACE:
                x = IN_PLACE[type(m)](x)
            else:
                x = m(x)
        return x


class _Captured(Exception):
    """Stops a forward pass once the first layer's input is captured."""


class Evaluator:
    """The evaluation strategy of one objective (``"loop"`` or ``"vmap"``) and the chunking
    it uses: ``point_chunk`` points per vmap call, the objective's ``batch_size`` samples per
    data chunk; :attr:`plane_layer` as :func:`plane_layer`, :attr:`chain` as :func:`chain`."""

    def __init__(self, core: Any, strategy: str, point_chunk: int) -> None:
        self.core, self.strategy, self.point_chunk = core, strategy, point_chunk
        first = next(core.batches())[0] if strategy == "loop" else None  # (read by the loop)
        self.plane_layer = plane_layer(core, strategy, first)
        self.chain = chain(core, strategy, first)
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
        in exact arithmetic; round-off in the last bits differs from the product). A model
        that is a :func:`chain` is replayed (:class:`Replay`, the same bits); otherwise it is
        called."""
        core = self.core
        model, flat = self.loaded_model()
        own = dict(model.named_buffers())
        changed: set[str] = set()
        rows = []
        coords = None if plane is None else plane[2].tolist()
        directions = [] if plane is None else list(plane[1])
        steps = None if self.chain is None else [model.get_submodule(n) for n in self.chain]
        replay = None if steps is None else Replay(steps)
        layer, products, start = None, None, 0
        # resident data in one chunk: sliced (and cast, for a twin) once, not at every point
        chunks = [next(core.batches())] if core.source.one_chunk(core.batch_size) else None
        given: list[Tensor] = []  # the first layer's output at the current point and chunk
        if plane is not None and self.plane_layer is not None:
            products = self.first_layer_products(model, plane[0], plane[1])
            # one buffer per chunk shape, rewritten at each point: like every activation, a
            # fresh tensor per point (alive into the next) walked glibc's heap up until it was
            # trimmed, and every point page-faulted its activations back in
            shapes: dict[torch.Size, Tensor] = {}
            outputs = [shapes.setdefault(p[0].shape, torch.empty_like(p[0])) for p in products]
            layer = model.get_submodule(self.plane_layer)
            if steps is None:
                layer.forward = lambda _x: given[-1]
            else:
                start = steps.index(layer) + 1
        try:
            for k in range(len(points)):
                if plane is None:
                    flat.copy_(points[k])
                else:
                    combine(flat, plane[0], directions, coords[k])
                theta = flat
                if core.bn == "recompute":
                    buffers_k = self.recomputed_buffers(theta)
                else:
                    buffers_k = {name: b[k] for name, b in (buffers or {}).items()}
                for name, b in buffers_k.items():
                    own[name].copy_(b)
                    changed.add(name)
                total = None
                for c, (x, y) in enumerate(chunks or core.batches()):  # in order: the same bits
                    h = None if products is None else combine(
                        outputs[c], products[c][0], products[c][1:], coords[k])
                    if replay is not None:
                        out = replay(x) if h is None else replay(h, start, owned=True)
                    else:
                        given[:] = [h]
                        out = (core.loss_fn(model, x) if core.loss_fn.hook
                               else call_model(model, x))
                    stats = core.stats(out, y)
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
