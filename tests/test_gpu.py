"""The CUDA-only paths (run where CUDA is present) and the GPU suite's CPU check."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from landscape.objective import Objective

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _wide_problem(seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """A matmul-heavy model whose float32 loss TF32 / bf16 visibly perturb."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(512, 512), nn.Tanh(), nn.Linear(512, 10))
    x, y = torch.randn(1024, 512), torch.randint(0, 10, (1024,))
    return model, (x, y)


def _loss(obj: Objective) -> float:
    return obj.loss(obj.theta0)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


@cuda
def test_tf32_is_really_on_for_tf32_and_off_for_float32_on_cuda() -> None:
    model, data = _wide_problem()
    exact = _loss(Objective(model, data, device="cuda", precision="float64"))
    f32 = _loss(Objective(model, data, device="cuda", precision="float32"))
    tf32 = _loss(Objective(model, data, device="cuda", precision="tf32"))
    assert _rel(f32, exact) < 1e-5              # TF32 disabled in float32 mode
    assert 1e-6 < _rel(tf32, exact) < 1e-2      # TF32 (10-bit mantissa) really used


@cuda
def test_bf16_autocasts_the_loss_but_not_the_gradient_on_cuda() -> None:
    model, data = _wide_problem()
    exact = Objective(model, data, device="cuda", precision="float64")
    bf16 = Objective(model, data, device="cuda", precision="bf16")
    assert 1e-5 < _rel(_loss(bf16), _loss(exact)) < 3e-2
    g64 = exact.loss_and_grad(exact.theta0)[1]
    g16 = bf16.loss_and_grad(bf16.theta0)[1].double()
    assert float((g16 - g64).norm() / g64.norm()) < 1e-4  # float32 arithmetic, not bf16


@cuda
def test_batchnorm_models_evaluate_point_by_point_on_cuda_and_vmap_agrees() -> None:
    from landscape.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet20", (3, 32, 32), 10).eval()
    data = (torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,)))
    auto = Objective(model, data, device="cuda")
    assert auto.strategy == "loop"  # cuDNN BatchNorm under vmap is avoided by default
    points = auto.theta0 + 1e-3 * torch.randn(3, auto.space.numel, device="cuda")
    forced = Objective(model, data, device="cuda", strategy="vmap", point_chunk=3)
    a, b = auto.evaluate(points)["loss"], forced.evaluate(points)["loss"]
    assert torch.allclose(a, b, rtol=1e-4)


@cuda
def test_out_of_memory_halves_the_data_chunk_and_keeps_the_values_on_cuda() -> None:
    model, data = _wide_problem()
    obj = Objective(model, data, device="cuda", precision="float32", strategy="loop",
                    batch_size=1024)
    expected = _loss(obj)
    torch.cuda.empty_cache()
    free = torch.cuda.mem_get_info()[0]
    hog = torch.empty(max(0, free - (64 << 20)), dtype=torch.uint8, device="cuda")
    try:  # 64 MiB left: a 1024 x 512 chunk's activations no longer fit with the model's
        big = Objective(model, (torch.randn(1 << 16, 512), torch.randint(0, 10, (1 << 16,))),
                        device="cuda", strategy="loop", batch_size=1 << 16)
        _loss(big)
        assert big.batch_size < 1 << 16
    finally:
        del hog
        torch.cuda.empty_cache()
    assert _loss(obj) == pytest.approx(expected, rel=1e-6)


def test_gpu_suite_runs_its_parts_end_to_end_on_the_cpu() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import gpu_suite

    results = gpu_suite.run("cpu", quick=True, parts="hvp,eigen")
    assert all("error" not in p for p in results["parts"].values()), results["parts"]
    eigen = {r["method"]: r for r in results["parts"]["eigen"]["result"]["rows"]}
    assert max(eigen["Lanczos tol 0.001"]["relative_errors"]) < 1e-4
    assert len(results["rows"]) == 2 and all(r.startswith("| ") for r in results["rows"])
