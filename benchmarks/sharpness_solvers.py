"""Epsilon-sharpness solvers and adaptive-sharpness batch sizes, side by side on trained MLPs.

For each digits MLP (the ``landscape.train()`` default, and the demo's small- and large-batch
SGD recipes) and interleaved over ``--repeats`` rounds in one process:

1. Keskar et al. 2017's own procedure (scipy L-BFGS-B, 10 iterations, from a uniformly random
   point of the box ``|z_i| <= eps (|theta_i| + 1)``; the largest loss seen counts), written
   in below, against :func:`landscape.analysis.sharpness.epsilon_sharpness` at its defaults
   (projected sign-gradient ascent then L-BFGS-B, 3 starts), and 10 fixed-size projected
   sign-gradient steps (step = the box half-width) for reference;
2. worst- and average-case adaptive l2 sharpness with the whole split as one batch against
   the default m = 128 batches.

Prints value, gradient passes and the median seconds per call. ``python
benchmarks/sharpness_solvers.py --out /tmp/sharpness_bench`` (about a minute on a CPU).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import Bounds, minimize

from landscape.analysis.sharpness import adaptive_sharpness, epsilon_sharpness
from landscape.objective import Objective
from landscape.study import DEMO_RECIPES
from landscape.training import train


def keskar_lbfgsb(obj: Objective, eps: float = 1e-3, seed: int = 0) -> tuple[float, int]:
    """Keskar et al.'s procedure; (value in percent, gradient passes)."""
    theta = obj.theta0
    bound = (eps * (theta.double().abs() + 1)).numpy()
    f0 = obj.loss(theta)
    seen = [f0]

    def negative(z: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grad = obj.loss_and_grad(theta + torch.as_tensor(z, dtype=theta.dtype))
        seen.append(loss)
        return -loss, -grad.double().numpy()

    start = np.random.default_rng(seed).uniform(-bound, bound)
    minimize(negative, start, jac=True, method="L-BFGS-B", bounds=Bounds(-bound, bound),
             options={"maxiter": 10})
    return 100 * (max(seen) - f0) / (1 + f0), len(seen) - 1


def sign_ascent(obj: Objective, eps: float = 1e-3, steps: int = 10) -> tuple[float, int]:
    """Fixed-size projected sign-gradient ascent from theta; (value in percent, passes)."""
    theta = obj.theta0.double()
    bound = eps * (theta.abs() + 1)
    f0, grad = obj.loss_and_grad(obj.theta0)
    best, z = f0, torch.zeros_like(theta)
    for _ in range(steps):
        z = (z + bound * grad.double().sign()).clamp(-bound, bound)
        loss, grad = obj.loss_and_grad(obj.theta0 + z.to(obj.dtype))
        best = max(best, loss)
    return 100 * (best - f0) / (1 + f0), steps + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the trained runs")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = {"default": {}, **DEMO_RECIPES}
    for name, recipe in models.items():
        run = train(**recipe, out=args.out / name, progress=False, device="cpu", resume=True)
        obj = Objective.from_run(run, "train", device="cpu")
        calls: dict[str, Callable[[], tuple[float, float]]] = {
            "eps: Keskar L-BFGS-B": lambda obj=obj: keskar_lbfgsb(obj),
            "eps: 10 sign steps": lambda obj=obj: sign_ascent(obj),
            "eps: epsilon_sharpness": lambda obj=obj: _pair(epsilon_sharpness(obj)),
            "worst l2: whole split": lambda obj=obj: _pair(adaptive_sharpness(obj,
                                                                              batch_size=None)),
            "worst l2: m = 128": lambda obj=obj: _pair(adaptive_sharpness(obj)),
            "avg l2: whole split, 64": lambda obj=obj: _pair(adaptive_sharpness(
                obj, kind="average", batch_size=None, n_samples=64)),
            "avg l2: m = 128, 20": lambda obj=obj: _pair(adaptive_sharpness(obj,
                                                                            kind="average")),
        }
        seconds: dict[str, list[float]] = {k: [] for k in calls}
        results: dict[str, tuple[float, float]] = {}
        for _ in range(args.repeats):
            for key, call in calls.items():
                start = time.perf_counter()
                results[key] = call()
                seconds[key].append(time.perf_counter() - start)
        print(f"{name}: train loss {obj.loss(obj.theta0):.4g}")
        for key in calls:
            value, passes = results[key]
            print(f"  {key:26s} {value:10.4g}  {passes:6.1f} passes  "
                  f"{statistics.median(seconds[key]):.3f} s")


def _pair(result) -> tuple[float, float]:
    passes = sum(v for k, v in result.cost.items() if k == "grad")
    return result.value, passes or result.cost.get("forward", 0.0)


if __name__ == "__main__":
    main()
