"""Sessions: many agent sessions in one process, each an engine (and, with Redis, across
processes).

``SessionCoordinator`` and its parts (distributed ownership on Redis) load on
first use, so ``import ctxflow.sessions`` never imports ``redis`` (an optional
extra).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ctxflow.sessions._manager import (
    ContextManager,
    LadderCompressor,
    Latency,
    Limits,
    ManagerStats,
    MemoryCheck,
    MemoryThresholds,
    retry,
)
from ctxflow.sessions._merge import MergeStrategy, Part, merge_parts, originals, split_messages

if TYPE_CHECKING:
    from ctxflow.sessions._ownership import (
        FencedStore,
        Invalidation,
        Lease,
        SessionCoordinator,
        Versioned,
    )

__all__ = [
    "ContextManager",
    "FencedStore",
    "Invalidation",
    "LadderCompressor",
    "Latency",
    "Lease",
    "Limits",
    "ManagerStats",
    "MemoryCheck",
    "MemoryThresholds",
    "MergeStrategy",
    "Part",
    "SessionCoordinator",
    "Versioned",
    "merge_parts",
    "originals",
    "retry",
    "split_messages",
]

_OWNERSHIP = frozenset({"FencedStore", "Invalidation", "Lease", "SessionCoordinator", "Versioned"})


def __getattr__(name: str) -> Any:
    """Load distributed ownership (it needs redis) on first use."""
    if name not in _OWNERSHIP:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("ctxflow.sessions._ownership"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
