"""Issue 18's table: each row measured side by side with its named peer, in one process.

Rows (the default digits MLP of ``landscape train``, its run in ``--run``, unless said):

- ``precision``: float32 HVP error against float64 on one random vector (relative norm): the
  engine, a plain double backward through ``F.cross_entropy``, PyHessian's
  ``hessian_vector_product`` and curvlinops' ``HessianLinearOperator``; the top-5 float32
  eigenvalues' largest relative error against float64 and the largest reported residual
  (an honest bound is at least the error).
- ``noise``: ``tr(Sigma)`` float32 error against float64: ``gradient_noise`` (norms and
  per-sample gradients) and BackPACK's ``Variance``.
- ``lanczos``: top-5 eigenvalues at tol 1e-3, seconds per HVP (the whole call, gradient
  graph included, over its products): the engine's Lanczos against PyHessian's deflated
  power iteration (HVPs counted by wrapping its product function); and the engine's
  default float32 call, whose float64 verification products count as products.
- ``trace``: 150 HVPs, seconds per HVP: the engine's Hutchinson and Hutch++ against
  PyHessian's ``trace`` (no early stop).
- ``surface``: ``--grid`` x ``--grid`` (21) filter-normalized planes of MLPs of hidden
  widths ``--widths`` on the digits, seconds per point: ``Objective.evaluate_plane``
  against loss-landscapes' ``random_plane``, with the minor page faults per point (glibc
  returning freed activations to the system and faulting them back in).
- ``streaming``: per-sample gradients of 2,000 samples (``per_sample_grads``), the data
  streamed (a re-iterable of 64-sample batches, counted) against resident.
- ``train``: ``landscape.train`` with the CLI defaults (20 epochs, train and test
  evaluation at the initialization and after every epoch, a checkpoint at epoch 0, every
  ``--save-every`` epochs and the last) against the plain torch loop a user would write for
  the same work (:func:`plain_loop`: the same evaluation, ``torch.save`` of the same state
  at the same epochs), seconds.

Every timing is a median over ``--rounds`` rounds in which the contenders take turns (the
machine is shared); ``--clock cpu`` times CPU seconds of the process instead of wall
seconds. Peers: the ``bench`` extra (see ``benchmarks/README.md``).
Run: ``python benchmarks/peers.py --run outputs/runs/mlp-digits [--parts precision,...]``.
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

import landscape
from landscape.analysis.hessian import hessian_eigenvalues, hessian_trace
from landscape.analysis.noise import gradient_noise
from landscape.data import load_dataset
from landscape.models import build_model
from landscape.objective import Objective


def turns(fns: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each function's returned seconds per round, the functions taking turns (their order
    reversed every other round)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        for name, fn in (list(fns.items()) if r % 2 == 0 else reversed(fns.items())):
            times[name].append(fn())
    return times


def medians(fns: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median of each function's returned seconds over :func:`turns`."""
    return {name: statistics.median(t) for name, t in turns(fns, rounds).items()}


#: The clock of every timing: wall seconds, or with ``--clock cpu`` this process's CPU seconds
#: (all threads; steadier than wall time on a machine shared with other jobs).
CLOCK: list[Callable[[], float]] = [time.perf_counter]


def timed(fn: Callable[[], object]) -> float:
    start = CLOCK[0]()
    fn()
    return CLOCK[0]() - start


