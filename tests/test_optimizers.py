"""Optimizers by name: closed-form SAM/ASAM steps, variance reduction, the step protocol."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from landscape.errors import LandscapeError
from landscape.training.optimizers import (
    ELEMENTWISE,
    FUSED,
    OPTIMIZERS,
    kernel_options,
    make_optimizer,
)

DT = torch.float64


def _quadratic(seed: int = 0):
    """L(w) = 1/2 w^T A w - b^T w over two tensors (a 2x3 'weight' and a 3-vector 'bias')."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(9, 9, generator=g, dtype=DT)
    a = m @ m.T / 9 + 0.5 * torch.eye(9, dtype=DT)
    b = torch.randn(9, generator=g, dtype=DT)
    weight = torch.randn(2, 3, generator=g, dtype=DT).requires_grad_(True)
    bias = torch.randn(3, generator=g, dtype=DT).requires_grad_(True)

    def loss(w: torch.Tensor) -> torch.Tensor:
        return 0.5 * w @ a @ w - b @ w

    def flat() -> torch.Tensor:
        return torch.cat([weight.reshape(-1), bias])

    def grad(w: torch.Tensor) -> torch.Tensor:  # closed form, not autograd
        return a @ w - b

    return weight, bias, loss, flat, grad


def _closure(opt, loss, flat):
    def closure():
        opt.zero_grad()
        value = loss(flat())
        value.backward()
        return value
    return closure


def test_sam_step_equals_closed_form_and_follows_a_changed_learning_rate():
    weight, bias, loss, flat, grad = _quadratic()
    opt = make_optimizer("sam", [weight, bias], lr=0.3, rho=0.2)
    opt.param_groups[0]["lr"] = 0.1   # as a schedule would; the base SGD must see it
    w = flat().detach().clone()
    g = grad(w)
    expected = w - 0.1 * grad(w + 0.2 * g / g.norm())
    returned = opt.step(_closure(opt, loss, flat))
    torch.testing.assert_close(flat().detach(), expected, rtol=0, atol=1e-13)
    assert float(returned.detach()) == pytest.approx(float(loss(w)), abs=1e-13)
    assert not torch.allclose(expected, w - 0.1 * g)   # the perturbation mattered


def test_asam_step_equals_its_closed_form_with_elementwise_scaling():
    weight, bias, loss, flat, grad = _quadratic(1)
    rho, eta, lr = 0.5, 0.01, 0.2
    opt = make_optimizer("asam", [weight, bias], lr=lr, rho=rho)   # Kwon's eta = 0.01
    w = flat().detach().clone()
    g = grad(w)
    t = w.abs() + eta
    expected = w - lr * grad(w + rho * t * t * g / (t * g).norm())
    opt.step(_closure(opt, loss, flat))
    torch.testing.assert_close(flat().detach(), expected, rtol=0, atol=1e-13)
    sam = w - lr * grad(w + rho * g / g.norm())
    assert (expected - sam).norm() > 1e-3


def test_sam_momentum_state_survives_state_dict_round_trip():
    def make():
        weight, bias, loss, flat, _ = _quadratic(2)
        opt = make_optimizer("sam", [weight, bias], lr=0.05, momentum=0.9)
        return opt, loss, flat

    first, loss1, flat1 = make()
    for _ in range(3):
        first.step(_closure(first, loss1, flat1))
    second, loss2, flat2 = make()
    with torch.no_grad():
        for p, q in zip(second.param_groups[0]["params"], first.param_groups[0]["params"],
                        strict=True):
            p.copy_(q)
    second.load_state_dict(copy.deepcopy(first.state_dict()))   # as if read from a file
    first.step(_closure(first, loss1, flat1))
    second.step(_closure(second, loss2, flat2))
    torch.testing.assert_close(flat1(), flat2(), rtol=0, atol=0)


