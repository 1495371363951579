"""The measures of one :func:`compute_measures` call share the loss and gradient at their
centre: each is computed once there, and every value is the one the measure computes alone,
bit for bit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.analysis import measures as m
from landscape.analysis.sharpness import (
    adaptive_sharpness,
    epsilon_sharpness,
    pac_bayes_flatness,
    sam_sharpness,
)
from landscape.objective import Objective

NAMES = ["epsilon_sharpness", "adaptive_average_l2", "sam_sharpness", "pac_bayes_flatness"]
SETTINGS = m.MeasureSettings(eps_patience=1, eps_max_starts=2, pac_bayes_samples=2)


def _objective() -> Objective:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1), nn.Flatten(0))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(36, 4, generator=gen)
    return Objective(model, (x, x[:, 0] * x[:, 1]), device="cpu")  # regression: MSE


def test_centre_loss_and_gradient_are_computed_once_and_values_are_unchanged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    s = SETTINGS
    alone = {  # each measure on an objective of its own: no cache shared
        "epsilon_sharpness": epsilon_sharpness(_objective(), eps=s.eps, seed=s.seed,
                                               patience=s.eps_patience,
                                               max_starts=s.eps_max_starts),
        "adaptive_average_l2": adaptive_sharpness(_objective(), rho=s.rho_average_l2,
                                                  norm="l2", kind="average",
                                                  batch_size=None, seed=s.seed),
        "sam_sharpness": sam_sharpness(_objective(), rho=s.rho_sam),
        "pac_bayes_flatness": pac_bayes_flatness(_objective(), target=s.pac_bayes_target,
                                                 seed=s.seed, n_samples=s.pac_bayes_samples,
                                                 criterion="loss")}
    objective = _objective()
    centre = objective.theta0.clone()
    at_centre = {"loss_and_grad": 0, "evaluate": 0}
    loss_and_grad, evaluate = Objective.loss_and_grad, Objective.evaluate

    def counted_loss_and_grad(self: Objective, theta: torch.Tensor) -> tuple:
        at_centre["loss_and_grad"] += bool(torch.equal(theta, centre))
        return loss_and_grad(self, theta)

    def counted_evaluate(self: Objective, points: torch.Tensor, *args: object) -> dict:
        at_centre["evaluate"] += bool(len(points) == 1 and torch.equal(points[0], centre)
                                      and self.n == 36)
        return evaluate(self, points, *args)

    monkeypatch.setattr(Objective, "loss_and_grad", counted_loss_and_grad)
    monkeypatch.setattr(Objective, "evaluate", counted_evaluate)
    shared = m.compute_measures(objective, NAMES, settings=s, show_progress=False)
    # each measure alone computes its loss there (evaluate: 2, gradient: 2 of the 4)
    assert at_centre == {"loss_and_grad": 1, "evaluate": 1}
    for name in NAMES:
        assert shared[name].value == alone[name].value, name
    assert shared["sam_sharpness"].extra == alone["sam_sharpness"].extra
    assert objective.counts["grad"] > 0  # the caller's objective still counts the work
