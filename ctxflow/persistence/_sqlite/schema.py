"""The SQLite store's tables, their upgrades, and the row helpers its parts share.

Schema version 3 (session heads) upgrades older files in place on open, one
version at a time: version-1 bodies become loose bodies, version-2 sessions get
an empty head. A file of a newer version is refused, never misread.

A file already in the current version is opened without a write transaction,
so opening a store does not queue behind a writer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from ctxflow.errors import StoreError
from ctxflow.persistence._codec import EnvelopeCodec
from ctxflow.persistence._model import CheckpointRecord

__all__ = [
    "COLUMNS",
    "SCHEMA_VERSION",
    "Part",
    "prepare_schema",
    "record",
    "schema_version",
    "select_in",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ctxflow_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    head BLOB
);
CREATE TABLE IF NOT EXISTS checkpoints (
    id TEXT PRIMARY KEY,
    session INTEGER NOT NULL REFERENCES sessions(id),
    parent TEXT,
    seq INTEGER NOT NULL,
    full INTEGER NOT NULL,
    created_at REAL NOT NULL,
    phase TEXT,
    trigger TEXT,
    tokens INTEGER NOT NULL,
    message_count INTEGER NOT NULL,
    size INTEGER NOT NULL,
    manifest BLOB NOT NULL,
    UNIQUE (session, seq)
);
CREATE TABLE IF NOT EXISTS bodies (
    id INTEGER PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    segment INTEGER,
    pos INTEGER
);
CREATE TABLE IF NOT EXISTS loose (
    id INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS session_bodies (
    session INTEGER NOT NULL,
    body INTEGER NOT NULL,
    PRIMARY KEY (session, body)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS session_bodies_body ON session_bodies (body);
CREATE TABLE IF NOT EXISTS packs (
    session INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (session, last_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS packed_ids (
    key INTEGER NOT NULL,
    session INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (key, session, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bodies_segment ON bodies (segment) WHERE segment IS NOT NULL;
"""
#: The schema version this code writes.
SCHEMA_VERSION = "3"
#: Each older schema version: the next one and the statements that reach it.
#: Version 1 files kept every body's bytes in ``bodies``; upgrading moves them to
#: ``loose`` (every version-1 body stays a loose body, packed with the next ones).
#: Version 2 files had no session heads; a session gets one at its next pack.
#: ``_SCHEMA`` then creates what is missing.
_MIGRATIONS = {
    "1": (
        "2",
        "CREATE TABLE loose (id INTEGER PRIMARY KEY, data BLOB NOT NULL);"
        "INSERT INTO loose (id, data) SELECT id, data FROM bodies;"
        "ALTER TABLE bodies DROP COLUMN data;"
        "ALTER TABLE bodies ADD COLUMN segment INTEGER;"
        "ALTER TABLE bodies ADD COLUMN pos INTEGER",
    ),
    "2": ("3", "ALTER TABLE sessions ADD COLUMN head BLOB"),
}
#: The record fields of a plain checkpoint row, in :func:`record`'s order (``c``
#: is the checkpoints table, ``s`` the sessions table).
COLUMNS = (
    "c.id, s.name, c.parent, c.seq, c.full, c.created_at, c.phase, c.trigger, "
    "c.tokens, c.message_count, c.size"
)
#: Most values one ``IN (...)`` list binds (SQLite's limit is at least 999).
_CHUNK = 500


@attrs.frozen(kw_only=True)
class Part:
    """One part of the store (bodies, heads, packs): the connection and codec it works with.

    A part holds no state of its own; every method runs inside the store's open
    transaction.
    """

    db: sqlite3.Connection
    codec: EnvelopeCodec


def schema_version(db: sqlite3.Connection) -> str | None:
    """The schema version a file records (None for a new file)."""
    try:
        row = db.execute("SELECT value FROM ctxflow_meta WHERE key = 'schema'").fetchone()
    except sqlite3.OperationalError:
        return None
    return None if row is None else str(row[0])


def prepare_schema(db: sqlite3.Connection, path: Path) -> None:
    """Create the schema of a new file, or upgrade an older one, in one transaction."""
    db.execute("BEGIN IMMEDIATE")
    db.execute(
        "CREATE TABLE IF NOT EXISTS ctxflow_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
    )
    row = db.execute("SELECT value FROM ctxflow_meta WHERE key = 'schema'").fetchone()
    while row is not None and row[0] in _MIGRATIONS:
        version, statements = _MIGRATIONS[row[0]]
        for statement in statements.split(";"):
            db.execute(statement)
        db.execute("UPDATE ctxflow_meta SET value = ? WHERE key = 'schema'", (version,))
        row = (version,)
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    if row is None:
        db.execute("INSERT INTO ctxflow_meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
    elif row[0] != SCHEMA_VERSION:
        db.execute("ROLLBACK")
        raise StoreError(
            f"{path}: store schema must be version {SCHEMA_VERSION} (got {row[0]})",
            rule="schema_version",
            path=str(path),
        )
    db.execute("COMMIT")


def record(row: Sequence[Any]) -> CheckpointRecord:
    """The record of a row holding :data:`COLUMNS` (or a pack entry in that order)."""
    return CheckpointRecord(
        id=row[0],
        session_id=row[1],
        parent_id=row[2],
        seq=row[3],
        full=bool(row[4]),
        created_at=row[5],
        phase=row[6],
        trigger=row[7],
        tokens=row[8],
        message_count=row[9],
        size=row[10],
    )


def select_in(db: sqlite3.Connection, sql: str, values: Sequence[Any]) -> Iterator[Any]:
    """The rows of ``sql`` for every value, its ``{marks}`` filled in chunks SQLite accepts."""
    for start in range(0, len(values), _CHUNK):
        chunk = tuple(values[start : start + _CHUNK])
        yield from db.execute(sql.format(marks=",".join("?" * len(chunk))), chunk)
