"""Compatibility re-exports; import from ctxflow.persistence (or ctxflow.stores)."""

from ctxflow.persistence import AsyncStore, BaseStore, Store, ThreadedAsyncStore

__all__ = ["AsyncStore", "BaseStore", "Store", "ThreadedAsyncStore"]
