"""After an out-of-memory halving in the middle of a surface, the file records the chunking
that produced its values: it equals, bit for bit and in its settings hash, a surface computed
with that chunking from the start, and a resume takes the recorded chunking."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from landscape import store
from landscape.errors import LandscapeError
from landscape.evaluate import Evaluator
from landscape.objective import Objective
from landscape.surface import compute_surface, random_direction


def _objective(batch_size: int | None = None) -> Objective:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(36, 4, generator=gen), torch.randint(0, 3, (36,), generator=gen)
    return Objective(model, (x, y), device="cpu", batch_size=batch_size)


def _surface(objective: Objective, out: Path) -> None:
    dirs = [random_direction(objective.space, objective.theta0, s, "filter", "biasbn")
            for s in (0, 1)]
    compute_surface(objective, out, "-1:1:3", "-1:1:3", directions=dirs, chunk=3,
                    show_progress=False)


def test_surface_after_an_oom_halving_records_the_chunking_that_produced_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    loop = Evaluator.loop

    def tight(self: Evaluator, *args: object) -> torch.Tensor:
        """Memory runs short from the third call (the second chunk): more than 9 samples
        per data chunk no longer fit."""
        calls["n"] += 1
        if calls["n"] >= 3 and self.core.batch_size > 9:
            raise torch.cuda.OutOfMemoryError("simulated")
        return loop(self, *args)

    monkeypatch.setattr(Evaluator, "loop", tight)
    halved = _objective()
    assert halved.batch_size == 36
    _surface(halved, tmp_path / "halved.h5")
    assert halved.batch_size == 9  # 36 -> 18 -> 9
    monkeypatch.setattr(Evaluator, "loop", loop)
    _surface(_objective(batch_size=9), tmp_path / "direct.h5")

    with h5py.File(tmp_path / "halved.h5") as a, h5py.File(tmp_path / "direct.h5") as b:
        assert store.read_settings(a)["train.batch_size"] == 9
        assert a.attrs["settings_hash"] == b.attrs["settings_hash"]
        assert a["done"][()].all()
        for name in ("train_loss", "train_acc"):
            assert np.array_equal(a[name][()], b[name][()]), name
        assert a.attrs["center_train_loss"] == b.attrs["center_train_loss"]

        assert store.read_attrs(a)["oom_halved"] == {"train.batch_size": 36}

    resumed = _objective()  # the same command again: it takes the file's chunking
    _surface(resumed, tmp_path / "halved.h5")
    assert resumed.batch_size == 9
    with pytest.raises(LandscapeError, match=r"train.batch_size: 9 -> 18"):
        _surface(_objective(batch_size=18), tmp_path / "halved.h5")  # another command
