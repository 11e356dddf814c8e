"""The public surface: a few namespaces, every public name documented, docs and examples using
only the namespaces."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: The namespaces users import from; everything else is implementation.
PUBLIC = (
    "ctxflow",
    "ctxflow.errors",
    "ctxflow.model",
    "ctxflow.protocols",
    "ctxflow.tokens",
    "ctxflow.layers",
    "ctxflow.context",
    "ctxflow.budget",
    "ctxflow.compression",
    "ctxflow.adapters",
    "ctxflow.persistence",
    "ctxflow.stores",
    "ctxflow.memory",
    "ctxflow.engine",
    "ctxflow.sessions",
    "ctxflow.loop",
    "ctxflow.testing",
    "ctxflow.integrations.langchain",
    "ctxflow.integrations.langgraph",
)


def _sections() -> dict[str, str]:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    parts = re.split(r"^## `([\w.]+)`$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.parametrize("namespace", PUBLIC)
def test_every_public_name_is_in_the_api_reference(namespace: str) -> None:
    """Each name a namespace exports has its line in docs/api.md, under that namespace."""
    section = _sections().get(namespace, "")
    module = importlib.import_module(namespace)
    missing = [n for n in module.__all__ if f"| `{n}` |" not in section]
    assert missing == []


def test_the_reference_names_nothing_that_is_not_exported() -> None:
    """docs/api.md lists no name its namespace does not export (no stale lines)."""
    stale = []
    for namespace, section in _sections().items():
        exported = set(importlib.import_module(namespace).__all__)
        listed = re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE)
        stale += [f"{namespace}.{n}" for n in listed if n not in exported]
    assert stale == []


def test_the_top_level_is_small_and_sorted() -> None:
    """ctxflow itself exports about a dozen names, sorted."""
    import ctxflow

    names = [n for n in ctxflow.__all__ if n != "__version__"]
    assert len(names) <= 16
    assert names == sorted(names)


def _imported_modules(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ctxflow"):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("ctxflow")]
    return found


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_readme_docs_and_examples_import_only_public_namespaces() -> None:
    """README, docs/ and examples/ import ctxflow only through its public namespaces."""
    sources = [(p, p.read_text(encoding="utf-8")) for p in sorted(ROOT.glob("examples/*.py"))]
    for page in [ROOT / "README.md", *sorted(ROOT.glob("docs/*.md"))]:
        sources += [(page, block) for block in _python_blocks(page.read_text(encoding="utf-8"))]
    private = [
        f"{path.relative_to(ROOT)}: {module}"
        for path, source in sources
        for module in _imported_modules(source)
        if module not in PUBLIC
    ]
    assert private == []
