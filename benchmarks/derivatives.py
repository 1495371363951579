"""Derivative products of the engine against their peers, side by side in one process.

Three parts, each timed interleaved (every method once per round, ``--repeats`` rounds,
medians), each printing the values the methods compute so that equal work is compared:

1. ``block``: a block of K Hessian-vector products by double backward, as the engine did
   before (one forward pass and one ``create_graph`` gradient per vector and data chunk,
   written out here) and as it does now (one graph per chunk shared by the K vectors); the
   same for GGN products (before: ``jvp`` and ``vjp`` of the forward pass, two passes per
   chunk, vectorized by ``vmap``; now one forward pass per chunk); forward calls counted by
   a hook. Default: MLP 64-100-100-10 on 4,096 random samples and LeNet on 1,024 random
   28x28 images, each in 4 chunks, K = 8.
2. ``hutchinson``: 99 Hutchinson probes (Rademacher) on the digits MLP (1,437 samples, one
   chunk): the engine's block ``hvp`` against PyHessian's ``hessian.trace`` (Yao et al. 2020;
   it keeps one gradient graph and backpropagates per probe) and curvlinops'
   ``HessianLinearOperator @ V`` (a [P, 99] block), each building its gradient graph once
   per call. Values: each method's Hv on one common
   probe (relative difference to the engine's) and the trace estimates.
3. ``noise``: ``tr(Sigma)`` (1/N) and ``|G|^2`` of the per-sample gradients, by the engine's
   ``gradient_noise`` (``norms``: per-sample gradient norms from one backward pass;
   ``per_sample``: vmap per-sample gradients) against BackPACK's ``Variance`` and
   ``BatchGrad`` extensions (Dangel et al. 2020), on the digits MLP and on LeNet with 2,000
   random 28x28 images, all in float32 with a float64 engine run as the reference.

Peers come from the ``bench`` extra (BackPACK with ``pip install --no-deps``, see
``benchmarks/README.md``). Run: ``python benchmarks/derivatives.py [--parts block,noise]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, jvp, vjp, vmap

from landscape.analysis.noise import gradient_noise
from landscape.data import load_dataset
from landscape.models import build_model
from landscape.objective import Objective


def medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, called in turn once per round after a warm-up."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def digits_mlp(seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    data = load_dataset("digits")
    torch.manual_seed(seed)
    model = build_model("mlp", data.input_shape, data.num_outputs, widths=(100, 100))
    return model.eval(), data.x_train, data.y_train


def rel(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


# ------------------------------------------------------------------------------------------
def block_part(args: argparse.Namespace) -> None:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    cases = {
        "MLP 64-100-100-10": (build_model("mlp", (64,), 10, widths=(100, 100)),
                              torch.randn(args.block_n, 64, generator=g)),
        "LeNet, 28x28": (build_model("lenet", (1, 28, 28), 10),
                         torch.randn(args.block_n // 4, 1, 28, 28, generator=g)),
    }
    for label, (model, x) in cases.items():
        y = torch.randint(0, 10, (x.shape[0],), generator=g)
        obj = Objective(model, (x, y), device="cpu", batch_size=x.shape[0] // args.chunks)
        block_case(f"{label}, {x.shape[0]} samples in {args.chunks} chunks", obj, args, g)


def block_case(label: str, obj: Objective, args: argparse.Namespace,
               g: torch.Generator) -> None:
    theta = obj.theta0
    vs = torch.randn(args.k, theta.numel(), generator=g)
    calls = [0]
    obj.model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))

    def chunks() -> zip:
        return zip(obj.x.split(obj.batch_size), obj.y.split(obj.batch_size))

    def hvp_before() -> Tensor:  # the engine's former path: one graph per vector and chunk
        out = torch.zeros_like(vs)
        for xb, yb in chunks():
            for k, v in enumerate(vs):
                t = theta.detach().requires_grad_(True)
                (gr,) = torch.autograd.grad(obj.batch_loss(t, xb, yb), t, create_graph=True)
                out[k] += xb.shape[0] / obj.n * torch.autograd.grad(gr, t, v)[0]
        return out

    def ggn_before() -> Tensor:  # the former GGN: jvp and vjp of the forward (two passes)
        def one(v: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
            def f(t: Tensor) -> Tensor:
                return obj.forward(t, xb)

            out, jv = jvp(f, (theta,), (v,))
            _, hjv = jvp(lambda z: grad(lambda z_: F.cross_entropy(z_, yb))(z), (out,), (jv,))
            return vjp(f, theta)[1](hjv)[0]

        out = torch.zeros_like(vs)
        for xb, yb in chunks():
            out += xb.shape[0] / obj.n * vmap(one, in_dims=(0, None, None))(vs, xb, yb)
        return out

    fns = {"HVP before": hvp_before, "HVP after": lambda: obj.hvp(theta, vs),
           "GGN before": ggn_before, "GGN after": lambda: obj.ggn_vp(theta, vs)}
    counts = {}
    for name, fn in fns.items():
        calls[0] = 0
        fn()
        counts[name] = calls[0]
    times = medians(fns, args.repeats)
    print(f"block of {args.k} products, {label}: relative difference after vs before: "
          f"HVP {rel(fns['HVP after'](), hvp_before()):.1e}, "
          f"GGN {rel(fns['GGN after'](), ggn_before()):.1e}")
    for name in times:
        print(f"  {name}: {counts[name]} forward calls, {times[name]:.3f} s")
    for product in ("HVP", "GGN"):
        print(f"  {product} speed-up {times[product + ' before'] / times[product + ' after']:.2f}x")


# ------------------------------------------------------------------------------------------
def hutchinson_part(args: argparse.Namespace) -> None:
    from curvlinops import HessianLinearOperator
    from pyhessian import hessian as PyHessian

    model, x, y = digits_mlp()
    obj = Objective(model, (x, y), device="cpu")
    theta, p = obj.theta0, obj.space.numel
    g = torch.Generator().manual_seed(1)
    probes = torch.randint(0, 2, (args.probes, p), generator=g).float() * 2 - 1
    criterion = nn.CrossEntropyLoss()
    ph = PyHessian(model, criterion, data=(x, y), cuda=False)
    params = [q for q in model.parameters()]
    op = HessianLinearOperator(model, criterion, params, [(x, y)], check_deterministic=False)

    def engine() -> Tensor:
        return obj.hvp(theta, probes)

    def pyhessian() -> list[float]:  # its graph is built at construction, as ours per call
        values = PyHessian(model, criterion, data=(x, y), cuda=False).trace(
            maxIter=args.probes, tol=-math.inf)  # no early stop
        assert len(values) == args.probes
        return values

    def curvlinops() -> Tensor:
        return (op @ probes.T).T

    times = medians({"engine": engine, "pyhessian": pyhessian, "curvlinops": curvlinops},
                    args.repeats)
    ours = engine()
    v = probes[0]
    views = [t.reshape(q.shape) for t, q in zip(v.split([q.numel() for q in params]), params)]
    from pyhessian.utils import hessian_vector_product

    ph_hv = torch.cat([h.reshape(-1) for h in hessian_vector_product(ph.gradsH, ph.params,
                                                                      views)])
    cl = curvlinops()
    print(f"Hutchinson, digits MLP (P = {p}, N = {obj.n}), {args.probes} probes:")
    print(f"  Hv on one probe vs the engine: PyHessian {rel(ph_hv, ours[0]):.1e}, "
          f"curvlinops {rel(cl[0], ours[0]):.1e}")
    print(f"  trace estimates: engine {float((probes * ours).sum(1).mean()):.4f}, "
          f"curvlinops {float((probes * cl).sum(1).mean()):.4f}, PyHessian (own probes) "
          f"{statistics.mean(pyhessian()):.4f}")
    for name, t in times.items():
        print(f"  {name}: {t:.3f} s, {1e3 * t / args.probes:.2f} ms per HVP "
              f"({t / times['engine']:.2f}x the engine)")


# ------------------------------------------------------------------------------------------
def backpack_noise(model: nn.Module, x: Tensor, y: Tensor, extension: str,
                   ) -> tuple[float, float]:
    """(tr Sigma with 1/N, |G|^2) from BackPACK's Variance or BatchGrad (sum reduction, so
    the individual gradients are the per-sample losses' gradients)."""
    from backpack import backpack, extend
    from backpack.extensions import BatchGrad, Variance

    loss = extend(nn.CrossEntropyLoss(reduction="sum"))(model(x), y)
    with backpack(Variance() if extension == "variance" else BatchGrad()):
        loss.backward()
    n = x.shape[0]
    params = list(model.parameters())
    grad_sq = sum(float((q.grad.double() / n).square().sum()) for q in params)
    if extension == "variance":  # BackPACK's variance: (1/N) sum g_i^2 - mean^2, per entry
        trace = sum(float(q.variance.double().sum()) for q in params)
    else:
        gb = torch.cat([q.grad_batch.reshape(n, -1) for q in params], 1).double()
        trace = float((gb - gb.mean(0)).square().sum()) / n
    for q in params:
        q.grad = None
    return trace, grad_sq


