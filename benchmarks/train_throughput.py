"""Training throughput: the landscape trainer versus the standard PyTorch recipe, side by side.

Both train ResNet-20 (SGD, momentum 0.9, lr 0.1, batch 128, cross-entropy) on the same random
CIFAR-shaped data (uint8 32x32x3 images, 10 classes) for ``--epochs`` epochs and report the
images/second of the last epoch (the first includes start-up: cuDNN autotuning, worker start):

- **landscape**: ``landscape.train(model="resnet20", dataset="cifar10", ...)`` on the data written
  as CIFAR-10 python batches in a temporary directory: the whole training set is moved to the
  device once, minibatches are drawn by a permutation on the device and augmented there
  (random crop with 4 pixels of padding + horizontal flip). Timing: the history's ``seconds``
  (the training steps of the epoch, without the per-epoch evaluation and checkpoint).
- **standard**: a ``torch.utils.data.DataLoader`` (``--workers`` workers, shuffle, pinned memory
  on CUDA) over a Dataset of uint8 HWC images whose ``__getitem__`` applies per-sample CPU
  transforms written with plain torch ops (torchvision is not required): RandomCrop(32,
  padding=4), RandomHorizontalFlip, ToTensor, Normalize; each batch is copied to the device.

Usage::

    python benchmarks/train_throughput.py --images 10000 --device cuda        # on a GPU
    python benchmarks/train_throughput.py --images 512 --device cpu          # a quick try

Cost: ``2 * epochs`` epochs of ResNet-20 over ``--images`` images, plus landscape's per-epoch
evaluation of the train and test splits.
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def random_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random uint8 images ``[n, 32, 32, 3]`` (HWC) and labels in 0..9."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, size=n, dtype=np.int64))


def write_cifar10(folder: Path, images: np.ndarray, labels: np.ndarray, n_test: int) -> None:
    """Write ``images`` as CIFAR-10 python batches (5 train batches + a test batch)."""
    folder.mkdir(parents=True, exist_ok=True)
    flat = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # CIFAR rows: R, G, B planes
    for i, part in enumerate(np.array_split(np.arange(len(images)), 5), start=1):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": flat[part], b"labels": labels[part].tolist()}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": flat[:n_test], b"labels": labels[:n_test].tolist()}, f)


class AugmentedImages(torch.utils.data.Dataset):
    """uint8 HWC images with the standard per-sample CIFAR transforms, in plain torch ops.

    RandomCrop(32, padding=4) (zero padding), RandomHorizontalFlip(0.5), ToTensor (CHW
    float in [0, 1]), Normalize(mean, std): as torchvision's recipe, one image at a time.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = torch.from_numpy(images)
        self.labels = torch.from_numpy(labels)
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.images[i]                                     # [32, 32, 3] uint8
        padded = torch.zeros(40, 40, 3, dtype=torch.uint8)
        padded[4:36, 4:36] = img
        top, left = torch.randint(0, 9, (2,)).tolist()
        img = padded[top:top + 32, left:left + 32]
        if torch.rand(()) < 0.5:
            img = img.flip(1)
        x = img.permute(2, 0, 1).float().div_(255.0)              # ToTensor
        return (x - self.mean) / self.std, self.labels[i]         # Normalize


def standard_recipe(images: np.ndarray, labels: np.ndarray, *, device: torch.device,
                    epochs: int, batch_size: int, workers: int, amp: bool,
                    seed: int = 0) -> list[float]:
    """Seconds per epoch of the DataLoader recipe (ResNet-20, SGD momentum 0.9, lr 0.1)."""
    from landscape.models import build_model

    torch.manual_seed(seed)
    model = build_model("resnet20", (3, 32, 32), 10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = torch.utils.data.DataLoader(
        AugmentedImages(images, labels), batch_size=batch_size, shuffle=True,
        num_workers=workers, pin_memory=device.type == "cuda", drop_last=False)
    torch.backends.cudnn.benchmark = True
    times = []
    for _ in range(epochs):
        model.train()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = model(x)
            loss = F.cross_entropy(out.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def landscape_trainer(images: np.ndarray, labels: np.ndarray, *, device: torch.device,
                      epochs: int, batch_size: int, amp: bool, workdir: Path,
                      seed: int = 0) -> list[float]:
    """Seconds per epoch (training steps only) of ``landscape.train`` on the same data."""
    from landscape.training import train

    data_dir = workdir / "cifar-10-batches-py"
    write_cifar10(data_dir, images, labels, n_test=min(len(images), 1000))
    run = train(model="resnet20", dataset="cifar10", data_dir=data_dir, optimizer="momentum",
                lr=0.1, batch_size=batch_size, epochs=epochs, seed=seed, device=str(device),
                amp=amp, augment=True, save_every=epochs, out=workdir / "run", progress=False)
    return [row["seconds"] for row in run.history[1:]]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000, help="training images")
    parser.add_argument("--epochs", type=int, default=2,
                        help="epochs per method; the last one is timed")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (standard)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA) for both")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from landscape.objective import resolve_device

    device = resolve_device(args.device)
    images, labels = random_images(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        ours = landscape_trainer(images, labels, device=device, epochs=args.epochs,
                                 batch_size=args.batch_size, amp=args.amp, workdir=Path(tmp))
    standard = standard_recipe(images, labels, device=device, epochs=args.epochs,
                               batch_size=args.batch_size, workers=args.workers, amp=args.amp)
    result = {
        "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "images": args.images, "batch_size": args.batch_size, "epochs": args.epochs,
        "workers": args.workers, "amp": args.amp,
        "landscape_seconds": ours, "standard_seconds": standard,
        "landscape_images_per_s": args.images / ours[-1],
        "standard_images_per_s": args.images / standard[-1],
    }
    result["ratio"] = result["landscape_images_per_s"] / result["standard_images_per_s"]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"ResNet-20, {args.images} CIFAR-shaped images, batch {args.batch_size}, "
              f"{result['device']} ({result['device_name']}), amp {args.amp}, "
              f"last of {args.epochs} epochs")
        print(f"  landscape trainer (data + augmentation on the device): "
              f"{result['landscape_images_per_s']:10.0f} images/s")
        print(f"  standard recipe (DataLoader, {args.workers} workers, CPU transforms): "
              f"{result['standard_images_per_s']:10.0f} images/s")
        print(f"  ratio: {result['ratio']:.2f}x")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
