"""Wide residual networks (Zagoruyko & Komodakis 2016, "Wide Residual Networks", BMVC).

WRN-d-k: a 3x3 stem convolution with 16 filters, three stages of ``n = (d - 4) / 6``
pre-activation blocks (BN-ReLU-conv3x3-[dropout]-BN-ReLU-conv3x3) with 16k, 32k and 64k
filters, strides 1, 2, 2; where the shape changes the shortcut is a 1x1 convolution of the
pre-activated input, as in the authors' code. Then BN-ReLU, global average pooling and a
linear layer. Convolutions have no bias. WRN-16-4 on CIFAR-10: 2,748,890 parameters
(the paper's 2.7M).
Initialization: He-normal (fan-in) convolutions, BatchNorm 1/0, PyTorch-default linear.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import LandscapeError, check_int
from landscape.models._common import (
    check_dropout,
    image_shape,
    reference_init,
)


class WideBlock(nn.Module):
    """Pre-activation basic block with optional dropout between the two convolutions."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        skip = x if self.shortcut is None else self.shortcut(pre)
        return out + skip


class WideResNet(nn.Module):
    """WRN-``depth``-``widen`` for images with ``in_channels`` channels."""

    def __init__(
        self, depth: int, widen: int, in_channels: int, num_outputs: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        planes_in = 16
        stages = []
        for planes, stride in ((16 * widen, 1), (32 * widen, 2), (64 * widen, 2)):
            blocks = []
            for i in range(n):
                blocks.append(WideBlock(planes_in, planes, stride if i == 0 else 1, dropout))
                planes_in = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(planes_in)
        self.linear = nn.Linear(planes_in, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1)
        return self.linear(out)


def wide_resnet(
    input_shape: tuple[int, ...],
    num_outputs: int,
    *,
    depth: int = 16,
    widen: int = 4,
    dropout: float = 0.0,
) -> WideResNet:
    """Build WRN-``depth``-``widen`` (``depth = 6n + 4``; dropout probability in [0, 1))."""
    c, _, _ = image_shape(f"wrn-{depth}-{widen}", input_shape)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise LandscapeError(
            f"Wide-ResNet depth must be 6n + 4 with n >= 1 (10, 16, 28, ...), got {depth}"
        )
    widen = check_int("widen", widen)
    model = WideResNet(depth, widen, c, num_outputs, dropout=check_dropout(dropout))
    reference_init(model, linear_std=None)
    return model
