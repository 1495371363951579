"""Objective: every number against an independent reference.

References: the model's own forward pass and ``torch.nn.functional`` losses, plain
``torch.autograd`` gradients, full Hessians from ``torch.func.hessian`` of tiny float64
models, explicitly formed Jacobians for the Gauss-Newton matrix, and
``torch.optim.swa_utils.update_bn`` for recomputed BatchNorm statistics.
"""

from __future__ import annotations

import copy
import types

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from torch.optim.swa_utils import update_bn

from landscape.errors import LandscapeError
from landscape.evaluate import choose_strategy
from landscape.objective import Objective

N = 23  # number of samples: prime, so no batch size below it divides it
CLASSES = 3


# ---------------------------------------------------------------------------------------
# tiny models and data, built by hand
def _mlp(seed: int = 0, outputs: int = CLASSES) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, outputs))


def _conv_bn(seed: int = 0) -> nn.Module:
    """Conv -> BatchNorm (non-trivial running statistics) -> tanh -> linear, 1x4x4 inputs."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Tanh(),
                          nn.Flatten(), nn.Linear(32, CLASSES))
    bn = model[1]
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0.0, 0.3)
        bn.running_mean.copy_(torch.tensor([0.3, -0.2]))
        bn.running_var.copy_(torch.tensor([1.7, 0.6]))
        bn.num_batches_tracked.fill_(5)
    return model


def _class_data(shape: tuple[int, ...] = (4,), n: int = N, seed: int = 1) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=gen), torch.randint(0, CLASSES, (n,), generator=gen)


def _reg_data(d: int = 2, n: int = N, seed: int = 2) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(n, d, generator=gen)
    return torch.randn(n, 4, generator=gen), (y if d > 1 else y[:, 0])


def _points(theta0: Tensor, k: int, scale: float = 0.3, seed: int = 3) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return theta0 + scale * torch.randn(k, theta0.numel(), generator=gen, dtype=theta0.dtype)


def _with_params(model: nn.Module, theta: Tensor, dtype: torch.dtype) -> nn.Module:
    """A deep copy of ``model`` in ``dtype``, eval mode, with flat parameters ``theta``."""
    m = copy.deepcopy(model).to(dtype).eval()
    vector_to_parameters(theta.to(dtype), m.parameters())
    return m


def _own_views(model: nn.Module, theta: Tensor) -> dict[str, Tensor]:
    """Name -> tensor for a flat vector, in ``model.parameters()`` order (independent of
    ParamSpace)."""
    out, off = {}, 0
    for name, p in model.named_parameters():
        out[name] = theta[off : off + p.numel()].reshape(p.shape)
        off += p.numel()
    assert off == theta.numel()
    return out


def _ref_forward(model: nn.Module, dtype: torch.dtype = torch.float64):
    """``theta -> outputs`` of ``model`` (eval mode, its own buffers), differentiable with
    torch.func."""
    m = copy.deepcopy(model).to(dtype).eval()
    buffers = dict(m.named_buffers())

    def fn(theta: Tensor, x: Tensor) -> Tensor:
        return functional_call(m, {**_own_views(m, theta), **buffers}, (x.to(dtype),))
    return fn


def _ref_loss_fn(model: nn.Module, x: Tensor, y: Tensor, loss: str):
    forward = _ref_forward(model)

    def fn(theta: Tensor) -> Tensor:
        out = forward(theta, x)
        if loss == "cross_entropy":
            return F.cross_entropy(out, y)
        return F.mse_loss(out.reshape(y.shape), y.to(theta.dtype))
    return fn


# ---------------------------------------------------------------------------------------
# value at the model's own parameters
def test_loss_at_theta0_equals_model_cross_entropy_float32() -> None:
    model = _mlp()
    x, y = _class_data()
    obj = Objective(model, (x, y), precision="float32", device="cpu", batch_size=7)
    with torch.no_grad():
        ref = F.cross_entropy(model(x), y).item()
    assert torch.equal(obj.theta0, parameters_to_vector(model.parameters()).detach())
    assert obj.theta0.dtype == torch.float32
    assert obj.loss(obj.theta0) == pytest.approx(ref, rel=1e-6)


def test_loss_at_theta0_equals_model_cross_entropy_float64() -> None:
    model = _mlp()
    x, y = _class_data()
    obj = Objective(model, (x, y), precision="float64", device="cpu", batch_size=7)
    with torch.no_grad():
        m = copy.deepcopy(model).double()
        ref = F.cross_entropy(m(x.double()), y).item()
    assert obj.theta0.dtype == torch.float64
    assert obj.loss(obj.theta0) == pytest.approx(ref, rel=1e-12, abs=0)


@pytest.mark.parametrize("precision,rel", [("float32", 1e-6), ("float64", 1e-12)])
@pytest.mark.parametrize("d", [1, 2])
def test_mse_loss_equals_torch_mse_loss(precision: str, rel: float, d: int) -> None:
    model = _mlp(outputs=d)
    x, y = _reg_data(d)
    obj = Objective(model, (x, y), precision=precision, device="cpu", batch_size=5)
    assert obj.loss_name == "mse"  # float targets default to mse
    dtype = obj.dtype
    with torch.no_grad():
        m = copy.deepcopy(model).to(dtype)
        ref = F.mse_loss(m(x.to(dtype)).reshape(y.shape), y.to(dtype)).item()
    result = obj.evaluate(obj.theta0[None])
    assert "acc" not in result
    assert float(result["loss"][0]) == pytest.approx(ref, rel=rel, abs=0)


def test_accuracy_equals_model_accuracy_at_several_points() -> None:
    model = _mlp()
    x, y = _class_data()
    obj = Objective(model, (x, y), device="cpu", batch_size=6)
    points = _points(obj.theta0, 4, scale=0.5)
    result = obj.evaluate(points)
    for k in range(points.shape[0]):
        m = _with_params(model, points[k], torch.float32)
        with torch.no_grad():
            out = m(x)
        ref_acc = (out.argmax(1) == y).double().mean().item()
        assert float(result["acc"][k]) == pytest.approx(ref_acc, abs=1e-12)
        assert float(result["loss"][k]) == pytest.approx(F.cross_entropy(out, y).item(),
                                                         rel=1e-6)
    assert 0 < result["acc"].min() and result["acc"].max() < 1  # a non-trivial check


def test_evaluate_returns_float64_cpu_vectors_of_length_k() -> None:
    model = _mlp()
    obj = Objective(model, _class_data(), device="cpu")
    result = obj.evaluate(_points(obj.theta0, 5))
    assert set(result) == {"loss", "acc"}
    for value in result.values():
        assert value.dtype == torch.float64 and value.shape == (5,)
        assert value.device.type == "cpu"


def test_default_loss_is_cross_entropy_for_integer_labels() -> None:
    obj = Objective(_mlp(), _class_data(), device="cpu")
    assert obj.loss_name == "cross_entropy" and obj.n == N


def test_dataset_object_uses_named_split_and_its_loss() -> None:
    model = _mlp(outputs=2)
    train, test = _reg_data(2, n=N, seed=5), _reg_data(2, n=11, seed=6)
    splits = {"train": train, "test": test}
    data = types.SimpleNamespace(split=lambda name: splits[name], loss="mse")
    obj = Objective(model, data, split="test", device="cpu", precision="float64")
    assert obj.n == 11 and obj.loss_name == "mse"
    with torch.no_grad():
        ref = F.mse_loss(copy.deepcopy(model).double()(test[0].double()), test[1].double())
    assert obj.loss(obj.theta0) == pytest.approx(ref.item(), rel=1e-12)


# ---------------------------------------------------------------------------------------
# batched evaluation
@pytest.mark.parametrize("point_chunk,batch_size", [(1, 5), (3, 7), (4, N), (16, 10), (2, 40)])
def test_vmap_evaluation_equals_point_at_a_time(point_chunk: int, batch_size: int) -> None:
    model = _mlp()
    x, y = _class_data()
    ref_obj = Objective(model, (x, y), device="cpu", strategy="loop", batch_size=N)
    points = _points(ref_obj.theta0, 7)
    ref = ref_obj.evaluate(points)
    obj = Objective(model, (x, y), device="cpu", strategy="vmap",
                    point_chunk=point_chunk, batch_size=batch_size)
    got = obj.evaluate(points)
    torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-6, atol=0)
    assert torch.equal(got["acc"], ref["acc"])
    # and both equal the model itself at each point
    for k in range(points.shape[0]):
        with torch.no_grad():
            own = F.cross_entropy(_with_params(model, points[k], torch.float32)(x), y).item()
        assert float(got["loss"][k]) == pytest.approx(own, rel=1e-6)


@pytest.mark.parametrize("strategy", ["auto", "vmap", "loop"])
def test_batchnorm_eval_mode_loss_equals_model_eval_loss(strategy: str) -> None:
    model = _conv_bn().train()
    x, y = _class_data((1, 4, 4))
    obj = Objective(model, (x, y), device="cpu", strategy=strategy, batch_size=6, point_chunk=2)
    points = torch.cat([obj.theta0[None], _points(obj.theta0, 3, scale=0.2)])
    result = obj.evaluate(points)
    for k in range(points.shape[0]):
        with torch.no_grad():
            out = _with_params(model, points[k], torch.float32)(x)
        assert float(result["loss"][k]) == pytest.approx(F.cross_entropy(out, y).item(),
                                                         rel=1e-6)
        assert float(result["acc"][k]) == pytest.approx(
            (out.argmax(1) == y).double().mean().item(), abs=1e-12)
    # batch statistics would give another number: the check above is not vacuous
    with torch.no_grad():
        train_mode = F.cross_entropy(copy.deepcopy(model).train()(x), y).item()
    assert abs(train_mode - float(result["loss"][0])) > 1e-3


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_per_point_buffers_equal_model_with_those_buffers(strategy: str) -> None:
    model = _conv_bn()
    x, y = _class_data((1, 4, 4))
    obj = Objective(model, (x, y), device="cpu", precision="float64", strategy=strategy,
                    batch_size=6, point_chunk=2)
    points = _points(obj.theta0, 3, scale=0.1)
    gen = torch.Generator().manual_seed(8)
    buffers = {"1.running_mean": torch.randn(3, 2, generator=gen, dtype=torch.float64),
               "1.running_var": 0.5 + torch.rand(3, 2, generator=gen, dtype=torch.float64)}
    got = obj.evaluate(points, buffers=buffers)["loss"]
    plain = obj.evaluate(points)["loss"]
    for k in range(3):
        m = _with_params(model, points[k], torch.float64)
        m[1].running_mean.copy_(buffers["1.running_mean"][k])
        m[1].running_var.copy_(buffers["1.running_var"][k])
        with torch.no_grad():
            ref = F.cross_entropy(m(x.double()), y).item()
        assert float(got[k]) == pytest.approx(ref, rel=1e-12)
        assert abs(float(plain[k]) - ref) > 1e-3
    with pytest.raises(LandscapeError):
        obj.evaluate(points, buffers={"2.running_mean": buffers["1.running_mean"]})


def _update_bn_reference(model: nn.Module, theta: Tensor, x: Tensor, y: Tensor,
                         batch_size: int) -> float:
    m = _with_params(model, theta, torch.float64)
    batches = [x[s : s + batch_size].double() for s in range(0, x.shape[0], batch_size)]
    update_bn(batches, m)
    m.eval()
    with torch.no_grad():
        return F.cross_entropy(m(x.double()), y).item()


@pytest.mark.parametrize("batch_size", [5, N])
def test_bn_recompute_equals_update_bn_statistics(batch_size: int) -> None:
    model = _conv_bn()
    x, y = _class_data((1, 4, 4))
    obj = Objective(model, (x, y), device="cpu", precision="float64", bn="recompute",
                    batch_size=batch_size)
    points = torch.cat([obj.theta0[None], _points(obj.theta0, 2, scale=0.3)])
    got = obj.evaluate(points)["loss"]
    evaluated = Objective(model, (x, y), device="cpu", precision="float64").evaluate(points)
    for k in range(points.shape[0]):
        ref = _update_bn_reference(model, points[k], x, y, batch_size)
        assert float(got[k]) == pytest.approx(ref, rel=1e-10, abs=1e-12)
        assert abs(float(evaluated["loss"][k]) - ref) > 1e-3  # recompute differs from eval


def test_bn_recompute_of_subset_uses_subset_statistics() -> None:
    model = _conv_bn()
    x, y = _class_data((1, 4, 4))
    obj = Objective(model, (x, y), device="cpu", precision="float64", bn="recompute",
                    batch_size=4)
    idx = torch.tensor([0, 3, 5, 8, 9, 13, 21])
    sub = obj.subset(idx)
    ref = _update_bn_reference(model, obj.theta0, x[idx], y[idx], 4)
    assert sub.loss(sub.theta0) == pytest.approx(ref, rel=1e-10)


# ---------------------------------------------------------------------------------------
# derivatives
@pytest.mark.parametrize("kind", ["mlp", "conv_bn", "mse"])
def test_grad_equals_autograd_gradient_of_full_data_loss(kind: str) -> None:
    if kind == "conv_bn":
        model, (x, y), loss = _conv_bn(), _class_data((1, 4, 4)), "cross_entropy"
    elif kind == "mse":
        model, (x, y), loss = _mlp(outputs=2), _reg_data(2), "mse"
    else:
        model, (x, y), loss = _mlp(), _class_data(), "cross_entropy"
    obj = Objective(model, (x, y), device="cpu", precision="float64", batch_size=7)
    theta = _points(obj.theta0, 1, scale=0.2)[0]
    m = _with_params(model, theta, torch.float64)
    out = m(x.double())
    ref_loss = (F.cross_entropy(out, y) if loss == "cross_entropy"
                else F.mse_loss(out, y.double()))
    ref_grad = torch.autograd.grad(ref_loss, list(m.parameters()))
    ref_grad = torch.cat([g.reshape(-1) for g in ref_grad])
    value, g = obj.loss_and_grad(theta)
    torch.testing.assert_close(g, ref_grad, rtol=1e-12, atol=1e-12)
    assert value == pytest.approx(ref_loss.item(), rel=1e-12)
    torch.testing.assert_close(obj.grad(theta), ref_grad, rtol=1e-12, atol=1e-12)


def _hessian_case(kind: str) -> tuple[Objective, Tensor, Tensor]:
    """(objective, theta, full Hessian at theta) for a tiny float64 model."""
    if kind == "mlp":
        model, (x, y) = _mlp(), _class_data(n=11)
    else:
        model, (x, y) = _conv_bn(), _class_data((1, 4, 4), n=11)
    obj = Objective(model, (x, y), device="cpu", precision="float64", batch_size=4)
    theta = _points(obj.theta0, 1, scale=0.2)[0]
    hess = torch.func.hessian(_ref_loss_fn(model, x, y, "cross_entropy"))(theta)
    return obj, theta, hess


@pytest.mark.parametrize("kind", ["mlp", "conv_bn"])
@pytest.mark.parametrize("method", ["fwd_rev", "double_backward"])
def test_hvp_equals_full_hessian_times_v(kind: str, method: str) -> None:
    obj, theta, hess = _hessian_case(kind)
    assert hess.abs().max() > 1e-3
    gen = torch.Generator().manual_seed(4)
    vs = torch.randn(3, theta.numel(), generator=gen, dtype=torch.float64)
    single = obj.hvp(theta, vs[0], method=method)
    assert single.shape == (theta.numel(),)
    torch.testing.assert_close(single, hess @ vs[0], rtol=1e-10, atol=1e-12)
    block = obj.hvp(theta, vs, method=method)
    assert block.shape == vs.shape
    torch.testing.assert_close(block, vs @ hess.T, rtol=1e-10, atol=1e-12)


def test_hvp_method_set_at_construction_is_used() -> None:
    model, (x, y) = _mlp(), _class_data(n=11)
    obj = Objective(model, (x, y), device="cpu", precision="float64",
                    hvp_method="double_backward")
    theta = obj.theta0
    hess = torch.func.hessian(_ref_loss_fn(model, x, y, "cross_entropy"))(theta)
    v = torch.linspace(-1, 1, theta.numel(), dtype=torch.float64)
    torch.testing.assert_close(obj.hvp(theta, v), hess @ v, rtol=1e-10, atol=1e-12)


def _explicit_ggn(model: nn.Module, theta: Tensor, x: Tensor, y: Tensor, loss: str) -> Tensor:
    """J^T H_out J averaged over samples, with J the Jacobian of the outputs."""
    forward = _ref_forward(model)
    out = forward(theta, x).detach()
    jac = torch.func.jacrev(lambda t: forward(t, x))(theta)  # [n, C, P]
    n, c = out.shape
    if loss == "cross_entropy":
        p = torch.softmax(out, dim=1)
        h_out = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # [n, C, C]
    else:
        h_out = (2.0 / c) * torch.eye(c, dtype=out.dtype).expand(n, c, c)
    return torch.einsum("ncp,ncd,ndq->pq", jac, h_out, jac) / n


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_ggn_vp_equals_explicit_jacobian_product(loss: str) -> None:
    if loss == "cross_entropy":
        model, (x, y) = _mlp(), _class_data(n=11)
    else:
        model, (x, y) = _mlp(outputs=3), _reg_data(3, n=11)
    obj = Objective(model, (x, y), device="cpu", precision="float64", batch_size=4, loss=loss)
    theta = _points(obj.theta0, 1, scale=0.2)[0]
    ggn = _explicit_ggn(model, theta, x, y, loss)
    assert torch.linalg.eigvalsh(ggn).min() > -1e-12  # PSD, as a GGN must be
    gen = torch.Generator().manual_seed(7)
    vs = torch.randn(2, theta.numel(), generator=gen, dtype=torch.float64)
    torch.testing.assert_close(obj.ggn_vp(theta, vs[0]), ggn @ vs[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(obj.ggn_vp(theta, vs), vs @ ggn.T, rtol=1e-10, atol=1e-12)


def test_ggn_equals_hessian_for_linear_model_with_mse() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    x, y = _reg_data(2)
    obj = Objective(model, (x, y), device="cpu", precision="float64", batch_size=6)
    hess = torch.func.hessian(_ref_loss_fn(model, x, y, "mse"))(obj.theta0)
    v = torch.randn(3, obj.space.numel, dtype=torch.float64)
    torch.testing.assert_close(obj.ggn_vp(obj.theta0, v), v @ hess.T, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(obj.hvp(obj.theta0, v), v @ hess.T, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["mlp", "conv_bn"])
def test_per_sample_grads_equal_individual_autograd_gradients(kind: str) -> None:
    if kind == "mlp":
        model, (x, y) = _mlp(), _class_data(n=9)
    else:
        model, (x, y) = _conv_bn(), _class_data((1, 4, 4), n=9)
    obj = Objective(model, (x, y), device="cpu", precision="float64", batch_size=4)
    theta = _points(obj.theta0, 1, scale=0.2)[0]
    m = _with_params(model, theta, torch.float64)
    ref = []
    for i in range(x.shape[0]):
        li = F.cross_entropy(m(x[i : i + 1].double()), y[i : i + 1])
        ref.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(li, m.parameters())]))
    ref = torch.stack(ref)
    got = obj.per_sample_grads(theta)
    assert got.shape == (x.shape[0], theta.numel())
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got.mean(0), obj.grad(theta), rtol=1e-12, atol=1e-12)
    idx = torch.tensor([5, 0, 8])
    torch.testing.assert_close(obj.per_sample_grads(theta, idx), ref[idx], rtol=1e-12,
                               atol=1e-12)


def test_batch_loss_is_differentiable_with_torch_func() -> None:
    model, (x, y) = _mlp(), _class_data(n=8)
    obj = Objective(model, (x, y), device="cpu", precision="float64")
    ref = torch.func.grad(_ref_loss_fn(model, x, y, "cross_entropy"))(obj.theta0)
    got = torch.func.grad(obj.batch_loss)(obj.theta0, obj.x, obj.y)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------
# subsets, settings, side effects
def test_subset_is_reproducible_and_has_n_samples() -> None:
    model = _mlp()
    x, y = _class_data()
    obj = Objective(model, (x, y), device="cpu", precision="float64")
    a, b, c = obj.subset(7, seed=3), obj.subset(7, seed=3), obj.subset(7, seed=4)
    assert a.n == 7 and a.x.shape[0] == 7 and a.y.shape[0] == 7
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    # rows are distinct rows of the full data, labels kept with them
    rows = [int(torch.nonzero((x.double() == r).all(1))[0, 0]) for r in a.x]
    assert len(set(rows)) == 7
    assert torch.equal(a.y, y[rows])
    with torch.no_grad():
        ref = F.cross_entropy(copy.deepcopy(model).double()(x[rows].double()), y[rows]).item()
    assert a.loss(a.theta0) == pytest.approx(ref, rel=1e-12)
    assert obj.n == N  # the parent is unchanged


def test_subset_by_indices_equals_loss_on_those_samples() -> None:
    model = _mlp()
    x, y = _class_data()
    obj = Objective(model, (x, y), device="cpu", precision="float64", batch_size=4)
    idx = torch.tensor([2, 17, 4, 9, 11])
    sub = obj.subset(idx)
    with torch.no_grad():
        ref = F.cross_entropy(copy.deepcopy(model).double()(x[idx].double()), y[idx]).item()
    assert sub.n == 5
    assert sub.loss(sub.theta0) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("size", [0, N + 1])
def test_subset_size_out_of_range_raises(size: int) -> None:
    obj = Objective(_mlp(), _class_data(), device="cpu")
    with pytest.raises(LandscapeError):
        obj.subset(size)


@pytest.mark.parametrize("kwargs", [
    {"precision": "float16"}, {"precision": "fp32"}, {"bn": "train"}, {"loss": "nll"},
    {"strategy": "fastest"}, {"hvp_method": "exact"},
])
def test_bad_setting_names_raise_landscape_error(kwargs: dict) -> None:
    with pytest.raises(LandscapeError, match=str(next(iter(kwargs.values())))):
        Objective(_mlp(), _class_data(), device="cpu", **kwargs)


def test_precision_error_suggests_close_name() -> None:
    with pytest.raises(LandscapeError, match="float64"):
        Objective(_mlp(), _class_data(), device="cpu", precision="float46")


def test_length_mismatch_raises_landscape_error() -> None:
    obj = Objective(_mlp(), _class_data(), device="cpu")
    p = obj.space.numel
    with pytest.raises(LandscapeError):
        obj.evaluate(torch.zeros(2, p + 1))
    with pytest.raises(LandscapeError):
        obj.grad(torch.zeros(p - 1))
    with pytest.raises(LandscapeError):
        obj.hvp(obj.theta0, torch.zeros(p + 2))


@pytest.mark.parametrize("kwargs", [{"batch_size": -1},
                                    {"point_chunk": -2, "strategy": "vmap"}])
def test_negative_chunk_sizes_raise_landscape_error(kwargs: dict) -> None:
    with pytest.raises(LandscapeError):
        obj = Objective(_mlp(), _class_data(), device="cpu", **kwargs)
        obj.evaluate(_points(obj.theta0, 3))


def test_bf16_loss_is_within_1e_2_of_float32() -> None:
    model = _mlp()
    x, y = _class_data()
    f32 = Objective(model, (x, y), device="cpu", precision="float32", strategy="loop")
    bf16 = Objective(model, (x, y), device="cpu", precision="bf16", strategy="loop")
    points = torch.cat([f32.theta0[None], _points(f32.theta0, 3)])
    ref, got = f32.evaluate(points)["loss"], bf16.evaluate(points)["loss"]
    torch.testing.assert_close(got, ref, rtol=1e-2, atol=0)
    assert not torch.equal(got, ref)  # bf16 autocast really ran


@pytest.mark.parametrize("strategy", ["auto", "loop"])
def test_counts_increase_as_documented(strategy: str) -> None:
    obj = Objective(_mlp(), _class_data(), device="cpu", strategy=strategy, batch_size=5)
    assert obj.counts == {"forward": 0, "grad": 0, "hvp": 0, "per_sample": 0}
    obj.evaluate(_points(obj.theta0, 3))
    assert obj.counts["forward"] == 3
    obj.loss(obj.theta0)
    assert obj.counts["forward"] == 4
    obj.grad(obj.theta0)
    obj.loss_and_grad(obj.theta0)
    assert obj.counts["grad"] == 2
    v = torch.randn(3, obj.space.numel)
    obj.hvp(obj.theta0, v[0])
    obj.hvp(obj.theta0, v)
    obj.hvp(obj.theta0, v[:2], method="double_backward")
    assert obj.counts["hvp"] == 6
    obj.per_sample_grads(obj.theta0, torch.arange(5))
    assert obj.counts["per_sample"] == pytest.approx(5 / N)
    obj.per_sample_grads(obj.theta0)
    assert obj.counts["per_sample"] == pytest.approx(1 + 5 / N)
    assert obj.counts["forward"] == 4 and obj.counts["grad"] == 2
    assert obj.subset(5).counts == {"forward": 0, "grad": 0, "hvp": 0, "per_sample": 0}


def test_model_parameters_and_buffers_are_bit_identical_after_everything() -> None:
    model = _conv_bn().train()
    x, y = _class_data((1, 4, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x_before, y_before = x.clone(), y.clone()
    configs = [({"precision": "float32", "strategy": "vmap"}, ("hvp", "ggn", "psg")),
               ({"precision": "float64", "strategy": "loop"}, ("hvp_db",)),
               ({"precision": "float64", "bn": "recompute"}, ()),
               ({"precision": "bf16", "strategy": "loop"}, ())]
    for kw, extra in configs:
        obj = Objective(model, (x, y), device="cpu", batch_size=7, point_chunk=2, **kw)
        points = _points(obj.theta0, 3)
        points_before = points.clone()
        obj.evaluate(points)
        if kw.get("bn") != "recompute":  # derivatives are refused under recompute
            obj.loss_and_grad(points[0])
        obj.subset(5).evaluate(points[:2])
        if "hvp" in extra:
            obj.hvp(points[0], points[:2])
        if "hvp_db" in extra:
            obj.hvp(points[0], points[1], method="double_backward")
        if "ggn" in extra:
            obj.ggn_vp(points[0], points[1])
        if "psg" in extra:
            obj.per_sample_grads(points[0], torch.arange(4))
        assert torch.equal(points, points_before)
    assert model.training and model[1].training
    after = model.state_dict()
    assert list(after) == list(before)
    for k, v in before.items():
        assert after[k].dtype == v.dtype
        assert torch.equal(after[k], v), k
    assert torch.equal(x, x_before) and torch.equal(y, y_before)


@pytest.mark.parametrize("method", ["loss_and_grad", "hvp", "ggn_vp", "per_sample_grads"])
def test_derivatives_under_bn_recompute_are_refused_with_one_line(method: str) -> None:
    obj = Objective(_conv_bn(), _class_data((1, 4, 4)), device="cpu", precision="float64",
                    bn="recompute")
    args = (obj.theta0,) if method in ("loss_and_grad", "per_sample_grads") else (
        obj.theta0, torch.ones_like(obj.theta0))
    with pytest.raises(LandscapeError, match="bn='eval'") as err:
        getattr(obj, method)(*args)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("method", ["ggn_vp", "per_sample_grads", "hvp", "loss_and_grad"])
def test_bf16_derivatives_run_in_float32(method: str) -> None:
    """bf16 autocasts loss evaluation only: derivatives equal float32's exactly, also with
    BatchNorm (whose bf16 backward fails under vmap)."""
    model = _conv_bn()
    x, y = _class_data((1, 4, 4), n=9)
    results = {}
    for precision in ("float32", "bf16"):
        obj = Objective(model, (x, y), device="cpu", precision=precision, batch_size=4)
        theta = obj.theta0
        v = torch.linspace(-1, 1, theta.numel())
        results[precision] = {"ggn_vp": lambda o=obj, t=theta, v=v: o.ggn_vp(t, v),
                              "hvp": lambda o=obj, t=theta, v=v: o.hvp(t, v),
                              "per_sample_grads": lambda o=obj, t=theta: o.per_sample_grads(t),
                              "loss_and_grad": lambda o=obj, t=theta: o.loss_and_grad(t)[1],
                              }[method]()
    assert torch.equal(results["bf16"], results["float32"])


def test_auto_strategy_and_chunk_follow_the_rule_by_model_and_device() -> None:
    """``auto`` is a fixed rule (never a timing): loop on the CPU, vmap only for models without
    convolutions or BatchNorm on a GPU; convolutions on the CPU get 128-sample data chunks."""
    x, y = torch.randn(300, 1, 4, 4), torch.randint(0, 3, (300,))
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.Tanh(), nn.Linear(5, 3))
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))
    bn = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.BatchNorm1d(5), nn.Linear(5, 3))
    objs = {name: Objective(m, (x, y), device="cpu") for name, m in
            (("mlp", mlp), ("conv", conv), ("bn", bn))}
    assert {o.strategy for o in objs.values()} == {"loop"}
    assert (objs["mlp"].batch_size, objs["conv"].batch_size) == (300, 128)
    on_gpu = {}
    for name, o in objs.items():
        o.device = torch.device("cuda")  # the rule only reads the device type
        on_gpu[name] = choose_strategy(o)
    assert on_gpu == {"mlp": "vmap", "conv": "loop", "bn": "loop"}
    assert Objective(mlp, (x, y), device="cpu", bn="recompute").strategy == "loop"
    with pytest.raises(LandscapeError, match="recompute"):
        Objective(mlp, (x, y), device="cpu", bn="recompute", strategy="vmap")


def test_explicit_vmap_strategy_failure_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    obj = Objective(model, (torch.randn(6, 4), torch.randint(0, 3, (6,))), device="cpu",
                    strategy="vmap")

    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(obj.evaluator, "vmap", broken)
    with pytest.raises(RuntimeError, match="boom"):
        obj.evaluate(obj.theta0[None].repeat(2, 1))


# ---------------------------------------------------------------------------------------
# blocks of products share each data chunk; per-sample gradient norms
def _count_forwards(obj: Objective) -> list[int]:
    calls = [0]
    obj.model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("product", ["double_backward", "fwd_rev", "ggn"])
def test_block_runs_one_forward_per_data_chunk_and_equals_single_calls(product: str) -> None:
    obj, theta, hess = _hessian_case("conv_bn")  # 11 samples in chunks of 4: 3 chunks
    if product == "ggn":
        def fn(v: Tensor) -> Tensor:
            return obj.ggn_vp(theta, v)
    else:
        def fn(v: Tensor) -> Tensor:
            return obj.hvp(theta, v, method=product)
    gen = torch.Generator().manual_seed(5)
    vs = torch.randn(5, theta.numel(), generator=gen, dtype=torch.float64)
    calls = _count_forwards(obj)
    block = fn(vs)
    assert calls[0] == 3
    singles = torch.stack([fn(v) for v in vs])
    assert calls[0] == 3 + 5 * 3
    torch.testing.assert_close(block, singles, rtol=1e-12, atol=1e-14)
    if product != "ggn":
        torch.testing.assert_close(block, vs @ hess.T, rtol=1e-10, atol=1e-12)


class _SequenceNet(nn.Module):
    """A Linear layer on 2 positions per sample (Gram form), a strided dilated convolution on
    4 positions (Gram form) whose output is changed in place, a Linear layer whose weight
    is tied to another's, and one whose parameters are used without calling it (both need
    per-sample gradients)."""

    def __init__(self) -> None:
        super().__init__()
        self.seq = nn.Linear(8, 8)
        self.conv = nn.Conv2d(8, 8, 3, stride=2, dilation=2, bias=False)
        self.a, self.b = nn.Linear(32, 32), nn.Linear(32, 32)
        self.b.weight = self.a.weight
        self.head = nn.Linear(32 + 16, CLASSES)
        self.mix = nn.Linear(CLASSES, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.seq(x[:, :16].reshape(-1, 2, 8))).flatten(1)  # [n, 16]
        c = self.conv(x.reshape(-1, 8, 7, 7)).tanh_()  # [n, 8, 2, 2], changed in place
        c = torch.tanh(self.b(torch.tanh(self.a(c.flatten(1)))))
        out = self.head(torch.cat([h, c], 1))
        return F.linear(torch.tanh(out), self.mix.weight, self.mix.bias)


@pytest.mark.parametrize("kind", ["mlp", "bn1d", "conv_bn", "sequence"])
def test_per_sample_sq_norms_equal_brute_force_per_sample_gradients(kind: str) -> None:
    if kind == "mlp":
        model, (x, y) = _mlp(), _class_data(n=9)
    elif kind == "bn1d":
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3))
        with torch.no_grad():
            model[1].running_mean.normal_()
            model[1].running_var.uniform_(0.5, 2.0)
        (x, y) = _class_data(n=9)
    elif kind == "conv_bn":
        model, (x, y) = _conv_bn(), _class_data((1, 4, 4), n=9)
    else:
        torch.manual_seed(0)
        model, (x, y) = _SequenceNet(), _class_data((8 * 49,), n=9)
    obj = Objective(model, (x, y), device="cpu", precision="float64", batch_size=4)
    theta = _points(obj.theta0, 1, scale=0.2)[0]
    m = _with_params(model, theta, torch.float64)
    ref = []
    for i in range(x.shape[0]):
        li = F.cross_entropy(m(x[i : i + 1].double()), y[i : i + 1])
        ref.append(sum(g.square().sum() for g in torch.autograd.grad(li, m.parameters())))
    g, sq = obj.per_sample_sq_norms(theta)
    assert sq.dtype == torch.float64 and sq.shape == (x.shape[0],)
    torch.testing.assert_close(sq, torch.stack(ref), rtol=1e-12, atol=0.0)
    torch.testing.assert_close(g, obj.grad(theta), rtol=1e-12, atol=1e-14)


def test_per_sample_grads_of_named_parameters_are_their_columns() -> None:
    model, (x, y) = _conv_bn(), _class_data((1, 4, 4), n=9)
    obj = Objective(model, (x, y), device="cpu", precision="float64", memory_budget=4096)
    theta = _points(obj.theta0, 1, scale=0.2)[0]
    assert obj.per_sample_chunk(obj.space.numel) < 9  # the budget forces several vmap calls
    full = obj.per_sample_grads(theta)
    names = ("4.bias", "1.weight")  # returned in the space's order
    cols = torch.cat([torch.arange(o, o + k) for n, o, k in
                      zip(obj.space.names, obj.space.offsets, obj.space.numels)
                      if n in names])
    torch.testing.assert_close(obj.per_sample_grads(theta, names=names), full[:, cols],
                               rtol=1e-12, atol=1e-14)
    with pytest.raises(LandscapeError, match="unknown parameters"):
        obj.per_sample_grads(theta, names=("nope",))
class _FunctionalReLU(nn.Module):
    """A first linear layer in a forward pass that is not a chain of modules."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.out = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(F.relu(self.fc(x.flatten(1))))