def _logistic_problem():
    """L2-regularized logistic regression, n=200, d=5, float64, and its optimum by Newton."""
    g = torch.Generator().manual_seed(0)
    n, d, lam = 200, 5, 0.1
    x = torch.randn(n, d, generator=g, dtype=DT)
    w_true = torch.randn(d, generator=g, dtype=DT)
    y = (torch.rand(n, generator=g, dtype=DT) < torch.sigmoid(x @ w_true)).to(DT)

    def loss(w, idx=slice(None)):
        return (nn.functional.binary_cross_entropy_with_logits(x[idx] @ w, y[idx])
                + 0.5 * lam * w @ w)

    w = torch.zeros(d, dtype=DT)
    for _ in range(30):   # Newton's method with the exact Hessian: quadratic convergence
        p = torch.sigmoid(x @ w)
        grad = x.T @ (p - y) / n + lam * w
        hess = x.T @ (x * (p * (1 - p))[:, None]) / n + lam * torch.eye(d, dtype=DT)
        w = w - torch.linalg.solve(hess, grad)
    assert grad.norm() < 1e-14
    batches = [torch.arange(i, i + 10) for i in range(0, n, 10)]   # 20 fixed batches
    smooth = max(0.25 * torch.linalg.eigvalsh(x[b].T @ x[b] / 10)[-1].item()
                 for b in batches) + lam
    return loss, float(loss(w)), batches, d, smooth


def _train_logistic(name, loss, batches, d, lr, epochs=30):
    w = torch.zeros(d, dtype=DT, requires_grad=True)
    extra = {"n_batches": len(batches)} if name == "sag" else {}
    opt = make_optimizer(name, [w], lr=lr, **extra)
    rng = np.random.default_rng(1)
    for _ in range(epochs):
        if "snapshot" in opt.requires:
            def full():
                opt.zero_grad()
                value = loss(w)
                value.backward()
                return value
            opt.update_snapshot(full)
        for _ in range(len(batches)):
            i = int(rng.integers(len(batches)))

            def closure(i=i):
                opt.zero_grad()
                value = loss(w, batches[i])
                value.backward()
                return value
            if "batch_index" in opt.requires:
                opt.step(closure, index=i)
            else:
                opt.step(closure)
    return loss(w).item()


def test_svrg_and_sag_converge_linearly_where_constant_step_sgd_stalls():
    loss, best, batches, d, smooth = _logistic_problem()
    lr = 1.0 / smooth
    gaps = {name: _train_logistic(name, loss, batches, d, lr) - best
            for name in ("sgd", "svrg", "sag")}
    print(f"suboptimality after 30 epochs, step 1/L = {lr:.3f}: {gaps}")
    assert gaps["svrg"] < 1e-6 and gaps["sag"] < 1e-6
    assert gaps["sgd"] > 1e-4          # SGD's noise floor, orders of magnitude above
    assert min(gaps.values()) > -1e-12  # nobody beats Newton's optimum


_LR = {"sgd": 0.2, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.05, "rmsprop": 0.005,
       "adadelta": 1.0, "adam": 0.01, "adamw": 0.01, "lbfgs": 0.5, "svrg": 0.2, "sag": 0.2,
       "sam": 0.2, "asam": 0.2}


def _drive(opt, model, x, y, batches, epochs):
    """The trainer's side of the step protocol, following ``optimizer.requires``."""
    loss_fn = nn.functional.cross_entropy

    def closure_for(idx):
        def closure():
            opt.zero_grad()
            value = loss_fn(model(x[idx]), y[idx])
            value.backward()
            return value
        return closure

    everything = torch.arange(len(x))
    for epoch in range(epochs):
        if "full_batch" in opt.requires:
            opt.step(closure_for(everything))
            continue
        if "snapshot" in opt.requires:
            opt.update_snapshot(closure_for(everything))
        order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(epoch))
        for i in order.tolist():
            if "batch_index" in opt.requires:
                opt.step(closure_for(batches[i]), index=i)
            else:
                opt.step(closure_for(batches[i]))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_by_name_lowers_the_loss_of_a_tiny_model(name):
    torch.manual_seed(0)
    x = torch.randn(60, 4)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 0.5).long()
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    batches = [torch.arange(i, i + 15) for i in range(0, 60, 15)]
    extra = {"n_batches": len(batches)} if name == "sag" else {}
    opt = make_optimizer(name, model.parameters(), lr=_LR[name], **extra)
    assert "closure" in opt.requires
    with torch.no_grad():
        before = float(nn.functional.cross_entropy(model(x), y))
    _drive(opt, model, x, y, batches, epochs=5)
    with torch.no_grad():
        after = float(nn.functional.cross_entropy(model(x), y))
    assert after < before - 0.02, (name, before, after)


