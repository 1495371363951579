"""Data-parallel curvature under torchrun: two gloo ranks, each holding half of the data, give
the single-process results (top-3 eigenvalues, trace with the same probes, sharpness, noise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("_sharded_worker.py")


def _run(args: list[str], out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*args, str(WORKER), str(out)], env=env, timeout=300,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]  # the workers' own error, if any
    return json.loads(out.read_text())


def test_two_gloo_ranks_with_sharded_data_equal_one_process(tmp_path: Path) -> None:
    one = _run([sys.executable], tmp_path / "one.json")
    two = _run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2"], tmp_path / "two.json")
    assert two["sharded"] and not one["sharded"]
    assert two["top"] == pytest.approx(one["top"], rel=1e-9)
    for key in ("trace", "eps", "sam", "noise"):
        assert two[key] == pytest.approx(one[key], rel=1e-8), key