@pytest.mark.parametrize("precision,rtol", [("float64", 1e-12), ("float32", 1e-6)])
@pytest.mark.parametrize("chain", [True, False])
def test_plane_evaluation_from_first_layer_products_equals_point_by_point(
        precision: str, rtol: float, chain: bool) -> None:
    """x (W0 + a Dx + b Dy) = x W0 + a x Dx + b x Dy: a plane evaluated from three products per
    data chunk equals the model's own forward pass at each point, to round-off (the layers
    after the first replayed for a chain of modules, else the model called)."""
    torch.manual_seed(0)
    model = (nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)) if chain
             else _FunctionalReLU())
    x, y = torch.randn(30, 2, 3), torch.randint(0, 3, (30,))
    obj = Objective(model, (x, y), device="cpu", precision=precision, batch_size=7)
    assert obj.plane_layer == ("1" if chain else "fc")
    assert (obj.evaluator.chain is not None) == chain
    dtype = obj.dtype
    dirs = torch.randn(2, obj.space.numel, dtype=dtype)
    coords = torch.tensor([[0.0, 0.0], [0.5, -1.0], [-2.0, 0.25], [1.0, 1.0]], dtype=dtype)
    got = obj.evaluate_plane(obj.theta0, dirs, coords)
    for k, theta in enumerate(obj.theta0 + coords @ dirs):
        with torch.no_grad():
            out = _with_params(model, theta, dtype)(x.to(dtype))
        assert float(got["loss"][k]) == pytest.approx(F.cross_entropy(out, y).item(), rel=rtol)
        assert float(got["acc"][k]) == (out.argmax(1) == y).double().mean().item()
    line = obj.evaluate_plane(obj.theta0, dirs[:1], coords[:, :1])  # one direction
    torch.testing.assert_close(line["loss"], obj.evaluate(obj.theta0 + coords[:, :1] @ dirs[:1])[
        "loss"], rtol=rtol, atol=0)


