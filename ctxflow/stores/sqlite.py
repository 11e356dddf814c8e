"""The SQLite store: the embedded default, one file, WAL, one transaction per checkpoint.

Writes run in ``BEGIN IMMEDIATE`` transactions, so two writers (threads or
processes) queue on the file lock instead of interleaving, and the stale
parent check and the insert happen under that lock. Reads run in a deferred
transaction, which in WAL mode is a consistent snapshot: a load never mixes
two checkpoints.

Durability: ``synchronous=NORMAL`` (the WAL default) survives a killed
process; pass ``synchronous="FULL"`` to survive a power cut as well.

Every ``sqlite3`` failure is re-raised as :class:`~ctxflow.errors.StoreError`
naming the file and what SQLite reported; :meth:`SQLiteStore.check` runs
``PRAGMA integrity_check`` (``verify=True`` runs it on open).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ctxflow.checkpoints.model import CheckpointRecord
from ctxflow.errors import StoreError
from ctxflow.serde import EnvelopeCodec, default_codec
from ctxflow.stores.base import BaseStore

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ctxflow_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
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
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS session_bodies (
    session INTEGER NOT NULL,
    body INTEGER NOT NULL,
    PRIMARY KEY (session, body)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS session_bodies_body ON session_bodies (body);
"""
_SCHEMA_VERSION = "1"
_COLUMNS = (
    "c.id, s.name, c.parent, c.seq, c.full, c.created_at, c.phase, c.trigger, "
    "c.tokens, c.message_count, c.size"
)
_CHUNK = 500


