"""Long-term memory: consolidation, bounds, retrieval, the memory tool, memory across sessions.

The short-term tier is the conversation itself; the long-term tiers
(episodic, semantic, procedural) live in the layered state
(:class:`ctxflow.layers.MemoryLayer`) and so in every checkpoint.
"""

from ctxflow.memory._consolidate import (
    CONSOLIDATION_PREFIX,
    SESSION_EPISODE,
    Consolidator,
    MemoryLimits,
    bound,
    item_line,
    with_counts,
)

__all__ = [
    "CONSOLIDATION_PREFIX",
    "SESSION_EPISODE",
    "Consolidator",
    "MemoryLimits",
    "bound",
    "item_line",
    "with_counts",
]
