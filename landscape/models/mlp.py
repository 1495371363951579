"""Fully connected ReLU network (multilayer perceptron)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from landscape.errors import LandscapeError, check_int


class MLP(nn.Module):
    """Flatten, then ``Linear + ReLU`` for each hidden width, then a linear output layer.

    With ``widths=()`` it is a linear model (multinomial logistic regression under
    cross-entropy). With ``bias=False`` every layer is bias-free, so the function is
    invariant to rescaling one layer by ``a > 0`` and the next by ``1 / a``.
    Initialization: PyTorch's default for ``nn.Linear``.
    """

    def __init__(
        self, in_features: int, widths: Sequence[int], num_outputs: int, bias: bool = True
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for width in widths:
            layers += [nn.Linear(prev, width, bias=bias), nn.ReLU()]
            prev = width
        layers.append(nn.Linear(prev, num_outputs, bias=bias))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def mlp(
    input_shape: tuple[int, ...],
    num_outputs: int,
    *,
    widths: Sequence[int] = (100, 100),
    bias: bool = True,
) -> MLP:
    """Build an :class:`MLP` for inputs of per-sample shape ``input_shape`` (flattened)."""
    if isinstance(widths, int | str) or not isinstance(widths, Sequence):
        raise LandscapeError(f"widths must be a list of positive integers, got {widths!r}")
    widths = tuple(check_int("each width", w) for w in widths)
    if not isinstance(bias, bool):
        raise LandscapeError(f"bias must be true or false, got {bias!r}")
    return MLP(math.prod(input_shape), widths, num_outputs, bias=bias)
