"""Hessian benchmarks: the cost of one HVP, and top-5 eigenvalues by Lanczos vs power iteration.

Parts (``--parts``), measured side by side in one process on one model and one data set:

1. HVP cost: one forward+backward pass over the data (``Objective.loss_and_grad``) against one
   Hessian-vector product by forward-over-reverse (``torch.func.jvp`` of ``grad``) and by
   double backward, in seconds and as a multiple of the forward+backward pass; for
   forward-over-reverse also the per-vector cost of a block of K vectors sharing each data
   pass. The relative error ``||Hv - Hv_64|| / ||Hv_64||`` of each precision (float32, tf32,
   bf16 where asked) against float64.
2. Top-5 eigenvalues: thick-restart Lanczos (``landscape.analysis.hessian_eigenvalues``) at
   one or more residual tolerances, and the deflated power iteration of PyHessian
   (Yao et al. 2020, ``pyhessian.hessian.eigenvalues``) with its settings written in below:
   ``top_n=5``, at most ``maxIter=100`` HVPs per eigenvalue, stopping when the Rayleigh
   quotient changes by less than ``tol=1e-3`` relative (``|new - old| / (|old| + 1e-6)``),
   each new vector orthogonalized against the eigenvectors already found (then normalized)
   before every product. Each method's HVP count and its error against the reference are
   printed in a table: the dense float64 eigendecomposition when ``--exact-cache`` is given
   (part ``exact``), else a tightly converged Lanczos run.
3. ``exact``: the float64 Hessian from P HVPs with the unit vectors (its diagonal, and all
   its eigenvalues by a dense ``eigvalsh``), cached in ``--exact-cache``.
4. ``trace``: the relative error of Hutchinson and Hutch++ against the exact trace at several
   HVP budgets (``--trace-budgets``) over ``--trace-seeds`` seeds, the methods interleaved;
   and Hutchinson to a 1% standard error (the former ``landscape hessian --trace`` default).

Defaults are the GPU case of issue 4 (ResNet-56 on 10,000 CIFAR-shaped random images, float32,
batches of 1,000). CPU check: ``python benchmarks/hessian.py --model mlp --dataset digits
--n 512 --device cpu`` or ``--model resnet20 --n 256 --batch-size 256 --device cpu``. The
trace table and the float64 reference of the default digits MLP (``landscape train``
defaults, P = 17,610): ``--run RUN --n 100000 --device cpu --parts trace,eigen --exact-cache
exact.npz`` (the dense eigendecomposition takes minutes and 5 GB).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from landscape.analysis.hessian import hessian_eigenvalues, hessian_trace
from landscape.models import build_model
from landscape.objective import Objective, resolve_device

# PyHessian's eigenvalues() defaults, as used in its paper and README (top_n set to 5)
PYHESSIAN = {"top_n": 5, "max_iter": 100, "tol": 1e-3}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after one warm-up call (seconds)."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_problem(args: argparse.Namespace) -> tuple[torch.nn.Module, Tensor, Tensor]:
    """The model (eval mode) and the data: a run's, the embedded digits, or random images."""
    if args.run:
        from landscape.training import load_run

        run = load_run(args.run)
        x, y = run.data.split("train")
        return run.model, x[: args.n], y[: args.n]
    g = torch.Generator().manual_seed(args.seed)
    if args.dataset == "digits":
        from landscape.data import load_dataset

        data = load_dataset("digits")
        x, y = data.x_train[: args.n], data.y_train[: args.n]
        shape, classes = data.input_shape, data.num_outputs
    else:
        shape, classes = (3, 32, 32), 10
        x = torch.randn(args.n, *shape, generator=g)
        y = torch.randint(0, classes, (args.n,), generator=g)
    torch.manual_seed(args.seed)
    options = {"widths": (100, 100)} if args.model == "mlp" else {}
    model = build_model(args.model, tuple(shape), classes, **options)
    if args.train_steps:
        train_briefly(model, x, y, args.train_steps, args.seed)
    return model.eval(), x, y


