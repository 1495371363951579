"""User code recorded in files: checked before anything of it is imported or called.

A run directory (``run.json``) or a study file records the user's own factories (models today;
data and loss factories the same way) as *code specs*: ``"path/to/file.py:attr"`` or
``"package.module:attr"``, with the SHA-256 of the file (or of the module's source file) at
the time it was recorded. A file is data, not a program: opening it never imports or calls
code the user did not name in this invocation. So before a recorded spec is imported,
:func:`check_recorded`

- refuses, always, a ``package.module`` that resolves outside the user's own code: the
  standard library, built-in or frozen modules, installed packages (site-packages, the
  interpreter's prefix) and landscape itself (``os:system``, ``subprocess:run``,
  ``builtins:eval``), located without importing anything;
- refuses any other spec unless it is trusted: named again in this invocation
  (:func:`trusting` ``names``, the CLI's ``--model SPEC``) or trusted as a whole
  (``trust=True``, the CLI's ``--trust-code``);
- refuses a trusted spec whose source changed since it was recorded (its SHA-256 differs),
  unless it is named again (naming the spec trusts the code as it is now).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import site
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from landscape.errors import LandscapeError

__all__ = ["check_recorded", "is_code_spec", "canonical", "record", "split_spec",
           "source_file", "trusting"]

_NAMED: ContextVar[frozenset[str]] = ContextVar("landscape_named_code", default=frozenset())
_TRUST_ALL: ContextVar[bool] = ContextVar("landscape_trust_code", default=False)


def is_code_spec(name: str) -> bool:
    """True if ``name`` refers to user code (``target:attribute``), not a registry name."""
    return ":" in name


def split_spec(name: str, kind: str = "model") -> tuple[str, str, bool]:
    """``name`` -> (file or module, attribute, is_file); a one-line error if malformed."""
    target, _, attr = name.strip().rpartition(":")
    if not target or not attr.isidentifier():
        raise LandscapeError(f"user {kind} must be 'path/to/file.py:factory' or "
                             f"'package.module:factory', got {name!r}")
    is_file = target.endswith(".py") or "/" in target or "\\" in target
    return target, attr, is_file


def canonical(name: str, kind: str = "model") -> str:
    """``name`` with a file path made absolute, so that it names the same code elsewhere."""
    target, attr, is_file = split_spec(name, kind)
    if is_file:
        target = str(Path(target).expanduser().resolve())
    return f"{target}:{attr}"


def _module_origin(module: str) -> Path | None:
    """The source file of ``module`` found on ``sys.path`` WITHOUT importing anything (a
    package's ``__init__.py``); None for built-in, frozen-only or missing modules."""
    if not all(part.isidentifier() for part in module.split(".")):
        return None
    if module.split(".")[0] in sys.builtin_module_names:
        return None
    locations: list[str] | None = None
    spec = None
    parts = module.split(".")
    for i in range(len(parts)):
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), locations)
        if spec is None:
            return None
        locations = list(spec.submodule_search_locations or [])
        if i < len(parts) - 1 and not locations:
            return None  # a plain module has no submodules
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return None  # a namespace package has no code of its own
    return Path(spec.origin).resolve()


def _foreign_roots() -> list[Path]:
    """Folders that hold code that is not the user's: the interpreter's prefixes (standard
    library, site-packages), the user site, and landscape itself."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             *(sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib",
                                                          "platlib")),
             *site.getsitepackages(), site.getusersitepackages(),
             str(Path(__file__).resolve().parent)}
    return [Path(p).resolve() for p in paths if p]


def _outside_user_code(file: Path) -> bool:
    return any(file.is_relative_to(root) for root in _foreign_roots())


def source_file(name: str, kind: str = "model") -> Path | None:
    """The file holding the code of spec ``name`` (located, never imported), or None."""
    target, _, is_file = split_spec(name, kind)
    if is_file:
        path = Path(target).expanduser().resolve()
        return path if path.is_file() else None
    return _module_origin(target)


def _sha256(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def record(name: str, kind: str = "model") -> dict[str, str | None]:
    """``{"name": canonical spec, "sha256": of its source file (None if it has none)}``: what
    a run records so that a later :func:`check_recorded` notices a changed file."""
    file = source_file(name, kind)
    return {"name": canonical(name, kind), "sha256": _sha256(file) if file else None}


@contextmanager
def trusting(names: Iterable[str] = (), trust_all: bool = False) -> Iterator[None]:
    """Within the block, recorded specs in ``names`` (named again in this invocation) are
    trusted, and with ``trust_all`` every recorded spec of the user's own code is."""
    named = _NAMED.set(_NAMED.get() | {canonical(n) for n in names if is_code_spec(n)})
    everything = _TRUST_ALL.set(_TRUST_ALL.get() or bool(trust_all))
    try:
        yield
    finally:
        _TRUST_ALL.reset(everything)
        _NAMED.reset(named)


def check_recorded(name: str, sha256: str | None, *, source: str | Path, kind: str = "model",
                   trust: bool = False) -> None:
    """Raise a one-line LandscapeError unless the spec ``name`` recorded in ``source`` may be
    imported and called now (see the module docstring). Imports nothing. Cost: one read of
    the spec's source file."""
    spec = canonical(name, kind)
    target, _, is_file = split_spec(name, kind)
    file = source_file(name, kind)
    if not is_file and (file is None or _outside_user_code(file)):
        where = "a built-in or missing module" if file is None else f"{file}"
        raise LandscapeError(
            f"{source}: recorded {kind} factory {name!r} resolves outside your own code "
            f"({where}); a recorded spec is never imported from there, trusted or not")
    named = spec in _NAMED.get()
    if not (named or trust or _TRUST_ALL.get()):
        raise LandscapeError(
            f"{source} names user code ({kind} factory {name!r}) that is not run unless you "
            f"trust it: name it again (--{kind} {spec}) or pass --trust-code "
            f"(Python: trust=True)")
    if file is None:
        raise LandscapeError(f"{source}: the {kind} file of {name!r} does not exist")
    if sha256 and not named and _sha256(file) != sha256:
        raise LandscapeError(
            f"{file} changed since {source} recorded it (sha256 {sha256[:12]}..., now "
            f"{_sha256(file)[:12]}...); name it again (--{kind} {spec}) to use it as it is now")
