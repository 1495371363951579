"""VGG-9 with BatchNorm, the CIFAR network of Li et al. 2018 ("Visualizing the Loss
Landscape of Neural Nets", NeurIPS), as defined in their loss-landscape code.

Seven 3x3 convolutions (64, 64, M, 128, 128, M, 256, 256, 256, M; M = 2x2 max pool with
ceil mode), each followed by BatchNorm and ReLU; then one fully connected layer of 256 units
with BatchNorm and ReLU, and the linear classifier: nine weight layers. Module names follow
the reference (``features``, ``fc``, ``classifier``), tensor for tensor.
On CIFAR-10 it has 2,789,706 parameters (4 x 4 x 256 = 4,096 flattened features); for other
image sizes the flattened size follows the pooled map (1 x 1 x 256 for 8x8 digits).
"""

from __future__ import annotations

from torch import Tensor, nn

from landscape.models._common import image_shape, output_numel, reference_init

VGG9_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M")


class VGG(nn.Module):
    """VGG feature stack from ``cfg`` + one BatchNorm hidden layer + linear classifier."""

    def __init__(
        self, cfg: tuple[int | str, ...], input_shape: tuple[int, int, int], num_outputs: int
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = input_shape[0]
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            else:
                out = int(item)
                layers += [
                    nn.Conv2d(in_channels, out, kernel_size=3, padding=1),
                    nn.BatchNorm2d(out),
                    nn.ReLU(),
                ]
                in_channels = out
        self.features = nn.Sequential(*layers)
        n_maps = in_channels
        n_flat = output_numel(self.features, input_shape)
        self.fc = nn.Sequential(nn.Linear(n_flat, n_maps), nn.BatchNorm1d(n_maps), nn.ReLU())
        self.classifier = nn.Linear(n_maps, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        out = self.features(x).flatten(1)
        return self.classifier(self.fc(out))


def vgg9(input_shape: tuple[int, ...], num_outputs: int) -> VGG:
    """Build VGG-9; initialized as the reference (He-normal convs, linear weights N(0, 0.001^2))."""
    model = VGG(VGG9_CFG, image_shape("vgg9", input_shape), num_outputs)
    reference_init(model, linear_std=1e-3)
    return model
