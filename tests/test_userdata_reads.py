"""A run on the user's own loaders reads each loader once: training scans (counts, checks,
digests and keeps) in one pass that the trainer's sources take over, ``load_run`` plus the
engine read each split once, a second ``load_run`` of the same factory file reads only what
is used (checked then), and an edited factory file is scanned again."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch

from landscape import userdata
from landscape.objective import Objective
from landscape.runs import load_run
from landscape.training import train
from landscape.trust import trusting

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from user_loader_reads import counting_factory, reads  # noqa: E402 - the benchmark's loaders

FACTORY = counting_factory(32, 8, 4, 8)


def test_user_loaders_are_read_once_by_train_and_by_load_run_and_the_engine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userdata, "_SCANS", {})  # this test's own cache
    factory = tmp_path / "counting.py"
    factory.write_text(FACTORY)
    spec = f"{factory}:data"
    run = train(model="mlp", model_options={"widths": [8]}, data=spec, epochs=1,
                batch_size=8, out=tmp_path / "run", progress=False)
    assert reads(tmp_path) == {"train": 1, "test": 1}
    assert run.info["data_sizes"] == {"train": 32, "test": 8}

    def engine_loss() -> tuple[dict[str, int], dict[str, int], float]:
        loaded = load_run(run.path, trust=True)
        at_load = reads(tmp_path)
        engine = Objective.from_run(loaded, "train", device="cpu")
        return at_load, reads(tmp_path), engine.loss(engine.theta0)

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
    assert reads(tmp_path) == {"train": 1, "test": 1}


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
