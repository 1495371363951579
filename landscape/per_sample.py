"""Squared norms of per-sample gradients from one ordinary backward pass.

For a layer applied at positions ``l`` (one for a dense input, a sequence or the pixels of a
convolution) with inputs ``a_il`` and output gradients ``b_il = d loss_i / d out_il``, sample
i's weight gradient is ``g_i = sum_l b_il a_il^T`` and its bias gradient ``sum_l b_il``
(Goodfellow 2015, "Efficient per-example gradient computations"). Hence, without forming
``g_i`` for every sample:

- one position: ``||g_i||^2 = ||a_i||^2 ||b_i||^2``;
- many positions: ``||g_i||^2 = sum_{l,l'} (a_il . a_il') (b_il . b_il')`` (the Gram form of
  DP-SGD's "ghost clipping"), or ``g_i`` formed explicitly when that is cheaper
  (``L (d_in + d_out) > d_in d_out``, e.g. every convolution of LeNet and ResNet-20).

Eval-mode BatchNorm is a per-channel affine map of ``xhat = (a - mean) / sqrt(var + eps)``
(running statistics), so ``g_i(gamma) = sum_pos b_i xhat_i`` and ``g_i(beta) = sum_pos b_i``.
Layers are handled when their parameters are used by their own forward alone: not tied,
not read by other modules' code (a tied embedding, ``F.linear`` on a child's weight in the
parent's forward), which :func:`exclusive_layers` checks by recording every torch call that
receives a parameter during one forward pass; every other parameter gets exact per-sample
gradients (:func:`grads`).

The engine-facing functions (:func:`chunk_size`, :func:`grads`, :func:`sq_norms_of`) take
the engine core (an ``Objective``: its data, loss, forward pass and reductions) and read each
data batch once per call, resident or streamed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, vmap
from torch.overrides import TorchFunctionMode

from landscape import distributed
from landscape.errors import LandscapeError
from landscape.sources import leaves, length, nbytes, take, tree_map


def supports(module: nn.Module) -> bool:
    """Whether :func:`sq_norms` covers all of ``module``'s own parameters."""
    if type(module) is nn.Linear:  # subclasses may use their weights otherwise
        return True
    if type(module) is nn.Conv2d:
        return (module.groups == 1 and module.padding_mode == "zeros"
                and not isinstance(module.padding, str))
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.affine and module.running_mean is not None and not module.training
    return False


