"""Long-term memory: consolidation, bounds, retrieval, the memory tool, memory across sessions.

The short-term tier is the conversation itself; the long-term tiers
(episodic, semantic, procedural) live in the layered state
(:class:`ctxflow.layers.MemoryLayer`) and so in every checkpoint.

- :class:`Consolidator` (the engine's default): on entering reflection, on
  finishing and after a compression, an episode for the span since the last
  consolidation, the facts stated, the procedures learned
  (:func:`learn_procedures`), all bounded by :class:`MemoryLimits`;
- the memory tool (:data:`MEMORY_TOOL`, :func:`handle_memory`): the model
  views, searches, writes, updates and deletes its own memory
  (``run_agent(..., memory_tool=True)``);
- relevance: when a tier's items do not all fit, the window keeps those most
  relevant to the task and the latest turn, by a :class:`Retriever`
  (:class:`BM25Retriever` by default; :class:`EmbeddingRetriever` and
  :class:`HybridRetriever` with the ``embeddings`` extra, chosen with
  ``Engine(retriever=...)`` or :func:`retriever_named`);
- memory across sessions (:class:`SharedMemory`, :func:`shared_memory_for`):
  items scoped ``"user"`` or ``"project"`` are kept per :class:`Owner` on the
  same stores, and an engine given ``shared_memory=`` and ``owners=`` starts
  with them.

``RedisSharedMemory`` and ``PostgresSharedMemory`` load on first use (``redis``
and ``psycopg`` are optional extras).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ctxflow.memory._choosing import memory_query, relevance_chooser
from ctxflow.memory._consolidate import (
    CONSOLIDATION_PREFIX,
    SESSION_EPISODE,
    Consolidator,
    MemoryLimits,
    bound,
    with_counts,
)
from ctxflow.memory._embedding import (
    RETRIEVERS,
    EmbeddingRetriever,
    EmbeddingsUnavailable,
    HybridRetriever,
    retriever_named,
)
from ctxflow.memory._procedures import (
    ProcedureLearner,
    failure_signal,
    learn_procedures,
    load_procedures,
    procedures_from_plain,
    success_signal,
)
from ctxflow.memory._retrieval import BM25Retriever, Retriever
from ctxflow.memory._shared import (
    InMemorySharedMemory,
    Owner,
    SharedItems,
    SharedMemory,
    shared_memory_for,
)
from ctxflow.memory._shared_sqlite import SQLiteSharedMemory
from ctxflow.memory._tool import (
    MEMORY_TOOL,
    MemoryOutcome,
    anthropic_memory_tool,
    handle_memory,
    openai_memory_tool,
)

if TYPE_CHECKING:
    from ctxflow.memory._shared_postgres import PostgresSharedMemory
    from ctxflow.memory._shared_redis import RedisSharedMemory

__all__ = [
    "CONSOLIDATION_PREFIX",
    "MEMORY_TOOL",
    "RETRIEVERS",
    "SESSION_EPISODE",
    "BM25Retriever",
    "Consolidator",
    "EmbeddingRetriever",
    "EmbeddingsUnavailable",
    "HybridRetriever",
    "InMemorySharedMemory",
    "MemoryLimits",
    "MemoryOutcome",
    "Owner",
    "PostgresSharedMemory",
    "ProcedureLearner",
    "RedisSharedMemory",
    "Retriever",
    "SQLiteSharedMemory",
    "SharedItems",
    "SharedMemory",
    "anthropic_memory_tool",
    "bound",
    "failure_signal",
    "handle_memory",
    "learn_procedures",
    "load_procedures",
    "memory_query",
    "openai_memory_tool",
    "procedures_from_plain",
    "relevance_chooser",
    "retriever_named",
    "shared_memory_for",
    "success_signal",
    "with_counts",
]


#: Names loaded on first use, and the module each comes from.
_LAZY = {
    "PostgresSharedMemory": "ctxflow.memory._shared_postgres",
    "RedisSharedMemory": "ctxflow.memory._shared_redis",
}


def __getattr__(name: str) -> Any:
    """Load ``RedisSharedMemory`` and ``PostgresSharedMemory`` on first use (see the module
    docstring)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ctxflow.memory' has no attribute {name!r}")
