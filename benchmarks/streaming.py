"""Streamed versus resident data on the CPU: seconds per surface point for a dataset 10x the
memory budget, and the peak resident memory of the streamed run (a child process per mode).

    python benchmarks/streaming.py
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

N, D, C = 200_000, 256, 10          # 200k samples of 256 float32: 205 MB of inputs
BUDGET = N * D * 4 // 10            # the data are 10x the budget




class Chunks:
    """Re-iterable batches of 4,096 generated samples, each made when read."""

    def __iter__(self):
        for s in range(0, N, 4096):
            g = torch.Generator().manual_seed(s)
            b = min(4096, N - s)
            yield torch.randn(b, D, generator=g), torch.randint(C, (b,), generator=g)


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 64), nn.ReLU(), nn.Linear(64, C))


def child(mode: str) -> None:
    from landscape.objective import Objective

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "resident":
        x, y = map(torch.cat, zip(*Chunks(), strict=True))
        obj = Objective(model(), (x, y), device="cpu", data_budget=2**40)
    else:
        obj = Objective(model(), Chunks(), device="cpu", data_budget=BUDGET)
    pts = obj.theta0[None] + 0.01 * torch.randn(3, obj.theta0.numel())
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        obj.evaluate(pts)
        times.append((time.perf_counter() - t0) / 3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    print(json.dumps({"mode": mode, "resident": obj.source.resident,
                      "s_per_point": statistics.median(times), "peak_rss_mb": peak / 1024}))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        child(sys.argv[1])
    else:
        rows = []
        for _ in range(2):  # interleaved
            for mode in ("streamed", "resident"):
                out = subprocess.run([sys.executable, __file__, mode], capture_output=True,
                                     text=True, check=True).stdout
                rows.append(json.loads(out))
        for mode in ("streamed", "resident"):
            mine = [r for r in rows if r["mode"] == mode]
            print(mode, "s/point", statistics.median(r["s_per_point"] for r in mine),
                  "peak MB", max(r["peak_rss_mb"] for r in mine), "budget MB", BUDGET / 2**20)
