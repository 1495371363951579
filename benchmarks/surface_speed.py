"""Seconds per grid point: the Objective engine against its peers, side by side in one process.

Peers: loss-landscapes' ``random_plane`` (the ``bench`` extra; whole data as one batch, its
``Loss`` metric with ``F.cross_entropy``), and the reference procedure of Li et al.'s
``plot_surface.py`` (github:tomgoldstein/loss-landscape, ``net_plotter.set_weights`` and
``evaluation.eval_loss``): one point at a time, set each parameter to ``w + x dx + y dy``, then
iterate a DataLoader (batch 128) with ``model.eval()`` under ``no_grad``, accumulating
``loss.item() * batch`` and the number correct; with 2 DataLoader workers (its default) and
without workers.

Cases (filter-normalized random plane, medians over interleaved rounds):
- ``mlp``: 64-100-100-10 MLP on the digits training split (1,437 images), ``--grid`` 21;
  also the first-layer saving (a point's first-layer output is ``x W0 + a x Dx + b x Dy``:
  three products per data chunk serve the whole plane) in a hand-written forward pass;
- ``lenet``: LeNet-5 on the first ``--images`` MNIST test images (IDX files in
  ``--mnist-dir``), ``--grid`` 11;
- ``resnet56``: CIFAR ResNet-56 on ``--images`` random CIFAR-shaped images: the engine at each
  precision against the reference procedure, and the largest relative loss error against
  float64 over a small grid (a GPU case).

Usage: ``python benchmarks/surface_speed.py --case mlp`` / ``--case lenet --mnist-dir DIR``
(CPU, ``--threads 1`` by default) or ``--case resnet56 --images 10000 --device cuda``.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from landscape.data import load_dataset
from landscape.models import build_model
from landscape.objective import Objective, resolve_device
from landscape.surface import random_direction

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


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


def reference_losses(model: torch.nn.Module, loader: DataLoader, origin: list[torch.Tensor],
                     dirs: tuple[list[torch.Tensor], list[torch.Tensor]],
                     coords: np.ndarray, device: torch.device) -> np.ndarray:
    """Li et al.'s procedure: per point, every parameter set to ``w + a dx + b dy``, then one
    pass of the DataLoader in eval mode, accumulating ``loss.item() * batch`` and the correct
    predictions. Returns the mean loss at each point."""
    model = model.to(device).eval()
    losses = []
    for a, b in coords:
        for p, w, dx, dy in zip(model.parameters(), origin, *dirs):
            p.data = w + (dx * a + dy * b)
        total, correct, n = 0.0, 0, 0
        with torch.no_grad():
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                out = model(x)
                total += F.cross_entropy(out, y).item() * len(y)
                correct += out.max(1)[1].eq(y).sum().item()
                n += len(y)
        losses.append(total / n)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return np.array(losses)


def reference_seconds_per_point(model: torch.nn.Module, loader: DataLoader, obj: Objective,
                                dirs: torch.Tensor, coords: np.ndarray, device: torch.device,
                                ) -> tuple[float, np.ndarray]:
    """Seconds per point of :func:`reference_losses` (parameters restored afterwards)."""
    ref = [p.detach().clone() for p in model.parameters()]
    split = [list(obj.space.unflatten(d.to(device)).values()) for d in dirs]
    start = time.perf_counter()
    losses = reference_losses(model, loader, ref, (split[0], split[1]), coords, device)
    seconds = (time.perf_counter() - start) / len(coords)
    for p, w in zip(model.parameters(), ref):
        p.data = w
    return seconds, losses


def engine_seconds_per_point(obj: Objective, dirs: torch.Tensor, coords: np.ndarray,
                             by_products: bool = True) -> tuple[float, np.ndarray]:
    """Seconds per point of the engine over a plane, as ``compute_surface`` evaluates it
    (``evaluate_plane``), or point by point (``evaluate``) when not ``by_products``."""
    c = torch.as_tensor(coords, dtype=obj.dtype, device=obj.device)
    obj.evaluate(obj.theta0[None])  # warm-up
    if obj.device.type == "cuda":
        torch.cuda.synchronize(obj.device)
    start = time.perf_counter()
    if by_products:
        losses = obj.evaluate_plane(obj.theta0, dirs.to(obj.dtype), c)["loss"].numpy()
    else:
        losses = obj.evaluate(obj.theta0 + c @ dirs.to(obj.dtype))["loss"].numpy()
    if obj.device.type == "cuda":
        torch.cuda.synchronize(obj.device)
    return (time.perf_counter() - start) / len(coords), losses


def plane(obj: Objective, n: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Two filter-normalized directions ``[2, P]`` and the ``n x n`` coordinates in [-1, 1]."""
    dirs = torch.stack([random_direction(obj.space, obj.theta0, seed + i) for i in (0, 1)])
    a, b = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n))
    return dirs, np.stack([a.ravel(), b.ravel()], 1)


