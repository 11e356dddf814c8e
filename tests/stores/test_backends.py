"""The bundled backends against the shared conformance suite."""

from __future__ import annotations

from pathlib import Path

from ctxflow.stores import BaseStore, MemoryStore, SQLiteStore, StoreConformance


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


class TestPackedSQLiteStore(StoreConformance):
    """The SQLite store conforms with its checkpoint rows and bodies packed almost at once."""

    def make_store(self, tmp_path: Path) -> BaseStore:
        """A SQLite store that packs every few rows and bodies."""
        return SQLiteStore(tmp_path / "store.db", pack_checkpoints=2, segment_bodies=3)
