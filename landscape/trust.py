"""User code recorded in files: resolved once, judged on the real file, and that file loaded.

A run directory (``run.json``) or a study file records the user's own factories (models, data
and losses) as *code specs*: ``"path/to/file.py:attr"`` or ``"package.module:attr"``, with the
SHA-256 of the source file at the time it was recorded. A file is data, not a program:
opening it never imports or calls code the user did not name in this invocation.

:func:`resolve` turns a spec into one concrete :class:`Code`: the real path of its source
file (symlinks and ``..`` resolved; a module located on ``sys.path`` without importing
anything) and the bytes read from it. :func:`check_recorded` judges that ``Code``, and the
loader (:func:`landscape.models.user.load_attribute`) executes exactly those bytes under that
file's name, never a second lookup through ``sys.path``. A recorded spec is

- refused, always, trusted or not, if it resolves outside the user's own code whatever the
  spelling (module name, file path, ``..`` path, symlink): into the standard library
  (sysconfig ``stdlib``/``platstdlib``), site-packages or dist-packages (``site``,
  sysconfig ``purelib``/``platlib``, any folder of those names), the interpreter's prefixes,
  or landscape itself; to a built-in, frozen or missing module; or if its top-level module
  name is a standard-library name (``os``, ``subprocess``): a local ``os.py`` found first
  through ``PYTHONPATH=.`` is refused too, since that name means the standard library to
  every other import in the process;
- refused unless trusted: named again in this invocation (:func:`trusting` ``names``, the
  CLI's ``--model SPEC``) or trusted as a whole (``trust=True``, the CLI's ``--trust-code``);
- refused, when trusted as a whole, unless it records the valid SHA-256 of the file as it is
  now: a changed file, or a record without a valid hash, runs only when named again
  (naming the spec trusts the code as it is now).
"""

from __future__ import annotations

import importlib.machinery
import re
import site
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from landscape.errors import LandscapeError
from landscape.hashing import sha256_hex

__all__ = ["Code", "check_recorded", "is_code_spec", "canonical", "record", "resolve",
           "split_spec", "source_file", "trusting"]

_NAMED: ContextVar[frozenset[str]] = ContextVar("landscape_named_code", default=frozenset())
_TRUST_ALL: ContextVar[bool] = ContextVar("landscape_trust_code", default=False)
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
    """``name`` with a file path made absolute and real (symlinks and ``..`` resolved), so
    that it names the same code elsewhere."""
    target, attr, is_file = split_spec(name, kind)
    if is_file:
        target = str(Path(target).expanduser().resolve())
    return f"{target}:{attr}"


@dataclass(frozen=True)
class Code:
    """A code spec resolved to one concrete source file: what is judged is what is loaded.

    ``spec``: the canonical spec; ``attr``: the attribute to call; ``file``: the real path of
    the source file (None: missing, built-in, frozen or a namespace package); ``source``: its
    bytes, read once; ``module``: the dotted module name (None for a file spec);
    ``packages``: the module specs of the enclosing packages, outermost first, as located
    (nothing imported); ``spec_of_module``: the module's own import spec.
    """

    spec: str
    attr: str
    file: Path | None
    source: bytes | None = None
    module: str | None = None
    packages: tuple[importlib.machinery.ModuleSpec, ...] = ()
    spec_of_module: importlib.machinery.ModuleSpec | None = None

    @property
    def sha256(self) -> str | None:
        """SHA-256 of the bytes read (None without a file)."""
        return None if self.source is None else sha256_hex(self.source)


def _locate(module: str) -> list[importlib.machinery.ModuleSpec] | None:
    """The import specs of ``module`` and each package above it, outermost first, found on
    ``sys.path`` by the path finder WITHOUT importing anything; None for built-in or missing
    modules."""
    parts = module.split(".")
    if not all(part.isidentifier() for part in parts) or parts[0] in sys.builtin_module_names:
        return None
    specs: list[importlib.machinery.ModuleSpec] = []
    locations: list[str] | None = None
    for i in range(len(parts)):
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), locations)
        if spec is None:
            return None
        specs.append(spec)
        locations = list(spec.submodule_search_locations or [])
        if i < len(parts) - 1 and not locations:
            return None  # a plain module has no submodules
    return specs


