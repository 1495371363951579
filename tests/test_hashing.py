"""The one hashing module computes what files recorded before it existed: each value below
was computed by the code it replaced (store, trainer, study, hessian, trust), on the same
fixed inputs, before the move (commit dfa9f53)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from landscape import hashing, store
from landscape.analysis.hessian import _params_setting
from landscape.study import _digest
from landscape.training.rundir import config_hash
from landscape.trust import Code

SETTINGS = {"lr": np.float32(0.25), "grid": (-1.0, 1.0, 5), "out": Path("outputs/a.h5"),
            "nested": {"b": [1, 2], "a": None}, "name": "x"}
CONFIG = {"model": "mlp", "lr": 0.05, "seed": 3, "epochs": 2, "device": "auto",
          "data_dir": None, "options": {"widths": [8, 8]}}
RECORDED_SETTINGS = "792cee981dec8d10666279ed520ee01a8cc160c9869782b4ed38e8d1fed37420"


def test_settings_hashes_equal_the_values_recorded_before_the_move() -> None:
    assert hashing.settings_hash(SETTINGS) == store.settings_hash(SETTINGS) == RECORDED_SETTINGS
    assert _digest(SETTINGS) == hashing.settings_hash(SETTINGS, 16) == RECORDED_SETTINGS[:16]
    assert config_hash(CONFIG) == "cf8b505a"


def test_values_bytes_and_file_hashes_equal_the_values_recorded_before_the_move() -> None:
    w = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 3
    assert store.values_digest([w, torch.tensor([1, 2])], ["w", "steps"]) == "3b41812321770783"
    assert hashing.values_digest([w], dtype="float32") == "b2460638a838b59f"
    assert _params_setting(torch.tensor([True, False, True]))["mask_sha256"] == (
        "85f90dfea1d8027e1463e5ca971a250110a20df0119d204a74220bc63516d15b")
    code = Code("a:b", "b", Path("a"), b"def b():\n    return 1\n")
    assert code.sha256 == "b283ea7ed654711107377a30f094e09b56769afba735b8244d0cd10462f621b8"
