"""Shared memory in PostgreSQL: a table beside the checkpoint store's, in the same schema.

The table ``shared_memory`` lives in the store's schema (``ctxflow`` unless
told), its version recorded in the same ``ctxflow_schema`` table under
``shared_memory``: created (or upgraded) on open, a newer version refused,
never misread, and a schema holding another application's tables refused
untouched (see :mod:`ctxflow.persistence._postgres.schema`).

Each row keeps an item's importance and write time beside its bytes, so
eviction and retention are plain SQL over columns and never decode an item.

Atomicity. A merge takes an advisory transaction lock on its owner, then reads
the owner's rows, plans the upserts and evictions, and writes them in the same
transaction: two merges of one owner queue, and neither loses the other's
items. Reads run in ``REPEATABLE READ, READ ONLY`` transactions (one
snapshot). Every psycopg error is re-raised as ``StoreError``
(``rule="postgres"``); a serialization failure or deadlock runs the operation
again, a lost connection never (a write whose reply was lost may have landed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import psycopg.errors
import psycopg_pool

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
from ctxflow.persistence._names import check_schema
from ctxflow.persistence._postgres.schema import check_search_path, lock_key, prepare
from ctxflow.persistence._postgres.store import open_pool

__all__ = ["PostgresSharedMemory"]

T = TypeVar("T")

_TABLE = """
CREATE TABLE IF NOT EXISTS shared_memory (
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    item TEXT NOT NULL,
    importance DOUBLE PRECISION NOT NULL,
    written_at DOUBLE PRECISION NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (tenant, kind, owner, item)
);
CREATE INDEX IF NOT EXISTS shared_memory_written ON shared_memory (written_at)
"""
_OWNER = "tenant = %s AND kind = %s AND owner = %s"
_UPSERT = (
    "INSERT INTO shared_memory (tenant, kind, owner, item, importance, written_at, data) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (tenant, kind, owner, item) DO UPDATE SET "
    "importance = excluded.importance, written_at = excluded.written_at, data = excluded.data"
)
_AGAIN = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)


def _key(owner: Owner) -> tuple[str, str, str]:
    return owner.tenant, owner.kind, owner.id


class PostgresSharedMemory(_ClosingBackend):
    """A :class:`~ctxflow.memory._shared.SharedMemory` in PostgreSQL (threads, processes and
    machines share it); the schema may be a ``PostgresStore``'s.

    ``pool`` is a psycopg connection pool (a ``PostgresStore``'s ``pool``, kept open on
    :meth:`close`) or a ``postgresql://`` URL (a pool of its own, closed on :meth:`close`;
    ``timeout`` is how long to wait for a connection).
    """

    def __init__(
        self,
        pool: psycopg_pool.ConnectionPool | str,
        *,
        schema: str = "ctxflow",
        clock: Callable[[], float] = time.time,
        codec: EnvelopeCodec | None = None,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES,
        max_owner_bytes: int = DEFAULT_MAX_OWNER_BYTES,
        conflict_retries: int = 20,
        timeout: float = 10.0,
    ) -> None:
        self._core = MemoryCore(
            codec=codec,
            clock=clock,
            max_items=max_items,
            max_item_bytes=max_item_bytes,
            max_owner_bytes=max_owner_bytes,
        )
        self.schema = check_schema(schema)
        self.conflict_retries = conflict_retries
        self._owns_pool = isinstance(pool, str)
        self.pool = (
            open_pool(pool, schema=schema, timeout=timeout) if isinstance(pool, str) else pool
        )
        try:
            self._run("open", self._prepare)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<PostgresSharedMemory schema={self.schema!r}>"

    def close(self) -> None:
        """Close the pool if this memory opened it (from a URL)."""
        if self._owns_pool:
            self.pool.close()

    def _prepare(self) -> None:
        with self.pool.connection() as conn:
            check_search_path(conn, self.schema)
            prepare(conn, self.schema, "shared_memory", _TABLE)

    # -- transactions -------------------------------------------------------------

    def _run(self, doing: str, fn: Callable[[], T]) -> T:
        for attempt in range(self.conflict_retries):
            try:
                return fn()
            except _AGAIN:
                time.sleep(0.001 * attempt)
            except psycopg_pool.PoolTimeout as exc:
                raise self._failed(doing, exc) from exc
            except psycopg.Error as exc:
                raise self._failed(doing, exc) from exc
        raise StoreError(
            f"shared memory {doing} must finish within {self.conflict_retries} attempts "
            f"(other clients kept conflicting with it)",
            rule="contention",
        )

    def _failed(self, doing: str, exc: Exception) -> StoreError:
        return StoreError(
            f"shared memory {doing} in PostgreSQL schema {self.schema!r} failed: "
            f"{type(exc).__name__}: {' '.join(str(exc).split())}",
            rule="postgres",
            operation=doing,
            postgres_error=str(exc),
        )

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[psycopg.Connection[Any]]:
        with self.pool.connection() as conn, conn.transaction():
            if not write:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn

    def _locked(self, conn: psycopg.Connection[Any], owner: Owner) -> None:
        """Queue behind any other write of ``owner`` until this transaction ends."""
        key = lock_key(self.schema, "shared_memory", *_key(owner))
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))

    def _meta(self, owner: Owner, row: tuple[Any, ...]) -> ItemMeta:
        name, importance, written_at, size = row
        if not all(isinstance(v, int | float) for v in (importance, written_at, size)):
            raise corrupt_item(
                owner, str(name), f"its importance, time or size is not a number ({row[1:]!r})"
            )
        return ItemMeta(float(importance), float(written_at), int(size))

    # -- the protocol (_Backend checks the arguments, then calls these) ------------

    def _load(self, owner: Owner) -> SharedItems:
        def load() -> list[tuple[str, bytes]]:
            with self._transaction(write=False) as conn:
                rows = conn.execute(
                    f"SELECT item, data FROM shared_memory WHERE {_OWNER}", _key(owner)
                ).fetchall()
            return [(str(n), bytes(d)) for n, d in rows]

        return self._core.items(owner, self._run("load", load))

    def _merge(self, owner: Owner, incoming: dict[str, StoredItem]) -> None:
        key = _key(owner)

        def merge() -> None:
            with self._transaction(write=True) as conn:
                self._locked(conn, owner)
                rows = conn.execute(
                    "SELECT item, importance, written_at, length(data) FROM shared_memory "
                    f"WHERE {_OWNER}",
                    key,
                ).fetchall()
                existing = {str(row[0]): self._meta(owner, row) for row in rows}
                writes, deletes = self._core.plan(existing, incoming)
                if deletes:
                    conn.execute(
                        f"DELETE FROM shared_memory WHERE {_OWNER} AND item = ANY(%s)",
                        (*key, deletes),
                    )
                if writes:
                    with conn.cursor() as cursor:
                        cursor.executemany(
                            _UPSERT,
                            [
                                (*key, i.name, i.meta.importance, i.meta.written_at, i.data)
                                for i in writes
                            ],
                        )

        self._run("merge", merge)

    def _delete(self, owner: Owner, doomed: list[str]) -> int:
        def delete() -> int:
            with self._transaction(write=True) as conn:
                self._locked(conn, owner)
                cursor = conn.execute(
                    f"DELETE FROM shared_memory WHERE {_OWNER} AND item = ANY(%s)",
                    (*_key(owner), sorted(set(doomed))),
                )
                return cursor.rowcount

        return self._run("delete", delete)

    def _erase(self, owner: Owner) -> int:
        def erase() -> int:
            with self._transaction(write=True) as conn:
                self._locked(conn, owner)
                cursor = conn.execute(f"DELETE FROM shared_memory WHERE {_OWNER}", _key(owner))
                return cursor.rowcount

        return self._run("erase", erase)

    def _owners(self, tenant: str) -> list[Owner]:
        def owners() -> list[tuple[Any, ...]]:
            with self._transaction(write=False) as conn:
                return conn.execute(
                    'SELECT DISTINCT kind COLLATE "C" AS k, owner COLLATE "C" AS o '
                    "FROM shared_memory WHERE tenant = %s ORDER BY k, o",
                    (tenant,),
                ).fetchall()

        return [Owner(tenant=tenant, kind=k, id=i) for k, i in self._run("owners", owners)]

    def _prune(self, cutoff: float, tenant: str | None) -> int:
        def prune() -> int:
            with self._transaction(write=True) as conn:
                cursor = conn.execute(
                    "DELETE FROM shared_memory WHERE written_at <= %s "
                    "AND (%s::text IS NULL OR tenant = %s)",
                    (cutoff, tenant, tenant),
                )
                return cursor.rowcount

        return self._run("prune", prune)