def per_point(fn: Callable[[], object], points: int, faults: list[float]) -> float:
    """Seconds per point of ``fn()``; its minor page faults per point are appended to
    ``faults``."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = timed(fn) / points
    faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / points)
    return seconds


def rel(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def objectives(run: landscape.Run) -> tuple[Objective, Objective]:
    return (Objective(run.model, run.data, device="cpu"),
            Objective(run.model, run.data, device="cpu", precision="float64"))


def flat_hvp(model: nn.Module, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
    """A plain double backward through ``F.cross_entropy`` (what a user would write)."""
    params = dict(model.named_parameters())
    theta = torch.cat([p.detach().reshape(-1) for p in params.values()]).requires_grad_(True)
    views = dict(zip(params, theta.split([p.numel() for p in params.values()])))
    views = {k: t.view(params[k].shape) for k, t in views.items()}
    (g,) = torch.autograd.grad(F.cross_entropy(functional_call(model, views, (x,)), y), theta,
                               create_graph=True)
    return torch.autograd.grad(g, theta, v)[0]


def precision_part(args: argparse.Namespace, run: landscape.Run) -> None:
    from curvlinops import HessianLinearOperator
    from pyhessian import hessian as PyHessian
    from pyhessian.utils import hessian_vector_product

    o32, o64 = objectives(run)
    x, y = o32.x, o32.y
    v = torch.randn(o32.space.numel, generator=torch.Generator().manual_seed(0))
    truth = o64.hvp(o64.theta0, v.double())
    model = run.model.float().eval()
    ph = PyHessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False)
    views = [t.reshape(q.shape) for t, q in zip(v.split([q.numel() for q in ph.params]),
                                                ph.params)]
    ph_hv = torch.cat([h.reshape(-1) for h in hessian_vector_product(ph.gradsH, ph.params,
                                                                      views)])
    op = HessianLinearOperator(model, nn.CrossEntropyLoss(), list(model.parameters()),
                               [(x, y)], check_deterministic=False)
    print("float32 HVP error vs float64 (one random vector, relative norm):")
    print(f"  engine {rel(o32.hvp(o32.theta0, v), truth):.2g}; plain double backward with "
          f"F.cross_entropy {rel(flat_hvp(model, x, y, v), truth):.2g}; PyHessian "
          f"{rel(ph_hv, truth):.2g}; curvlinops {rel(op @ v, truth):.2g}")
    exact = hessian_eigenvalues(o64, k=5, tol=1e-10, max_iter=400)
    for tol in (1e-3, 1e-6):
        e = hessian_eigenvalues(o32, k=5, tol=tol)
        err = ((e.eigenvalues - exact.eigenvalues).abs() / exact.eigenvalues.abs()).max()
        print(f"  top-5 float32 at tol {tol:g}: largest relative error {float(err):.2g}, "
              f"largest reported residual {float(e.residuals.max()):.2g}, converged "
              f"{int(e.converged.sum())}/5, {e.n_hvp} HVPs; warnings {e.warnings()}")


def noise_part(args: argparse.Namespace, run: landscape.Run) -> None:
    from backpack import backpack, extend
    from backpack.extensions import Variance

    o32, o64 = objectives(run)
    ref = gradient_noise(o64, batch_size=1).trace_cov
    model = extend(copy.deepcopy(run.model).float().eval())  # (its hooks stay on the copy)
    loss = extend(nn.CrossEntropyLoss(reduction="sum"))(model(o32.x), o32.y)
    with backpack(Variance()):
        loss.backward()
    bp = sum(float(q.variance.double().sum()) for q in model.parameters())
    norms = gradient_noise(o32, batch_size=1).trace_cov
    vmapped = gradient_noise(o32, batch_size=1, method="per_sample").trace_cov
    print(f"gradient noise tr(Sigma) float32 error vs float64 ({ref:.6g}): engine norms "
          f"{abs(norms / ref - 1):.2g}, engine per-sample {abs(vmapped / ref - 1):.2g}, "
          f"BackPACK Variance {abs(bp / ref - 1):.2g}")


def counted_pyhessian() -> list[int]:
    """Counts PyHessian's Hessian-vector products (the module's own name for the function)."""
    module = sys.modules["pyhessian.hessian"]
    calls = [0]
    real = module.hessian_vector_product

    def counting(*a: object) -> object:
        calls[0] += 1
        return real(*a)

    module.hessian_vector_product = counting
    return calls


def lanczos_part(args: argparse.Namespace, run: landscape.Run) -> None:
    from pyhessian import hessian as PyHessian

    o32, _ = objectives(run)
    model = run.model.float().eval()
    calls = counted_pyhessian()
    hvps: dict[str, float] = {}

    def engine(verify: bool) -> float:
        """Seconds per product of the whole call; with ``verify`` (the default for float32)
        its float64 residual products are counted with the Lanczos HVPs (``n_hvp``)."""
        o = Objective(run.model, run.data, device="cpu")
        t = CLOCK[0]()
        e = hessian_eigenvalues(o, k=5, tol=1e-3, verify=verify)
        hvps["verified" if verify else "engine"] = e.n_hvp
        return (CLOCK[0]() - t) / e.n_hvp

    def pyhessian() -> float:
        calls[0] = 0
        t = CLOCK[0]()
        PyHessian(model, nn.CrossEntropyLoss(), data=(o32.x, o32.y), cuda=False).eigenvalues(
            top_n=5, tol=1e-3)
        hvps["PyHessian"] = calls[0]
        return (CLOCK[0]() - t) / calls[0]

    times = medians({"engine": lambda: engine(False), "verified": lambda: engine(True),
                     "PyHessian": pyhessian}, args.rounds)
    print(f"top-5 eigenvalues, seconds per HVP: engine Lanczos {1e3 * times['engine']:.1f} ms "
          f"({hvps['engine']} HVPs), PyHessian {1e3 * times['PyHessian']:.1f} ms "
          f"({hvps['PyHessian']} HVPs): ratio {times['PyHessian'] / times['engine']:.2f}x; "
          f"engine with the float64 verification (the float32 default) "
          f"{1e3 * times['verified']:.1f} ms per product ({hvps['verified']} products, "
          f"{hvps['verified'] - hvps['engine']} of them float64): ratio "
          f"{times['PyHessian'] / times['verified']:.2f}x")


def trace_part(args: argparse.Namespace, run: landscape.Run) -> None:
    from pyhessian import hessian as PyHessian

    o32, _ = objectives(run)
    model = run.model.float().eval()

    def engine(method: str) -> float:
        o = Objective(run.model, run.data, device="cpu")
        return timed(lambda: hessian_trace(o, method=method, max_probes=150, min_probes=150,
                                           rtol=1e-12)) / 150

    def pyhessian() -> float:
        return timed(lambda: PyHessian(model, nn.CrossEntropyLoss(), data=(o32.x, o32.y),
                                       cuda=False).trace(maxIter=150, tol=-1.0)) / 150

    times = medians({"hutchinson": lambda: engine("hutchinson"),
                     "hutch++": lambda: engine("hutch++"), "PyHessian": pyhessian},
                    args.rounds)
    print("trace, 150 HVPs, per HVP: " + ", ".join(
        f"{k} {1e3 * t:.1f} ms ({times['PyHessian'] / t:.2f}x)" for k, t in times.items()))


def surface_part(args: argparse.Namespace, run: landscape.Run) -> None:
    import loss_landscapes
    import loss_landscapes.metrics

    from landscape.surface.directions import random_direction

    data = load_dataset("digits")
    x, y = data.x_train, data.y_train
    n = args.grid
    a, b = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="xy")
    coords = torch.stack([a.reshape(-1), b.reshape(-1)], 1)
    for width in args.widths:
        torch.manual_seed(0)
        model = build_model("mlp", data.input_shape, data.num_outputs,
                            widths=(width, width)).eval()
        obj = Objective(model, (x, y), device="cpu")
        dirs = torch.stack([random_direction(obj.space, obj.theta0, s) for s in (0, 1)])
        metric = loss_landscapes.metrics.Loss(F.cross_entropy, x, y)
        faults: dict[str, list[float]] = {"engine": [], "loss-landscapes": []}
        times = medians({
            "engine": lambda o=obj, d=dirs, f=faults["engine"]: per_point(
                lambda: o.evaluate_plane(o.theta0, d, coords), n**2, f),
            "loss-landscapes": lambda m=model, met=metric, f=faults["loss-landscapes"]: per_point(
                lambda: loss_landscapes.random_plane(m, met, distance=1, steps=n,
                                                     normalization="filter",
                                                     deepcopy_model=True), n**2, f)},
            args.rounds)
        print(f"surface {n}x{n}, MLP width {width}: engine {1e3 * times['engine']:.2f} ms/point, "
              f"loss-landscapes {1e3 * times['loss-landscapes']:.2f} ms/point: ratio "
              f"{times['loss-landscapes'] / times['engine']:.2f}x; minor page faults per point "
              f"(median) engine {statistics.median(faults['engine']):.1f}, loss-landscapes "
              f"{statistics.median(faults['loss-landscapes']):.1f}")


class Batches:
    """A re-iterable of 64-sample batches of fixed tensors that counts the batches read."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y, self.read = x, y, 0

    def __iter__(self):  # noqa: ANN204
        for s in range(0, len(self.y), 64):
            self.read += 1
            yield self.x[s : s + 64], self.y[s : s + 64]