def _record(row: Sequence[Any]) -> CheckpointRecord:
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


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class SQLiteStore(BaseStore):
    """A :class:`~ctxflow.stores.Store` in one SQLite file (safe across threads and processes)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        codec: EnvelopeCodec | None = None,
        timeout: float = 30.0,
        synchronous: str = "NORMAL",
        verify: bool = False,
    ) -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise StoreError(
                f"'synchronous' must be OFF, NORMAL, FULL or EXTRA (got {synchronous!r})",
                rule="sqlite_option",
            )
        self.path = Path(path)
        self.codec = codec or default_codec()
        self._lock = threading.RLock()
        with self._errors("open"):
            self._db = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        try:
            with self._errors("open"):
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
                self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
                if verify:
                    self.check()
                self._db.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                row = self._db.execute(
                    "SELECT value FROM ctxflow_meta WHERE key = 'schema'"
                ).fetchone()
                if row is None:
                    self._db.execute(
                        "INSERT INTO ctxflow_meta (key, value) VALUES ('schema', ?)",
                        (_SCHEMA_VERSION,),
                    )
                elif row[0] != _SCHEMA_VERSION:
                    self._db.execute("ROLLBACK")
                    raise StoreError(
                        f"{self.path}: store schema must be version {_SCHEMA_VERSION} "
                        f"(got {row[0]})",
                        rule="schema_version",
                        path=str(self.path),
                    )
                self._db.execute("COMMIT")
        except BaseException:
            self._db.close()
            raise

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path.name}>"

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def size(self) -> int:
        """Bytes on disk: the database file plus its WAL."""
        wal = self.path.with_name(self.path.name + "-wal")
        return self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)

    def check(self) -> None:
        """Run ``PRAGMA integrity_check``; raise ``StoreError`` quoting its report."""
        with self._lock, self._errors("integrity check"):
            rows = [r[0] for r in self._db.execute("PRAGMA integrity_check").fetchall()]
        if rows != ["ok"]:
            report = "; ".join(str(r) for r in rows[:5])
            raise StoreError(
                f"{self.path}: the database must pass PRAGMA integrity_check (got: {report})",
                rule="integrity_check",
                path=str(self.path),
                report=rows,
            )

    def checkpoint_wal(self) -> None:
        """Fold the WAL into the database file (``PRAGMA wal_checkpoint(TRUNCATE)``)."""
        with self._lock, self._errors("wal checkpoint"):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def corrupt(self, checkpoint_id: str, data: bytes) -> None:
        """Replace a checkpoint's stored manifest bytes (for tests of damaged data)."""
        with self._transaction(write=True):
            self._db.execute(
                "UPDATE checkpoints SET manifest = ? WHERE id = ?", (data, checkpoint_id)
            )

    # -- primitives -----------------------------------------------------------

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(
                f"{self.path}: {doing} failed: SQLite reported {type(exc).__name__}: {exc}",
                rule="sqlite",
                path=str(self.path),
                sqlite_error=str(exc),
            ) from exc

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[None]:
        with self._lock, self._errors("write" if write else "read"):
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _session_ids(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT name FROM sessions ORDER BY id")]

    def _records(self, session_id: str) -> list[CheckpointRecord]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM checkpoints c JOIN sessions s ON s.id = c.session "
            "WHERE s.name = ? ORDER BY c.seq",
            (session_id,),
        )
        return [_record(r) for r in rows]

    def _latest(self, session_id: str) -> CheckpointRecord | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM checkpoints c JOIN sessions s ON s.id = c.session "
            "WHERE s.name = ? ORDER BY c.seq DESC LIMIT 1",
            (session_id,),
        ).fetchone()
        return _record(row) if row else None

    def _exists(self, checkpoint_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM checkpoints WHERE id = ?", (checkpoint_id,))
        return row.fetchone() is not None

    def _manifests(self, checkpoint_ids: Sequence[str]) -> list[bytes]:
        found: dict[str, bytes] = {}
        for chunk in _chunks(list(checkpoint_ids)):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT id, manifest FROM checkpoints WHERE id IN ({marks})", tuple(chunk)
            )
            found.update((r[0], bytes(r[1])) for r in rows)
        return [found[i] for i in checkpoint_ids]

    def _bodies(self, hashes: Iterable[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for chunk in _chunks(sorted(hashes)):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT hash, data FROM bodies WHERE hash IN ({marks})", tuple(chunk)
            )
            found.update((r[0], bytes(r[1])) for r in rows)
        return found

    def _present(self, hashes: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(sorted(hashes)):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT hash FROM bodies WHERE hash IN ({marks})", tuple(chunk)
            )
            found.update(r[0] for r in rows)
        return found

    def _session_key(self, session_id: str) -> int:
        row = self._db.execute("SELECT id FROM sessions WHERE name = ?", (session_id,)).fetchone()
        if row is not None:
            return int(row[0])
        cursor = self._db.execute("INSERT INTO sessions (name) VALUES (?)", (session_id,))
        return int(cursor.lastrowid or 0)

    def _reference(self, session: int, hashes: set[str]) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO session_bodies (session, body) "
            "SELECT ?, id FROM bodies WHERE hash = ?",
            ((session, h) for h in hashes),
        )

    def _write(
        self,
        record: CheckpointRecord,
        manifest: bytes,
        bodies: Mapping[str, bytes],
        mentioned: set[str],
    ) -> None:
        session = self._session_key(record.session_id)
        self._db.executemany(
            "INSERT OR IGNORE INTO bodies (hash, data) VALUES (?, ?)", bodies.items()
        )
        self._db.execute(
            "INSERT INTO checkpoints (id, session, parent, seq, full, created_at, phase, "
            "trigger, tokens, message_count, size, manifest) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                session,
                record.parent_id,
                record.seq,
                int(record.full),
                record.created_at,
                record.phase,
                record.trigger,
                record.tokens,
                record.message_count,
                record.size,
                manifest,
            ),
        )
        self._reference(session, mentioned)

    def _rewrite_full(self, checkpoint_id: str, manifest: bytes, mentioned: set[str]) -> None:
        row = self._db.execute(
            "SELECT session FROM checkpoints WHERE id = ?", (checkpoint_id,)
        ).fetchone()
        self._db.execute(
            "UPDATE checkpoints SET manifest = ?, full = 1 WHERE id = ?", (manifest, checkpoint_id)
        )
        self._reference(int(row[0]), mentioned)

    def _delete(self, session_id: str, checkpoint_ids: Sequence[str]) -> None:
        self._db.executemany("DELETE FROM checkpoints WHERE id = ?", ((i,) for i in checkpoint_ids))

    def _collect(self, session_id: str, live: set[str]) -> None:
        row = self._db.execute("SELECT id FROM sessions WHERE name = ?", (session_id,)).fetchone()
        if row is None:
            return
        session = int(row[0])
        held = self._db.execute(
            "SELECT b.id, b.hash FROM session_bodies r JOIN bodies b ON b.id = r.body "
            "WHERE r.session = ?",
            (session,),
        ).fetchall()
        dead = [(session, body) for body, digest in held if digest not in live]
        self._db.executemany("DELETE FROM session_bodies WHERE session = ? AND body = ?", dead)
        self._db.executemany(
            "DELETE FROM bodies WHERE id = ? AND NOT EXISTS "
            "(SELECT 1 FROM session_bodies WHERE body = ?)",
            ((body, body) for _, body in dead),
        )
        left = self._db.execute("SELECT 1 FROM checkpoints WHERE session = ? LIMIT 1", (session,))
        if left.fetchone() is None:
            self._db.execute("DELETE FROM session_bodies WHERE session = ?", (session,))
            self._db.execute("DELETE FROM sessions WHERE id = ?", (session,))
