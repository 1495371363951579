"""Helpers several test modules share: the CLI in-process, a user's code file, and a
training run killed at an epoch (for resume tests)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from torch import nn

from landscape.cli import main
from landscape.training import rundir


def invoke(*args: object) -> Result:
    """``landscape ARGS...`` in this process."""
    return CliRunner().invoke(main, [str(a) for a in args])


def write_user_file(folder: Path, source: str) -> Path:
    """``folder/user.py`` holding ``source``, beside a ``shift.txt`` of 0.0 that its data
    factory reads (edit it to change the data without changing the code)."""
    (folder / "shift.txt").write_text("0.0")
    (folder / "user.py").write_text(source)
    return folder / "user.py"


def killed_at_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int,
                    run: Callable[[], object]) -> None:
    """Run ``run()`` while the trainer dies (KeyboardInterrupt) as it saves the checkpoint of
    ``epoch``, after that epoch's history row; the checkpoint writer is restored after."""
    real_save = rundir.save_checkpoint

    def dying(file: Path, state: dict) -> None:
        if state["epoch"] == epoch:
            raise KeyboardInterrupt
        real_save(file, state)

    monkeypatch.setattr(rundir, "save_checkpoint", dying)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(rundir, "save_checkpoint", real_save)


def flat_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable:
    """``theta -> mean cross-entropy of model at the flat parameter vector theta``, written
    here with torch's own loss (an independent reference for the engine's derivatives)."""
    shapes = [(n, p.shape) for n, p in model.named_parameters()]

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params, at = {}, 0
        for name, shape in shapes:
            params[name] = theta[at : at + shape.numel()].reshape(shape)
            at += shape.numel()
        return torch.nn.functional.cross_entropy(
            torch.func.functional_call(model, params, (x,)), y)

    return loss