def test_requires_names_what_the_trainer_must_pass():
    w = [torch.zeros(2, requires_grad=True)]
    req = {n: make_optimizer(n, w, lr=0.1, **({"n_batches": 3} if n == "sag" else {})).requires
           for n in OPTIMIZERS}
    assert req["sag"] == {"closure", "batch_index"}
    assert req["svrg"] == {"closure", "reevaluate", "snapshot"}
    assert req["lbfgs"] == {"closure", "reevaluate", "full_batch"}
    assert req["sam"] == req["asam"] == {"closure", "reevaluate"}
    assert all(req[n] == {"closure"} for n in OPTIMIZERS
               if n not in ("sag", "svrg", "lbfgs", "sam", "asam"))


def test_momentum_aliases_and_options_reach_torch():
    w = [torch.zeros(2, requires_grad=True)]
    assert make_optimizer("momentum", w, lr=0.1).param_groups[0]["momentum"] == 0.9
    nest = make_optimizer("nesterov", w, lr=0.1).param_groups[0]
    assert nest["nesterov"] and nest["momentum"] == 0.9
    assert make_optimizer("sgd", w, lr=0.1).param_groups[0]["momentum"] == 0.0
    assert make_optimizer("adam", w, lr=0.1, betas=(0.8, 0.9)).param_groups[0]["betas"] == (0.8,
                                                                                           0.9)
    assert make_optimizer("sam", w, lr=0.1).param_groups[0]["rho"] == 0.05
    assert make_optimizer("asam", w, lr=0.1).param_groups[0]["rho"] == 0.5


@pytest.mark.parametrize("call, message", [
    (lambda w: make_optimizer("adamm", w, lr=0.1), "did you mean 'adam'"),
    (lambda w: make_optimizer("sgd", w, lr=0.0), "learning rate must be positive"),
    (lambda w: make_optimizer("adam", w, lr=-1e-3), "learning rate must be positive"),
    (lambda w: make_optimizer("adam", w, lr=0.1, momentum=0.9), "has no momentum"),
    (lambda w: make_optimizer("sgd", w, lr=0.1, rho=0.1), "SAM/ASAM radius"),
    (lambda w: make_optimizer("sag", w, lr=0.1), "n_batches"),
    (lambda w: make_optimizer("adam", w, lr=0.1, bogus=1), "bad option"),
    (lambda w: make_optimizer("sam", w, lr=0.1, rho=0.0), "rho must be positive"),
    (lambda w: make_optimizer("svrg", w, lr=0.1).step(lambda: torch.zeros(())),
     "update_snapshot"),
])
def test_bad_names_and_settings_raise_landscape_error(call, message):
    w = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(LandscapeError, match=message):
        call(w)


def _sag(batches, d, lr, **extra):
    """SAG over one float64 vector w = 0 (``extra``: ``batch_sizes``); (optimizer, w)."""
    w = torch.zeros(d, dtype=DT, requires_grad=True)
    return make_optimizer("sag", [w], lr=lr, n_batches=len(batches), **extra), w


def _sag_steps(opt, w, loss, batches, order):
    """SAG steps over the batch indices ``order``; the parameters after them."""
    def closure_for(i):
        def closure():
            opt.zero_grad()
            value = loss(w, batches[i])
            value.backward()
            return value
        return closure

    for i in order:
        opt.step(closure_for(i), index=i)
    return w.detach().clone()


def _run_sag(loss, batches, d, lr, order, **extra):
    """SAG from w = 0 over the batch indices ``order``; the final parameters."""
    return _sag_steps(*_sag(batches, d, lr, **extra), loss, batches, order)

