"""Data sources and losses of the engine: any dtype, tuple/dict inputs, iterables, streaming,
custom losses and forward_loss hooks, checked against direct float64 computations."""

from __future__ import annotations

import pkgutil
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import landscape
from landscape.errors import LandscapeError
from landscape.objective import Objective


def _mlp(d: int = 5, c: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 6), nn.Tanh(), nn.Linear(6, c)).double()


def _data(n: int = 37, d: int = 5, c: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(c, (n,), generator=g)


def _exact(model: nn.Module, loss_of_params) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient and dense Hessian of ``loss_of_params(dict)`` w.r.t. the flat parameters."""
    space = landscape.ParamSpace.from_model(model)
    theta = space.flatten(model).double()
    f = lambda t: loss_of_params(space.unflatten(t))  # noqa: E731
    return torch.func.grad(f)(theta), torch.func.hessian(f)(theta)


class _Tokens(nn.Module):
    """Embedding + linear head over the last token: integer inputs only."""

    def __init__(self, vocab: int = 7) -> None:
        super().__init__()
        self.emb, self.head = nn.Embedding(vocab, 4), nn.Linear(4, vocab)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.emb(ids)
        if mask is not None:
            h = h * mask[..., None]
        return self.head(h.mean(1))


def test_integer_token_inputs_stay_integers_and_give_the_direct_loss() -> None:
    torch.manual_seed(0)
    model = _Tokens().double()
    ids, y = torch.randint(7, (20, 3)), torch.randint(7, (20,))
    obj = Objective(model, (ids, y), precision="float64", device="cpu")
    assert obj.x.dtype == torch.int64
    with torch.no_grad():
        ref = float(F.cross_entropy(model(ids), y))
    assert obj.loss(obj.theta0) == pytest.approx(ref, rel=1e-12)


def test_tuple_and_dict_inputs_are_passed_as_positional_and_keyword_arguments() -> None:
    torch.manual_seed(0)
    model = _Tokens().double()
    ids, y = torch.randint(7, (20, 3)), torch.randint(7, (20,))
    mask = (torch.rand(20, 3) > 0.3).double()
    ref = float(F.cross_entropy(model(ids, mask), y))
    as_tuple = Objective(model, ((ids, mask), y), precision="float64", device="cpu")
    as_dict = Objective(model, ({"ids": ids, "mask": mask}, y), precision="float64", device="cpu")
    assert as_tuple.loss(as_tuple.theta0) == pytest.approx(ref, rel=1e-12)
    assert as_dict.loss(as_dict.theta0) == pytest.approx(ref, rel=1e-12)
    assert as_dict.x["mask"].dtype == torch.float64 and as_dict.x["ids"].dtype == torch.int64
    g = as_dict.grad(as_dict.theta0)
    exact, _ = _exact(model, lambda p: F.cross_entropy(
        torch.func.functional_call(model, p, (ids, mask)), y))
    torch.testing.assert_close(g, exact, rtol=1e-10, atol=1e-12)


def test_custom_loss_gives_its_own_value_and_per_sample_measures_need_its_per_sample_form(
        ) -> None:
    model, (x, y) = _mlp(), _data()
    smooth = nn.CrossEntropyLoss(label_smoothing=0.2)
    obj = Objective(model, (x, y), loss=lambda out, t: smooth(out, t), precision="float64",
                    device="cpu", batch_size=8)
    assert obj.loss(obj.theta0) == pytest.approx(float(smooth(model(x), y)), rel=1e-12)
    with pytest.raises(LandscapeError, match="needs per-sample losses"):
        obj.per_sample_grads(obj.theta0, torch.arange(3))
    with pytest.raises(LandscapeError, match="needs per-sample losses") as err:
        landscape.gradient_noise(obj, batch_size=4)
    advice = re.search(r"wrap it in ([\w.]+)\(fn\)", str(err.value))[1]  # it exists and works
    wrapped = Objective(model, (x, y), loss=pkgutil.resolve_name(advice)(
        lambda out, t: F.cross_entropy(out, t, label_smoothing=0.2, reduction="none")),
        precision="float64", device="cpu", batch_size=8)
    assert wrapped.per_sample_grads(wrapped.theta0, torch.arange(3)).shape[0] == 3
    # the torch module's own reduction="none" form: per-sample gradient norms, brute force
    per = Objective(model, (x, y), loss=smooth, precision="float64", device="cpu", batch_size=8)
    _, sq = per.per_sample_sq_norms(per.theta0)
    space = per.space
    for i in (0, 36):
        gi = torch.func.grad(lambda t, i=i: smooth(torch.func.functional_call(
            model, space.unflatten(t), (x[i:i + 1],)), y[i:i + 1]))(per.theta0)
        assert float(sq[i]) == pytest.approx(float(gi @ gi), rel=1e-10)


def test_forward_loss_hook_gives_the_models_own_loss_and_derivatives() -> None:
    class WithLoss(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _mlp()

        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loss": F.cross_entropy(self.net(x), labels)}

    model, (x, y) = WithLoss(), _data()
    batches = [{"x": x[s:s + 10], "labels": y[s:s + 10]} for s in range(0, 37, 10)]
    obj = Objective(model, batches, forward_loss=lambda m, b: m(**b)["loss"],
                    precision="float64", device="cpu")
    assert obj.n == 37 and obj.metric_names == ("loss",)
    assert obj.loss(obj.theta0) == pytest.approx(float(model(x, y)["loss"]), rel=1e-12)
    g, h = _exact(model, lambda p: torch.func.functional_call(model, p, (x, y))["loss"])
    torch.testing.assert_close(obj.grad(obj.theta0), g, rtol=1e-10, atol=1e-12)
    v = torch.randn(g.numel(), dtype=torch.float64)
    torch.testing.assert_close(obj.hvp(obj.theta0, v), h @ v, rtol=1e-10, atol=1e-12)


def test_dataloader_with_uneven_last_batch_equals_resident_tensors() -> None:
    model, (x, y) = _mlp(), _data(37)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)  # 8, 8, 8, 8, 5
    kw = {"precision": "float64", "device": "cpu"}
    resident, streamed = Objective(model, (x, y), **kw), Objective(model, loader, **kw,
                                                                   data_budget=1000)
    assert resident.source.resident and not streamed.source.resident
    theta = resident.theta0
    v = torch.randn(theta.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for a, b in ((resident.loss(theta), streamed.loss(theta)),
                 (resident.grad(theta), streamed.grad(theta)),
                 (resident.hvp(theta, v), streamed.hvp(theta, v))):
        torch.testing.assert_close(torch.as_tensor(b), torch.as_tensor(a), rtol=1e-6, atol=0)
    top = [landscape.hessian_eigenvalues(o, k=1, tol=1e-8).eigenvalues[0]
           for o in (resident, streamed)]
    assert float(top[1]) == pytest.approx(float(top[0]), rel=1e-6)
    _, h = _exact(model, lambda p: F.cross_entropy(torch.func.functional_call(model, p, (x,)), y))
    assert float(top[0]) == pytest.approx(float(torch.linalg.eigvalsh(h)[-1]), rel=1e-6)


def test_token_level_mean_is_over_target_elements_whatever_the_batching() -> None:
    class Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.head = nn.Embedding(7, 4), nn.Linear(4, 7)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(self.emb(ids)))  # [B, T, V]

    torch.manual_seed(0)
    model = Seq().double()
    ids, y = torch.randint(7, (23, 5)), torch.randint(7, (23, 5))
    out = model(ids)
    ref = float(F.cross_entropy(out.reshape(-1, 7), y.reshape(-1)))
    acc = float((out.argmax(-1) == y).double().mean())
    for data in ((ids, y), DataLoader(TensorDataset(ids, y), batch_size=6)):
        obj = Objective(model, data, precision="float64", device="cpu", batch_size=4)
        assert obj.loss_fn.mean_over == "elements" and obj.weight_total == 115
        res = obj.evaluate(obj.theta0[None])
        assert float(res["loss"][0]) == pytest.approx(ref, rel=1e-12)
        assert float(res["acc"][0]) == pytest.approx(acc, rel=1e-12)


def test_streamed_by_a_small_budget_gives_the_resident_surface(tmp_path) -> None:
    model, (x, y) = _mlp(), _data(37)
    kw = {"x": "-1:1:5", "precision": "float64", "device": "cpu", "show_progress": False}
    a = landscape.random_surface(model, data=(x, y), out=tmp_path / "a.h5", batch_size=8, **kw)
    b = landscape.random_surface(model, data=(x, y), out=tmp_path / "b.h5", batch_size=8,
                                 data_budget=512, **kw)
    torch.testing.assert_close(torch.as_tensor(b.values["train_loss"]),
                               torch.as_tensor(a.values["train_loss"]), rtol=1e-12, atol=0)
    direct = float(F.cross_entropy(model(x), y))
    assert float(a.values["train_loss"][2]) == pytest.approx(direct, rel=1e-12)


def test_plain_module_with_data_in_every_analysis() -> None:
    model, (x, y) = _mlp(), _data(37)
    loader = DataLoader(TensorDataset(x, y), batch_size=10)
    _, h = _exact(model, lambda p: F.cross_entropy(torch.func.functional_call(model, p, (x,)), y))
    top = landscape.hessian_eigenvalues(model, data=loader, k=2, tol=1e-6)
    torch.testing.assert_close(top.eigenvalues.double(), torch.linalg.eigvalsh(h).flip(0)[:2],
                               rtol=1e-4, atol=0)
    obj = Objective(model, (x, y), device="cpu")
    for fn in (landscape.sam_sharpness, landscape.epsilon_sharpness):
        kw = {"rho": 0.05} if fn is landscape.sam_sharpness else {"eps": 1e-3}
        assert fn(model, data=loader, **kw).value == pytest.approx(fn(obj, **kw).value,
                                                                    rel=1e-4)
    with pytest.raises(LandscapeError, match="needs data="):
        landscape.hessian_eigenvalues(model)
