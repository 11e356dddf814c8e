"""Open a ctxflow store from a URL, for :meth:`CtxflowSaver.from_conn_string`.

This one function is where the saver turns a connection string into a store;
it reads ``memory``, ``sqlite:///path`` and a plain path. It is meant to be
replaced by ``ctxflow.stores.open_store`` (which also reads ``redis://`` and
``postgresql://``) once the stores open by URL themselves.
"""

from __future__ import annotations

from ctxflow.errors import StoreError
from ctxflow.stores import BaseStore, MemoryStore, SQLiteStore

__all__ = ["open_store"]


def open_store(url: str) -> BaseStore:
    """The store a URL names: ``memory``, ``sqlite:///path`` or a plain file path."""
    if not isinstance(url, str) or not url:
        raise StoreError(
            f"a store URL must be a non-empty string (got {url!r})", rule="store_url", url=url
        )
    if url in {"memory", "memory://", ":memory:"}:
        return MemoryStore()
    if url.startswith("sqlite:///"):
        return SQLiteStore(url[len("sqlite:///") :])
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise StoreError(
            f"a store URL must be 'memory', 'sqlite:///path' or a path (got scheme {scheme!r})",
            rule="store_url",
            url=url,
        )
    return SQLiteStore(url)
