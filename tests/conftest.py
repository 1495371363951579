"""Test-suite settings: tiny models run fastest on one thread, and no figure windows; the
small stored results the figure tests draw (made once per session)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

matplotlib.use("Agg")
torch.set_num_threads(1)
os.environ.setdefault("LANDSCAPE_QUIET", "1")


def _objectives(seed: int = 0) -> dict[str, Any]:
    from landscape.objective import Objective

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(50, 4, generator=gen), torch.randint(0, 3, (50,), generator=gen)
    return {"train": Objective(model, (x[:36], y[:36]), precision="float64"),
            "test": Objective(model, (x[36:], y[36:]), precision="float64")}


@pytest.fixture(scope="session")
def plot_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small stored results of every kind (a few seconds in all)."""
    from _figures import NX, NY

    from landscape.analysis.hessian import analyze_hessian, curvature_map
    from landscape.surface import compute_surface, random_direction

    root = tmp_path_factory.mktemp("plots")
    objs = _objectives()
    o = objs["train"]
    dx = random_direction(o.space, o.theta0, 0, "filter", "biasbn").double()
    dy = random_direction(o.space, o.theta0, 1, "filter", "biasbn").double()
    out = {name: root / f"{name}.h5" for name in
           ("curve", "surface", "interp", "traj", "hessian")}
    common = {"show_progress": False}
    compute_surface(objs, out["curve"], "-1:1:9", directions=[dx],
                    settings={"norm": "filter"}, **common)
    compute_surface({"train": o}, out["surface"], f"-1:1:{NX}", f"-0.5:0.5:{NY}",
                    directions=[dx, dy], settings={"norm": "filter"}, **common)
    compute_surface(objs, out["interp"], "-0.5:1.5:5", directions=[dx], kind="interpolation",
                    attrs={"endpoints": ["runs/small", "runs/large"]}, **common)
    coords = np.array([[-1.0, 0.4], [-0.6, -0.2], [-0.2, 0.1]])
    compute_surface({"train": o}, out["traj"], "-1.2:0.3:5", "-0.4:0.6:4", directions=[dx, dy],
                    kind="trajectory", extras={"path/coords": coords,
                                               "path/epochs": np.array([0, 2, 4])},
                    attrs={"explained_variance_ratio": [0.812, 0.103]}, **common)
    curvature_map(o, out["surface"], tol=1e-6)
    analyze_hessian(o, top=2, bottom=1, density=True, density_probes=2, density_steps=12,
                    out=out["hessian"])
    return out


TINY_STUDY = {"model_options": {"widths": [8]}, "curve": "-1:1:5", "surface": "-1:1:5",
              "interpolation": "-0.5:1.5:3", "trace_probes": 10, "hessian_tol": 1e-3,
              "direction_seeds": 2, "seeds": [0, 1], "show_progress": False, "quiet": True,
              "measures": ("top_eigenvalue", "epsilon_sharpness", "noise_scale"),
              "checkpoints": 2}


@pytest.fixture(scope="session")
def plot_studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 2 x 2 lr / batch-size sweep (two recipes share lr / B) and a two-recipe study,
    two seeds each, tiny grids (about 25 s in all)."""
    from landscape.study import Recipe, run_study

    root = tmp_path_factory.mktemp("studies")
    sweep = run_study([Recipe("sgd", {"optimizer": "sgd", "epochs": 2})],
                      sweep={"lr": [0.05, 0.2], "batch_size": [16, 64]},
                      match="train-loss=1.0", out=root / "sweep", **TINY_STUDY)
    pair = run_study(["small=optimizer=sgd,lr=0.1,batch_size=16",
                      "large=optimizer=sgd,lr=0.1,batch_size=64"], match="steps=20",
                     out=root / "pair", **TINY_STUDY)
    return {"sweep": sweep, "pair": pair}


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_study() -> Any:
    """``landscape demo``, once per session, in the checkout's ``outputs/demo``: where the
    CI's first command already wrote it, the study resumes and recomputes nothing (every part
    is kept under a key of its settings and weights); otherwise, or where something differs,
    it computes what is missing (about 2.5 CPU-minutes from nothing). No figure."""
    from landscape.study import demo

    return demo(out=ROOT / "outputs" / "demo", show_progress=False, quiet=True)
