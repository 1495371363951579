"""The demo's recipes reproduce the published direction of Keskar et al. (2017): the
large-batch minimum is sharper than the small-batch one."""

import numpy as np
import pytest

from landscape import epsilon_sharpness, hessian_eigenvalues, train
from landscape.objective import Objective
from landscape.study import DEMO_RECIPES
from landscape.surface import random_surface


@pytest.fixture(scope="module")
def demo_minima(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, float]]:
    root = tmp_path_factory.mktemp("demo")
    out = {}
    for name, recipe in DEMO_RECIPES.items():
        run = train(**recipe, out=root / name, progress=False)
        obj = Objective.from_run(run, split="train")
        curve = random_surface(run, x="-0.5:0.5:3", seed=0, out=root / f"{name}.h5",
                               show_progress=False)
        loss = curve.values["train_loss"]
        out[name] = {
            "top_eigenvalue": float(hessian_eigenvalues(obj, k=1, tol=1e-4).eigenvalues[0]),
            "epsilon_sharpness": epsilon_sharpness(obj, eps=1e-3).value,
            "rise": float(np.mean(loss[[0, 2]]) - loss[1]),
        }
    return out


@pytest.mark.parametrize("measure", ["top_eigenvalue", "epsilon_sharpness", "rise"])
def test_large_batch_minimum_of_the_demo_is_sharper(demo_minima: dict, measure: str) -> None:
    small, large = demo_minima["small-batch"][measure], demo_minima["large-batch"][measure]
    print(f"{measure}: small-batch {small:.4g}, large-batch {large:.4g}")
    assert large > 1.5 * small > 0