def resolve(name: str, kind: str = "model") -> Code:
    """The one file spec ``name`` names, and its bytes (see :class:`Code`); imports nothing.
    Cost: one read of the file."""
    target, attr, is_file = split_spec(name, kind)
    spec = canonical(name, kind)
    if is_file:
        file: Path | None = Path(target).expanduser().resolve()
        packages: list[importlib.machinery.ModuleSpec] = []
        own = None
    else:
        located = _locate(target) or []
        *packages, own = located or [None]
        origin = getattr(own, "origin", None)
        file = Path(origin).resolve() if origin and Path(origin).is_file() else None
    if file is None or not file.is_file():
        return Code(spec, attr, None, module=None if is_file else target)
    try:
        source = file.read_bytes()
    except OSError as err:
        raise LandscapeError(f"cannot read the {kind} file {file}: {err.strerror}") from None
    return Code(spec, attr, file, source, None if is_file else target, tuple(packages), own)


def _foreign_roots() -> list[Path]:
    """Folders that hold code that is not the user's: the interpreter's prefixes (standard
    library, site-packages), the user site, and landscape itself."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             *(sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib",
                                                          "platlib")),
             *site.getsitepackages(), site.getusersitepackages(),
             str(Path(__file__).resolve().parent)}
    return [Path(p).resolve() for p in paths if p]


def _foreign(code: Code) -> str | None:
    """Why ``code`` is not the user's own (see the module docstring), or None."""
    top = (code.module or "").split(".")[0]
    if top and (top in sys.stdlib_module_names or top in sys.builtin_module_names):
        return f"{top!r} is a standard-library module"
    if code.module is not None and code.file is None:
        return "a built-in, frozen or missing module"
    if code.file is None:
        return None
    if {"site-packages", "dist-packages"} & set(code.file.parts) or any(
            code.file.is_relative_to(root) for root in _foreign_roots()):
        return str(code.file)
    return None


def source_file(name: str, kind: str = "model") -> Path | None:
    """The real path of the file holding the code of spec ``name`` (located, never imported),
    or None."""
    return resolve(name, kind).file


def record(name: str, kind: str = "model") -> dict[str, str | None]:
    """``{"name": canonical spec, "sha256": of its source file (None if it has none)}``: what
    a run records so that a later :func:`check_recorded` notices a changed file."""
    code = resolve(name, kind)
    return {"name": code.spec, "sha256": code.sha256}


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
                   trust: bool = False, hashed: bool = True) -> Code:
    """The :class:`Code` of the spec ``name`` recorded in ``source``, which the caller loads
    (:func:`landscape.models.user.load_attribute` ``code=``), if it may run now; a one-line
    LandscapeError otherwise (see the module docstring). ``hashed=False``: the file records
    no hashes (a hand-written study TOML), so trust alone admits it. Imports nothing. Cost:
    one read of the spec's source file."""
    code = resolve(name, kind)
    foreign = _foreign(code)
    if foreign is not None:
        raise LandscapeError(
            f"{source}: recorded {kind} factory {name!r} resolves outside your own code "
            f"({foreign}); a recorded spec is never imported from there, trusted or not")
    named = code.spec in _NAMED.get()
    if not (named or trust or _TRUST_ALL.get()):
        raise LandscapeError(
            f"{source} names user code ({kind} factory {name!r}) that is not run unless you "
            f"trust it: name it again (--{kind} {code.spec}) or pass --trust-code "
            f"(Python: trust=True)")
    if code.file is None:
        raise LandscapeError(f"{source}: the {kind} file of {name!r} does not exist")
    if named or not hashed:
        return code
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise LandscapeError(
            f"{source} records no valid sha256 for {kind} factory {name!r} ({sha256!r}), so "
            f"a changed file would go unnoticed; name it again (--{kind} {code.spec}) to "
            "use it as it is now")
    if code.sha256 != sha256:
        raise LandscapeError(
            f"{code.file} changed since {source} recorded it (sha256 {sha256[:12]}..., now "
            f"{code.sha256[:12]}...); name it again (--{kind} {code.spec}) to use it as it "
            "is now")
    return code
