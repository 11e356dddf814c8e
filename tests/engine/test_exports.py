"""The engine's public surface: ``__all__`` sorted and complete."""

from __future__ import annotations

import ctxflow.engine


def test_all_is_sorted_and_complete() -> None:
    """Every public name is exported once, in sorted order (constants first)."""
    exported = ctxflow.engine.__all__
    constants = [n for n in exported if n.isupper()]
    assert exported == constants + sorted(n for n in exported if not n.isupper())
    assert constants == sorted(constants)
    public = {
        n for n in vars(ctxflow.engine) if n.isidentifier() and not n.startswith("_") and n not in {
            "audit", "charts", "diagrams", "engine", "listeners", "records"
        }
    }  # fmt: skip
    assert set(exported) == public
