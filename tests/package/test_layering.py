"""Imports point one way: every import of the package, type-only ones included, follows the order
that docs/architecture.md gives, with no cycle."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "ctxflow"

#: Each part of ctxflow and its rank: a part imports only parts of a lower rank.
RANKS = {
    "errors": 0,
    "_critical": 0,
    "_plain": 0,
    "_collector": 0,
    "_kept": 0,
    "_log": 1,
    "_checks": 1,
    "_telemetry": 1,
    "model": 2,
    "protocols": 3,
    "tokens": 4,
    "layers": 4,
    "budget": 5,
    "context": 5,
    "compression": 5,
    "adapters": 5,
    "persistence": 6,
    "stores": 7,
    "memory": 7,
    "engine": 8,
    "sessions": 9,
    "loop": 9,
    "replay": 10,
    "testing": 10,
    "integrations": 10,
    "cli": 11,
    "__main__": 12,
    "": 12,  # the top-level __init__
}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports() -> dict[str, dict[str, set[str]]]:
    """Part → imported ctxflow module → the files importing it."""
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        source = _part(module)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names]
                if node.module != "ctxflow":  # `from ctxflow import x` imports ctxflow.x
                    names.append(node.module)
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("ctxflow.") or name == "ctxflow":
                    found[source][name].add(str(relative))
    return found


def _resolves(name: str) -> bool:
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    base = PACKAGE / relative
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def test_every_part_has_a_rank() -> None:
    """Each module directly under ctxflow/ is named in the import order."""
    parts = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.is_file() and p.suffix == ".py") or (p / "__init__.py").exists()
    }
    parts.discard("__init__")
    assert parts <= set(RANKS), sorted(parts - set(RANKS))


def test_imports_point_one_way() -> None:
    """No part imports a part of its own rank or above (type-only imports included)."""
    wrong = []
    for source, names in _imports().items():
        for name, files in names.items():
            if not _resolves(name):
                continue  # a name imported from a module, not a module
            target = _part(name)
            if target != source and RANKS[target] >= RANKS[source]:
                wrong.append(f"{sorted(files)[0]} imports {name}")
    assert wrong == []


def test_python_statemachine_only_in_the_engine() -> None:
    """python-statemachine is imported by ctxflow.engine and nowhere else."""
    outside = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "engine":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            else:
                continue
            if any(m.startswith("statemachine") for m in modules):
                outside.append(str(path.relative_to(PACKAGE)))
    assert outside == []


def test_the_engine_imports_no_concrete_store() -> None:
    """The engine imports the persistence core, never the SQLite or Redis backend."""
    concrete = ("sqlite", "redis", "ctxflow.stores")
    bad = [
        f"{sorted(files)[0]} imports {name}"
        for name, files in _imports()["engine"].items()
        if any(word in name for word in concrete)
    ]
    assert bad == []
