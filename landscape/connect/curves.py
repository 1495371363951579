"""Curves between two minima whose control points are trained on the training loss
(Garipov et al. 2018, "Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs").

A curve ``phi(t)``, ``t in [0, 1]``, from ``a = phi(0)`` to ``b = phi(1)`` through one
control point ``c``; both kinds are a point of the plane ``a + u (b - a) + v (c - a)`` with
coefficients ``(u, v)`` given by :func:`coefficients`:

- ``bezier``: ``(1 - t)^2 a + 2 t (1 - t) c + t^2 b``, i.e. ``(u, v) = (t^2, 2 t (1 - t))``;
- ``polychain``: ``a -> c`` for ``t <= 1/2``, ``c -> b`` after: ``(u, v) = (max(0, 2t - 1),
  1 - |2t - 1|)``.

:func:`fit_curve` trains ``c`` by minibatch SGD on ``E_{t ~ U(0, 1)} L(phi(t))``, one ``t``
drawn per minibatch, starting from the midpoint ``(a + b) / 2`` as the paper does. Defaults
deviate from the paper's CIFAR schedule (600 epochs, lr 0.015-0.03, weight decay 5e-4): 20
epochs of SGD with momentum 0.9, lr 0.05, batch 64, no weight decay, the settings the
endpoints on the digits were trained with.

BatchNorm networks are trained as Garipov et al.'s code does: the BatchNorm layers run in
train mode during the fit, so each minibatch is normalized by its own statistics at the
curve point of its ``t`` (everything else stays in eval mode; a last minibatch of one sample
is skipped, as batch statistics need two); the running statistics are not used or changed.
A fitted curve is then evaluated with statistics recomputed on the training data at each
point (:func:`landscape.connect.barrier.barrier`'s ``bn_stats="reset"``, Garipov et al.'s
``update_bn``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.errors import LandscapeError, check_int, check_positive
from landscape.objective import Objective
from landscape.progress import progress
from landscape.sources import take
from landscape.training.trainer import num_threads

CURVES = ("bezier", "polychain")


def coefficients(kind: str, t: Tensor) -> Tensor:
    """``[K, 2]`` coefficients ``(u, v)`` of the curve point at ``t[K]`` on the directions
    ``b - a`` and ``c - a``."""
    if kind == "bezier":
        return torch.stack([t * t, 2 * t * (1 - t)], -1)
    if kind == "polychain":
        return torch.stack([(2 * t - 1).clamp_min(0), 1 - (2 * t - 1).abs()], -1)
    from landscape.errors import unknown_name

    raise unknown_name("curve", kind, CURVES)


@dataclass
class Curve:
    """A trained curve: its kind, the endpoints and control point as flat parameters ``[P]``,
    and the mean training loss of each epoch (the loss at the ``t`` drawn per minibatch)."""

    kind: str
    a: Tensor
    b: Tensor
    c: Tensor
    history: list[float]

    def point(self, t: float | Tensor) -> Tensor:
        """Flat parameters ``[K, P]`` of the curve at ``t``."""
        t = torch.as_tensor(t, dtype=self.a.dtype).reshape(-1)
        uv = coefficients(self.kind, t)
        return self.a + uv @ torch.stack([self.b - self.a, self.c - self.a])


def fit_curve(model_a: torch.nn.Module, model_b: torch.nn.Module, *, data: object,
              kind: str = "bezier", epochs: int = 20, lr: float = 0.05, momentum: float = 0.9,
              batch_size: int = 64, weight_decay: float = 0.0, seed: int = 0,
              threads: int | None = 1, show_progress: bool = True, **engine: object) -> Curve:
    """Train the control point of a ``kind`` curve from ``model_a`` to ``model_b`` on the
    training split of ``data`` (any source :class:`landscape.objective.Objective` takes).

    ``threads``: CPU threads while training (default 1: minibatch steps of small models
    only lose to thread synchronization, the trainer's rule; None: torch's setting).
    Cost: ``epochs * ceil(n / batch_size)`` forward+backward passes on a minibatch.
    BatchNorm: batch statistics during the fit (see the module docstring).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> a, b = nn.Sequential(nn.Linear(4, 3)), nn.Sequential(nn.Linear(4, 3))
        >>> curve = fit_curve(a, b, data=(x, y), epochs=2, show_progress=False)
        >>> curve.point(0.0).shape
        torch.Size([1, 15])
    """
    if kind not in CURVES:
        coefficients(kind, torch.zeros(1))
    epochs = check_int("epochs", epochs)
    batch_size = check_int("batch size", batch_size)
    check_positive("learning rate", lr)
    obj = Objective(model_a, data, split="train", **engine)
    a = obj.theta0
    b = obj.space.flatten(model_b).to(a)
    c = ((a + b) / 2).clone().requires_grad_(True)
    opt = torch.optim.SGD([c], lr=lr, momentum=momentum, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    history = []
    with num_threads(threads if obj.device.type == "cpu" else None), batch_statistics(obj):
        for _ in progress(range(epochs), desc=f"curve {kind}", unit="epoch",
                          disable=None if show_progress else True):
            history.append(_epoch(obj, kind, a, b, c, opt, gen, batch_size))
    if not np.isfinite(history[-1]):
        raise LandscapeError(f"curve training diverged (loss {history[-1]}); lower lr")
    return Curve(kind, a.detach(), b.detach(), c.detach(), history)


def _epoch(obj: Objective, kind: str, a: Tensor, b: Tensor, c: Tensor,
           opt: torch.optim.Optimizer, gen: torch.Generator, batch_size: int) -> float:
    """One epoch of SGD on the control point ``c``, one ``t`` per minibatch; its mean loss."""
    x, y = obj.x, obj.y
    order = torch.randperm(obj.n, generator=gen).to(obj.device)
    total, seen = 0.0, 0
    for start in range(0, obj.n, batch_size):
        idx = order[start:start + batch_size]
        t = torch.rand(1, generator=gen, dtype=torch.float64).to(a)
        if len(idx) < 2 and obj.has_bn:
            continue   # batch statistics of one sample are undefined
        loss = curve_loss(obj, kind, a, b, c, t, take(x, idx), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
        seen += len(idx)
    return total / seen


def curve_loss(obj: Objective, kind: str, a: Tensor, b: Tensor, c: Tensor, t: Tensor, x: Any,
               y: Tensor) -> Tensor:
    """The mean loss on the batch ``(x, y)`` at the curve point of ``t`` (one value),
    differentiable in ``c``; inside :func:`batch_statistics`, BatchNorm layers normalize by
    the batch's own statistics and the objective's running statistics stay as they were."""
    uv = coefficients(kind, t.reshape(1))[0]
    theta = a + uv[0] * (b - a) + uv[1] * (c - a)
    scratch = {k: v.clone() for k, v in obj.buffers.items()}   # train mode updates these
    return obj.loss_fn.total(obj.forward(theta, x, scratch), y) / obj.loss_fn.weight(y)


@contextlib.contextmanager
def batch_statistics(obj: Objective) -> Iterator[None]:
    """The objective's BatchNorm layers in train mode for the block (batch statistics)."""
    norms = [m for m in obj.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.train()
    try:
        yield
    finally:
        for m in norms:
            m.eval()

