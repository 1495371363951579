"""Model zoo: the architectures the loss-landscape literature uses, shaped to the dataset.

``build_model(name, input_shape, num_outputs, **options)`` builds a registry model
(``MODELS``) or a user factory (``"path/to/file.py:factory"``, ``"package.module:factory"``).
``input_shape`` is the per-sample shape: ``(C, H, W)`` for images, ``(d,)`` for vectors.
Every model is deterministic given ``torch.manual_seed`` (it draws its initial weights from
the global generator) and starts in training mode.

Registry (options in brackets):
- ``mlp`` [``widths=(100, 100)``, ``bias=True``]: any input shape (flattened);
- ``lenet``: LeNet-5; ``vgg9``: VGG-9 of Li et al. 2018;
- ``resnet20``, ``resnet56``, ``resnet110`` [``shortcut="B"``], and
  ``resnet20-noshort``, ``resnet56-noshort``, ``resnet110-noshort``; any ``resnet{6n+2}``
  and ``resnet{6n+2}-noshort`` is accepted too;
- ``wrn`` [``depth=16``, ``widen=4``, ``dropout=0.0``], ``wrn-16-4`` [``dropout``]; any
  ``wrn-{6n+4}-{k}`` is accepted too.
Image models need ``(C, H, W)`` inputs; all of them run on 8x8 digits and 32x32 CIFAR.

Sizes are bounded before anything is allocated: at most :data:`MAX_INPUT_ELEMENTS` values
per sample, :data:`MAX_OUTPUTS` outputs and :data:`MAX_PARAMETERS` parameters (a registry
model is first built on the ``meta`` device, which allocates nothing, to count them).

``model_spec(...)`` returns a JSON-able dict (name, input shape, outputs, every option with
its default filled in) that ``model_from_spec`` turns back into the same architecture.
"""

from __future__ import annotations

import inspect
import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn
from torch.overrides import TorchFunctionMode

from landscape.errors import LandscapeError, check_int, unknown_name
from landscape.models.lenet import lenet
from landscape.models.mlp import mlp
from landscape.models.resnet import resnet
from landscape.models.transformer import transformer
from landscape.models.user import is_user_model, load_user_model
from landscape.models.vgg import vgg9
from landscape.models.wide_resnet import wide_resnet
from landscape.trust import Code, check_recorded, record

__all__ = ["MAX_INPUT_ELEMENTS", "MAX_OUTPUTS", "MAX_PARAMETERS", "MODELS", "build_model",
           "model_spec", "model_from_spec", "count_parameters"]

Builder = Callable[..., nn.Module]

#: Limits checked before a model is built (far above every model of the literature this
#: library reproduces, far below what exhausts a machine's memory): values per input sample,
#: outputs, and parameters (4 GB of float32 weights).
MAX_INPUT_ELEMENTS = 10**8
MAX_OUTPUTS = 10**7
MAX_PARAMETERS = 10**9


