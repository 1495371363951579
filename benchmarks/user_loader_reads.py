"""Reads of the user's loaders, and seconds, for a run on user data: one training epoch,
then ``load_run`` plus the engine (``Objective.from_run``) in a new process, twice in it.
Each split's DataLoader (20,000 + 2,000 samples of 256 floats, batches of 256) counts its
iterations. Compare two checkouts side by side, interleaved:

    python benchmarks/user_loader_reads.py [CHECKOUT ...]   (default: this one)
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FACTORY = '''
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

LOG = Path(__file__).with_name("reads.txt")


class Counting:
    """A DataLoader that writes its split's name to reads.txt each time it is iterated."""

    def __init__(self, name, loader):
        self.name, self.loader = name, loader

    def __iter__(self):
        with LOG.open("a") as f:
            f.write(self.name + "\\n")
        return iter(self.loader)


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_TRAIN + N_TEST, DIM, generator=g)
    y = torch.randint(10, (N_TRAIN + N_TEST,), generator=g)
    return tuple(Counting(name, DataLoader(TensorDataset(x[part], y[part]), batch_size=BATCH))
                 for name, part in (("train", slice(N_TRAIN)), ("test", slice(N_TRAIN, None))))
'''


def counting_factory(n_train: int, n_test: int, dim: int, batch: int) -> str:
    """The source of a data factory ``data()`` whose two DataLoaders (random inputs of
    ``dim`` floats, 10 classes) log each iteration to ``reads.txt`` beside the file."""
    return (f"N_TRAIN, N_TEST, DIM, BATCH = {n_train}, {n_test}, {dim}, {batch}\n"
            + FACTORY)


def reads(folder: Path) -> dict[str, int]:
    """Iterations of each split's loader logged in ``folder`` since the last call."""
    log = folder / "reads.txt"
    names = log.read_text().split() if log.exists() else []
    log.write_text("")
    return {s: names.count(s) for s in ("train", "test")}


def child(mode: str, folder: Path) -> None:
    import torch

    from landscape.objective import Objective
    from landscape.runs import load_run
    from landscape.training import train

    torch.set_num_threads(1)
    out = []
    if mode == "train":
        t0 = time.perf_counter()
        train(model="mlp", model_options={"widths": [32]}, data=f"{folder}/user.py:data",
              epochs=1, batch_size=256, out=folder / "run", overwrite=True, progress=False)
        out.append({"phase": "train 1 epoch", "reads": reads(folder),
                    "seconds": time.perf_counter() - t0})
    else:
        for phase in ("load_run + engine", "again, same process"):
            t0 = time.perf_counter()
            Objective.from_run(load_run(folder / "run", trust=True), "train", device="cpu")
            out.append({"phase": phase, "reads": reads(folder),
                        "seconds": time.perf_counter() - t0})
    print(json.dumps(out))


def main(checkouts: list[str]) -> None:
    rows: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(3):  # interleaved rounds
            for checkout in checkouts:
                folder = Path(tmp) / Path(checkout).name
                folder.mkdir(exist_ok=True)
                (folder / "user.py").write_text(counting_factory(20_000, 2_000, 256, 256))
                for mode in ("train", "load"):
                    res = subprocess.run([sys.executable, __file__, "--child", mode, str(folder)],
                                         capture_output=True, text=True, check=True,
                                         env={"PYTHONPATH": checkout, "PATH": "/usr/bin:/bin"})
                    for row in json.loads(res.stdout.strip().splitlines()[-1]):
                        rows.setdefault((checkout, row["phase"]), []).append(row)
    for (checkout, phase), found in rows.items():
        print(f"{checkout:32s} {phase:22s} reads {found[0]['reads']}  "
              f"median {statistics.median(r['seconds'] for r in found):.2f} s")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], Path(sys.argv[3]))
    else:
        main(sys.argv[1:] or [str(Path(__file__).resolve().parents[1])])
