"""Helpers shared by the model definitions: input-shape checks, initialization, sizes."""

from __future__ import annotations

import math

import torch
from torch import nn

from landscape.errors import LandscapeError


def image_shape(model: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Return ``(C, H, W)`` or raise a LandscapeError if the data are not images."""
    if len(input_shape) != 3:
        raise LandscapeError(
            f"model {model!r} needs image inputs of per-sample shape (C, H, W), but the data "
            f"have shape {tuple(input_shape)}; use 'mlp' for flat inputs"
        )
    c, h, w = input_shape
    return int(c), int(h), int(w)


def check_dropout(value: object) -> float:
    """Return a dropout probability in [0, 1), or raise a LandscapeError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise LandscapeError(f"dropout must be a number in [0, 1), got {value!r}")
    return float(value)


def reference_init(model: nn.Module, linear_std: float | None = 1e-3) -> None:
    """Initialize as the loss-landscape reference does (Li et al. 2018, ``init_params``).

    Convolutions: He normal, fan-in mode, ``std = sqrt(2 / fan_in)``; their biases 0.
    Normalization layers: weight 1, bias 0. Linear layers: ``N(0, linear_std^2)`` weights
    (the reference uses 1e-3) and bias 0, or PyTorch's default when ``linear_std`` is None.
    Draws from the global torch generator in ``model.modules()`` order. A model on the
    ``meta`` device (built only to count its parameters) holds no values to initialize.
    """
    if any(p.is_meta for p in model.parameters()):
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, std=linear_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@torch.no_grad()
def output_numel(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Number of features per sample that ``module`` produces for ``input_shape`` (dry run).

    Runs one zero sample in eval mode (no running statistics change, no random numbers
    drawn) and restores the module's training flag.
    """
    if any(p.is_meta for p in module.parameters()):
        return _meta_numel(module, input_shape)
    was_training = module.training
    module.eval()
    try:
        out = module(torch.zeros(1, *input_shape))
    finally:
        module.train(was_training)
    return int(out[0].numel())


def _meta_numel(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """:func:`output_numel` by shape arithmetic, for a module built on the ``meta`` device to
    count its parameters (a forward pass there would load torch's meta kernels, seconds):
    a chain of 2D convolutions and max-pools, shape-keeping layers and a flatten."""
    c, *spatial = input_shape
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.MaxPool2d):
            pairs = [(v, v) if isinstance(v := getattr(layer, a), int) else tuple(v) for a in
                     ("kernel_size", "stride", "padding", "dilation")]
            ceil = getattr(layer, "ceil_mode", False)
            for i, size in enumerate(spatial):
                k, s, p, d = (pair[i] for pair in pairs)
                span = size + 2 * p - d * (k - 1) - 1
                out = (-(-span // s) if ceil else span // s) + 1
                if ceil and (out - 1) * s >= size + p:
                    out -= 1
                spatial[i] = out
            c = layer.out_channels if isinstance(layer, nn.Conv2d) else c
    return c * math.prod(spatial)
