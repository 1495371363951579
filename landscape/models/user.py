"""The user's own models: ``"path/to/file.py:factory"`` or ``"package.module:factory"``.

The factory is called with the keyword arguments ``input_shape`` (per-sample shape tuple) and
``num_outputs`` when its signature takes them (by name or through ``**kwargs``), with none
otherwise, plus any model options given. It must return an ``nn.Module``. Every failure
(missing file or module, import error, missing attribute, factory error, wrong return type)
is a one-line LandscapeError chained to the original exception.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from landscape.errors import LandscapeError
from landscape.trust import is_code_spec, split_spec


def is_user_model(name: str) -> bool:
    """True if ``name`` refers to a user factory (``target:attribute``), not the registry."""
    return is_code_spec(name)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _load_file(path_text: str) -> ModuleType:
    path = Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise LandscapeError(f"model file not found: {path}")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    module_name = f"_landscape_user_model_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise LandscapeError(f"cannot load model file {path}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # lets dataclasses and pickling in the file resolve
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise LandscapeError(f"cannot load model file {path}: {_one_line(exc)}") from exc
    return module


def _load_module(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        raise LandscapeError(
            f"cannot import model module {module_name!r}: {_one_line(exc)}"
        ) from exc


def _call_factory(
    factory: Callable[..., Any],
    name: str,
    input_shape: tuple[int, ...],
    num_outputs: int,
    options: dict[str, Any],
) -> Any:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature: call as given
        params = {}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = {
        n
        for n, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    kwargs: dict[str, Any] = {}
    for key, value in (("input_shape", input_shape), ("num_outputs", num_outputs)):
        if var_kw or key in named:
            kwargs[key] = value
    unknown = [k for k in options if not (var_kw or k in named)]
    if unknown:
        raise LandscapeError(f"model factory {name!r} takes no option {unknown[0]!r}")
    kwargs.update(options)
    try:
        return factory(**kwargs)
    except LandscapeError:
        raise
    except Exception as exc:
        raise LandscapeError(f"model factory {name!r} failed: {_one_line(exc)}") from exc


def load_attribute(name: str, kind: str = "model") -> Callable[..., Any]:
    """Import the callable named by spec ``name`` (a model, data or loss factory)."""
    target, attr, is_file = split_spec(name, kind)
    module = _load_file(target) if is_file else _load_module(target)
    where = f"{kind} file {module.__file__}" if is_file else f"module {target!r}"
    if not hasattr(module, attr):
        raise LandscapeError(f"{where} has no attribute {attr!r}")
    factory = getattr(module, attr)
    if not callable(factory):
        raise LandscapeError(f"{attr!r} in {where} is not callable")
    return factory


def load_user_model(
    name: str, input_shape: tuple[int, ...], num_outputs: int, **options: Any
) -> nn.Module:
    """Import the factory named by ``name`` and return the module it builds."""
    factory = load_attribute(name)
    model = _call_factory(factory, name, input_shape, num_outputs, options)
    if not isinstance(model, nn.Module):
        raise LandscapeError(
            f"model factory {name!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model