def streaming_part(args: argparse.Namespace, run: landscape.Run) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2000, 64, generator=g), torch.randint(0, 10, (2000,), generator=g)
    torch.manual_seed(0)
    model = build_model("mlp", (64,), 10, widths=(100, 100)).eval()
    streamed_src = Batches(x, y)
    streamed = Objective(model, streamed_src, device="cpu", data_budget=1)
    resident = Objective(model, (x, y), device="cpu")
    assert not streamed.source.resident and resident.source.resident
    reads = []

    def stream() -> float:
        before = streamed_src.read
        t = timed(lambda: streamed.per_sample_grads(streamed.theta0))
        reads.append(streamed_src.read - before)
        return t

    times = medians({"streamed": stream,
                     "resident": lambda: timed(lambda: resident.per_sample_grads(
                         resident.theta0))}, args.rounds)
    print(f"per-sample gradients of 2,000 samples: streamed {times['streamed']:.2f} s "
          f"({reads[-1]} batches read per call), resident {times['resident']:.2f} s: "
          f"{times['streamed'] / times['resident']:.2f}x")


def plain_loop(epochs: int, out: Path, save_every: int = 1, seed: int = 0) -> None:
    """The loop a user would write for the work of ``landscape.train``'s defaults: the default
    MLP (seeded init), the data resident, momentum SGD (lr 0.05, batch 64), the full train and
    test loss and accuracy at the initialization and after every epoch, and the model,
    optimizer, random state and history saved with ``torch.save`` into ``out`` at the
    initialization, every ``save_every`` epochs and after the last (the trainer's
    checkpoints; it also fsyncs them and writes run.json, history files and model.pt)."""
    data = load_dataset("digits")
    torch.manual_seed(seed)
    model = build_model("mlp", data.input_shape, data.num_outputs, widths=(100, 100))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    n = len(data.y_train)
    history = []

    def evaluate_and_save(epoch: int) -> None:
        model.eval()
        row = {"epoch": epoch}
        with torch.no_grad():
            for split, xs, ys in (("train", data.x_train, data.y_train),
                                  ("test", data.x_test, data.y_test)):
                logits = model(xs)
                row[f"{split}_loss"] = F.cross_entropy(logits, ys).item()
                row[f"{split}_acc"] = (logits.argmax(1) == ys).float().mean().item()
        history.append(row)
        if epoch % save_every == 0 or epoch == epochs:
            torch.save({"epoch": epoch, "model": model.state_dict(),
                        "optimizer": opt.state_dict(), "rng": torch.get_rng_state(),
                        "history": history}, out / f"epoch_{epoch:04d}.pt")

    evaluate_and_save(0)
    for epoch in range(1, epochs + 1):
        model.train()
        for idx in torch.randperm(n).split(64):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
        evaluate_and_save(epoch)


