"""The bundled backends against the shared conformance suite."""

from __future__ import annotations

from pathlib import Path

from ctxflow.stores import MemoryStore, SQLiteStore
from ctxflow.stores.base import BaseStore
from ctxflow.stores.conformance import StoreConformance


class TestMemoryStore(StoreConformance):
    """The in-memory store conforms."""

    def make_store(self, tmp_path: Path) -> BaseStore:
        """A fresh in-memory store."""
        return MemoryStore()


class TestSQLiteStore(StoreConformance):
    """The SQLite store conforms."""

    def make_store(self, tmp_path: Path) -> BaseStore:
        """A fresh SQLite store in a temporary file."""
        return SQLiteStore(tmp_path / "store.db")
