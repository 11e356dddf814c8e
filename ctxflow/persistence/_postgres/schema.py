"""The PostgreSQL store's tables, the version table, and the checks on names that go into SQL.

Everything lives in one PostgreSQL schema (``ctxflow`` unless told), so a
database can hold ctxflow beside other applications, and a test can work in a
schema of its own and drop it. The store creates the schema and its tables on
open, in one transaction under an advisory lock, so two processes opening a
new database at once do not race.

Versions. ``ctxflow_schema (component, version)`` records the version of each
component's tables: ``store`` for the checkpoint tables, ``shared_memory``
for the shared memory table. Opening upgrades an older version in place, one
step at a time (:data:`MIGRATIONS`); a newer version is refused, never
misread. A schema that holds tables but no version table is another
application's, refused untouched.

Tenants. Every row carries its tenant (or is reached through a session that
does), and every statement names it: tenants sharing a schema never see each
other's sessions, checkpoints or bodies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from ctxflow.errors import StoreError
from ctxflow.persistence._model import CheckpointRecord

__all__ = [
    "COLUMNS",
    "MIGRATIONS",
    "STORE_VERSION",
    "check_ready",
    "check_search_path",
    "latest_version",
    "lock_key",
    "prepare",
    "record",
]

#: The version of the checkpoint tables this code writes.
STORE_VERSION = 1
#: Each older version of a component: the statements that bring it one version up.
MIGRATIONS: dict[str, dict[int, str]] = {"store": {}, "shared_memory": {}}

_VERSIONS = """
CREATE TABLE IF NOT EXISTS ctxflow_schema (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
)
"""

STORE_TABLES = """
CREATE TABLE IF NOT EXISTS sessions (
    id BIGSERIAL PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    latest TEXT,
    latest_seq BIGINT,
    UNIQUE (tenant, name)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    session BIGINT NOT NULL REFERENCES sessions (id),
    parent TEXT,
    seq BIGINT NOT NULL,
    "full" BOOLEAN NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    phase TEXT,
    trigger TEXT,
    tokens BIGINT NOT NULL,
    message_count BIGINT NOT NULL,
    size BIGINT NOT NULL,
    manifest BYTEA NOT NULL,
    PRIMARY KEY (tenant, id),
    UNIQUE (session, seq)
);
CREATE TABLE IF NOT EXISTS bodies (
    tenant TEXT NOT NULL,
    hash TEXT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (tenant, hash)
);
CREATE TABLE IF NOT EXISTS session_bodies (
    tenant TEXT NOT NULL,
    session BIGINT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (session, hash)
);
CREATE INDEX IF NOT EXISTS session_bodies_hash ON session_bodies (tenant, hash);
CREATE TABLE IF NOT EXISTS fences (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    token BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
)
"""

#: The record fields of a checkpoint row, in :func:`record`'s order (``c`` is the
#: checkpoints table, ``s`` the sessions table).
COLUMNS = (
    'c.id, s.name, c.parent, c.seq, c."full", c.created_at, c.phase, c.trigger, '
    "c.tokens, c.message_count, c.size"
)


def lock_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key for ``parts`` (a collision only serialises more)."""
    digest = hashlib.blake2b("\x00".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def prepare(conn: psycopg.Connection[Any], schema: str, component: str, tables: str) -> None:
    """Create ``schema`` and a component's tables, or upgrade them, in one transaction.

    Raises StoreError for a newer version or a schema another application owns.
    """
    latest = latest_version(component)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("ctxflow-schema", schema),))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        names = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
        }
        if names and "ctxflow_schema" not in names:
            raise StoreError(
                f"PostgreSQL schema {schema!r} must be ctxflow's or empty (it holds tables "
                f"ctxflow did not make: {', '.join(sorted(names)[:5])}); it was left untouched",
                rule="foreign_schema",
                schema=schema,
            )
        conn.execute(_VERSIONS)
        row = conn.execute(
            "SELECT version FROM ctxflow_schema WHERE component = %s", (component,)
        ).fetchone()
        version = None if row is None else int(row[0])
        if version is not None and version > latest:
            raise StoreError(
                f"PostgreSQL schema {schema!r}: the {component} tables must be version "
                f"{latest} or older (got {version}: written by a newer ctxflow)",
                rule="schema_version",
                schema=schema,
                version=version,
            )
        while version is not None and version in MIGRATIONS[component]:
            for statement in _statements(MIGRATIONS[component][version]):
                conn.execute(statement)
            version += 1
        for statement in _statements(tables):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO ctxflow_schema (component, version) VALUES (%s, %s) "
            "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            (component, latest),
        )


def check_search_path(conn: psycopg.Connection[Any], schema: str) -> None:
    """Refuse connections that would put ctxflow's tables outside ``schema`` (a pool not made
    by ``open_pool``)."""
    row = conn.execute("SELECT current_setting('search_path')").fetchone()
    if row is None or row[0].strip('"') != schema:
        raise StoreError(
            f"a PostgreSQL store's connections must work in its schema {schema!r} (their "
            f"search_path is {row[0] if row else None!r}; make the pool with open_pool)",
            rule="postgres_search_path",
            schema=schema,
        )


def latest_version(component: str) -> int:
    """The version of a component's tables this code writes."""
    return max([1, *(v + 1 for v in MIGRATIONS[component])])


def check_ready(conn: psycopg.Connection[Any], schema: str, component: str) -> None:
    """Refuse, without writing, a schema whose component tables are absent or of another
    version (what a read-only store needs: nothing to create or upgrade)."""
    row = conn.execute(
        "SELECT to_regclass('ctxflow_schema') IS NOT NULL",
    ).fetchone()
    version = None
    if row is not None and row[0]:
        found = conn.execute(
            "SELECT version FROM ctxflow_schema WHERE component = %s", (component,)
        ).fetchone()
        version = None if found is None else int(found[0])
    latest = latest_version(component)
    if version is None:
        raise StoreError(
            f"a store opened read-only must exist already (PostgreSQL schema {schema!r} "
            f"holds no ctxflow {component} tables)",
            rule="no_store",
            schema=schema,
        )
    if version != latest:
        raise StoreError(
            f"PostgreSQL schema {schema!r}: a store opened read-only must be in version "
            f"{latest} (got {version}; opening it writable upgrades an older one)",
            rule="schema_version",
            schema=schema,
            version=version,
        )


def _statements(script: str) -> list[sql.SQL]:
    return [sql.SQL(s.strip()) for s in script.split(";") if s.strip()]


def record(row: Sequence[Any]) -> CheckpointRecord:
    """The record of a row holding :data:`COLUMNS`."""
    return CheckpointRecord(
        id=row[0],
        session_id=row[1],
        parent_id=row[2],
        seq=int(row[3]),
        full=bool(row[4]),
        created_at=float(row[5]),
        phase=row[6],
        trigger=row[7],
        tokens=int(row[8]),
        message_count=int(row[9]),
        size=int(row[10]),
    )
