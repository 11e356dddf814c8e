"""Tests for the public surface: every ``__all__`` is sorted and names what exists."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import ctxflow

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(ctxflow.__path__, "ctxflow.")
    if not m.name.endswith("__main__")
)


def _isort(name: str) -> tuple[int, str]:
    """isort-style order (ruff RUF022): CONSTANTS, then Classes, then functions."""
    if name.isupper() and len(name) > 1:
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def test_top_level_surface_is_small_and_complete() -> None:
    """The top level exports about a dozen names, each importable from it."""
    assert 8 <= len(ctxflow.__all__) <= 16
    for name in ctxflow.__all__:
        assert hasattr(ctxflow, name), name


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_and_defined(name: str) -> None:
    """A module's __all__ (when it has one) is sorted and every name exists."""
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        return
    assert list(exported) == sorted(exported, key=_isort), f"{name}.__all__ is not sorted"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"
