"""CIFAR ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition", sec. 4.2)
and their no-skip-connection counterparts (Li et al. 2018, "Visualizing the Loss Landscape
of Neural Nets").

Depth ``6n + 2``: a 3x3 stem convolution with 16 filters, three stages of ``n`` basic blocks
(two 3x3 convolutions, each with BatchNorm) with 16, 32 and 64 filters, the first block of
stages 2 and 3 striding by 2, global average pooling and a linear layer. Convolutions have
no bias. Module names follow the loss-landscape reference (``conv1``, ``bn1``, ``layer1..3``,
``linear``; blocks ``conv1``, ``bn1``, ``conv2``, ``bn2``, ``shortcut``), so the reference's
checkpoints map tensor for tensor.

Shortcuts where the shape changes:
- ``"B"`` (the default; what Li et al.'s ``cifar10/models/resnet.py`` uses): 1x1 strided
  convolution + BatchNorm projection. ResNet-20/56/110 on CIFAR-10: 272,474 / 855,770 /
  1,730,714 parameters.
- ``"A"`` (He et al.'s CIFAR choice): strided subsampling and zero-padded channels, no
  parameters. ResNet-20/56/110: 269,722 / 853,018 / 1,727,962 parameters (He et al.'s
  0.27M / 0.85M / 1.7M).
``-noshort`` networks drop every skip connection (blocks are ``relu(bn2(conv2(relu(bn1(conv1
x)))))``) and have the option-A counts.

The reference pools with a fixed 8x8 window (= global on 32x32 CIFAR); here the pooling is
adaptive, identical on CIFAR and valid for any image size (8x8 digits end at 2x2 maps).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import LandscapeError
from landscape.models._common import image_shape, reference_init

SHORTCUTS = ("A", "B")


class PadShortcut(nn.Module):
    """Option-A shortcut: keep every ``stride``-th pixel, zero-pad channels evenly."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = planes - in_planes
        self.pad_lo, self.pad_hi = extra // 2, extra - extra // 2

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_lo, self.pad_hi))


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers; ``relu(branch(x) + shortcut(x))``."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            if shortcut == "B":
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )
            else:
                self.shortcut = PadShortcut(in_planes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class BasicBlockNoShort(nn.Module):
    """The same two conv + BatchNorm layers without the skip connection."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)))


class CifarResNet(nn.Module):
    """Stem + three stages of ``n`` blocks (16/32/64 filters) + global pool + linear."""

    def __init__(
        self,
        n: int,
        in_channels: int,
        num_outputs: int,
        skip: bool = True,
        shortcut: str = "B",
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes_in = 16
        stages = []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks: list[nn.Module] = []
            for i in range(n):
                s = stride if i == 0 else 1
                if skip:
                    blocks.append(BasicBlock(planes_in, planes, s, shortcut=shortcut))
                else:
                    blocks.append(BasicBlockNoShort(planes_in, planes, s))
                planes_in = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def resnet(
    input_shape: tuple[int, ...],
    num_outputs: int,
    *,
    depth: int = 56,
    skip: bool = True,
    shortcut: str = "B",
) -> CifarResNet:
    """Build a CIFAR ResNet of ``depth = 6n + 2`` layers (``skip=False``: no skip connections).

    Initialized as the reference: He-normal convolutions, BatchNorm 1/0, linear weights
    ``N(0, 0.001^2)`` and bias 0.
    """
    c, _, _ = image_shape(f"resnet{depth}", input_shape)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise LandscapeError(f"ResNet depth must be 6n + 2 with n >= 1 (20, 56, ...), got {depth}")
    if shortcut not in SHORTCUTS:
        raise LandscapeError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
    model = CifarResNet((depth - 2) // 6, c, num_outputs, skip=skip, shortcut=shortcut)
    reference_init(model, linear_std=1e-3)
    return model
