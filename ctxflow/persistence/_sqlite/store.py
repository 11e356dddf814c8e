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

Another application's SQLite file is refused untouched, before anything is
written (:func:`.schema.inspect_file`). ``read_only=True`` never writes:
nothing is created, upgraded or marked, and every write raises
``StoreError``. Where the process may write the file and its directory, the
connection is ``query_only`` (so SQLite tidies its ``-wal``/``-shm`` files on
close as usual); elsewhere it goes through a read-only URI — a file the
process may not write, also in a directory it may not write (then SQLite
cannot make the WAL's shared-memory file, and the file is read as immutable
when it has no WAL to fold in).

Damage: the latest checkpoint loads from the session head when it is usable,
else without it; a checkpoint loaded by id reads only its own pack and older
ones, so damage in a newer pack leaves it loadable; erasure deletes a
session's rows without reading them. Each session row records its latest seq,
so a checkpoint row lost from the end of a session is reported, not taken for
a shorter session.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ctxflow.errors import CorruptCheckpoint, StoreError
from ctxflow.persistence._base import BaseStore, Encoded, Wanted, check_chain, no_session
from ctxflow.persistence._codec import EnvelopeCodec, default_codec
from ctxflow.persistence._manifest import Manifest, apply_deltas
from ctxflow.persistence._model import CheckpointRecord, Snapshot
from ctxflow.persistence._sqlite.heads import HEAD_EVERY, SessionHeads
from ctxflow.persistence._sqlite.packs import PACK_CHECKPOINTS, CheckpointPacks
from ctxflow.persistence._sqlite.schema import (
    COLUMNS,
    SCHEMA_VERSION,
    FileKind,
    has_heads_table,
    inspect_file,
    mark,
    prepare_schema,
    read_only_uri,
    record,
    schema_version,
    select_in,
    tracks_latest,
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
        read_only: bool = False,
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
        self.read_only = read_only
        self._lock = threading.RLock()
        kind = inspect_file(self.path)
        if read_only and kind is FileKind.NEW:
            raise StoreError(
                f"{self.path}: a store opened read-only must be an existing ctxflow store "
                f"(the file is {'empty' if self.path.exists() else 'missing'})",
                rule="no_store",
                path=str(self.path),
            )
        self._db = self._connect(timeout)
        try:
            with self._errors("open"):
                if not read_only:
                    self._db.execute(f"PRAGMA page_size={page_size}")
                    self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
                self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
                if verify:
                    self.check()
                # A file already in this schema needs no write transaction to be opened.
                version = schema_version(self._db)
                if version != SCHEMA_VERSION and read_only:
                    raise StoreError(
                        f"{self.path}: a store opened read-only must be in schema version "
                        f"{SCHEMA_VERSION} (got {version}; opening it writable upgrades it)",
                        rule="schema_version",
                        path=str(self.path),
                    )
                if version != SCHEMA_VERSION:
                    prepare_schema(self._db, self.path)
                    kind = FileKind.OURS
                # A file without the heads table is marked (and given one) by its first write.
                self._unmarked = kind is FileKind.UNMARKED or not has_heads_table(self._db)
                self._tracks_latest = tracks_latest(self._db)
        except BaseException:
            self._db.close()
            raise
        db, codec = self._db, self.codec
        self._segments = BodySegments(db=db, codec=codec, size=segment_bodies)
        self._heads = SessionHeads(db=db, codec=codec, bodies=self._segments, every=head_every)
        self._packs = CheckpointPacks(db=db, codec=codec, heads=self._heads, size=pack_checkpoints)

    def _connect(self, timeout: float) -> sqlite3.Connection:
        """The connection: read-write, or through a read-only URI (module docstring)."""
        with self._errors("open"):
            if not self.read_only:
                return sqlite3.connect(
                    self.path, timeout=timeout, isolation_level=None, check_same_thread=False
                )
            if os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK):
                # Where we may write, a query-only connection reads like any other and
                # leaves no -wal/-shm behind when it closes (a mode=ro one cannot).
                db = sqlite3.connect(
                    self.path, timeout=timeout, isolation_level=None, check_same_thread=False
                )
                db.execute("PRAGMA query_only = ON")
                return db
            db = sqlite3.connect(
                read_only_uri(self.path),
                uri=True,
                timeout=timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return db
            except sqlite3.OperationalError:
                db.close()
                if self.path.with_name(self.path.name + "-wal").exists():
                    raise
            return sqlite3.connect(
                read_only_uri(self.path, immutable=True),
                uri=True,
                timeout=timeout,
                isolation_level=None,
                check_same_thread=False,
            )

    def __repr__(self) -> str:
        mode = " read-only" if self.read_only else ""
        return f"<SQLiteStore {self.path.name}{mode}>"

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

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
        self._writable("wal checkpoint")
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

    def _writable(self, doing: str) -> None:
        """Refuse a write to a store opened read-only."""
        if self.read_only:
            raise StoreError(
                f"{self.path}: a store opened read-only must not be written (refused: {doing})",
                rule="read_only",
                path=str(self.path),
            )

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[None]:
        if write:
            self._writable("write")
        with self._lock, self._errors("write" if write else "read"):
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            marking = write and self._unmarked
            try:
                if marking:
                    mark(self._db)
                yield
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            if marking:
                self._unmarked, self._tracks_latest = False, True

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
        # packs (older records) need not be decoded at all. A checkpoint asked for by id
        # reads its own pack and older ones only.
        session = self._session(session_id)
        if session is None:
            return self._known(session_id)
        records = [record(r) for r in self._db.execute(_PLAIN, (session_id,))]
        if checkpoint_id is not None:
            at = next((i for i, r in enumerate(records) if r.id == checkpoint_id), None)
            if at is None:
                packed = self._packs.chain_to(session, session_id, checkpoint_id)
                return packed if packed is not None else self._known(session_id)
            records = records[: at + 1]
        if not records or any(r.full for r in records):
            return records or self._known(session_id)
        return self._packs.records_to_full(session, session_id) + records

    def _snapshot(
        self, session_id: str, checkpoint_id: str | None, wanted: Wanted = None
    ) -> Snapshot:
        # The latest checkpoint: its record and manifest come with the plain rows in one
        # query; its chain starts at the last plain full manifest, else at the head (the
        # last packed checkpoint in full), else in the packs (each decoded at most once).
        # Its bodies come with one scan of the session's references.
        if checkpoint_id is not None:
            return super()._snapshot(session_id, checkpoint_id, wanted)
        rows = self._db.execute(
            f"SELECT {COLUMNS}, c.manifest, c.session FROM checkpoints c "
            "JOIN sessions s ON s.id = c.session WHERE s.name = ? ORDER BY c.seq",
            (session_id,),
        ).fetchall()
        if not rows:
            return super()._snapshot(session_id, None, wanted)
        records = [record(r) for r in rows]
        self._check_latest(session_id, records[-1])
        session = int(rows[0][12])
        placing: list[list[Any]] = []

        def placed() -> list[Any]:
            # One scan of the session's references, made once and only when needed.
            if not placing:
                placing.append(self._segments.of_session(session))
            return placing[0]

        fulls = [i for i, row in enumerate(rows) if row[4]]
        start = self._from_head(session, records, fulls, placed)
        if start is not None:
            first, depth, manifest = start
        elif fulls:
            first, depth = fulls[-1], 0
            manifest = Manifest.from_plain(self.codec.decode(bytes(rows[first][11])))
        else:
            manifest, packed = self._packs.latest_chain(session)
            apply_deltas(manifest, packed)
            first, depth = -1, len(packed)
        check_chain(records[max(first, 1) - 1 :], session_id)
        apply_deltas(manifest, (self.codec.decode(bytes(r[11])) for r in rows[first + 1 :]))
        hashes = manifest.body_hashes() if wanted is None else wanted(manifest)
        # A view (a few hundred bodies) is looked up by hash; a whole log by one scan.
        if placing or 4 * len(hashes) >= len(manifest.hashes):
            bodies = self._segments.decode_placed(placed(), hashes)
        else:
            bodies = self._segments.decoded(hashes)
        missing = hashes - bodies.keys()
        if missing:
            bodies.update(self._segments.decoded(missing))
        return Snapshot(
            record=records[-1],
            manifest=manifest,
            bodies=bodies,
            depth=depth + len(rows) - 1 - first,
        )

    def _from_head(
        self,
        session: int,
        records: list[CheckpointRecord],
        fulls: list[int],
        placed: Callable[[], list[Any]],
    ) -> tuple[int, int, Manifest] | None:
        """Where the latest chain starts at the session head: the head's index among the
        plain ``records``, its depth and manifest (None: no usable head there)."""
        head = self._heads.usable(session)
        at = self._heads.place(head, [r.seq for r in records])
        if head is None or at is None or at < max(fulls, default=-1):
            return None
        try:
            manifest = self._heads.manifest(session, head, lambda: {r[4]: r[0] for r in placed()})
        except CorruptCheckpoint as exc:
            self._heads.passed_over(session, exc)
            return None
        return at, head.depth, manifest

    def _check_latest(self, session_id: str, latest: CheckpointRecord) -> None:
        """Refuse a session whose last checkpoints are gone: its row records a later one."""
        if not self._tracks_latest:
            return
        row = self._db.execute(
            "SELECT latest, latest_seq FROM sessions WHERE name = ?", (session_id,)
        ).fetchone()
        expected, seq = row or (None, None)
        if type(seq) is int and seq > latest.seq:
            raise CorruptCheckpoint(
                f"session {session_id!r} must hold its latest checkpoint {expected!r}, "
                f"seq {seq} (missing; the last one stored is {latest.id!r}, seq {latest.seq})",
                rule="missing_latest",
                session_id=session_id,
                checkpoint_id=expected,
            )

    def _latest(self, session_id: str) -> CheckpointRecord | None:
        row = self._db.execute(
            f"SELECT {COLUMNS} FROM checkpoints c JOIN sessions s ON s.id = c.session "
            "WHERE s.name = ? ORDER BY c.seq DESC LIMIT 1",
            (session_id,),
        ).fetchone()
        if row is not None:
            latest: CheckpointRecord | None = record(row)
        else:
            records = self._records(session_id)
            latest = records[-1] if records else None
        if latest is not None:
            self._check_latest(session_id, latest)
        return latest

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
        for checkpoint_id in checkpoint_ids:
            if checkpoint_id not in found:
                raise CorruptCheckpoint(
                    f"checkpoint {checkpoint_id!r} must have its manifest in the store "
                    "(neither a row nor a pack index entry leads to it)",
                    rule="missing_manifest",
                    checkpoint_id=checkpoint_id,
                )
        return [found[i] for i in checkpoint_ids]

    def _bodies(self, hashes: Iterable[str]) -> dict[str, Any]:
        return self._segments.decoded(hashes)

    def _present(self, hashes: Iterable[str]) -> set[str]:
        return self._segments.present(hashes)

    def _unreadable(self, hashes: Iterable[str]) -> set[str]:
        return self._segments.unreadable(hashes)

    def _write(self, record: CheckpointRecord, encoded: Encoded) -> None:
        session = self._session(record.session_id)
        if session is None:
            cursor = self._db.execute(
                "INSERT INTO sessions (name, latest, latest_seq) VALUES (?, ?, ?)",
                (record.session_id, record.id, record.seq),
            )
            session = int(cursor.lastrowid or 0)
        else:
            self._db.execute(
                "UPDATE sessions SET latest = ?, latest_seq = ? WHERE id = ?",
                (record.id, record.seq, session),
            )
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

    def _erase(self, session_id: str) -> None:
        # Every row of the session goes without being read: damage never blocks erasure.
        session = self._session(session_id)
        if session is None:
            raise no_session(session_id)
        for table in ("checkpoints", "packs", "packed_ids"):
            self._db.execute(f"DELETE FROM {table} WHERE session = ?", (session,))
        self._segments.collect(session, set())
        self._db.execute("DELETE FROM session_bodies WHERE session = ?", (session,))
        self._db.execute("DELETE FROM heads WHERE session = ?", (session,))
        self._db.execute("DELETE FROM sessions WHERE id = ?", (session,))

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
            self._db.execute("DELETE FROM heads WHERE session = ?", (session,))
            self._db.execute("DELETE FROM sessions WHERE id = ?", (session,))