def _unequal_logistic():
    """L2-regularized logistic regression, n = 23 in fixed batches 5,5,5,4,4, float64, and
    the minimizer of its sample-mean loss by Newton's method."""
    g = torch.Generator().manual_seed(0)
    n, d, lam = 23, 4, 0.1
    x = torch.randn(n, d, generator=g, dtype=DT)
    y = (torch.rand(n, generator=g, dtype=DT)
         < torch.sigmoid(x @ torch.randn(d, generator=g, dtype=DT))).to(DT)
    batches = list(torch.tensor_split(torch.arange(n), 5))
    sizes = [len(b) for b in batches]
    assert sizes == [5, 5, 5, 4, 4]

    def loss(w, idx=slice(None)):
        return (nn.functional.binary_cross_entropy_with_logits(x[idx] @ w, y[idx])
                + 0.5 * lam * w @ w)

    def full_grad(w):  # closed form, not autograd
        return x.T @ (torch.sigmoid(x @ w) - y) / n + lam * w

    best = torch.zeros(d, dtype=DT)
    for _ in range(30):   # Newton's method on the sample-mean loss
        p = torch.sigmoid(x @ best)
        hess = x.T @ (x * (p * (1 - p))[:, None]) / n + lam * torch.eye(d, dtype=DT)
        best = best - torch.linalg.solve(hess, full_grad(best))
    return loss, full_grad, batches, sizes, d, best


def test_sag_with_unequal_batches_converges_to_the_minimizer_of_the_mean_loss():
    """n = 23 in fixed batches 5,5,5,4,4: weighting the table by batch size gives the
    sample-mean minimizer (Newton's), the unweighted table of batch means does not."""
    loss, full_grad, batches, sizes, d, best = _unequal_logistic()
    rng = np.random.default_rng(1)
    order = [i for _ in range(100) for i in rng.permutation(5).tolist()]
    limits = {"weighted": _run_sag(loss, batches, d, 0.5, order, batch_sizes=sizes),
              "unweighted": _run_sag(loss, batches, d, 0.5, order)}
    norms = {k: full_grad(v).norm().item() for k, v in limits.items()}
    print(f"full-gradient norm at the SAG limit, n=23 in 5,5,5,4,4: {norms}")
    assert norms["weighted"] < 1e-13
    assert (limits["weighted"] - best).norm() < 1e-12
    assert norms["unweighted"] > 1e-3     # the old weighting: a different (biased) point


def test_sag_equal_batch_sizes_give_the_unweighted_update_bit_for_bit():
    loss, _, batches, d, _ = _logistic_problem()
    order = [3, 0, 3, 7, 1]
    assert torch.equal(_run_sag(loss, batches, d, 0.3, order),
                       _run_sag(loss, batches, d, 0.3, order, batch_sizes=[10] * len(batches)))


@pytest.mark.parametrize("scale", ["all", "weights"])
def test_asam_perturbation_scales_biases_only_in_mode_all(scale):
    """The ascent point of one ASAM step, read at the closure's second call. With
    asam_scale="weights" (SamsungLabs/ASAM's asam.py) tensors named *weight* (here also a
    normalization scale "norm.weight") get rho T^2 g / ||v|| and the bias rho g / ||v||, with
    v = (T g for weights, g for the bias)."""
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(2, 3, generator=gen, dtype=DT).requires_grad_(True)
    scale_w = torch.randn(2, generator=gen, dtype=DT).requires_grad_(True)
    bias = torch.randn(2, generator=gen, dtype=DT).requires_grad_(True)
    xin = torch.randn(5, 3, generator=gen, dtype=DT)
    named = [("lin.weight", weight), ("norm.weight", scale_w), ("lin.bias", bias)]
    rho, eta = 0.5, 0.01
    opt = make_optimizer("asam", named, lr=0.1, rho=rho, eta=eta, asam_scale=scale)
    points = []

    def closure():
        opt.zero_grad()
        points.append([p.detach().clone() for _, p in named])
        value = (torch.tanh(xin @ weight.T) * scale_w + bias).pow(2).sum()
        value.backward()
        return value

    start = [p.detach().clone() for _, p in named]
    opt.zero_grad()
    closure()
    grads = [p.grad.clone() for _, p in named]
    points.clear()
    opt.step(closure)
    e = [q - p for q, p in zip(points[1], start, strict=True)]
    ts = [p.abs() + eta for p in start]
    if scale == "all":
        ts_used = ts
    else:
        ts_used = [ts[0], ts[1], torch.ones_like(start[2])]   # the bias is not scaled
    norm = torch.sqrt(sum(((t * g) ** 2).sum() for t, g in zip(ts_used, grads, strict=True)))
    for ei, t, g in zip(e, ts_used, grads, strict=True):
        torch.testing.assert_close(ei, rho * t * t * g / norm, rtol=1e-12, atol=1e-14)
    bias_unscaled = rho * grads[2] / norm
    assert torch.allclose(e[2], bias_unscaled) == (scale == "weights")


