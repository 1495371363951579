"""A run on the user's own loaders reads each loader once: training scans (counts, checks,
digests and keeps) in one pass that the trainer's sources take over, ``load_run`` plus the
engine read each split once, a second ``load_run`` of the same factory file reads only what
is used (checked then), and an edited factory file is scanned again."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from landscape import userdata
from landscape.objective import Objective
from landscape.runs import load_run
from landscape.training import train
from landscape.trust import trusting

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
    x = torch.randn(40, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return (Counting("train", DataLoader(TensorDataset(x[:32], y[:32]), batch_size=8)),
            Counting("test", DataLoader(TensorDataset(x[32:], y[32:]), batch_size=8)))
'''


def _reads(folder: Path) -> dict[str, int]:
    """Iterations of each split's loader since the last call."""
    log = folder / "reads.txt"
    names = log.read_text().split() if log.exists() else []
    log.write_text("")
    return {s: names.count(s) for s in ("train", "test")}


def test_user_loaders_are_read_once_by_train_and_by_load_run_and_the_engine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userdata, "_SCANS", {})  # this test's own cache
    factory = tmp_path / "counting.py"
    factory.write_text(FACTORY)
    spec = f"{factory}:data"
    run = train(model="mlp", model_options={"widths": [8]}, data=spec, epochs=1,
                batch_size=8, out=tmp_path / "run", progress=False)
    assert _reads(tmp_path) == {"train": 1, "test": 1}
    assert run.info["data_sizes"] == {"train": 32, "test": 8}

    def engine_loss() -> tuple[dict[str, int], dict[str, int], float]:
        loaded = load_run(run.path, trust=True)
        at_load = _reads(tmp_path)
        engine = Objective.from_run(loaded, "train", device="cpu")
        return at_load, _reads(tmp_path), engine.loss(engine.theta0)

    userdata._SCANS.clear()  # as in a new process: one full scan checks the recorded digest
    at_load, at_engine, first = engine_loss()
    assert (at_load, at_engine) == ({"train": 1, "test": 1}, {"train": 0, "test": 0})
    # the same factory file again: its cached scan; the split the engine uses is read once
    at_load, at_engine, second = engine_loss()
    assert (at_load, at_engine) == ({"train": 0, "test": 0}, {"train": 1, "test": 0})
    assert second == first == pytest.approx(run.history[-1]["train_loss"], rel=1e-6)

    factory.write_text(FACTORY + "\n# edited\n")  # a changed file is not its cached scan
    with trusting([spec]):
        load_run(run.path)
    assert _reads(tmp_path) == {"train": 1, "test": 1}


def test_data_digest_is_the_sorted_per_sample_sha256_of_float64_bytes() -> None:
    x = torch.arange(12, dtype=torch.float32).reshape(4, 3) / 7
    y = torch.tensor([0, 2, 1, 2])
    splits = {"train": (x[:3], y[:3]), "test": [(x[3:], y[3:])]}  # tensors, and a list
    expected = hashlib.sha256()
    for name, rows in (("train", range(3)), ("test", range(3, 4))):
        samples = sorted(hashlib.sha256(x[i].double().numpy().tobytes()
                                        + y[i:i + 1].numpy().tobytes()).digest() for i in rows)
        expected.update(f"{name}:{len(samples)}:".encode() + b"".join(samples))
    scan = userdata.scan_data(splits)
    assert scan.digest == expected.hexdigest()
    assert (scan.sizes, scan.input_shape, scan.num_outputs) == ({"train": 3, "test": 1}, (3,), 3)
