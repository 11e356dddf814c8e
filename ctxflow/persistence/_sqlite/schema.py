"""The SQLite store's tables, their upgrades, and the row helpers its parts share.

Schema version 3 (session heads) upgrades older files in place on open, one
version at a time: version-1 bodies become loose bodies, version-2 sessions get
an empty head. A file of a newer version is refused, never misread.

A file already in the current version is opened without a write transaction,
so opening a store does not queue behind a writer.

Whose file it is: ctxflow marks its files with ``PRAGMA application_id``
(:data:`APPLICATION_ID`). Before anything is written, :func:`inspect_file`
reads the file's header and, when that does not settle it, its table names
through a connection that cannot write: an absent or empty file is new, a
marked one is ours, an unmarked one holding ctxflow's tables was written
before the mark (it is marked by its first write), and anything else is
another application's, refused untouched. The first write also adds the
columns that record each session's latest checkpoint, its id and seq
(``sessions.latest``, ``latest_seq``), which earlier versions ignore. Those
never lower a session's latest seq (retention keeps the latest), so a file
they wrote to since is still checked right. It also moves session heads to a
table of their own, ``heads (session, seq, head)``: in ``sessions.head`` a
large head stood before the columns read on every write, and SQLite walks a
row's overflow pages to reach them. Heads are a cache (every checkpoint holds
what they hold), so the old ones are dropped, not moved; earlier versions
find no head in ``sessions`` and load without one.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from ctxflow.errors import StoreError
from ctxflow.persistence._codec import EnvelopeCodec
from ctxflow.persistence._model import CheckpointRecord

__all__ = [
    "APPLICATION_ID",
    "COLUMNS",
    "HEADS_TABLE",
    "SCHEMA_VERSION",
    "FileKind",
    "Part",
    "has_heads_table",
    "inspect_file",
    "mark",
    "prepare_schema",
    "read_only_uri",
    "record",
    "schema_version",
    "select_in",
    "tracks_latest",
]

HEADS_TABLE = (
    "CREATE TABLE IF NOT EXISTS heads "
    "(session INTEGER PRIMARY KEY, seq INTEGER NOT NULL, head BLOB NOT NULL)"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ctxflow_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    head BLOB,
    latest TEXT,
    latest_seq INTEGER
);
CREATE TABLE IF NOT EXISTS heads (
    session INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    head BLOB NOT NULL
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
#: ``PRAGMA application_id`` of a ctxflow store: "CXFL", the codec's magic.
APPLICATION_ID = 0x4358464C
#: The first bytes of every SQLite database file.
_SQLITE_HEADER = b"SQLite format 3\x00"
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


class FileKind(enum.Enum):
    """What :func:`inspect_file` found at a store's path."""

    NEW = "new"
    """Absent, empty, or a database without tables: ours to initialise."""
    OURS = "ours"
    """Marked with :data:`APPLICATION_ID`."""
    UNMARKED = "unmarked"
    """ctxflow's tables without the mark (written before it): marked by its first write."""


def read_only_uri(path: Path, *, immutable: bool = False) -> str:
    """The URI that opens ``path`` without writing (``immutable``: not even a lock or
    a shared-memory file)."""
    return path.absolute().as_uri() + ("?mode=ro&immutable=1" if immutable else "?mode=ro")


def inspect_file(path: Path) -> FileKind:
    """Whose file ``path`` is (module docstring), without writing to it or beside it.

    Raises ``StoreError`` for a file that is not SQLite or belongs to another
    application.
    """
    try:
        with path.open("rb") as file:
            header = file.read(100)
    except FileNotFoundError:
        return FileKind.NEW
    except OSError as exc:
        raise StoreError(
            f"{path}: a store file must be readable (got {exc.strerror})",
            rule="sqlite",
            path=str(path),
        ) from None
    if not header:
        return FileKind.NEW
    if len(header) < 100 or not header.startswith(_SQLITE_HEADER):
        raise StoreError(
            f"{path}: a store must be a SQLite database (the file is not one)",
            rule="not_sqlite",
            path=str(path),
        )
    marked = int.from_bytes(header[68:72], "big")
    if marked == APPLICATION_ID:
        return FileKind.OURS
    if marked:
        raise _foreign(path, f"its application_id is {marked:#010x}")
    # The mark of a file whose first transaction is still in its WAL is not in the header
    # yet: read it, and the tables, through SQLite (immutable when no WAL exists, so not
    # even a shared-memory file is made beside another application's database).
    immutable = not path.with_name(path.name + "-wal").exists()
    try:
        db = sqlite3.connect(read_only_uri(path, immutable=immutable), uri=True)
        try:
            (marked,) = db.execute("PRAGMA application_id").fetchone()
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            version = schema_version(db)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(
            f"{path}: a store must be a readable SQLite database "
            f"(SQLite reported {type(exc).__name__}: {exc})",
            rule="sqlite",
            path=str(path),
            sqlite_error=str(exc),
        ) from exc
    if marked == APPLICATION_ID:
        return FileKind.OURS
    if marked:
        raise _foreign(path, f"its application_id is {marked:#010x}")
    if not tables:
        return FileKind.NEW
    if version is None:
        names = ", ".join(sorted(tables)[:5])
        raise _foreign(path, f"it holds tables ctxflow did not make: {names}")
    return FileKind.UNMARKED


def _foreign(path: Path, why: str) -> StoreError:
    return StoreError(
        f"{path}: a store must be a file ctxflow made or an empty one ({why}); "
        "it was left untouched",
        rule="foreign_file",
        path=str(path),
    )


def mark(db: sqlite3.Connection) -> None:
    """Mark a file as ctxflow's and add the columns earlier versions lacked (inside the
    caller's write transaction)."""
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    columns = {r[1] for r in db.execute("PRAGMA table_info(sessions)")}
    for name, kind in (("latest", "TEXT"), ("latest_seq", "INTEGER")):
        if name not in columns:
            db.execute(f"ALTER TABLE sessions ADD COLUMN {name} {kind}")
    if not has_heads_table(db):
        db.execute(HEADS_TABLE)
        db.execute("UPDATE sessions SET head = NULL WHERE head IS NOT NULL")


def has_heads_table(db: sqlite3.Connection) -> bool:
    """True when the file keeps session heads in their own table (``heads``)."""
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'heads'")
    return row.fetchone() is not None


def tracks_latest(db: sqlite3.Connection) -> bool:
    """True when the file records each session's latest checkpoint (``sessions.latest``)."""
    return any(r[1] == "latest_seq" for r in db.execute("PRAGMA table_info(sessions)"))


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
    mark(db)
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