def _positions(module: nn.Module, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Inputs ``[n, d_in, L]`` and output gradients ``[n, d_out, L]`` at the L positions
    where the weight of a Linear or Conv2d layer is applied (views where possible)."""
    n = a.shape[0]
    if isinstance(module, nn.Linear):
        return a.reshape(n, -1, a.shape[-1]).mT, b.reshape(n, -1, b.shape[-1]).mT
    cols = F.unfold(a, module.kernel_size, module.dilation, module.padding, module.stride)
    return cols, b.flatten(2)


def _weight_sq_norms(a: Tensor, b: Tensor) -> Tensor:
    """``||sum_l b_il a_il^T||^2`` for each i, from ``a[n, d_in, L]`` and ``b[n, d_out, L]``."""
    d_in, d_out, length = a.shape[1], b.shape[1], a.shape[2]
    if length == 1:
        return a.square().sum((1, 2)) * b.square().sum((1, 2))
    if length * (d_in + d_out) < d_in * d_out:
        return (torch.bmm(a.mT, a) * torch.bmm(b.mT, b)).sum((1, 2))
    return torch.bmm(b, a.mT).square().sum((1, 2))


def sq_norms(module: nn.Module, calls: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Squared norm ``[n]`` of each sample's gradient with respect to ``module``'s own
    parameters, from its ``(input, output gradient)`` at each of its calls in one forward
    pass (several calls add up, as positions of one call do). Cost: about one extra backward
    pass of the layer."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        g_weight = g_bias = 0.0
        for a, b in calls:
            shape = (1, -1) + (1,) * (a.dim() - 2)
            xhat = (a - module.running_mean.view(shape)) * torch.rsqrt(
                module.running_var.view(shape) + module.eps)
            dims = tuple(range(2, a.dim()))  # none for [n, C] inputs (sum(()) sums all)
            g_weight = g_weight + ((b * xhat).sum(dims) if dims else b * xhat)
            g_bias = g_bias + (b.sum(dims) if dims else b)
        return g_weight.square().sum(1) + g_bias.square().sum(1)
    pairs = [_positions(module, a, b) for a, b in calls]
    a, b = pairs[0] if len(pairs) == 1 else (torch.cat(p, 2) for p in zip(*pairs))
    out = _weight_sq_norms(a, b)
    if module.bias is not None:
        out = out + b.sum(2).square().sum(1)
    return out


# ------------------------------------------------------------------------------------------
# the engine's per-sample work
class _Uses(TorchFunctionMode):
    """Records ``(parameter name, innermost module running)`` for every torch call that
    receives a parameter."""

    def __init__(self, names: dict[int, str], stack: list[str]) -> None:
        super().__init__()
        self.names, self.stack, self.uses = names, stack, set()

    def __torch_function__(self, func: Callable, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        for t in leaves([list(args), dict(kwargs or {})]) if self.stack else ():
            if id(t) in self.names:  # (calls outside any forward: functional_call's own)
                self.uses.add((self.names[id(t)], self.stack[-1] if self.stack else None))
        return func(*args, **(kwargs or {}))


def exclusive_layers(core: Any) -> tuple[dict[str, nn.Module], tuple[str, ...]]:
    """Modules whose per-sample gradient norms :func:`sq_norms` computes (supported layers
    whose parameters are held and used by them alone, checked on one forward pass of one
    sample), and the names of all other parameters. Cost: one forward pass of one sample,
    once per objective."""
    if "exclusive" in core.cache:
        return core.cache["exclusive"]
    model, names = core.model, core.space.names
    owners: dict[int, int] = {}
    for m in model.modules():
        for p in m.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    state = {**core.space.unflatten(core.theta0), **core.buffers}
    stack: list[str] = []

    def enter(prefix: str) -> Callable:
        return lambda *_: stack.append(prefix)  # (None: the input is kept)

    def leave(*_: Any) -> None:
        stack.pop()

    handles = [h for prefix, m in model.named_modules()
               for h in (m.register_forward_pre_hook(enter(prefix)),
                         m.register_forward_hook(leave))]
    uses = _Uses({id(v): k for k, v in state.items() if k in names}, stack)
    try:
        with torch.no_grad(), uses:
            core.apply(state, take(first_sample(core), slice(0, 1)))
    finally:
        for h in handles:
            h.remove()
    users: dict[str, set] = {}
    for name, module in uses.uses:
        users.setdefault(name, set()).add(module)
    layers, covered = {}, set()
    for prefix, m in model.named_modules():
        own = [(f"{prefix}.{n}" if prefix else n, p) for n, p in m.named_parameters(recurse=False)]
        if (own and supports(m) and all(owners[id(p)] == 1 for _, p in own)
                and all(n in names and users.get(n, {prefix}) == {prefix} for n, _ in own)):
            layers[prefix] = m
            covered.update(n for n, _ in own)
    core.cache["exclusive"] = layers, tuple(n for n in names if n not in covered)
    return core.cache["exclusive"]


def first_sample(core: Any) -> Any:
    """The inputs of the first sample of the split (reads one batch)."""
    return take(next(core.source.batches(1))[0], slice(0, 1))


def chunk_size(core: Any, numel: int) -> int:
    """Samples per vmap call of :func:`grads` for ``numel`` parameters, sized so that
    gradients and activations fit ``core.memory_budget`` bytes (default: a quarter of the
    free GPU memory, 16 MiB on the CPU, the fastest measured), at most ``batch_size``."""
    if "sample_numel" not in core.cache:  # one sample's activations and bytes, measured once
        first = first_sample(core)
        sizes: list[int] = []
        handles = [m.register_forward_hook(
            lambda _m, _i, o: sizes.append(o.numel()) if isinstance(o, Tensor) else None)
            for m in core.model.modules()]
        try:
            with torch.no_grad(), core.precision_context(derivative=True):
                core.forward(core.theta0, first)
        finally:
            for h in handles:
                h.remove()
        core.cache["sample_numel"] = sum(sizes), nbytes(first)
    activations, sample_bytes = core.cache["sample_numel"]
    budget = core.memory_budget
    if budget is None:
        budget = (torch.cuda.mem_get_info(core.device)[0] // 4
                  if core.device.type == "cuda" else 2**24)
    itemsize = torch.finfo(core.dtype).bits // 8
    per_sample_bytes = itemsize * (2 * numel + 2 * activations) + sample_bytes
    return max(1, min(core.batch_size, budget // per_sample_bytes))


def grads(core: Any, theta: Tensor, idx: Tensor | None = None,
          names: tuple[str, ...] | None = None, local: bool = False) -> Tensor:
    """Gradients of each sample's loss ``[len(idx), P]`` (all samples by default), or of the
    parameters ``names`` only (flat, in the space's order). One pass over the data, in vmap
    calls of :func:`chunk_size` samples; each sample's loss scaled so that their mean is the
    loss. Sharded data: each rank computes the samples it holds, summed over ranks
    (``local``: this rank's samples only, indices local)."""
    theta = core.as_point(theta)
    if not core.loss_fn.has_per_sample:
        core.loss_fn.samples(None, None)  # the one-line error
    sharded = core.sharded and not local
    n_here = core.source.n if local else core.n
    idx = (torch.arange(n_here) if idx is None else torch.as_tensor(idx)).long().cpu()
    views = core.space.unflatten(theta)
    names = core.space.names if names is None else tuple(names)
    unknown = set(names) - set(views)
    if unknown:
        raise LandscapeError(f"unknown parameters {sorted(unknown)}")
    names = tuple(n for n in core.space.names if n in names)
    scale = core.n / core.weight_total

    def one(sub: dict[str, Tensor], x: Any, y: Tensor) -> Tensor:
        out = core.apply({**views, **sub, **core.buffers}, tree_map(lambda t: t[None], x))
        return core.loss_fn.samples(out, y[None])[0] * scale

    fn = vmap(grad(one), in_dims=(None, 0, 0))
    sub = {n: views[n] for n in names}
    width = sum(v.numel() for v in sub.values())
    step = chunk_size(core, width)
    pos, mine = core.source.local(idx) if sharded else (torch.arange(idx.numel()), idx)
    out = torch.zeros(idx.numel(), width, dtype=core.dtype, device=core.device)
    order = torch.argsort(mine)
    mine, pos = mine[order], pos[order]
    start = 0
    with core.precision_context(derivative=True):
        for x, y in core.source.batches(core.batch_size):
            b = length(x)
            lo, hi = (torch.searchsorted(mine, torch.tensor([start, start + b]))).tolist()
            for s in range(lo, hi, step):
                sel = (mine[s : min(hi, s + step)] - start).to(core.device)
                g = fn(sub, take(x, sel), y[sel])
                out[pos[s : s + sel.numel()].to(core.device)] = torch.cat(
                    [g[n].reshape(sel.numel(), -1) for n in names], 1)
            start += b
            if not mine.numel() or start > int(mine[-1]):
                break  # the rest of the data holds no requested sample
    core.counts["per_sample"] += idx.numel() / core.n
    return core.all_reduce(out) if sharded else out


def sq_norms_of(core: Any, theta: Tensor) -> tuple[Tensor, Tensor]:
    """Mean gradient ``[P]`` and each sample's squared gradient norm ``[n]`` (float64):
    layers of :func:`exclusive_layers` from one backward pass (:func:`sq_norms`), the other
    parameters by :func:`grads`. See ``Objective.per_sample_sq_norms``."""
    theta = core.as_point(theta)
    if core.loss_fn.hook:
        raise LandscapeError("per-sample gradient norms need a loss of the model's "
                             "output, not a forward_loss hook")
    if not core.loss_fn.has_per_sample:
        core.loss_fn.samples(None, None)  # the one-line error
    layers, rest = exclusive_layers(core)
    calls: dict[str, list[list[Tensor]]] = {name: [] for name in layers}

    def capture(name: str) -> Callable:
        def hook(_module: nn.Module, inputs: tuple, output: Tensor) -> None:
            pair = [inputs[0].detach()]  # + the output gradient, when backward reaches it
            calls[name].append(pair)
            if output.requires_grad:  # registered before any in-place change of output
                output.register_hook(lambda g: pair.append(g))
        return hook

    handles = [m.register_forward_hook(capture(name)) for name, m in layers.items()]
    total_g = torch.zeros_like(theta)
    sq = torch.zeros(core.source.n, dtype=torch.float64, device=core.device)
    start, uncalled = 0, set(layers)
    try:
        with core.precision_context(derivative=True), torch.enable_grad():
            for x, y in core.batches():
                for c in calls.values():
                    c.clear()
                t = theta.detach().requires_grad_(True)
                total_g += torch.autograd.grad(core.loss_fn.total(core.forward(t, x), y), t)[0]
                for name, c in calls.items():
                    if c:
                        uncalled.discard(name)
                    pairs = [(p[0], p[1]) for p in c if len(p) == 2]
                    if pairs:
                        sq[start : start + y.shape[0]] += sq_norms(layers[name], pairs).double()
                start += y.shape[0]
    finally:
        for h in handles:
            h.remove()
    core.counts["grad"] += 1
    sq *= (core.n / core.weight_total) ** 2  # each sample's loss: the split's mean is the loss
    # parameters of a layer that was never called may be used by another module's code
    rest += tuple(f"{prefix}.{n}" if prefix else n for prefix in sorted(uncalled)
                  for n, _ in layers[prefix].named_parameters(recurse=False))
    if rest:  # e.g. LayerNorm, embeddings, shared weights: per-sample gradients, one pass
        g = grads(core, theta, names=rest, local=True)
        sq += g.double().square().sum(1)  # (grads scales each sample's loss itself)
    if core.sharded:  # every rank's samples, in rank order
        sq = torch.cat([s.to(core.device) for s in distributed.all_gather(sq.cpu())])
    return core.all_reduce(total_g) / core.weight_total, sq
