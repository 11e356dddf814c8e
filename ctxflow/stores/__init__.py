"""Checkpoint stores: the public namespace of the backends, each behind one protocol.

In memory (:class:`MemoryStore`), one SQLite file (:class:`SQLiteStore`, the
embedded default), Redis (:class:`RedisStore`, many processes and machines)
and PostgreSQL (:class:`PostgresStore`, durable checkpoints of many processes
and machines). :func:`open_store` opens any of them from a URL. Stores are an
outer ring: the engine receives one, it never imports a concrete backend.
Every backend passes :class:`StoreConformance`.

``RedisStore`` (with its fencing and key helpers), ``PostgresStore`` and
``StoreConformance`` load on first use: ``import ctxflow.stores`` imports
neither ``redis`` nor ``psycopg`` (optional extras) nor ``pytest`` (which the
conformance suite needs).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ctxflow.persistence import AsyncStore, BaseStore, MemoryStore, Store, ThreadedAsyncStore
from ctxflow.persistence._sqlite import SQLiteStore
from ctxflow.stores._url import StoreURL, open_store, parse_store_url

if TYPE_CHECKING:
    from ctxflow.persistence._conformance import StoreConformance
    from ctxflow.persistence._postgres import PostgresStore
    from ctxflow.persistence._redis import (
        Fence,
        RedisKeys,
        RedisStore,
        check_session_id,
        check_tenant,
    )

__all__ = [
    "AsyncStore",
    "BaseStore",
    "Fence",
    "MemoryStore",
    "PostgresStore",
    "RedisKeys",
    "RedisStore",
    "SQLiteStore",
    "Store",
    "StoreConformance",
    "StoreURL",
    "ThreadedAsyncStore",
    "check_session_id",
    "check_tenant",
    "open_store",
    "parse_store_url",
]

#: Names loaded on first use, and the module each comes from.
_LAZY = {
    "Fence": "ctxflow.persistence._redis",
    "RedisKeys": "ctxflow.persistence._redis",
    "PostgresStore": "ctxflow.persistence._postgres",
    "RedisStore": "ctxflow.persistence._redis",
    "StoreConformance": "ctxflow.persistence._conformance",
    "check_session_id": "ctxflow.persistence._redis",
    "check_tenant": "ctxflow.persistence._redis",
}


def __getattr__(name: str) -> Any:
    """Load the Redis and PostgreSQL stores and the conformance suite on first use (module
    docstring)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
