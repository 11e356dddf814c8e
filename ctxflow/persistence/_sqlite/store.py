"""The SQLite store: the embedded default, one file, WAL, one transaction per checkpoint.

Writes run in ``BEGIN IMMEDIATE`` transactions, so two writers (threads or
processes) queue on the file lock instead of interleaving, and the stale
parent check and the insert happen under that lock. Reads run in a deferred
transaction, which in WAL mode is a consistent snapshot: a load never mixes
two checkpoints.

The store composes three parts, each in its own module: the bodies, loose
and packed into segments (:mod:`.segments`); the old checkpoint rows packed
per session (:mod:`.packs`); and the session heads that loading the latest
checkpoint starts from (:mod:`.heads`). The newest checkpoint rows stay plain
in ``checkpoints``; this module reads and writes those and asks the parts for
the rest. Tables and upgrades are in :mod:`.schema`.

New files use 1 KiB pages (``page_size``): see ``PAGE_SIZE``.

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
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ctxflow.errors import StoreError
from ctxflow.persistence._base import BaseStore, Encoded
from ctxflow.persistence._codec import EnvelopeCodec, default_codec
from ctxflow.persistence._manifest import Manifest, apply_deltas
from ctxflow.persistence._model import CheckpointRecord, Snapshot
from ctxflow.persistence._sqlite.heads import HEAD_EVERY, SessionHeads
from ctxflow.persistence._sqlite.packs import PACK_CHECKPOINTS, CheckpointPacks
from ctxflow.persistence._sqlite.schema import (
    COLUMNS,
    SCHEMA_VERSION,
    prepare_schema,
    record,
    schema_version,
    select_in,
)
from ctxflow.persistence._sqlite.segments import SEGMENT_BODIES, BodySegments

__all__ = ["PAGE_SIZE", "SQLiteStore"]

#: Page size of new files (an existing file keeps its own). Rows here are small and
#: segments a few KB, so 1 KiB pages waste far less than SQLite's 4 KiB default
#: (a mostly empty page per small table, half a page per blob's overflow tail).
PAGE_SIZE = 1024
_PLAIN = (
    f"SELECT {COLUMNS} FROM checkpoints c JOIN sessions s ON s.id = c.session "
    "WHERE s.name = ? ORDER BY c.seq"
)


class SQLiteStore(BaseStore):
    """A :class:`~ctxflow.persistence.Store` in one SQLite file (threads and processes share it)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        codec: EnvelopeCodec | None = None,
        timeout: float = 30.0,
        synchronous: str = "NORMAL",
        verify: bool = False,
        segment_bodies: int = SEGMENT_BODIES,
        pack_checkpoints: int = PACK_CHECKPOINTS,
        page_size: int = PAGE_SIZE,
        head_every: int = HEAD_EVERY,
    ) -> None:
        for name, value in (
            ("segment_bodies", segment_bodies),
            ("pack_checkpoints", pack_checkpoints),
            ("head_every", head_every),
        ):
            if not isinstance(value, int) or value < 1:
                raise StoreError(
                    f"'{name}' must be an integer >= 1 (got {value!r})", rule="sqlite_option"
                )
        if page_size not in {512 << i for i in range(8)}:
            raise StoreError(
                f"'page_size' must be a power of two from 512 to 65536 (got {page_size!r})",
                rule="sqlite_option",
            )
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise StoreError(
                f"'synchronous' must be OFF, NORMAL, FULL or EXTRA (got {synchronous!r})",
                rule="sqlite_option",
            )
        self.path = Path(path)
        self.codec = codec or default_codec()
        self.segment_bodies = segment_bodies
        self.pack_checkpoints = pack_checkpoints
        self.head_every = head_every
        self._lock = threading.RLock()
        with self._errors("open"):
            self._db = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        try:
            with self._errors("open"):
                self._db.execute(f"PRAGMA page_size={page_size}")
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
                self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
                if verify:
                    self.check()
                # A file already in this schema needs no write transaction to be opened.
                if schema_version(self._db) != SCHEMA_VERSION:
                    prepare_schema(self._db, self.path)
        except BaseException:
            self._db.close()
            raise
        db, codec = self._db, self.codec
        self._segments = BodySegments(db=db, codec=codec, size=segment_bodies)
        self._heads = SessionHeads(db=db, codec=codec, bodies=self._segments, every=head_every)
        self._packs = CheckpointPacks(db=db, codec=codec, heads=self._heads, size=pack_checkpoints)

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

    def _session(self, session_id: str) -> int | None:
        """The row id of a session (None when the file has none of that name)."""
        row = self._db.execute("SELECT id FROM sessions WHERE name = ?", (session_id,)).fetchone()
        return None if row is None else int(row[0])

    def _session_ids(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT name FROM sessions ORDER BY id")]

    def _records(self, session_id: str) -> list[CheckpointRecord]:
        session = self._session(session_id)
        if session is None:
            return []
        records = self._packs.records(session, session_id)
        records.extend(record(r) for r in self._db.execute(_PLAIN, (session_id,)))
        return records

    def _chain_records(self, session_id: str, checkpoint_id: str | None) -> list[CheckpointRecord]:
        # The latest checkpoint's chain usually starts among the plain rows: then the
        # packs (older records) need not be decoded at all.
        if checkpoint_id is not None:
            return self._known(session_id)
        records = [record(r) for r in self._db.execute(_PLAIN, (session_id,))]
        if not records or any(r.full for r in records):
            return records or self._known(session_id)
        session = self._session(session_id)
        assert session is not None  # it has plain rows
        return self._packs.records_to_full(session, session_id) + records

    def _snapshot(self, session_id: str, checkpoint_id: str | None) -> Snapshot:
        # The latest checkpoint: its record and manifest come with the plain rows in one
        # query; its chain starts at the last plain full manifest, else at the head (the
        # last packed checkpoint in full), else in the packs (each decoded at most once).
        # Its bodies come with one scan of the session's references.
        if checkpoint_id is not None:
            return super()._snapshot(session_id, checkpoint_id)
        rows = self._db.execute(
            f"SELECT {COLUMNS}, c.manifest, c.session FROM checkpoints c "
            "JOIN sessions s ON s.id = c.session WHERE s.name = ? ORDER BY c.seq",
            (session_id,),
        ).fetchall()
        if not rows:
            return super()._snapshot(session_id, None)
        session = int(rows[0][12])
        placed = self._segments.of_session(session)
        fulls = [i for i, row in enumerate(rows) if row[4]]
        head = self._heads.read(session)
        at = self._heads.place(head, [r[3] for r in rows])
        if head is not None and at is not None and at >= max(fulls, default=-1):
            first, depth = at, head.depth
            manifest = self._heads.manifest(session, head, {r[4]: r[0] for r in placed})
        elif fulls:
            first, depth = fulls[-1], 0
            manifest = Manifest.from_plain(self.codec.decode(bytes(rows[first][11])))
        else:
            manifest, packed = self._packs.latest_chain(session)
            apply_deltas(manifest, packed)
            first, depth = -1, len(packed)
        apply_deltas(manifest, (self.codec.decode(bytes(r[11])) for r in rows[first + 1 :]))
        hashes = manifest.body_hashes()
        bodies = self._segments.decode_placed(placed, hashes)
        missing = hashes - bodies.keys()
        if missing:
            bodies.update(self._segments.decoded(missing))
        return Snapshot(
            record=record(rows[-1]),
            manifest=manifest,
            bodies=bodies,
            depth=depth + len(rows) - 1 - first,
        )

    def _latest(self, session_id: str) -> CheckpointRecord | None:
        row = self._db.execute(
            f"SELECT {COLUMNS} FROM checkpoints c JOIN sessions s ON s.id = c.session "
            "WHERE s.name = ? ORDER BY c.seq DESC LIMIT 1",
            (session_id,),
        ).fetchone()
        if row is not None:
            return record(row)
        records = self._records(session_id)
        return records[-1] if records else None

    def _exists(self, checkpoint_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM checkpoints WHERE id = ?", (checkpoint_id,))
        return row.fetchone() is not None or self._packs.exists(checkpoint_id)

    def _manifests(self, checkpoint_ids: Sequence[str]) -> list[Any]:
        sql = "SELECT id, manifest FROM checkpoints WHERE id IN ({marks})"
        rows = select_in(self._db, sql, list(checkpoint_ids))
        found = {r[0]: self.codec.decode(bytes(r[1])) for r in rows}
        missing = [i for i in checkpoint_ids if i not in found]
        if missing:
            found.update(self._packs.manifests(missing))
        return [found[i] for i in checkpoint_ids]

    def _bodies(self, hashes: Iterable[str]) -> dict[str, Any]:
        return self._segments.decoded(hashes)

    def _present(self, hashes: Iterable[str]) -> set[str]:
        return self._segments.present(hashes)

    def _write(self, record: CheckpointRecord, encoded: Encoded) -> None:
        session = self._session(record.session_id)
        if session is None:
            cursor = self._db.execute(
                "INSERT INTO sessions (name) VALUES (?)", (record.session_id,)
            )
            session = int(cursor.lastrowid or 0)
        self._segments.add(encoded.bodies)
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
                encoded.manifest,
            ),
        )
        self._segments.reference(session, encoded.mentioned)
        self._packs.written(session)
        self._heads.written(session, record.seq)

    def _rewrite_full(self, checkpoint_id: str, manifest: bytes, mentioned: set[str]) -> None:
        row = self._db.execute(
            "SELECT session FROM checkpoints WHERE id = ?", (checkpoint_id,)
        ).fetchone()
        if row is not None:
            self._db.execute(
                "UPDATE checkpoints SET manifest = ?, full = 1 WHERE id = ?",
                (manifest, checkpoint_id),
            )
            self._segments.reference(int(row[0]), mentioned)
            return
        for session in self._packs.rewrite_full(checkpoint_id, self.codec.decode(manifest)):
            self._segments.reference(session, mentioned)

    def _delete(self, session_id: str, checkpoint_ids: Sequence[str]) -> None:
        self._heads.clear(session_id)
        self._db.executemany("DELETE FROM checkpoints WHERE id = ?", ((i,) for i in checkpoint_ids))
        session = self._session(session_id)
        if session is not None:
            self._packs.delete(session, set(checkpoint_ids))

    def _collect(self, session_id: str, live: set[str]) -> None:
        session = self._session(session_id)
        if session is None:
            return
        self._segments.collect(session, live)
        left = self._db.execute(
            "SELECT 1 FROM checkpoints WHERE session = ? UNION ALL "
            "SELECT 1 FROM packs WHERE session = ? LIMIT 1",
            (session, session),
        )
        if left.fetchone() is None:
            self._db.execute("DELETE FROM session_bodies WHERE session = ?", (session,))
            self._db.execute("DELETE FROM sessions WHERE id = ?", (session,))
