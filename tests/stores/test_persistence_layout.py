"""The persistence package's imports point one way: protocol and model first, backends last.

Imports are read from the source with ``ast`` (type-only imports under
``TYPE_CHECKING`` included), so a cycle hidden from the interpreter is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ctxflow.persistence

PACKAGE = "ctxflow.persistence"
ROOT = Path(ctxflow.persistence.__file__).parent
#: The checkpoint model: the only part of the package the store protocol may import.
MODEL = {f"{PACKAGE}._model", f"{PACKAGE}._manifest", f"{PACKAGE}._bodies"}
#: Modules of the backends that need sqlite3 or redis (and the suite that needs pytest).
OUTER = (f"{PACKAGE}._sqlite", f"{PACKAGE}._redis", f"{PACKAGE}._conformance")
#: Modules no module of the core may import, directly or through another.
FOREIGN = ("sqlite3", "redis", "pytest", f"{PACKAGE}._sqlite", f"{PACKAGE}._redis")


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module a source file imports (``from a import b`` counts ``a`` and ``a.b``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            assert node.module is not None
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {_name(path): _imports(path) for path in sorted(ROOT.rglob("*.py"))}
#: The package's own modules each module imports.
GRAPH = {name: {m for m in found if m in MODULES and m != name} for name, found in MODULES.items()}
CORE = sorted(name for name in MODULES if not name.startswith(OUTER))


def _reachable(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for module in GRAPH[todo.pop()]:
            if module not in seen:
                seen.add(module)
                todo.append(module)
    return seen


def _foreign(found: set[str]) -> set[str]:
    return {m for m in found if any(m == f or m.startswith(f"{f}.") for f in FOREIGN)}


def test_the_walk_finds_every_part() -> None:
    """The walk sees the core modules, the SQLite parts and the Redis store."""
    assert {f"{PACKAGE}._protocol", f"{PACKAGE}._codec", f"{PACKAGE}._base"} <= set(CORE)
    assert f"{PACKAGE}._sqlite.store" in MODULES
    assert f"{PACKAGE}._redis" in MODULES


def test_no_import_cycle() -> None:
    """No module of the package reaches itself through the package's imports."""
    cycles = sorted(name for name in GRAPH if name in _reachable(name))
    assert not cycles


@pytest.mark.parametrize("name", CORE)
def test_core_imports_no_sqlite_or_redis(name: str) -> None:
    """A core module imports no SQLite or Redis module, not even through another one."""
    found = MODULES[name] | {m for reached in _reachable(name) for m in MODULES[reached]}
    assert not _foreign(found)


def test_protocol_imports_only_the_model() -> None:
    """The store protocol imports nothing of the package but the checkpoint model."""
    assert GRAPH[f"{PACKAGE}._protocol"] <= MODEL


@pytest.mark.parametrize("name", sorted(MODULES))
def test_nothing_imports_the_engine_or_the_old_paths(name: str) -> None:
    """No module of the package imports the engine, the sessions or the compatibility shims."""
    above = ("ctxflow.engine", "ctxflow.sessions", "ctxflow.checkpoints", "ctxflow.stores")
    assert not {m for m in MODULES[name] if m.startswith((*above, "ctxflow.serde"))}
