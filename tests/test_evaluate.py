"""The loop evaluator's replay of chain models (:func:`landscape.evaluate.chain`,
:class:`landscape.evaluate.Replay`): used only where it is exact, the same bits as calling the
model, and no allocation per call. Reference: the model's own forward pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.evaluate import Replay
from landscape.models import build_model
from landscape.objective import Objective


class _Residual(nn.Module):
    """The second layer's input is not the first one's output."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.b(self.a(x) + x)


class _ScaledInPlace(nn.Module):
    """An in-place op between two layers keeps the tensor: only the bitwise check sees it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.b(self.a(x).mul_(2.0))


class _Twice(nn.Module):
    """One layer called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.b(self.a(self.a(x)))


def _hooked() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))
    model[1].register_forward_hook(lambda _m, _i, out: out * 2.0)
    return model


def _data(shape: tuple[int, ...], per_row: bool = False, n: int = 30) -> tuple[Tensor, Tensor]:
    """Inputs ``[n, *shape]`` and 3-class targets, one per sample or (``per_row``) one per
    row of the last input dimension."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=gen)
    return x, torch.randint(0, 3, (n, *shape[:-1]) if per_row else (n,), generator=gen)


def _points(obj: Objective, k: int = 3) -> Tensor:
    gen = torch.Generator().manual_seed(1)
    return obj.theta0 + 0.3 * torch.randn(k, obj.space.numel, generator=gen)


@pytest.mark.parametrize("make,shape", [
    (_Residual, (4,)), (_ScaledInPlace, (4,)), (_Twice, (4,)), (_hooked, (4,)),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 3)), (4,)),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3)), (2, 4)),  # 3-D input
])
def test_models_that_are_not_plain_chains_are_called(make, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = make().eval()
    x, y = _data(shape, per_row=True)
    obj = Objective(model, (x, y), device="cpu")
    assert obj.strategy == "loop" and obj.evaluator.chain is None
    with torch.no_grad():
        out = model(x)
    want = F.cross_entropy(out.reshape(-1, 3), y.reshape(-1), reduction="sum").double() / y.numel()
    assert float(obj.evaluate(obj.theta0)["loss"][0]) == float(want)


@pytest.mark.parametrize("model,shape", [
    (build_model("mlp", (2, 3), 3, widths=(5, 4)), (2, 3)),  # Flatten, Linear, ReLU, ...
    (nn.Sequential(nn.Linear(6, 5, bias=False), nn.Tanh(), nn.Linear(5, 3, bias=False)), (6,)),
    (nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 5),
                   nn.ReLU(inplace=True), nn.Linear(5, 3)), (2, 3)),
])
def test_replayed_chain_gives_the_bits_of_calling_the_model(model: nn.Module,
                                                           shape: tuple[int, ...],
                                                           monkeypatch) -> None:
    """Points and planes (first layer from products), chunks of 7 of 30 samples (a short last
    chunk): the replay and the module calls agree bit for bit."""
    x, y = _data(shape)
    obj = Objective(model, (x, y), device="cpu", batch_size=7)
    assert obj.evaluator.chain is not None and obj.plane_layer is not None
    dirs = torch.randn(2, obj.space.numel, generator=torch.Generator().manual_seed(2))
    coords = torch.tensor([[0.0, 0.0], [0.5, -1.0], [-2.0, 0.25]])
    replayed = (obj.evaluate(_points(obj)), obj.evaluate_plane(obj.theta0, dirs, coords))
    monkeypatch.setattr(obj.evaluator, "chain", None)
    called = (obj.evaluate(_points(obj)), obj.evaluate_plane(obj.theta0, dirs, coords))
    for got, want in zip(replayed, called):
        for key in ("loss", "acc"):
            assert torch.equal(got[key], want[key])


def test_replay_writes_into_the_same_buffers_at_every_call() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    replay = Replay(list(model))
    x = torch.randn(9, 4)
    with torch.no_grad():
        small = replay(x[:4])  # then grown to 9 rows, then kept
        first = replay(x)
        assert torch.equal(first, model(x)) and torch.equal(small, model(x[:4]))
        address = first.data_ptr()
        assert replay(2 * x).data_ptr() == address and replay(x[:5]).data_ptr() == address