def train_briefly(model: torch.nn.Module, x: Tensor, y: Tensor, steps: int, seed: int) -> None:
    """A few SGD steps (batch 128, lr 0.05, momentum 0.9) so the point is not the init."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (min(128, x.shape[0]),), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()


def objective(model: torch.nn.Module, x: Tensor, y: Tensor, args: argparse.Namespace,
              precision: str, method: str = "fwd_rev") -> Objective:
    return Objective(model, (x, y), precision=precision, device=args.device,
                     batch_size=args.batch_size, hvp_method=method)


# ------------------------------------------------------------------------------------------
def hvp_cost(model: torch.nn.Module, x: Tensor, y: Tensor, args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    obj = objective(model, x, y, args, args.precision)
    theta = obj.theta0
    g = torch.Generator().manual_seed(1)
    v = torch.randn(obj.space.numel, generator=g, dtype=torch.float64)
    v = (v / v.norm()).to(device, obj.dtype)
    rows: dict[str, float] = {}
    rows["forward+backward"] = timed(lambda: obj.loss_and_grad(theta), device, args.repeats)
    for method in ("fwd_rev", "double_backward"):
        try:
            rows[f"hvp {method}"] = timed(lambda m=method: obj.hvp(theta, v, method=m), device,
                                          args.repeats)
        except (RuntimeError, NotImplementedError) as err:
            print(f"hvp {method} failed: {str(err).splitlines()[0]}")
    for k in args.blocks:
        if k <= 1:
            continue
        block = v.expand(k, -1).contiguous()
        try:
            rows[f"hvp fwd_rev block {k} (per vector)"] = timed(
                lambda b=block: obj.hvp(theta, b, method="fwd_rev"), device, args.repeats) / k
        except (RuntimeError, NotImplementedError) as err:  # out of memory included
            print(f"block {k} failed: {str(err).splitlines()[0]}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    base = rows["forward+backward"]
    print(f"\nHVP cost: {args.model}, {obj.n} samples, batch {obj.batch_size}, "
          f"{obj.space.numel:,} parameters, {args.precision}, {device}")
    print(f"{'':40s} {'seconds':>10s} {'x fwd+bwd':>10s}")
    for name, sec in rows.items():
        print(f"{name:40s} {sec:10.4f} {sec / base:10.2f}")
    errors: dict[str, float] = {}
    if args.precisions:
        ref = objective(model, x, y, args, "float64").hvp(theta.double(), v.double())
        for prec in args.precisions:
            o = objective(model, x, y, args, prec)
            for method in ("fwd_rev", "double_backward"):
                hv = o.hvp(o.theta0, v.to(o.dtype), method=method).double()
                errors[f"{prec} {method}"] = float((hv - ref).norm() / ref.norm())
        print("\nrelative error of one HVP against float64")
        for name, err in errors.items():
            print(f"{name:40s} {err:10.2e}")
    return {"seconds": rows, "relative_to_fwd_bwd": {k: s / base for k, s in rows.items()},
            "errors_vs_float64": errors, "n": obj.n, "P": obj.space.numel}


# ------------------------------------------------------------------------------------------
def pyhessian_power_iteration(obj: Objective, top_n: int, max_iter: int, tol: float,
                              seed: int) -> tuple[list[float], int]:
    """PyHessian's ``hessian.eigenvalues``: deflated power iteration, one HVP per iteration.

    Per eigenvalue: a random normalized start; each iteration orthogonalizes the vector
    against the eigenvectors found so far and normalizes it, multiplies (one HVP), takes the
    Rayleigh quotient, and normalizes the product; it stops when the quotient changes by less
    than ``tol`` relative (``+1e-6`` in the denominator) or after ``max_iter`` HVPs.
    """
    gen = torch.Generator().manual_seed(seed)
    found_values: list[float] = []
    found_vectors: list[Tensor] = []
    n_hvp = 0
    for _ in range(top_n):
        v = torch.randn(obj.space.numel, generator=gen, dtype=torch.float64).to(obj.device,
                                                                                 obj.dtype)
        v = v / v.norm()
        value = None
        for _ in range(max_iter):
            for u in found_vectors:
                v = v - (v @ u) * u
            v = v / v.norm()
            hv = obj.hvp(obj.theta0, v)
            n_hvp += 1
            new = float(hv.double() @ v.double())
            v = hv / hv.norm()
            if value is None:
                value = new
            elif abs(value - new) / (abs(value) + 1e-6) < tol:
                break
            else:
                value = new
        found_values.append(float(value))
        found_vectors.append(v)
    return found_values, n_hvp


def top_eigenvalues(model: torch.nn.Module, x: Tensor, y: Tensor, args: argparse.Namespace,
                    exact: dict[str, np.ndarray] | None = None) -> dict:
    """Lanczos at ``args.tols`` and PyHessian's power iteration against the reference: the
    dense float64 eigendecomposition when ``exact`` is given, else a tight Lanczos."""
    device = resolve_device(args.device)
    obj = objective(model, x, y, args, args.precision, args.hvp_method)
    k = PYHESSIAN["top_n"]
    if exact is not None:
        exact = torch.from_numpy(exact["eigenvalues"][-k:][::-1].copy())
        rows = [("dense float64 eigvalsh", 0, 0.0, exact.tolist(), None, "the reference")]
    else:
        ref_obj = obj
        if args.reference_precision and args.reference_precision != args.precision:
            ref_obj = objective(model, x, y, args, args.reference_precision, args.hvp_method)
        start = time.perf_counter()
        ref = hessian_eigenvalues(ref_obj, k=k, tol=args.reference_tol,
                                  max_iter=args.reference_max_iter, seed=args.seed + 100)
        sync(device)
        exact = ref.eigenvalues
        rows = [("reference Lanczos", ref.n_hvp, time.perf_counter() - start,
                 ref.eigenvalues.tolist(), None, f"{ref_obj.precision}, tol "
                 f"{args.reference_tol:g}, residuals <= {float(ref.residuals.max()):.1e}")]
    for tol in args.tols:
        start = time.perf_counter()
        res = hessian_eigenvalues(obj, k=k, tol=tol, seed=args.seed)
        sync(device)
        err = ((res.eigenvalues - exact).abs() / exact.abs()).tolist()
        rows.append((f"Lanczos tol {tol:g}", res.n_hvp, time.perf_counter() - start,
                     res.eigenvalues.tolist(), err,
                     f"converged {int(res.converged.sum())}/{k}, {res.n_restarts} restarts"))
    start = time.perf_counter()
    values, n_hvp = pyhessian_power_iteration(obj, PYHESSIAN["top_n"], PYHESSIAN["max_iter"],
                                              PYHESSIAN["tol"], args.seed)
    sync(device)
    # power iteration finds eigenvalues by magnitude, in the order found; compare sorted
    ordered = torch.tensor(sorted(values, reverse=True), dtype=torch.float64)
    err = ((ordered - exact).abs() / exact.abs()).tolist()
    rows.append(("power iteration (PyHessian)", n_hvp, time.perf_counter() - start, values,
                 err, "top_n=5, tol 1e-3, maxIter 100"))
    print(f"\nTop-{k} eigenvalues: {args.run or args.model}, {obj.n} samples, {obj.space.numel:,} "
          f"parameters, {args.precision}, {args.hvp_method} HVPs, {device}")
    print(f"reference eigenvalues: {', '.join(f'{v:.6g}' for v in exact.tolist())}")
    print(f"{'method':30s} {'HVPs':>6s} {'seconds':>9s} {'max rel err':>12s} "
          f"{'err of lambda_1':>16s}  notes")
    for name, hvps, sec, _, errs, note in rows:
        e_max = "-" if errs is None else f"{max(errs):.2e}"
        e_1 = "-" if errs is None else f"{errs[0]:.2e}"
        print(f"{name:30s} {hvps:6d} {sec:9.2f} {e_max:>12s} {e_1:>16s}  {note}")
    return {"reference": exact.tolist(), "rows": [
        {"method": r[0], "n_hvp": r[1], "seconds": r[2], "eigenvalues": r[3],
         "relative_errors": r[4], "notes": r[5]} for r in rows]}


# ------------------------------------------------------------------------------------------
def hessian_rows(obj: Objective, block: int = 256) -> Iterator[tuple[int, Tensor]]:
    """The rows of the Hessian (float64, on the CPU) from P HVPs with the unit vectors,
    ``block`` rows at a time: ``(first row, rows[b, P])``."""
    P = obj.space.numel
    for start in range(0, P, block):
        stop = min(start + block, P)
        E = torch.zeros(stop - start, P, dtype=obj.dtype, device=obj.device)
        E[torch.arange(stop - start), torch.arange(start, stop)] = 1
        yield start, obj.hvp(obj.theta0, E, method="fwd_rev").double().cpu()


def exact_spectrum(model: torch.nn.Module, x: Tensor, y: Tensor, args: argparse.Namespace,
                   eigenvalues: bool) -> dict[str, np.ndarray]:
    """The float64 Hessian's diagonal (``P`` HVPs) and, if asked, all its eigenvalues (a
    dense ``P x P`` matrix, 2.5 GB for the digits MLP, and minutes of ``eigvalsh``); cached
    in ``args.exact_cache`` (an ``.npz``)."""
    cache = Path(args.exact_cache) if args.exact_cache else None
    if cache and cache.exists():
        with np.load(cache) as f:
            out = dict(f)
        if "eigenvalues" in out or not eigenvalues:
            return out
    obj = objective(model, x, y, args, "float64")
    P = obj.space.numel
    start = time.perf_counter()
    H = torch.empty(P, P, dtype=torch.float64) if eigenvalues else None
    diagonal = torch.empty(P, dtype=torch.float64)
    for first, rows in hessian_rows(obj):
        diagonal[first : first + rows.shape[0]] = rows.diagonal(offset=first)
        if H is not None:
            H[first : first + rows.shape[0]] = rows
    out = {"diagonal": diagonal.numpy()}
    print(f"float64 Hessian rows: {P} HVPs in {time.perf_counter() - start:.1f} s; trace "
          f"{diagonal.sum():.10g}")
    if H is not None:
        start = time.perf_counter()
        out["asymmetry"] = np.array(float((H - H.T).abs().max()))
        out["eigenvalues"] = torch.linalg.eigvalsh(H).numpy()  # lower triangle
        print(f"eigvalsh in {time.perf_counter() - start:.1f} s; largest "
              f"{out['eigenvalues'][-5:][::-1]}, max |H - H^T| {out['asymmetry']:.2e}")
    if cache:
        np.savez(cache, **out)
    return out


def trace_table(model: torch.nn.Module, x: Tensor, y: Tensor, args: argparse.Namespace,
                exact: dict[str, np.ndarray]) -> dict:
    """Relative error of Hutchinson and Hutch++ against the exact trace (the float64
    Hessian's diagonal), per HVP budget, over ``args.trace_seeds`` seeds each; the methods
    interleaved seed by seed. Also the former CLI default (Hutchinson to 1% standard error)."""
    obj = objective(model, x, y, args, args.precision, "double_backward")
    true = float(exact["diagonal"].sum())
    errors: dict[tuple[str, int], list[float]] = {}
    hvps: dict[tuple[str, int], list[int]] = {}
    for seed in range(args.trace_seeds):
        for budget in args.trace_budgets:
            for method in ("hutchinson", "hutch++"):
                t = hessian_trace(obj, method=method, rtol=1e-12, max_probes=budget,
                                  min_probes=budget, seed=seed)
                errors.setdefault((method, budget), []).append(abs(t.estimate - true) / true)
                hvps.setdefault((method, budget), []).append(t.n_hvp)
    for seed in range(args.trace_default_seeds):
        t = hessian_trace(obj, method="hutchinson", rtol=1e-2, max_probes=2000, seed=seed)
        errors.setdefault(("hutchinson rtol 1e-2", 0), []).append(abs(t.estimate - true) / true)
        hvps.setdefault(("hutchinson rtol 1e-2", 0), []).append(t.n_hvp)
    print(f"\nTrace: exact {true:.8g} (float64 diagonal), {obj.space.numel:,} parameters, "
          f"{obj.n} samples, {args.precision} estimates")
    print(f"{'method':24s} {'HVPs':>6s} {'median rel err':>15s} {'max rel err':>12s} seeds")
    rows = []
    for (method, _), errs in errors.items():
        n_hvp = int(statistics.median(hvps[(method, _)]))
        rows.append({"method": method, "n_hvp": n_hvp, "median": statistics.median(errs),
                     "max": max(errs), "seeds": len(errs)})
        print(f"{method:24s} {n_hvp:6d} {rows[-1]['median']:15.2e} {rows[-1]['max']:12.2e} "
              f"{len(errs)}")
    return {"exact": true, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--dataset", choices=["random", "digits"], default="random",
                        help="random CIFAR-shaped images, or the embedded digits")
    parser.add_argument("--run", default=None, help="use a trained run's model and data")
    parser.add_argument("--n", type=int, default=10_000, help="number of samples")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--train-steps", type=int, default=0,
                        help="SGD steps on the data before measuring (0: the initialization)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--precisions", default="float32,tf32",
                        help="precisions whose HVP error against float64 is measured ('' none)")
    parser.add_argument("--blocks", default="4", help="block sizes K for fwd_rev, e.g. 2,4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hvp-method", default="fwd_rev",
                        help="HVP of the eigenvalue part: fwd_rev or double_backward")
    parser.add_argument("--tols", default="1e-2,1e-3", help="Lanczos residual tolerances")
    parser.add_argument("--reference-tol", type=float, default=1e-6)
    parser.add_argument("--reference-max-iter", type=int, default=600)
    parser.add_argument("--reference-precision", default=None,
                        help="precision of the reference Lanczos (default: --precision; float64 "
                             "measures errors below the float32 HVP error)")
    parser.add_argument("--parts", default="hvp,eigen")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exact-cache", default=None,
                        help="an .npz caching the dense float64 Hessian's diagonal and spectrum")
    parser.add_argument("--trace-budgets", default="30,60,99,150,300",
                        help="HVP budgets of the trace table")
    parser.add_argument("--trace-seeds", type=int, default=10)
    parser.add_argument("--trace-default-seeds", type=int, default=3,
                        help="seeds of Hutchinson to 1%% standard error (the former default)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress of long runs shows up in logs
    args.precisions = [p for p in args.precisions.split(",") if p]
    args.blocks = [int(b) for b in args.blocks.split(",") if b]
    args.tols = [float(t) for t in args.tols.split(",") if t]
    args.trace_budgets = [int(b) for b in args.trace_budgets.split(",") if b]
    device = resolve_device(args.device)
    model, x, y = make_problem(args)
    info = {"args": vars(args), "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    results: dict = {"info": info}
    parts = args.parts.split(",")
    exact = None
    if {"exact", "trace"} & set(parts) or (args.exact_cache and "eigen" in parts):
        exact = exact_spectrum(model, x, y, args, eigenvalues="exact" in parts
                               or "eigen" in parts)
    if "trace" in parts:
        results["trace"] = trace_table(model, x, y, args, exact)
    if "hvp" in parts:
        results["hvp"] = hvp_cost(model, x, y, args)
    if "eigen" in parts:
        results["eigen"] = top_eigenvalues(model, x, y, args, exact)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=lambda o: None if isinstance(
                o, float) and math.isnan(o) else str(o))


if __name__ == "__main__":
    main()
