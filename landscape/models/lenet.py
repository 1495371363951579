"""LeNet-5 (LeCun et al. 1998, "Gradient-based learning applied to document recognition").

Modern form: ReLU activations and 2x2 max pooling. The paddings adapt to the image size so
that the classic feature-map sizes come out where the classic inputs go in:
- conv1 (6 filters, 5x5) is padded by 2 for images smaller than 32 pixels (MNIST 28x28 then
  behaves like the paper's 32x32 padded digits), unpadded otherwise;
- conv2 (16 filters, 5x5) is padded by 2 when its input is smaller than 10 pixels (e.g. the
  8x8 digits), unpadded otherwise.
MNIST and CIFAR both end at 16 x 5 x 5 = 400 features; 8x8 digits at 16 x 2 x 2 = 64.
Then fully connected 120, 84, ``num_outputs``. The flattened size is found by a dry run.
"""

from __future__ import annotations

from torch import Tensor, nn

from landscape.errors import LandscapeError
from landscape.models._common import image_shape, output_numel, reference_init


def _paddings(size: int) -> tuple[int, int]:
    p1 = 2 if size < 32 else 0
    after_pool1 = (size + 2 * p1 - 4) // 2
    p2 = 2 if after_pool1 < 10 else 0
    return p1, p2


class LeNet(nn.Module):
    """LeNet-5 for images of shape ``(C, H, W)`` (H, W >= 4)."""

    def __init__(self, input_shape: tuple[int, int, int], num_outputs: int) -> None:
        super().__init__()
        c, h, w = input_shape
        (ph1, ph2), (pw1, pw2) = _paddings(h), _paddings(w)
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, kernel_size=5, padding=(ph1, pw1)),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5, padding=(ph2, pw2)),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        n_flat = output_numel(self.features, input_shape)
        self.classifier = nn.Sequential(
            nn.Linear(n_flat, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_outputs),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def lenet(input_shape: tuple[int, ...], num_outputs: int) -> LeNet:
    """Build a :class:`LeNet`; convolutions He-initialized, linear layers PyTorch default."""
    c, h, w = image_shape("lenet", input_shape)
    if min(h, w) < 4:
        raise LandscapeError(f"model 'lenet' needs images of at least 4x4 pixels, got {h}x{w}")
    model = LeNet((c, h, w), num_outputs)
    reference_init(model, linear_std=None)
    return model