class _ScaledInput(nn.Module):
    """A parameter used outside any leaf module before the first layer."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([2.0]))
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.scale * x)


@pytest.mark.parametrize("model,kwargs", [
    (_ScaledInput(), {}),
    (nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3)), {"precision": "bf16"}),
    (nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3)), {"strategy": "vmap"}),
    (nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 3)), {}),
])
def test_first_layer_products_are_not_used_where_they_would_be_wrong(model: nn.Module,
                                                                      kwargs: dict) -> None:
    x, y = torch.randn(12, 4), torch.randint(0, 3, (12,))
    obj = Objective(model, (x, y), device="cpu", **kwargs)
    assert obj.plane_layer is None
    dirs = torch.randn(2, obj.space.numel)
    coords = torch.tensor([[1.0, -0.5], [0.3, 0.7]])
    got = obj.evaluate_plane(obj.theta0, dirs, coords)["loss"]
    for k, theta in enumerate(obj.theta0 + coords @ dirs):
        with torch.no_grad():
            out = _with_params(model, theta, torch.float32)(x)
        tol = 2e-2 if kwargs.get("precision") == "bf16" else 1e-6
        assert float(got[k]) == pytest.approx(F.cross_entropy(out, y).item(), rel=tol)


def test_out_of_memory_halves_the_data_chunk_and_keeps_the_values(monkeypatch) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(N, 4), torch.randint(0, CLASSES, (N,))
    obj = Objective(_mlp(), (x, y), device="cpu", precision="float64", strategy="loop",
                    batch_size=16)
    points = obj.theta0[None] + 0.1 * torch.randn(3, obj.space.numel, dtype=torch.float64)
    want = obj.evaluate(points)["loss"]
    real, calls = obj.evaluator.loop, []

    def flaky(*args: object) -> torch.Tensor:  # the first two calls run out of memory
        calls.append(obj.batch_size)
        if len(calls) < 3:
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(*args)

    monkeypatch.setattr(obj.evaluator, "loop", flaky)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    got = obj.evaluate(points)["loss"]
    assert calls == [16, 8, 4] and obj.batch_size == 4
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_out_of_memory_with_nothing_left_to_halve_is_raised() -> None:
    from landscape.evaluate import halving_on_oom

    def run() -> None:
        raise torch.cuda.OutOfMemoryError("simulated")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        halving_on_oom(run, lambda: False)


def test_hvps_at_one_point_share_one_gradient_graph_and_equal_fresh_products() -> None:
    x, y = _class_data(n=12)
    obj = Objective(_mlp(), (x, y), device="cpu", precision="float64")
    calls = _count_forwards(obj)
    theta = obj.theta0
    v = torch.randn(3, obj.space.numel, dtype=torch.float64, generator=torch.Generator()
                    .manual_seed(0))
    first, second = obj.hvp(theta, v[:2]), obj.hvp(theta, v[2])
    assert calls[0] == 1  # the split is one resident chunk: the graph is kept
    fresh = obj.hvp(theta, v, method="fwd_rev")
    torch.testing.assert_close(torch.cat([first, second[None]]), fresh, rtol=1e-10, atol=1e-12)
    moved = theta + 0.1
    torch.testing.assert_close(obj.hvp(moved, v[0]), obj.hvp(moved, v[0], method="fwd_rev"),
                               rtol=1e-10, atol=1e-12)
    assert calls[0] == 4  # one per fwd_rev call, and a new graph at the new point
    part = obj.subset(torch.arange(6))
    torch.testing.assert_close(part.hvp(moved, v[0]), part.hvp(moved, v[0], method="fwd_rev"),
                               rtol=1e-10, atol=1e-12)


class _CountedBatches:
    """A re-iterable of 5-sample batches that counts the batches read."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y, self.read = x, y, 0

    def __iter__(self):  # noqa: ANN204
        for s in range(0, len(self.y), 5):
            self.read += 1
            yield self.x[s : s + 5], self.y[s : s + 5]


