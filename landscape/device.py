"""The device and its arithmetic: which device, and the TF32 and bf16 settings of a block."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from landscape.errors import LandscapeError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available (this rank's GPU under torchrun), else CPU; an
    unknown or unavailable device is a LandscapeError."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise LandscapeError(f"unknown device {device!r} (use auto, cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LandscapeError(f"device {device!r} requested but CUDA is not available "
                             "(use --device cpu or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise LandscapeError(f"device {device!r} does not exist "
                             f"({torch.cuda.device_count()} CUDA device(s))")
    return dev


@contextlib.contextmanager
def _cuda_tf32(enabled: bool) -> Iterator[None]:
    """Allow (or forbid) TF32 matmuls and convolutions inside the block."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def precision_context(device: torch.device, precision: str, derivative: bool = False,
                      ) -> contextlib.AbstractContextManager:
    """TF32 on CUDA exactly when ``precision == "tf32"``, and bf16 autocast for ``"bf16"``
    unless ``derivative`` (derivatives are never autocast to bf16: its BatchNorm backward
    fails under vmap; they run in float32 storage). Nothing to set (the CPU without bf16):
    a null context (entered once per product: no generator, no exit stack)."""
    autocast = precision == "bf16" and not derivative
    if device.type != "cuda" and not autocast:
        return contextlib.nullcontext()
    return _settings(device, precision == "tf32", autocast)


@contextlib.contextmanager
def _settings(device: torch.device, tf32: bool, autocast: bool) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        if device.type == "cuda":
            stack.enter_context(_cuda_tf32(tf32))
        if autocast:
            stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
        yield
