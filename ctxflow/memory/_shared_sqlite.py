"""Shared memory in a SQLite file: a table of its own, beside the checkpoint store's if you like.

The file is a ctxflow file: before anything is written, the checkpoint
store's own check (:func:`~ctxflow.persistence._sqlite.schema.inspect_file`)
refuses a file that is not SQLite or belongs to another application,
untouched. A new file is marked with the store's ``application_id``, so a
``SQLiteStore`` opens it later (and adds its tables) as it would its own; a
store file is used as it is. The table's schema version is kept in the
store's ``ctxflow_meta`` table under ``shared_memory``: a newer one is
refused, never misread.

The same discipline as the store: WAL, writes in ``BEGIN IMMEDIATE``
transactions (two writers queue on the file lock, and a merge's read of the
owner's items and its writes happen under it), reads in a deferred
transaction (a consistent snapshot), one connection per instance guarded by
a lock so threads may share it, and every ``sqlite3`` failure re-raised as
``StoreError`` naming the file. ``read_only=True`` never writes.

Each row keeps an item's importance and write time beside its bytes, so
eviction and retention are plain SQL over columns and never decode an item.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ctxflow.errors import StoreError
from ctxflow.memory._shared import (
    DEFAULT_MAX_ITEM_BYTES,
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_OWNER_BYTES,
    ItemMeta,
    MemoryCore,
    Owner,
    SharedItems,
    StoredItem,
    _ClosingBackend,
    corrupt_item,
)
from ctxflow.persistence._codec import EnvelopeCodec
from ctxflow.persistence._sqlite.schema import (
    APPLICATION_ID,
    FileKind,
    inspect_file,
    schema_version,
)

__all__ = ["SHARED_SCHEMA_VERSION", "SQLiteSharedMemory"]

#: The version of the ``shared_memory`` table this code writes.
SHARED_SCHEMA_VERSION = "1"
#: Its key in ``ctxflow_meta``.
_META_KEY = "shared_memory"
_TABLE = """
CREATE TABLE IF NOT EXISTS shared_memory (
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    item TEXT NOT NULL,
    importance REAL NOT NULL,
    written_at REAL NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (tenant, kind, owner, item)
);
CREATE INDEX IF NOT EXISTS shared_memory_written ON shared_memory (written_at)
"""
_OWNER = "tenant = ? AND kind = ? AND owner = ?"
_UPSERT = (
    "INSERT INTO shared_memory (tenant, kind, owner, item, importance, written_at, data) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, kind, owner, item) DO UPDATE SET "
    "importance = excluded.importance, written_at = excluded.written_at, data = excluded.data"
)


def _key(owner: Owner) -> tuple[str, str, str]:
    return owner.tenant, owner.kind, owner.id


def _meta(owner: Owner, row: sqlite3.Row | tuple[Any, ...]) -> ItemMeta:
    name, importance, written_at, size = row
    if not all(isinstance(v, int | float) for v in (importance, written_at, size)):
        raise corrupt_item(
            owner, str(name), f"its importance, time or size is not a number ({row[1:]!r})"
        )
    return ItemMeta(float(importance), float(written_at), int(size))


class SQLiteSharedMemory(_ClosingBackend):
    """A :class:`~ctxflow.memory._shared.SharedMemory` in a SQLite file (threads and processes
    share it); the file may be a ``SQLiteStore``'s."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        codec: EnvelopeCodec | None = None,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES,
        max_owner_bytes: int = DEFAULT_MAX_OWNER_BYTES,
        timeout: float = 30.0,
        synchronous: str = "NORMAL",
        read_only: bool = False,
    ) -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise StoreError(
                f"'synchronous' must be OFF, NORMAL, FULL or EXTRA (got {synchronous!r})",
                rule="sqlite_option",
            )
        self._core = MemoryCore(
            codec=codec,
            clock=clock,
            max_items=max_items,
            max_item_bytes=max_item_bytes,
            max_owner_bytes=max_owner_bytes,
        )
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.RLock()
        kind = inspect_file(self.path)  # refuses another application's file, untouched
        if read_only and kind is FileKind.NEW:
            raise StoreError(
                f"{self.path}: shared memory opened read-only must be in an existing ctxflow "
                f"file (the file is {'empty' if self.path.exists() else 'missing'})",
                rule="no_store",
                path=str(self.path),
            )
        with self._errors("open"):
            self._db = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        try:
            with self._errors("open"):
                if read_only:
                    self._db.execute("PRAGMA query_only = ON")
                else:
                    self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
                self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
                version = self._version()
                self._check_version(version)
                if version is None and not read_only:
                    self._create()
                    version = SHARED_SCHEMA_VERSION
                self._ready = version is not None
        except BaseException:
            self._db.close()
            raise

    def __repr__(self) -> str:
        mode = " read-only" if self.read_only else ""
        return f"<SQLiteSharedMemory {self.path.name}{mode}>"

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    # -- schema ---------------------------------------------------------------------

    def _version(self) -> str | None:
        try:
            row = self._db.execute(
                "SELECT value FROM ctxflow_meta WHERE key = ?", (_META_KEY,)
            ).fetchone()
        except sqlite3.OperationalError:  # no ctxflow_meta table yet
            return None
        return None if row is None else str(row[0])

    def _check_version(self, version: str | None) -> None:
        if version is not None and version != SHARED_SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: the shared memory table must be version {SHARED_SCHEMA_VERSION} "
                f"(got {version})",
                rule="schema_version",
                path=str(self.path),
                version=version,
            )

    def _create(self) -> None:
        """Create the table in one write transaction, marking a new file as ctxflow's."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            version = self._version()  # another connection may have made it meanwhile
            self._check_version(version)
            if version is None:
                (marked,) = db.execute("PRAGMA application_id").fetchone()
                store = schema_version(db) is not None
                if marked not in (0, APPLICATION_ID):
                    raise StoreError(
                        f"{self.path}: shared memory must be kept in a file ctxflow made or an "
                        f"empty one (its application_id is {marked:#010x}); it was left untouched",
                        rule="foreign_file",
                        path=str(self.path),
                    )
                # A store file written before the mark stays unmarked: the store marks it
                # (and adds its columns) on its own first write.
                if not marked and not store:
                    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(
                    "CREATE TABLE IF NOT EXISTS ctxflow_meta "
                    "(key TEXT PRIMARY KEY, value TEXT NOT NULL)"
                )
                for statement in _TABLE.split(";"):
                    db.execute(statement)
                db.execute(
                    "INSERT INTO ctxflow_meta (key, value) VALUES (?, ?)",
                    (_META_KEY, SHARED_SCHEMA_VERSION),
                )
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- transactions -----------------------------------------------------------

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(
                f"{self.path}: shared memory {doing} failed: SQLite reported "
                f"{type(exc).__name__}: {exc}",
                rule="sqlite",
                path=str(self.path),
                sqlite_error=str(exc),
            ) from exc

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        if write and self.read_only:
            raise StoreError(
                f"{self.path}: shared memory opened read-only must not be written",
                rule="read_only",
                path=str(self.path),
            )
        with self._lock, self._errors("write" if write else "read"):
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- the protocol (_Backend checks the arguments, then calls these) ------------

    def _load(self, owner: Owner) -> SharedItems:
        if not self._ready:
            return SharedItems()
        with self._transaction(write=False) as db:
            rows = db.execute(
                f"SELECT item, data FROM shared_memory WHERE {_OWNER}", _key(owner)
            ).fetchall()
        return self._core.items(owner, ((str(n), d) for n, d in rows))

    def _merge(self, owner: Owner, incoming: dict[str, StoredItem]) -> None:
        key = _key(owner)
        with self._transaction(write=True) as db:
            rows = db.execute(
                "SELECT item, importance, written_at, length(data) FROM shared_memory "
                f"WHERE {_OWNER}",
                key,
            )
            existing = {str(row[0]): _meta(owner, row) for row in rows}
            writes, deletes = self._core.plan(existing, incoming)
            db.executemany(
                f"DELETE FROM shared_memory WHERE {_OWNER} AND item = ?",
                [(*key, name) for name in deletes],
            )
            db.executemany(
                _UPSERT,
                [(*key, i.name, i.meta.importance, i.meta.written_at, i.data) for i in writes],
            )

    def _delete(self, owner: Owner, doomed: list[str]) -> int:
        key = _key(owner)
        with self._transaction(write=True) as db:
            return sum(
                db.execute(
                    f"DELETE FROM shared_memory WHERE {_OWNER} AND item = ?", (*key, name)
                ).rowcount
                for name in doomed
            )

    def _erase(self, owner: Owner) -> int:
        if not self._ready:
            return 0
        with self._transaction(write=True) as db:
            return db.execute(f"DELETE FROM shared_memory WHERE {_OWNER}", _key(owner)).rowcount

    def _owners(self, tenant: str) -> list[Owner]:
        if not self._ready:
            return []
        with self._transaction(write=False) as db:
            rows = db.execute(
                "SELECT DISTINCT kind, owner FROM shared_memory WHERE tenant = ? "
                "ORDER BY kind, owner",
                (tenant,),
            ).fetchall()
        return [Owner(tenant=tenant, kind=kind, id=id) for kind, id in rows]

    def _prune(self, cutoff: float, tenant: str | None) -> int:
        if not self._ready:
            return 0
        with self._transaction(write=True) as db:
            if tenant is None:
                cursor = db.execute("DELETE FROM shared_memory WHERE written_at <= ?", (cutoff,))
            else:
                cursor = db.execute(
                    "DELETE FROM shared_memory WHERE written_at <= ? AND tenant = ?",
                    (cutoff, tenant),
                )
            return cursor.rowcount