def test_per_sample_grads_of_streamed_data_read_each_batch_once() -> None:
    x, y = _class_data(n=N)
    source = _CountedBatches(x, y)
    streamed = Objective(_mlp(), source, device="cpu", precision="float64", data_budget=1,
                         memory_budget=1)  # one sample per vmap call
    resident = Objective(_mlp(), (x, y), device="cpu", precision="float64")
    assert not streamed.source.resident
    streamed.per_sample_grads(streamed.theta0, torch.tensor([0]))  # sizes its vmap calls
    before = source.read
    got = streamed.per_sample_grads(streamed.theta0)
    assert source.read - before == -(-N // 5)  # one pass
    torch.testing.assert_close(got, resident.per_sample_grads(resident.theta0), rtol=1e-12,
                               atol=1e-14)
    idx = torch.tensor([7, 2])
    before = source.read
    torch.testing.assert_close(streamed.per_sample_grads(streamed.theta0, idx),
                               got[idx], rtol=1e-12, atol=1e-14)
    assert source.read - before == 2  # stops after the batch of the last sample asked for


def test_rebind_moves_the_origin_and_buffers_like_a_fresh_objective() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, CLASSES)).eval()
    x, y = _class_data(n=9)
    obj = Objective(net, (x, y), device="cpu", precision="float64", strategy="loop")
    obj.loss(obj.theta0)  # the loop's model copy exists before the move
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1)
        net[1].running_mean.fill_(0.3)
    fresh = Objective(net, (x, y), device="cpu", precision="float64", strategy="loop")
    obj.rebind(fresh.theta0, dict(net.named_buffers()))
    assert obj.loss(obj.theta0) == pytest.approx(fresh.loss(fresh.theta0), rel=1e-12)
    torch.testing.assert_close(obj.grad(obj.theta0), fresh.grad(fresh.theta0))
