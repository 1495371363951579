"""The package's shape, read from the AST of every module (nothing is imported).

Edges of the import graph are every ``import``/``from ... import`` of a ``landscape`` module,
at module level AND inside functions: a function-local import runs whenever the function
does, so it couples the two modules just as much (it only defers the cost). The parent
packages that Python initializes on the way to a submodule are not edges: they are facades
(``landscape/__init__.py`` re-exports lazily), and an explicit ``import landscape`` or
``from landscape import name`` is an edge to the package root like any other.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "landscape"

#: Floors, bottom first: a module imports only from its own floor or below. The engine is
#: the bottom of what is computed; figures (plot) are drawn by callers (cli, the package).
LAYERS: list[tuple[str, ...]] = [
    ("landscape.errors", "landscape.version", "landscape.progress", "landscape.stats",
     "landscape.hashing",
     "landscape.trust", "landscape.distributed", "landscape.store", "landscape.params",
     "landscape.per_sample", "landscape.linalg", "landscape.sources", "landscape.evaluate",
     "landscape.operators", "landscape.device", "landscape.h5heap", "landscape.gridfile"),
    ("landscape.data", "landscape.userdata", "landscape.models"),
    ("landscape.objective", "landscape.runs"),
    # the trainer's parts below it: schedules, evaluation, the run directory's writing side
    ("landscape.training.schedules", "landscape.training.evaluation",
     "landscape.training.rundir"),
    ("landscape.surface", "landscape.analysis", "landscape.training", "landscape.toy",
     "landscape.connect"),
    ("landscape.study", "landscape.findings", "landscape.formats"),
    ("landscape.plot", "landscape.report"),
    ("landscape.cli", "landscape"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(module: str, path: Path) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` of every import in the file."""
    out: list[tuple[str, str | None, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out += [(name, a.name, node.lineno) for a in node.names]
    return out


@functools.cache
def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for name, attr, _ in _imports(module, path):
            if not (name == "landscape" or name.startswith("landscape.")):
                continue
            target = f"{name}.{attr}" if attr and f"{name}.{attr}" in MODULES else name
            if target != module:
                graph[module].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (found := visit(t)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def _floor(module: str) -> int:
    best = None
    for i, names in enumerate(LAYERS):
        for prefix in names:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix))
    assert best is not None, f"{module} is on no floor of LAYERS"
    return best[0]


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_import_graph_of_the_package_has_no_cycle() -> None:
    graph = _graph()
    assert sum(map(len, graph.values())) > 50  # the graph was really read
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_no_module_imports_a_private_name_of_another() -> None:
    bad = []
    for module, path in MODULES.items():
        for name, attr, line in _imports(module, path):
            parts = name.split(".") + ([attr] if attr else [])
            if not parts[0] == "landscape":
                continue
            # a private name of another module (a private module of its own package is the
            # package's business: landscape.models._common, landscape.plot._inputs)
            if attr and attr.startswith("_") and not attr.startswith("__") \
                    and f"{name}.{attr}" not in MODULES and name != module:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line}: {name}.{attr}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_from_a_floor_above_its_own(module: str) -> None:
    above = sorted(t for t in _graph()[module] if _floor(t) > _floor(module))
    assert not above, f"{module} (floor {_floor(module)}) imports {above}"


def _package(module: str) -> str:
    """``landscape.X`` for a module of the package ``landscape.X`` (or the module itself)."""
    return ".".join(module.split(".")[:2])


def test_packages_have_no_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        graph.setdefault(_package(module), set()).update(
            _package(t) for t in targets if _package(t) != _package(module))
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def _private_names(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, methods, ``self._x`` attributes."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
    return {n for n in out if n.startswith("_") and not n.startswith("__")}


def test_no_module_uses_a_private_attribute_defined_in_another() -> None:
    trees = {m: ast.parse(p.read_text(), str(p)) for m, p in MODULES.items()}
    defined = {m: _private_names(t) for m, t in trees.items()}
    elsewhere = {m: set().union(*(d for o, d in defined.items() if o != m)) - defined[m]
                 for m in trees}
    assert elsewhere["landscape.objective"]  # the names were really read
    bad = [f"{MODULES[m].relative_to(ROOT.parent)}:{node.lineno}: .{node.attr}"
           for m, tree in trees.items() for node in ast.walk(tree)
           if isinstance(node, ast.Attribute) and node.attr in elsewhere[m]
           and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))]
    assert not bad, "\n".join(bad)
