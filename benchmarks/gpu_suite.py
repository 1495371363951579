"""Every GPU goal of the project in one call, sized to finish in under 8 minutes on one GPU.

Parts (each reuses its benchmark script's functions; a part that fails is recorded with its
error and the others still run):

- ``surface``: ResNet-56 on CIFAR-shaped images, seconds per grid point of the reference
  procedure (``surface_speed.py``: DataLoader, per-sample transforms, 2 workers) against the
  engine per precision, and each precision's largest relative loss error against float64;
- ``hvp``: the cost of one HVP (forward-over-reverse, double backward, a block) in units of
  one forward+backward pass, and its error per precision (``hessian.py``);
- ``eigen``: top-5 eigenvalues, Lanczos against PyHessian's deflated power iteration, HVPs
  and errors against a tightly converged Lanczos (``hessian.py``);
- ``train``: training images/second of ``landscape.train`` against the standard recipe
  (``train_throughput.py``).

Writes one JSON file (``--json``) and the rows for ``benchmarks/README.md`` (``--rows``).

Usage: ``python benchmarks/gpu_suite.py --device cuda`` (the GPU sizes);
``python benchmarks/gpu_suite.py --device cpu --quick`` (tiny sizes: the CPU check that
every part runs end to end, in a couple of minutes).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hessian  # noqa: E402
import surface_speed  # noqa: E402
import train_throughput  # noqa: E402

from landscape.objective import resolve_device  # noqa: E402

#: Sizes per mode. GPU: the issue's ResNet-56 on 10,000 images for the surface; HVPs and
#: eigenvalues on 2,000 images (each HVP is a pass over them); training on 10,000 images.
SIZES = {
    "gpu": {"surface_images": 10_000, "error_grid": 3, "ref_points": 3,
            "precisions": "float32,tf32,bf16", "hvp_model": "resnet56", "hvp_n": 2_000,
            "hvp_batch": 500, "train_images": 10_000, "train_epochs": 2,
            "reference_max_iter": 150},
    "quick": {"surface_images": 32, "error_grid": 2, "ref_points": 1,
              "precisions": "float32,bf16", "hvp_model": "mlp", "hvp_n": 256,
              "hvp_batch": 256, "train_images": 128, "train_epochs": 1,
              "reference_max_iter": 100},
}


def surface_part(size: dict, device: torch.device) -> dict:
    args = SimpleNamespace(images=size["surface_images"], error_grid=size["error_grid"],
                           ref_points=size["ref_points"], precisions=size["precisions"],
                           batch_size=None)
    return surface_speed.resnet_case(args, device)


def _hessian_args(size: dict, device: torch.device) -> SimpleNamespace:
    return SimpleNamespace(
        run=None, model=size["hvp_model"], dataset="random" if size["hvp_model"] != "mlp"
        else "digits", n=size["hvp_n"], seed=0, train_steps=20, device=str(device),
        batch_size=size["hvp_batch"], precision="float32",
        precisions=["float32", "tf32"] if device.type == "cuda" else ["float32"],
        repeats=3, blocks=[4], hvp_method="double_backward", tols=[1e-2, 1e-3],
        reference_precision="float64" if device.type == "cpu" else None,
        reference_tol=1e-6, reference_max_iter=size["reference_max_iter"])


def hvp_part(size: dict, device: torch.device) -> dict:
    args = _hessian_args(size, device)
    return hessian.hvp_cost(*hessian.make_problem(args), args)


def eigen_part(size: dict, device: torch.device) -> dict:
    args = _hessian_args(size, device)
    return hessian.top_eigenvalues(*hessian.make_problem(args), args)


def train_part(size: dict, device: torch.device) -> dict:
    argv = ["--images", str(size["train_images"]), "--epochs", str(size["train_epochs"]),
            "--device", str(device)]
    return train_throughput.main(argv)


PARTS: dict[str, Callable[[dict, torch.device], dict]] = {
    "surface": surface_part, "hvp": hvp_part, "eigen": eigen_part, "train": train_part}


def rows(results: dict, date: str) -> list[str]:
    """Markdown rows for benchmarks/README.md from the results of the parts that ran."""
    dev = results["device_name"]
    out = []
    s = results["parts"].get("surface", {}).get("result")
    if s:
        figs = "; ".join(f"{p} {e['s_per_point']:.4g} s/point ({e['max_rel_loss_error']:.1e})"
                         for p, e in s["engine"].items())
        ratios = ", ".join(f"{e['speedup']:.1f}x ({p})" for p, e in s["engine"].items())
        out.append(f"| {date} | {dev} | `gpu_suite.py` surface: ResNet-56, {s['images']:,} "
                   f"CIFAR-shaped images | reference {s['reference_s_per_point']:.4g} s/point; "
                   f"engine {figs} | {ratios} |")
    h = results["parts"].get("hvp", {}).get("result")
    if h:
        figs = "; ".join(f"{k} {v:.2f}x" for k, v in h["relative_to_fwd_bwd"].items())
        errs = ", ".join(f"{k} {v:.1e}" for k, v in h["errors_vs_float64"].items())
        out.append(f"| {date} | {dev} | `gpu_suite.py` HVP cost, {h['P']:,} parameters, "
                   f"{h['n']} samples | {figs}; errors vs float64: {errs} | "
                   f"double backward {h['relative_to_fwd_bwd'].get('hvp double_backward', 0):.2f}"
                   f"x a forward+backward (goal <= 2.5x) |")
    e = results["parts"].get("eigen", {}).get("result")
    if e:
        rs = {r["method"]: r for r in e["rows"] if r["relative_errors"] is not None}
        figs = "; ".join(f"{m}: {r['n_hvp']} HVPs, {max(r['relative_errors']):.1e}"
                         for m, r in rs.items())
        power = rs.get("power iteration (PyHessian)")
        lanczos = rs.get("Lanczos tol 0.001")
        ratio = (f"Lanczos {lanczos['n_hvp'] / power['n_hvp']:.2f}x the power iteration's HVPs"
                 if power and lanczos and power["n_hvp"] else "-")
        out.append(f"| {date} | {dev} | `gpu_suite.py` top-5 eigenvalues | {figs} | {ratio} |")
    t = results["parts"].get("train", {}).get("result")
    if t:
        out.append(f"| {date} | {dev} | `gpu_suite.py` training throughput, ResNet-20, "
                   f"{t['images']:,} images | landscape {t['landscape_images_per_s']:.0f} "
                   f"images/s; standard recipe {t['standard_images_per_s']:.0f} images/s | "
                   f"{t['ratio']:.2f}x (goal 3x) |")
    return out


def run(device: str = "auto", quick: bool = False, parts: str = ",".join(PARTS),
        date: str = time.strftime("%Y-%m-%d")) -> dict:
    """Run the ``parts`` and return ``{"device", "device_name", "parts": {name: {"seconds",
    "result" or "error"}}, "rows"}``."""
    dev = resolve_device(device)
    size = SIZES["quick" if quick else "gpu"]
    results: dict[str, Any] = {
        "device": str(dev), "quick": quick, "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda"
        else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)",
        "sizes": size, "parts": {}}
    for name in parts.split(","):
        start = time.perf_counter()
        try:
            entry: dict[str, Any] = {"result": PARTS[name](size, dev)}
        except Exception as err:  # a failed part is a result: the others must still run
            traceback.print_exc()
            entry = {"error": f"{type(err).__name__}: {err}"}
        entry["seconds"] = time.perf_counter() - start
        results["parts"][name] = entry
        print(f"[gpu_suite] {name}: {entry['seconds']:.1f} s"
              f"{' FAILED' if 'error' in entry else ''}", flush=True)
    results["rows"] = rows(results, date)
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the CPU check)")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--json", default="gpu_suite.json", help="results file")
    parser.add_argument("--rows", default=None, help="also write the table rows here")
    args = parser.parse_args(argv)
    results = run(args.device, args.quick, args.parts)
    Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    if args.rows:
        Path(args.rows).write_text("\n".join(results["rows"]) + "\n")
    print("\n".join(results["rows"]))
    return results


if __name__ == "__main__":
    sys.exit(1 if any("error" in p for p in main()["parts"].values()) else 0)