def _resnet_builder(depth: int, skip: bool) -> Builder:
    if skip:

        def build(
            input_shape: tuple[int, ...], num_outputs: int, *, shortcut: str = "B"
        ) -> nn.Module:
            return resnet(input_shape, num_outputs, depth=depth, skip=True, shortcut=shortcut)

        build.__doc__ = f"ResNet-{depth} (He et al. 2016), shortcut option 'B' or 'A'."
    else:

        def build(input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
            return resnet(input_shape, num_outputs, depth=depth, skip=False)

        build.__doc__ = f"ResNet-{depth} without skip connections (Li et al. 2018)."
    return build


def _wrn_builder(depth: int, widen: int) -> Builder:
    def build(input_shape: tuple[int, ...], num_outputs: int, *, dropout: float = 0.0) -> nn.Module:
        return wide_resnet(input_shape, num_outputs, depth=depth, widen=widen, dropout=dropout)

    build.__doc__ = f"WRN-{depth}-{widen} (Zagoruyko & Komodakis 2016)."
    return build


MODELS: dict[str, Builder] = {
    "mlp": mlp,
    "lenet": lenet,
    "vgg9": vgg9,
    **{f"resnet{d}": _resnet_builder(d, True) for d in (20, 56, 110)},
    **{f"resnet{d}-noshort": _resnet_builder(d, False) for d in (20, 56, 110)},
    "wrn": wide_resnet,
    "wrn-16-4": _wrn_builder(16, 4),
    "transformer": transformer,
}
"""Model name -> builder ``(input_shape, num_outputs, **options) -> nn.Module``."""

_RESNET = re.compile(r"resnet(\d+)(-noshort)?")
_WRN = re.compile(r"wrn-(\d+)-(\d+)")


def _resolve(name: str) -> tuple[str, Builder]:
    """Canonical registry name and builder for ``name`` (case and ``_``/``-`` insensitive)."""
    key = name.strip().lower().replace("_", "-")
    if key in MODELS:
        return key, MODELS[key]
    if m := _RESNET.fullmatch(key):
        return key, _resnet_builder(int(m[1]), m[2] is None)
    if m := _WRN.fullmatch(key):
        return key, _wrn_builder(int(m[1]), int(m[2]))
    raise unknown_name("model", name, MODELS)


def _option_defaults(builder: Builder) -> dict[str, Any]:
    params = inspect.signature(builder).parameters
    return {n: p.default for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _check_options(name: str, builder: Builder, options: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults updated with ``options``; a LandscapeError names an option the model lacks."""
    defaults = _option_defaults(builder)
    for key in options:
        if key not in defaults:
            known = ", ".join(defaults) or "none"
            raise LandscapeError(f"model {name!r} has no option {key!r} (options: {known})")
    return {**defaults, **options}


def _check_shape(input_shape: Any) -> tuple[int, ...]:
    if isinstance(input_shape, int | str) or not hasattr(input_shape, "__iter__"):
        raise LandscapeError(f"input_shape must be a tuple of sizes, got {input_shape!r}")
    shape = tuple(input_shape)
    if not shape:
        raise LandscapeError("input_shape must have at least one dimension")
    sizes = []
    for s in shape:
        try:
            sizes.append(operator.index(s))
        except TypeError:
            raise LandscapeError(f"input_shape sizes must be integers, got {shape!r}") from None
    shape = tuple(check_int("each input_shape size", s) for s in sizes)
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise LandscapeError(f"input_shape {shape} has {math.prod(shape):,} values per sample, "
                             f"more than the {MAX_INPUT_ELEMENTS:,} a model here may take")
    return shape


def _check_outputs(num_outputs: Any) -> int:
    num_outputs = check_int("num_outputs", num_outputs)
    if num_outputs > MAX_OUTPUTS:
        raise LandscapeError(f"num_outputs {num_outputs:,} is more than the {MAX_OUTPUTS:,} a "
                             "model here may have")
    return num_outputs


class _NoRandomFill(TorchFunctionMode):
    """Random in-place fills (``normal_``, ``uniform_``) return their tensor untouched: on
    the ``meta`` device there are no values, and torch's meta fills load its compiler
    (seconds)."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        if getattr(func, "__name__", "") in ("normal_", "uniform_"):
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


def _check_size(name: str, builder: Builder, shape: tuple[int, ...], num_outputs: int,
                options: Mapping[str, Any]) -> None:
    """Build the registry model on the ``meta`` device (no memory, no random draws) and
    refuse it with one line when it has more than :data:`MAX_PARAMETERS` parameters."""
    import torch

    with torch.random.fork_rng(devices=[]), torch.device("meta"), _NoRandomFill():
        n = count_parameters(builder(shape, num_outputs, **options))
    if n > MAX_PARAMETERS:
        raise LandscapeError(f"model {name!r} would have {n:,} parameters, more than "
                             f"{MAX_PARAMETERS:,}; choose a smaller model or input")


def build_model(
    name: str | Code, input_shape: tuple[int, ...], num_outputs: int, **options: Any
) -> nn.Module:
    """Build model ``name`` for samples of shape ``input_shape`` with ``num_outputs`` outputs.

    ``name`` is a ``MODELS`` key (see the module docstring for the options each takes) or a
    user factory ``"path/to/file.py:factory"`` / ``"package.module:factory"`` (or the
    :class:`~landscape.trust.Code` judged for one read from a file). Unknown names,
    options and invalid values raise a one-line LandscapeError. Cost: one model construction
    (plus one dry forward pass of a single zero sample for LeNet and VGG-9).
    """
    shape = _check_shape(input_shape)
    num_outputs = _check_outputs(num_outputs)
    if isinstance(name, Code) or is_user_model(name):
        return load_user_model(name, shape, num_outputs, **options)
    key, builder = _resolve(name)
    _check_options(key, builder, options)
    _check_size(key, builder, shape, num_outputs, options)
    return builder(shape, num_outputs, **options)


def _jsonable(value: Any, where: str) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, where) for k, v in value.items()}
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise LandscapeError(f"model option {where!r} is not JSON-serializable: {value!r}") from exc
    return value


def model_spec(
    name: str, input_shape: tuple[int, ...], num_outputs: int, **options: Any
) -> dict[str, Any]:
    """JSON-able description that rebuilds the same architecture with ``model_from_spec``.

    Keys: ``name`` (canonical registry name, or the user factory with its file path made
    absolute), ``input_shape`` (list), ``num_outputs``, ``options`` (for registry models every
    option, defaults filled in). Validates name and options without building the model.
    """
    shape = _check_shape(input_shape)
    num_outputs = _check_outputs(num_outputs)
    code: dict[str, Any] = {}
    if is_user_model(name):
        code = record(name)
        canonical, full = code.pop("name"), dict(options)
    else:
        canonical, builder = _resolve(name)
        full = _check_options(canonical, builder, options)
    return {
        "name": canonical,
        "input_shape": list(shape),
        "num_outputs": num_outputs,
        "options": {k: _jsonable(v, k) for k, v in full.items()},
        **code,
    }


def model_from_spec(spec: Mapping[str, Any], *, source: str | None = None,
                    trust: bool = False) -> nn.Module:
    """Build the model described by a ``model_spec`` dict.

    ``source``: the file the spec was read from (e.g. a ``run.json``). A user factory in a
    spec read from a file is imported only when :func:`landscape.trust.check_recorded`
    allows it (named again in this invocation, or ``trust``); ``source=None`` means the spec
    was just made from names the caller gave, so nothing is checked.
    """
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise LandscapeError(f"{source or 'model spec'}: the model spec has no model name")
    missing = [k for k in ("name", "input_shape", "num_outputs") if k not in spec]
    if missing:
        raise LandscapeError(f"model spec lacks {missing[0]!r}")
    if not isinstance(spec.get("options", {}), Mapping):
        raise LandscapeError(f"{source or 'model spec'}: the model options are "
                             f"{type(spec['options']).__name__}, not an object")
    name: str | Code = spec["name"]
    if source is not None and is_user_model(spec["name"]):
        name = check_recorded(spec["name"], spec.get("sha256"), source=source, trust=trust)
    return build_model(name, spec["input_shape"], spec["num_outputs"], **spec.get("options", {}))


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (trainable tensors; buffers not counted)."""
    return sum(p.numel() for p in model.parameters())
