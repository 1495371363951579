"""Seconds per grid point: the Objective engine against the reference procedure.

The reference procedure (Li et al.'s ``plot_surface.py``) evaluates one point at a time: copy
the perturbed weights into the model, then run a torch DataLoader that applies per-sample CPU
transforms (PIL image -> tensor -> normalize), batch 128, 2 workers, ``model.eval()``.

Two cases, measured side by side in one process:
- ``mlp``: 64-100-100-10 MLP on digits (1,437 training images), a ``--grid`` x ``--grid``
  surface: engine (auto strategy, and vmap and loop forced) against the reference procedure.
- ``resnet56``: CIFAR ResNet-56 on ``--images`` random CIFAR-shaped images: the engine at each
  precision against the reference procedure, and the largest relative loss error against
  float64 over a small grid.

Usage: ``python benchmarks/surface_speed.py --case mlp --grid 51`` (CPU) or
``python benchmarks/surface_speed.py --case resnet56 --images 10000 --device cuda``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from landscape.data import load_dataset
from landscape.models import build_model
from landscape.objective import Objective, resolve_device
from landscape.surface import random_direction

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class PerSampleImages(Dataset):
    """uint8 HWC images turned into normalized CHW tensors one by one, via PIL, as the
    reference's torchvision transforms (ToTensor, Normalize) do."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: tuple, std: tuple) -> None:
        self.images, self.labels = images, labels
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(self.images[i].squeeze())
        x = torch.from_numpy(np.array(img, dtype=np.float32) / 255.0)
        x = x.permute(2, 0, 1) if x.dim() == 3 else x[None]
        return (x - self.mean) / self.std, int(self.labels[i])


def reference_seconds_per_point(model: torch.nn.Module, loader: DataLoader, points: torch.Tensor,
                                device: torch.device) -> tuple[float, np.ndarray]:
    """Point at a time: load the weights, loop over the DataLoader, model.eval()."""
    model = model.to(device).eval()
    losses = []
    start = time.perf_counter()
    for theta in points:
        torch.nn.utils.vector_to_parameters(theta.to(device), model.parameters())
        total, n = 0.0, 0
        with torch.no_grad():
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                total += torch.nn.functional.cross_entropy(model(x), y, reduction="sum").item()
                n += len(y)
        losses.append(total / n)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / len(points), np.array(losses)


def engine_seconds_per_point(obj: Objective, points: torch.Tensor) -> tuple[float, np.ndarray]:
    obj.evaluate(points[:2])  # warm-up (and the strategy measurement)
    obj._sync()
    start = time.perf_counter()
    losses = obj.evaluate(points)["loss"].numpy()
    obj._sync()
    return (time.perf_counter() - start) / len(points), losses


def grid_points(obj: Objective, n: int, seed: int = 0) -> torch.Tensor:
    dx = random_direction(obj.space, obj.theta0, seed)
    dy = random_direction(obj.space, obj.theta0, seed + 1)
    a, b = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n))
    coords = torch.as_tensor(np.stack([a.ravel(), b.ravel()], 1), dtype=obj.dtype)
    return obj.theta0 + coords.to(obj.device) @ torch.stack([dx, dy])


def mlp_case(args: argparse.Namespace, device: torch.device) -> None:
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("mlp", data.input_shape, data.num_outputs).eval()
    x, y = data.split("train")
    rows = []
    obj = Objective(model, (x, y), device=device)
    points = grid_points(obj, args.grid)
    t_auto, losses = engine_seconds_per_point(obj, points)
    rows.append((f"engine (auto -> {obj.strategy})", t_auto))
    for strategy in ("vmap", "loop"):
        t, _ = engine_seconds_per_point(Objective(model, (x, y), device=device,
                                                  strategy=strategy), points)
        rows.append((f"engine ({strategy})", t))
    loader = DataLoader(TensorPairs(x.numpy(), y.numpy()), batch_size=128, num_workers=2)
    ref_points = points[: args.ref_points]
    t_ref, ref_losses = reference_seconds_per_point(model, loader, ref_points, device)
    rows.append(("reference (point at a time, DataLoader b128, 2 workers)", t_ref))
    err = np.abs(ref_losses - losses[: len(ref_losses)]).max()
    print(f"mlp 64-100-100-10, digits train (n={len(x)}), {args.grid}x{args.grid} grid, "
          f"device {device}, max |engine - reference| loss {err:.2e}")
    for name, t in rows:
        print(f"  {name:<58} {t * 1e3:9.3f} ms/point   {t_ref / t:8.1f}x vs reference")


class TensorPairs(Dataset):
    """Already-normalized tensors served one sample at a time (digits have no image files)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = torch.as_tensor(x), torch.as_tensor(y)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def resnet_case(args: argparse.Namespace, device: torch.device) -> None:
    gen = np.random.default_rng(0)
    images = gen.integers(0, 256, size=(args.images, 32, 32, 3), dtype=np.uint8)
    labels = gen.integers(0, 10, size=args.images)
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
    y = torch.from_numpy(labels)
    torch.manual_seed(0)
    model = build_model("resnet56", (3, 32, 32), 10).eval()
    loader = DataLoader(PerSampleImages(images, labels, CIFAR_MEAN, CIFAR_STD), batch_size=128,
                        num_workers=2)
    ref_obj = Objective(model, (x, y), precision="float64", device=device,
                        batch_size=args.batch_size)
    points64 = grid_points(ref_obj, args.error_grid)
    exact = ref_obj.evaluate(points64)["loss"].numpy()
    t_ref, _ = reference_seconds_per_point(model, loader, points64[: args.ref_points].float(),
                                           device)
    print(f"resnet56 (CIFAR form), {args.images} CIFAR-shaped images, device {device}")
    print(f"  {'reference (PIL -> ToTensor -> Normalize, b128, 2 workers)':<58} "
          f"{t_ref:9.4f} s/point")
    for precision in args.precisions.split(","):
        obj = Objective(model, (x, y), precision=precision, device=device,
                        batch_size=args.batch_size, strategy="loop")
        t, losses = engine_seconds_per_point(obj, points64.to(obj.dtype))
        rel = np.abs(losses - exact) / np.abs(exact)
        print(f"  engine {precision:<51} {t:9.4f} s/point  {t_ref / t:7.1f}x  "
              f"max rel. error vs float64 {rel.max():.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["mlp", "resnet56"], default="mlp")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--grid", type=int, default=51, help="mlp: grid side")
    parser.add_argument("--ref-points", type=int, default=20,
                        help="points timed with the (slow) reference procedure")
    parser.add_argument("--images", type=int, default=10000, help="resnet56: images")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--error-grid", type=int, default=3,
                        help="resnet56: side of the grid used for timing and the error")
    parser.add_argument("--precisions", default="float32,tf32,bf16")
    args = parser.parse_args()
    device = resolve_device(args.device)
    (mlp_case if args.case == "mlp" else resnet_case)(args, device)


if __name__ == "__main__":
    main()
