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
Layers are handled when their parameters are used by their own forward alone (not tied,
not read by other modules' code); every other parameter needs per-sample gradients
(``Objective.per_sample_grads``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