def interleaved(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median over ``rounds`` of each contender's seconds per point, the contenders taking
    turns within each round (a shared machine's load hits them alike)."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            times[name].append(fn())
    return {name: statistics.median(t) for name, t in times.items()}


def mnist_images(directory: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` MNIST test images, normalized, and their labels (IDX files)."""
    root = Path(directory)
    with gzip.open(root / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n]
    with gzip.open(root / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    x = (torch.from_numpy(images.astype(np.float32)) / 255 - MNIST_MEAN) / MNIST_STD
    return x, torch.from_numpy(labels.astype(np.int64))


def cpu_case(args: argparse.Namespace, device: torch.device) -> None:
    """Engine (auto and forced), loss-landscapes and the reference, side by side."""
    import loss_landscapes
    import loss_landscapes.metrics

    torch.manual_seed(0)
    if args.case == "mlp":
        data = load_dataset("digits")
        x, y = data.split("train")
        model = build_model("mlp", data.input_shape, data.num_outputs).eval()
    else:
        x, y = mnist_images(args.mnist_dir, args.images)
        model = build_model("lenet", (1, 28, 28), 10).eval()
    n = args.grid
    variants = {"auto": {}, "loop": {"strategy": "loop"}, "vmap": {"strategy": "vmap"}}
    if args.case == "lenet":  # the former CPU default: the whole split as one data chunk
        variants["loop, whole split per chunk"] = {"strategy": "loop", "batch_size": len(x)}
    built = {name: Objective(model, (x, y), device=device, **kw) for name, kw in variants.items()}
    construction = interleaved({name: lambda kw=kw: _timed(lambda: Objective(
        model, (x, y), device=device, **kw)) for name, kw in variants.items()}, 5)
    auto = built["auto"]
    dirs, coords = plane(auto, n)
    contenders: dict[str, Callable[[], float]] = {}
    for name, obj in built.items():
        slow = name != "auto" and name != "loop"
        first = "per point" if obj.plane_layer is None else "from products"
        label = f"engine {name}" + (f" -> {obj.strategy}, batch {obj.batch_size}, first layer "
                                    f"{first}" if name == "auto" else "")
        contenders[label] = (lambda obj=obj, c=(coords[: args.slow_points] if slow else coords):
                             engine_seconds_per_point(obj, dirs, c)[0])
    if auto.plane_layer is not None:
        contenders["engine auto, point by point (evaluate, no first-layer products)"] = (
            lambda: engine_seconds_per_point(auto, dirs, coords, by_products=False)[0])

    metric = loss_landscapes.metrics.Loss(F.cross_entropy, x, y)
    # its filter normalization divides by zero on LeNet's zero-initialized biases; the
    # normalization is done once, outside the per-point cost
    peer_norm = "filter" if args.case == "mlp" else "layer"

    def peer() -> float:
        t0 = time.perf_counter()
        loss_landscapes.random_plane(model, metric, distance=1, steps=n,
                                     normalization=peer_norm, deepcopy_model=True)
        return (time.perf_counter() - t0) / n**2

    contenders["loss-landscapes random_plane"] = peer
    pairs = TensorPairs(x.numpy(), y.numpy())
    for workers, count in ((0, args.ref_points), (2, args.worker_points)):
        loader = DataLoader(pairs, batch_size=128, num_workers=workers)
        contenders[f"reference, DataLoader b128, {workers} workers"] = (
            lambda loader=loader, count=count: reference_seconds_per_point(
                model, loader, auto, dirs, coords[:count], device)[0])
    medians = interleaved(contenders, args.rounds)

    engine = engine_seconds_per_point(auto, dirs, coords)[1]
    ref = reference_seconds_per_point(model, DataLoader(pairs, batch_size=128), auto, dirs,
                                      coords[: args.ref_points], device)[1]
    print(f"{args.case}, n={len(x)}, {n}x{n} filter-normalized plane, device {device}, "
          f"{torch.get_num_threads()} thread(s), medians of {args.rounds} interleaved rounds; "
          f"max |engine - reference| loss {np.abs(engine[: len(ref)] - ref).max():.1e}")
    if auto.plane_layer is not None:
        plain = engine_seconds_per_point(auto, dirs, coords, by_products=False)[1]
        print(f"  first layer from products vs point by point: max relative loss difference "
              f"{np.abs(engine / plain - 1).max():.1e}")
    best_peer = min(t for name, t in medians.items() if not name.startswith("engine"))
    for name, t in medians.items():
        print(f"  {name:<62} {t * 1e3:9.3f} ms/point   {best_peer / t:6.2f}x the best peer")
    grid_s = 121 * medians[next(iter(medians))]
    choice = construction["auto"] - construction["loop"]
    print(f"  automatic choice: building the objective takes {construction['auto'] * 1e3:.2f} ms "
          f"(auto) and {construction['loop'] * 1e3:.2f} ms (loop forced); the difference is "
          f"{max(choice, 0.0) / grid_s:.1e} of an 11x11 grid at the auto rate")


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class TensorPairs(Dataset):
    """Already-normalized tensors served one sample at a time (digits have no image files)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = torch.as_tensor(x), torch.as_tensor(y)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def resnet_case(args: argparse.Namespace, device: torch.device) -> dict:
    """ResNet-56 on ``args.images`` CIFAR-shaped images: the reference procedure's seconds per
    point and, per precision, the engine's and its largest relative loss error vs float64."""
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
    dirs, coords = plane(ref_obj, args.error_grid)
    points64 = ref_obj.theta0 + torch.as_tensor(coords, dtype=torch.float64,
                                                device=ref_obj.device) @ dirs
    exact = ref_obj.evaluate(points64)["loss"].numpy()
    t_ref, _ = reference_seconds_per_point(model, loader, ref_obj, dirs.float(),
                                           coords[: args.ref_points], device)
    out: dict = {"images": args.images, "reference_s_per_point": t_ref, "engine": {}}
    print(f"resnet56 (CIFAR form), {args.images} CIFAR-shaped images, device {device}")
    print(f"  {'reference (PIL -> ToTensor -> Normalize, b128, 2 workers)':<58} "
          f"{t_ref:9.4f} s/point")
    for precision in args.precisions.split(","):
        obj = Objective(model, (x, y), precision=precision, device=device,
                        batch_size=args.batch_size, strategy="loop")
        t, losses = engine_seconds_per_point(obj, dirs, coords, by_products=False)
        rel = np.abs(losses - exact) / np.abs(exact)
        print(f"  engine {precision:<51} {t:9.4f} s/point  {t_ref / t:7.1f}x  "
              f"max rel. error vs float64 {rel.max():.1e}")
        out["engine"][precision] = {"s_per_point": t, "speedup": t_ref / t,
                                    "max_rel_loss_error": float(rel.max())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["mlp", "lenet", "resnet56"], default="mlp")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--grid", type=int, default=None,
                        help="grid side (default: 21 for mlp, 11 for lenet)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--ref-points", type=int, default=20,
                        help="points timed with the reference procedure without workers")
    parser.add_argument("--worker-points", type=int, default=5,
                        help="points timed with the reference procedure with 2 workers")
    parser.add_argument("--slow-points", type=int, default=24,
                        help="points timed for the forced vmap and whole-split engines")
    parser.add_argument("--mnist-dir", default="/work/shared/data/mnist")
    parser.add_argument("--images", type=int, default=None,
                        help="lenet: MNIST test images (2000); resnet56: images (10000)")
    parser.add_argument("--batch-size", type=int, default=None, help="resnet56: data chunk")
    parser.add_argument("--error-grid", type=int, default=3,
                        help="resnet56: side of the grid used for timing and the error")
    parser.add_argument("--precisions", default="float32,tf32,bf16")
    args = parser.parse_args()
    args.grid = args.grid or (21 if args.case == "mlp" else 11)
    args.images = args.images or (10000 if args.case == "resnet56" else 2000)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    (resnet_case if args.case == "resnet56" else cpu_case)(args, device)


if __name__ == "__main__":
    main()
