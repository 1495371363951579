"""The user's own models: ``"path/to/file.py:factory"`` or ``"package.module:factory"``.

The factory is called with the keyword arguments ``input_shape`` (per-sample shape tuple) and
``num_outputs`` when its signature takes them (by name or through ``**kwargs``), with none
otherwise, plus any model options given. It must return an ``nn.Module``. Every failure
(missing file or module, import error, missing attribute, factory error, wrong return type)
is a one-line LandscapeError chained to the original exception.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from landscape.errors import LandscapeError
from landscape.trust import Code, is_code_spec, resolve


def is_user_model(name: str) -> bool:
    """True if ``name`` refers to a user factory (``target:attribute``), not the registry."""
    return is_code_spec(name)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _same_file(module: ModuleType, file: str | None) -> bool:
    here = getattr(module, "__file__", None)
    return bool(here and file and Path(here).resolve() == Path(file).resolve())


def _package(spec: importlib.machinery.ModuleSpec) -> ModuleType:
    """The package of ``spec`` (located, not yet imported): the one in ``sys.modules`` if it
    is the same file, else executed from exactly that spec; one imported from another file
    is a LandscapeError (the name means other code in this process)."""
    present = sys.modules.get(spec.name)
    if present is not None:
        if spec.origin is None or _same_file(present, spec.origin):
            return present
        raise LandscapeError(f"package {spec.name!r} is already imported from "
                             f"{getattr(present, '__file__', None)}, not {spec.origin}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        if spec.loader is not None:
            spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(spec.name, None)
        raise
    return module


def _load(code: Code, kind: str) -> ModuleType:
    """Execute the source bytes of ``code`` (the file that was judged, read once) as a
    module: a file spec under a private name, a module spec under its own name inside its
    packages (each loaded from the spec located for it, never looked up again)."""
    if code.module is not None and code.file is None:
        raise LandscapeError(f"cannot import {kind} module {code.module!r}: no source file "
                             "of it on sys.path (missing, built-in or a namespace package)")
    if code.file is None or code.source is None:
        raise LandscapeError(f"{kind} file not found: {code.spec.rpartition(':')[0]}")
    if code.module is None:
        name = f"_landscape_user_{kind}_{hashlib.sha1(str(code.file).encode()).hexdigest()[:12]}"
        spec = importlib.util.spec_from_file_location(name, code.file)
    else:
        name, spec = code.module, code.spec_of_module
    if spec is None or code.file.suffix != ".py":
        raise LandscapeError(f"cannot load {kind} file {code.file}: not a Python source file")
    where = f"{kind} file {code.file}" if code.module is None else f"module {code.module!r}"
    try:
        parents = [_package(p) for p in code.packages]
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # lets dataclasses and pickling in the file resolve
        try:
            exec(compile(code.source, str(code.file), "exec"), module.__dict__)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        if parents:
            setattr(parents[-1], name.rpartition(".")[2], module)
    except LandscapeError:
        raise
    except Exception as exc:
        raise LandscapeError(f"cannot load {where}: {_one_line(exc)}") from exc
    return module


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


def load_attribute(name: str, kind: str = "model", code: Code | None = None
                   ) -> Callable[..., Any]:
    """The callable named by spec ``name`` (a model, data or loss factory), loaded from
    ``code`` (what :func:`landscape.trust.check_recorded` judged) or, for a spec named in
    this invocation, from the file :func:`landscape.trust.resolve` finds."""
    code = resolve(name, kind) if code is None else code
    module = _load(code, kind)
    where = f"{kind} file {code.file}" if code.module is None else f"module {code.module!r}"
    attr = code.attr
    if not hasattr(module, attr):
        raise LandscapeError(f"{where} has no attribute {attr!r}")
    factory = getattr(module, attr)
    if not callable(factory):
        raise LandscapeError(f"{attr!r} in {where} is not callable")
    return factory


def load_user_model(
    name: str | Code, input_shape: tuple[int, ...], num_outputs: int, **options: Any
) -> nn.Module:
    """Load the factory named by ``name`` (a spec, or the :class:`~landscape.trust.Code`
    that :func:`landscape.trust.check_recorded` judged) and return the module it builds."""
    code = name if isinstance(name, Code) else None
    name = code.spec if code is not None else name
    factory = load_attribute(name, code=code)
    model = _call_factory(factory, name, input_shape, num_outputs, options)
    if not isinstance(model, nn.Module):
        raise LandscapeError(
            f"model factory {name!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model