def noise_part(args: argparse.Namespace) -> None:
    from backpack import extend

    g = torch.Generator().manual_seed(2)
    cases = {"digits MLP": digits_mlp()}
    torch.manual_seed(0)
    lenet = build_model("lenet", (1, 28, 28), 10).eval()
    cases["LeNet, 2,000 random 28x28"] = (lenet, torch.randn(2000, 1, 28, 28, generator=g),
                                          torch.randint(0, 10, (2000,), generator=g))
    for label, (model, x, y) in cases.items():
        obj = Objective(model, (x, y), device="cpu")
        ref = gradient_noise(Objective(model, (x, y), device="cpu", precision="float64"),
                             batch_size=1)
        extended = extend(model)
        fns = {
            "engine norms": lambda obj=obj: gradient_noise(obj, batch_size=1),
            "engine per_sample": lambda obj=obj: gradient_noise(obj, batch_size=1,
                                                                method="per_sample"),
            "backpack Variance": lambda m=extended, x=x, y=y: backpack_noise(m, x, y,
                                                                             "variance"),
            "backpack BatchGrad": lambda m=extended, x=x, y=y: backpack_noise(m, x, y,
                                                                              "batchgrad"),
        }
        times = medians(fns, args.repeats)
        print(f"gradient noise, {label} (N = {obj.n}, P = {obj.space.numel}); float64 "
              f"reference tr(Sigma) {ref.trace_cov:.6g}, |G|^2 {ref.grad_norm_sq:.6g}:")
        for name, fn in fns.items():
            res = fn()
            trace, grad_sq = ((res.trace_cov, res.grad_norm_sq) if hasattr(res, "trace_cov")
                              else res)
            print(f"  {name}: {1e3 * times[name]:.1f} ms "
                  f"({times[name] / times['backpack Variance']:.2f}x BackPACK Variance); "
                  f"relative error vs float64: tr(Sigma) "
                  f"{abs(trace / ref.trace_cov - 1):.1e}, |G|^2 "
                  f"{abs(grad_sq / ref.grad_norm_sq - 1):.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="block,hutchinson,noise")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--block-n", type=int, default=4096)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--probes", type=int, default=99)
    args = parser.parse_args()
    parts = {"block": block_part, "hutchinson": hutchinson_part, "noise": noise_part}
    for name in args.parts.split(","):
        parts[name](args)


if __name__ == "__main__":
    main()
