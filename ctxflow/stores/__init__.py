"""Checkpoint stores: in-memory and SQLite behind one protocol, with a shared conformance suite.

Stores are an outer ring: the engine receives one, it never imports a
concrete backend. Every backend passes :class:`ctxflow.stores.conformance.StoreConformance`.
"""

from ctxflow.stores.base import AsyncStore, BaseStore, Store, ThreadedAsyncStore
from ctxflow.stores.memory import MemoryStore
from ctxflow.stores.sqlite import SQLiteStore

__all__ = ["AsyncStore", "BaseStore", "MemoryStore", "SQLiteStore", "Store", "ThreadedAsyncStore"]
