"""Derivative products of the engine: kernels on one data chunk, summed by one routine.

A **kernel** ``kernel(core, theta, vs[K, P], x, y) -> [K, P]`` is a product of the mean loss
of one data chunk (a Hessian- or Gauss-Newton-vector product) with each vector of a block.
:func:`summed` weighs every chunk's kernel by its share of the split (samples, or target
elements), visits each chunk once for the whole block and all-reduces over ranks, so adding
an operator is adding one kernel function (the design of curvlinops' linear operators:
Dangel et al.). ``core`` is the engine (:class:`landscape.objective.Objective`): its data
(``batches()``), loss, forward pass, precision and reductions.

When the split is one resident chunk, the double-backward kernel keeps the gradient graph
of the last point between calls (as PyHessian keeps ``gradsH``): every later product at the
same point is one backward pass, without the forward pass and first backward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.func import grad, grad_and_value, jvp, vmap

Kernel = Callable[[Any, Tensor, Tensor, Any, Tensor], Tensor]


def loss_and_grad(core: Any, theta: Tensor) -> tuple[float, Tensor]:
    """Mean loss and its gradient ``[P]`` at ``theta``: one forward+backward pass, one host
    synchronization (the loss is accumulated on the device)."""
    theta = core.as_point(theta)
    fn = grad_and_value(core.batch_loss)
    total_g = torch.zeros_like(theta)
    total_l = torch.zeros((), dtype=torch.float64, device=core.device)
    with core.precision_context(derivative=True):
        for x, y in core.batches():
            g, value = fn(theta, x, y)
            w = core.loss_fn.weight(y)
            total_g += w * g
            total_l += w * value.double()
    core.all_reduce(total_g)
    core.counts["grad"] += 1
    return core.all_reduce(total_l).item() / core.weight_total, total_g / core.weight_total


def summed(core: Any, theta: Tensor, v: Tensor, kernel: Kernel) -> Tensor:
    """The chunk-weighted sum of ``kernel`` over the split for ``v[P]`` or a block
    ``v[K, P]``: each data chunk is visited once for the whole block."""
    theta = core.as_point(theta)
    v = torch.as_tensor(v).to(core.device, core.dtype)
    core.space.check(v)
    single = v.dim() == 1
    vs = v[None] if single else v
    out, first = None, 0  # (a kernel returns a new tensor: summed in place)
    with core.precision_context(derivative=True):
        for x, y in core.batches():
            part, w = kernel(core, theta, vs, x, y), core.loss_fn.weight(y)
            if out is None:
                out, first = part, w
                continue
            if first:
                out, first = out.mul_(first), 0
            out.add_(part, alpha=w)
    if out is None:
        out = torch.zeros_like(vs)
    if first != core.weight_total or core.sharded:  # (else one chunk: the mean already)
        out = core.all_reduce(out.mul_(first) if first else out).div_(core.weight_total)
    core.counts["hvp"] += vs.shape[0]
    return out[0] if single else out


def _gradient_graph(core: Any, theta: Tensor, x: Any, y: Tensor) -> tuple[Tensor, Tensor]:
    """``(t, grad)`` with ``grad`` differentiable in the leaf ``t`` (equal to theta): kept
    on ``core`` for the next call at the same point when the split is one resident chunk."""
    key = (core.source, core.buffers, core.dtype)
    kept = core.cache.get("graph")
    if kept is not None and all(a is b for a, b in zip(kept[0], key)) and (
            (kept[1] is theta and kept[2] == theta._version) or torch.equal(kept[3], theta)):
        return kept[4], kept[5]  # (the same tensor, unmodified, or equal values)
    t = theta.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(core.batch_loss(t, x, y), t, create_graph=True)
    core.cache["graph"] = (key, theta, theta._version, theta.clone(), t, g) \
        if core.source.one_chunk(core.batch_size) else None
    return t, g


def hvp_double_backward(core: Any, theta: Tensor, vs: Tensor, x: Any, y: Tensor) -> Tensor:
    """Hessian-vector products: one gradient graph for the chunk (kept, see the module
    docstring), then one backward pass through it per vector."""
    with torch.enable_grad():
        t, g = _gradient_graph(core, theta, x, y)
        out = [torch.autograd.grad(g, t, grad_outputs=v, retain_graph=True)[0] for v in vs]
    return out[0][None] if len(out) == 1 else torch.stack(out)


def hvp_fwd_rev(core: Any, theta: Tensor, vs: Tensor, x: Any, y: Tensor) -> Tensor:
    """Hessian-vector products as ``torch.func.jvp`` of ``grad``, vectorized by ``vmap``."""
    def one(v: Tensor) -> Tensor:
        return jvp(lambda t: grad(core.batch_loss)(t, x, y), (theta,), (v,))[1]
    return vmap(one)(vs)


def ggn(core: Any, theta: Tensor, vs: Tensor, x: Any, y: Tensor) -> Tensor:
    """Gauss-Newton products ``J^T H_out J v`` from one forward pass: ``J v`` is the
    derivative of the linear map ``u -> J^T u`` (a backward pass with ``create_graph``)
    along v."""
    with torch.enable_grad():
        t = theta.detach().requires_grad_(True)
        out = core.forward(t, x)
        u = torch.zeros_like(out, requires_grad=True)
        (jtu,) = torch.autograd.grad(out, t, u, create_graph=True)
        z = out.detach().requires_grad_(True)
        (gz,) = torch.autograd.grad(core.loss_fn.total(z, y) / core.loss_fn.weight(y), z,
                                    create_graph=True)
        products = []
        for v in vs:
            (jv,) = torch.autograd.grad(jtu, u, v, retain_graph=True)
            (hjv,) = torch.autograd.grad(gz, z, jv, retain_graph=True)
            products.append(torch.autograd.grad(out, t, hjv, retain_graph=True)[0])
    return torch.stack(products)


#: The HVP kernels by ``Objective(hvp_method=...)`` name.
HVP_METHODS: dict[str, Kernel] = {"double_backward": hvp_double_backward,
                                  "fwd_rev": hvp_fwd_rev}