def train_part(args: argparse.Namespace, run: landscape.Run) -> None:
    def in_tmp(fn: Callable[[Path], object]) -> float:
        with tempfile.TemporaryDirectory() as tmp:  # its removal is not timed
            return timed(lambda: fn(Path(tmp)))

    every = args.save_every
    times = turns({
        "landscape.train": lambda: in_tmp(lambda tmp: landscape.train(
            out=tmp / "run", device="cpu", progress=False, save_every=every)),
        "plain loop": lambda: in_tmp(lambda tmp: plain_loop(20, tmp, every))}, args.rounds)
    ours, plain = (statistics.median(times[k]) for k in ("landscape.train", "plain loop"))
    ratios = [p / t for p, t in zip(times["plain loop"], times["landscape.train"], strict=True)]
    q1, mid, q3 = statistics.quantiles(ratios, n=4)
    print(f"training, 20 epochs, default MLP, evaluation at epochs 0..20, a checkpoint at "
          f"epoch 0, every {every} and the last: landscape.train {ours:.3f} s, plain loop "
          f"with the same work {plain:.3f} s (medians): {plain / ours:.2f}x; per round "
          f"median {mid:.2f}x (quartiles {q1:.2f}-{q3:.2f}x, {args.rounds} rounds)")


PARTS = {"precision": precision_part, "noise": noise_part, "lanczos": lanczos_part,
         "trace": trace_part, "surface": surface_part, "streaming": streaming_part,
         "train": train_part}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="the default digits MLP run directory")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--grid", type=int, default=21, help="surface: points per axis")
    parser.add_argument("--widths", default="100,400,1600",
                        type=lambda s: [int(w) for w in s.split(",")])
    parser.add_argument("--save-every", type=int, default=1,
                        help="train: checkpoint cadence of both contenders (epochs)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="time.perf_counter or time.process_time")
    args = parser.parse_args()
    CLOCK[0] = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"clock: {args.clock}")
    torch.set_num_threads(1)
    run = landscape.load_run(args.run)
    for name in args.parts.split(","):
        PARTS[name](args, run)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
