"""The numbers of the README's "Between minima" section, measured on the CPU.

- Barriers (loss and error, train and test, 25 points) between independently trained MLPs
  (default recipe: 100-100 ReLU MLP, SGD with momentum 0.9, lr 0.05, batch 64, 20 epochs) on
  the embedded digits and on an MNIST test-file subset (8,000 images to train, 2,000 to
  test): naive, after weight matching, after activation matching, along a trained Bezier
  curve (unaligned endpoints), with Student-t intervals over disjoint seed pairs.
- The same pair aligned by the ``rebasin`` package (Ainsworth et al.'s method, an independent
  implementation) when it is installed: the permutation found and the barrier reached.
- Weight matching between two ResNet-20s (CIFAR-10 shapes, He-initialized: no CIFAR here).
- A 25-point path against a 25-point random-direction curve on the digits MLP, interleaved.
- The instability analysis of the digits recipe: spawn epochs 0, 1, 2, 5, 10, three pairs;
  and spawn steps 0, 10, 50, 200 (as Frankle et al. count), three pairs, 25 points.

Usage: ``python benchmarks/connect.py --out outputs/bench_connect [--mnist-dir DIR]``; prints
and writes ``results.json``. About 10 minutes on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from landscape.connect.align import align
from landscape.connect.barrier import barrier
from landscape.connect.stability import instability
from landscape.models import build_model
from landscape.stats import confidence_interval
from landscape.surface import random_surface
from landscape.training import train

VARIANTS = {"naive": {}, "weights": {"align": "weights"},
            "activations": {"align": "activations"}, "bezier": {"curve": "bezier"}}


def mnist_subset(directory: str) -> tuple:
    """The 10,000 MNIST test images split 8,000 / 2,000 (normalized as the loader does)."""
    root = Path(directory)
    with gzip.open(root / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(root / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    x = (torch.from_numpy(images.astype(np.float32)) / 255 - 0.1307) / 0.3081
    y = torch.from_numpy(labels.astype(np.int64))
    # a 9 first: UserData.shapes reads the class count off the first training sample
    first_nine = int((y[:8000] == 9).nonzero()[0, 0])
    order = torch.cat([torch.tensor([first_nine]), torch.arange(first_nine),
                       torch.arange(first_nine + 1, 10000)])
    x, y = x[order], y[order]
    return (x[:8000], y[:8000]), (x[8000:], y[8000:])


def interval(values: list[float]) -> dict:
    return confidence_interval(values).to_dict()


def barriers(name: str, runs: list, data: object, out: Path) -> dict:
    """Every variant's barriers over disjoint pairs (runs 2i, 2i+1) and their intervals."""
    rows: dict[str, dict[str, list[float]]] = {v: {} for v in VARIANTS}
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for p in range(len(runs) // 2):
        a, b = runs[2 * p].model, runs[2 * p + 1].model
        for variant, options in VARIANTS.items():
            t0 = time.perf_counter()
            path = barrier(a, b, data=data, out=out / f"{name}_{variant}_{p}.h5",
                           overwrite=True, show_progress=False, **options)
            seconds[variant].append(time.perf_counter() - t0)
            for metric, value in path.barriers.items():
                rows[variant].setdefault(metric, []).append(value)
    return {v: {"values": rows[v], "intervals": {m: interval(x) for m, x in rows[v].items()},
                "seconds": seconds[v]} for v in VARIANTS}


def rebasin_comparison(a: torch.nn.Module, b: torch.nn.Module, data: object, out: Path) -> dict:
    """Ours against the rebasin package on one pair: units mapped alike, barriers."""
    try:
        from rebasin import PermutationCoordinateDescent
    except ImportError as err:
        return {"available": False, "reason": repr(err)}
    x = data.split("train")[0] if hasattr(data, "split") else data["train"][0]
    ours = align(a, b, method="weights", data=x)
    theirs = copy.deepcopy(b)
    t0 = time.perf_counter()
    PermutationCoordinateDescent(a, theirs, x[:8]).rebasin()
    seconds = time.perf_counter() - t0
    agree = {}
    for group in ours.spec.groups:  # each permutation read back from the layer's biases
        bias = b.state_dict()[f"{group}.bias"]
        theirs_perm = torch.stack([(bias == v).nonzero()[0, 0]
                                   for v in theirs.state_dict()[f"{group}.bias"]])
        agree[group] = float((theirs_perm == ours.perms[group]).double().mean())
    result = {"available": True, "same_unit_fraction": agree, "rebasin_seconds": seconds}
    for who, model in (("ours", ours.model), ("rebasin", theirs)):
        path = barrier(a, model, data=data, out=out / f"rebasin_{who}.h5", overwrite=True,
                       show_progress=False)
        result[f"barriers_{who}"] = path.barriers
        inner = sum(float((a.state_dict()[k] * v).sum()) for k, v in model.state_dict().items()
                    if k in dict(a.named_parameters()))
        result[f"objective_{who}"] = inner
    return result


def resnet20_matching(repeats: int = 5) -> dict:
    """Seconds of weight matching between two He-initialized ResNet-20s (CIFAR shapes)."""
    torch.manual_seed(0)
    a, b = (build_model("resnet20", (3, 32, 32), 10).eval() for _ in range(2))
    x = torch.randn(2, 3, 32, 32)
    times, cpu, passes = [], [], []
    for r in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = align(a, b, method="weights", data=x, seed=r)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        passes.append(out.passes)
    return {"seconds": times, "median": statistics.median(times), "cpu_seconds": cpu,
            "median_cpu": statistics.median(cpu), "passes": passes,
            "threads": torch.get_num_threads()}


def path_cost(run: object, other: object, out: Path, rounds: int = 7) -> dict:
    """A 25-point path against a 25-point random-direction curve, both splits, interleaved:
    points evaluated by the engine (counted at :meth:`Objective.evaluate`), wall and CPU
    seconds (CPU time is what this process used: less sensitive to a shared machine)."""
    from landscape.objective import Objective

    counted = {"points": 0}
    real = Objective.evaluate

    def counting(self, points, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        counted["points"] += 1 if points.dim() == 1 else points.shape[0]
        return real(self, points, *args, **kwargs)

    Objective.evaluate = counting
    jobs = {"path": lambda: barrier(run.model, other.model, data=run.data, points=25,
                                    out=out / "cost_path.h5", overwrite=True,
                                    show_progress=False),
            "surface": lambda: random_surface(run, x="0:1:25", split="train,test",
                                              out=out / "cost_surface.h5", overwrite=True,
                                              show_progress=False)}
    result: dict[str, dict] = {k: {"wall": [], "cpu": []} for k in jobs}
    try:
        for _ in range(rounds):
            for name, job in jobs.items():
                counted["points"] = 0
                wall, cpu = time.perf_counter(), time.process_time()
                job()
                result[name]["wall"].append(time.perf_counter() - wall)
                result[name]["cpu"].append(time.process_time() - cpu)
                result[name]["points_evaluated"] = counted["points"]
    finally:
        Objective.evaluate = real
    for r in result.values():
        r["median_wall"], r["median_cpu"] = (statistics.median(r["wall"]),
                                             statistics.median(r["cpu"]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/bench_connect")
    parser.add_argument("--mnist-dir", default="../shared/data/mnist")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--mnist-pairs", type=int, default=3)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    quiet = {"progress": False}
    digits = [train(seed=s, out=out / "runs" / f"digits{s}", resume=True, **quiet)
              for s in range(2 * args.pairs)]
    results["digits"] = barriers("digits", digits, digits[0].data, out)
    results["rebasin"] = rebasin_comparison(digits[0].model, digits[1].model, digits[0].data,
                                            out)
    results["resnet20_weight_matching"] = resnet20_matching()
    results["path_cost"] = path_cost(digits[0], digits[1], out)
    if Path(args.mnist_dir).is_dir():
        train_split, test_split = mnist_subset(args.mnist_dir)
        mnist = [train(seed=s, data=(train_split, test_split), out=out / "runs" / f"mnist{s}",
                       overwrite=True, **quiet) for s in range(2 * args.mnist_pairs)]
        results["mnist"] = barriers("mnist", mnist, {"train": train_split,
                                                     "test": test_split}, out)
    t0 = time.perf_counter()
    stability = instability(out / "stability", spawn_at=[0, 1, 2, 5, 10], pairs=3,
                            show_progress=False)
    results["stability"] = {**stability.to_dict(), "seconds": time.perf_counter() - t0}
    t0 = time.perf_counter()
    steps = instability(out / "stability_steps", spawn_at=[0, 10, 50, 200], unit="step",
                        pairs=3, points=25, show_progress=False)
    results["stability_steps"] = {**steps.to_dict(), "seconds": time.perf_counter() - t0}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