def test_asam_scale_weights_needs_names_and_the_asam_optimizer():
    w = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(LandscapeError, match="named parameters"):
        make_optimizer("asam", w, lr=0.1, asam_scale="weights")
    with pytest.raises(LandscapeError, match="option of optimizer 'asam'"):
        make_optimizer("sam", w, lr=0.1, asam_scale="weights")
    with pytest.raises(LandscapeError, match="unknown ASAM scale"):
        make_optimizer("asam", w, lr=0.1, asam_scale="bias")


def test_sag_state_saved_before_weighting_is_rebuilt_on_its_next_step():
    """A state whose ``sum`` is the unweighted sum of the table (and has no ``weights``) gets
    its weighted sum rebuilt, then continues as if it had always been weighted."""
    loss, _, batches, sizes, d, _ = _unequal_logistic()
    first, rest = [0, 3, 1, 4, 2], [4, 0, 2, 2, 1, 3]
    opt1, w1 = _sag(batches, d, 0.5, batch_sizes=sizes)
    _sag_steps(opt1, w1, loss, batches, first)
    legacy = copy.deepcopy(opt1.state_dict())
    state = legacy["state"][0]
    state["sum"] = state["table"].sum(0)      # what the unweighted code kept
    del state["weights"]
    assert not torch.allclose(state["sum"], opt1.state[w1]["sum"])
    opt2, w2 = _sag(batches, d, 0.5, batch_sizes=sizes)
    with torch.no_grad():
        w2.copy_(w1)
    opt2.load_state_dict(legacy)
    whole = _sag_steps(opt1, w1, loss, batches, rest)
    torch.testing.assert_close(_sag_steps(opt2, w2, loss, batches, rest), whole,
                               rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_kernel_options_give_the_per_tensor_loops_numbers(name):
    """The trainer's step kernels: foreach gives torch's per-tensor loop bit for bit; a
    fused step agrees with it to float32 rounding after 30 steps (same update, contracted
    multiply-adds); sparse embeddings and non-torch optimizers keep torch's own choice."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    kernels = kernel_options(name, model)
    assert kernels == ({"fused": True} if name in FUSED else {"foreach": True})
    extra = {"weight_decay": 1e-3} if name != "adadelta" else {}
    runs = []
    for options in ({}, kernels):
        net = copy.deepcopy(model)
        opt = make_optimizer(name, net.parameters(), lr=_LR[name], **extra, **options)
        g = torch.Generator().manual_seed(1)
        for _ in range(30):
            for p in net.parameters():
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
        runs.append(torch.cat([p.detach().reshape(-1) for p in net.parameters()]))
    if "foreach" in kernels:
        assert torch.equal(*runs)
    else:
        assert torch.allclose(*runs, rtol=1e-5, atol=1e-6)
    assert kernel_options(name, nn.Sequential(nn.Embedding(4, 2, sparse=True))) == {}
    assert kernel_options("sam", model) == {} == kernel_options("lbfgs", model)
