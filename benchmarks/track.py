"""Cost of tracking curvature during training (the edge-of-stability example of the README).

Full-batch gradient descent on the spirals (MLP 2-100-100-2, 1,000 samples), ``--steps``
steps at ``--lr``, trained untracked and tracked (``top_eigenvalue`` every ``--every`` steps)
side by side, interleaved, ``--repeats`` times; reports the median wall time of each, the
tracker's own seconds, and the HVPs per measurement of the warm-started Lanczos against a
cold Lanczos (random start, same tolerance) at the same steps (the checkpoints of the
tracked run, saved every ``--every`` steps).

    python benchmarks/track.py --steps 200 --every 5 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import landscape
from landscape.analysis.hessian import hessian_eigenvalues
from landscape.objective import Objective


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    common = dict(dataset="spirals", optimizer="sgd", lr=args.lr, batch_size=1000,
                  steps=args.steps, progress=False, overwrite=True, save_every=args.every)
    times: dict[str, list[float]] = {"untracked": [], "tracked": []}
    tracker_seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for kind in times:
                options = {"track": "top_eigenvalue", "track_every": args.every} \
                    if kind == "tracked" else {}
                t0 = time.perf_counter()
                run = landscape.train(**common, **options, out=Path(tmp) / kind)
                times[kind].append(time.perf_counter() - t0)
            tracker_seconds.append(float(landscape.load_track(run.path).seconds.sum()))
        track = landscape.load_track(Path(tmp) / "tracked")
        run = landscape.load_run(Path(tmp) / "tracked")
        cold = []
        for step in track.step[1:]:
            objective = Objective(run.load_checkpoint(int(step)), (run.data.x_train,
                                  run.data.y_train), device="cpu")
            cold.append(hessian_eigenvalues(objective, k=1, tol=1e-3).n_hvp)
    untracked, tracked = (statistics.median(times[k]) for k in times)
    warm = track.hvp["top_eigenvalue"][1:]
    print(f"untracked {untracked:.2f} s, tracked {tracked:.2f} s (median of {args.repeats}); "
          f"tracker's own time {statistics.median(tracker_seconds):.2f} s = "
          f"{statistics.median(tracker_seconds) / tracked:.1%} of the tracked run; "
          f"wall-time overhead {tracked / untracked - 1:.1%}")
    print(f"HVPs per measurement over {len(warm)} measurements: warm mean {np.mean(warm):.2f} "
          f"(median {np.median(warm):.0f}, max {np.max(warm):.0f}); cold mean {np.mean(cold):.2f} "
          f"(median {np.median(cold):.0f}, max {np.max(cold):.0f}); "
          f"ratio {np.mean(warm) / np.mean(cold):.2f}")


if __name__ == "__main__":
    main()
