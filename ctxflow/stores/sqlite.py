"""The SQLite store: the embedded default, one file, WAL, one transaction per checkpoint.

Writes run in ``BEGIN IMMEDIATE`` transactions, so two writers (threads or
processes) queue on the file lock instead of interleaving, and the stale
parent check and the insert happen under that lock. Reads run in a deferred
transaction, which in WAL mode is a consistent snapshot: a load never mixes
two checkpoints.

New files use 1 KiB pages (``page_size``): see ``PAGE_SIZE``.

Durability: ``synchronous=NORMAL`` (the WAL default) survives a killed
process; pass ``synchronous="FULL"`` to survive a power cut as well.

Bodies are written *loose* (one envelope each, in ``loose``); once
``segment_bodies`` loose bodies have accumulated, the write that crosses the
line packs them into one *segment* (one envelope over a list of bodies)
in the same transaction. One lz4 frame over many messages compresses their
shared keys and text several times better than one frame per message, and a
load decodes a few segments instead of a thousand envelopes. ``bodies`` keeps
one row per hash (its segment and position there, or its loose row), so content
addressing and the per-session references work as before; when retention or
erasure deletes a packed body, its segment is dropped if nothing in it is left,
else rewritten without it (an erased session's text must not linger in a
segment another session still reads).

Checkpoint rows are packed the same way: once a session has
``pack_checkpoints`` rows more than a few, its oldest ones (record fields and
decoded manifest) move into one envelope in ``packs``; ``packed_ids`` keeps
their ids findable (by a 64-bit key hashed from the id, checked against the
pack). Inside packs a full manifest is stored as a delta of the session's
previous full one (at most ``_MAX_DEPTH`` in a row): full manifests repeat the
whole log's hashes and would otherwise be most of a pack. The newest rows stay
plain, so a write never touches a pack; only
listing, loading an old chain, retention and erasure decode them.

Each session keeps a *head*: the full manifest of one of its recent
checkpoints (bodies named by their row ids, 3 bytes instead of a 16-byte hash).
It moves to the latest checkpoint every ``head_every`` checkpoints and past
the rows being packed, from the previous head or a newer full manifest. The
latest checkpoint's chain starts at the head (or a newer plain full manifest),
so loading it reads no pack and replays at most ``head_every`` plain rows.
Moving it costs about 1 ms every 32 checkpoints on a 1,000-message session.
Retention and erasure empty the head; a later full manifest sets it again.

Schema version 3 (session heads) upgrades older files in place on open, one
version at a time: version-1 bodies become loose bodies, version-2 sessions get
an empty head.

Every ``sqlite3`` failure is re-raised as :class:`~ctxflow.errors.StoreError`
naming the file and what SQLite reported; :meth:`SQLiteStore.check` runs
``PRAGMA integrity_check`` (``verify=True`` runs it on open).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ctxflow.checkpoints.manifest import Manifest
from ctxflow.checkpoints.model import CheckpointRecord
from ctxflow.errors import CorruptCheckpoint, StoreError
from ctxflow.serde import EnvelopeCodec, default_codec
from ctxflow.stores.base import BaseStore, apply_deltas

__all__ = ["SQLiteStore"]

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
_SCHEMA_VERSION = "3"
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
#: Loose bodies packed into one segment at once (one lz4 frame compresses their
#: shared keys and text far better than one frame per body).
SEGMENT_BODIES = 64
#: Checkpoint rows packed at once: once a session has this many rows more than
#: ``_PLAIN_ROWS``, its oldest ones (record and decoded manifest) move into one pack.
PACK_CHECKPOINTS = 128
_PLAIN_ROWS = 16
#: The session head moves to the latest checkpoint every this many checkpoints (and
#: at every pack), so the latest load replays at most this many plain rows after it.
HEAD_EVERY = 32
#: Page size of new files (an existing file keeps its own). Rows here are small and
#: segments a few KB, so 1 KiB pages waste far less than SQLite's 4 KiB default
#: (a mostly empty page per small table, half a page per blob's overflow tail).
PAGE_SIZE = 1024
#: A packed full manifest is stored as a delta against the session's previous
#: full one; at most this many in a row, so expanding one decodes a few packs.
_MAX_DEPTH = 8
_Memo = dict[tuple[int, int], tuple[Manifest, int]]
#: A session head: (seq, deltas since its last full manifest, full manifest naming body ids).
_Head = tuple[int, int, dict[str, Any]]
_PACKED = "id, parent, seq, full, created_at, phase, trigger, tokens, message_count, size, manifest"
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


def _id_key(checkpoint_id: str) -> int:
    """The 64-bit key ``packed_ids`` finds a checkpoint id by (collisions are checked)."""
    digest = hashlib.blake2b(checkpoint_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


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
                if self._schema_version() != _SCHEMA_VERSION:
                    self._prepare_schema()
        except BaseException:
            self._db.close()
            raise

    def _schema_version(self) -> str | None:
        """The schema version a file records (None for a new file)."""
        try:
            row = self._db.execute("SELECT value FROM ctxflow_meta WHERE key = 'schema'").fetchone()
        except sqlite3.OperationalError:
            return None
        return None if row is None else str(row[0])

    def _prepare_schema(self) -> None:
        """Create the schema of a new file, or upgrade an older one, in one transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS ctxflow_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        row = self._db.execute("SELECT value FROM ctxflow_meta WHERE key = 'schema'").fetchone()
        while row is not None and row[0] in _MIGRATIONS:
            version, statements = _MIGRATIONS[row[0]]
            for statement in statements.split(";"):
                self._db.execute(statement)
            self._db.execute("UPDATE ctxflow_meta SET value = ? WHERE key = 'schema'", (version,))
            row = (version,)
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                self._db.execute(statement)
        if row is None:
            self._db.execute(
                "INSERT INTO ctxflow_meta (key, value) VALUES ('schema', ?)", (_SCHEMA_VERSION,)
            )
        elif row[0] != _SCHEMA_VERSION:
            self._db.execute("ROLLBACK")
            raise StoreError(
                f"{self.path}: store schema must be version {_SCHEMA_VERSION} (got {row[0]})",
                rule="schema_version",
                path=str(self.path),
            )
        self._db.execute("COMMIT")

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
        records: list[CheckpointRecord] = []
        row = self._db.execute("SELECT id FROM sessions WHERE name = ?", (session_id,)).fetchone()
        if row is None:
            return records
        for _, entries in self._packs(int(row[0])):
            records.extend(_record((e[0], session_id, *e[1:10])) for e in entries)
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM checkpoints c JOIN sessions s ON s.id = c.session "
            "WHERE s.name = ? ORDER BY c.seq",
            (session_id,),
        )
        records.extend(_record(r) for r in rows)
        return records

    def _chain_records(self, session_id: str, checkpoint_id: str | None) -> list[CheckpointRecord]:
        # The latest checkpoint's chain usually starts among the plain rows: then the
        # packs (older records) need not be decoded at all.
        if checkpoint_id is None:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM checkpoints c JOIN sessions s ON s.id = c.session "
                "WHERE s.name = ? ORDER BY c.seq",
                (session_id,),
            ).fetchall()
            records = [_record(r) for r in rows]
            if not records or any(r.full for r in records):
                return records or self._known(session_id)
            session = self._db.execute(
                "SELECT id FROM sessions WHERE name = ?", (session_id,)
            ).fetchone()[0]
            packs = self._db.execute(
                "SELECT last_seq, data FROM packs WHERE session = ? ORDER BY last_seq DESC",
                (session,),
            )
            for last, data in packs:
                entries = self._decode_pack(session, int(last), bytes(data))
                records[:0] = [_record((e[0], session_id, *e[1:10])) for e in entries]
                if any(e[3] for e in entries):
                    break
            return records
        return self._known(session_id)

    def _snapshot_parts(
        self, session_id: str, checkpoint_id: str | None
    ) -> tuple[CheckpointRecord, Manifest, int, dict[str, Any]]:
        # The latest checkpoint: its record and manifest come with the plain rows in one
        # query; its chain starts at the last plain full manifest, else at the head (the
        # last packed checkpoint in full), else in the packs (each decoded at most once).
        # Its bodies come with one scan of the session's references.
        if checkpoint_id is not None:
            return super()._snapshot_parts(session_id, checkpoint_id)
        rows = self._db.execute(
            f"SELECT {_COLUMNS}, c.manifest, c.session FROM checkpoints c "
            "JOIN sessions s ON s.id = c.session WHERE s.name = ? ORDER BY c.seq",
            (session_id,),
        ).fetchall()
        if not rows:
            return super()._snapshot_parts(session_id, None)
        session = int(rows[0][12])
        placed = self._session_bodies(session)
        fulls = [i for i, row in enumerate(rows) if row[4]]
        head = self._read_head(session)
        at = self._head_place(head, rows)
        if head is not None and at is not None and at >= max(fulls, default=-1):
            first, depth = at, head[1]
            manifest = self._head_manifest(session, head[2], {r[4]: r[0] for r in placed})
        elif fulls:
            first, depth = fulls[-1], 0
            manifest = Manifest.from_plain(self.codec.decode(bytes(rows[first][11])))
        else:
            manifest, packed = self._packed_chain(session)
            apply_deltas(manifest, packed)
            first, depth = -1, len(packed)
        apply_deltas(manifest, (self.codec.decode(bytes(r[11])) for r in rows[first + 1 :]))
        hashes = manifest.body_hashes()
        bodies = self._decode_placed(placed, hashes)
        missing = hashes - bodies.keys()
        if missing:
            bodies.update(self._decoded_bodies(missing))
        return _record(rows[-1]), manifest, depth + len(rows) - 1 - first, bodies

    @staticmethod
    def _head_place(head: _Head | None, rows: Sequence[Any]) -> int | None:
        """The head's index among plain rows (-1: just before them), None if not there."""
        if head is None:
            return None
        at: int = head[0] - int(rows[0][3])
        if at == -1 or (0 <= at < len(rows) and rows[at][3] == head[0]):
            return at
        return None

    def _packed_chain(self, session: int) -> tuple[Manifest, list[Any]]:
        """The session's last packed full manifest and the packed deltas after it."""
        later: list[list[Any]] = []
        packs = self._db.execute(
            "SELECT last_seq, data FROM packs WHERE session = ? ORDER BY last_seq DESC",
            (session,),
        ).fetchall()
        for last, data in packs:
            stored = self._decode_pack(session, int(last), bytes(data))
            fulls = [i for i, e in enumerate(stored) if e[3]]
            if not fulls:
                later.append([e[10] for e in stored])
                continue
            memo: _Memo = {}
            self._expand_fulls(session, stored, memo)
            base = stored[fulls[-1]]
            deltas = [e[10] for e in stored[fulls[-1] + 1 :]]
            for group in reversed(later):
                deltas.extend(group)
            return memo[(session, base[2])][0], deltas
        raise CorruptCheckpoint(
            f"the latest checkpoint of session {session} must have a full manifest before it "
            "(none found)",
            rule="manifest_chain",
        )

    def _latest(self, session_id: str) -> CheckpointRecord | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM checkpoints c JOIN sessions s ON s.id = c.session "
            "WHERE s.name = ? ORDER BY c.seq DESC LIMIT 1",
            (session_id,),
        ).fetchone()
        if row is not None:
            return _record(row)
        records = self._records(session_id)
        return records[-1] if records else None

    def _exists(self, checkpoint_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM checkpoints WHERE id = ?", (checkpoint_id,))
        if row.fetchone() is not None:
            return True
        candidates = self._db.execute(
            "SELECT 1 FROM packed_ids WHERE key = ? LIMIT 1", (_id_key(checkpoint_id),)
        )
        return candidates.fetchone() is not None and bool(self._packed_manifests([checkpoint_id]))

    def _manifests(self, checkpoint_ids: Sequence[str]) -> list[bytes]:
        found: dict[str, bytes] = {}
        for chunk in _chunks(list(checkpoint_ids)):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT id, manifest FROM checkpoints WHERE id IN ({marks})", tuple(chunk)
            )
            found.update((r[0], bytes(r[1])) for r in rows)
        missing = [i for i in checkpoint_ids if i not in found]
        if missing:
            packed = self._packed_manifests(missing)
            found.update((i, self.codec.encode(v)) for i, v in packed.items())
        return [found[i] for i in checkpoint_ids]

    def _decoded_manifests(self, checkpoint_ids: Sequence[str]) -> list[Any]:
        found: dict[str, Any] = {}
        for chunk in _chunks(list(checkpoint_ids)):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT id, manifest FROM checkpoints WHERE id IN ({marks})", tuple(chunk)
            )
            found.update((r[0], self.codec.decode(bytes(r[1]))) for r in rows)
        missing = [i for i in checkpoint_ids if i not in found]
        if missing:
            found.update(self._packed_manifests(missing))
        return [found[i] for i in checkpoint_ids]

    # -- checkpoint packs -----------------------------------------------------

    def _decode_pack(self, session: int, last_seq: int, data: bytes) -> list[list[Any]]:
        value = self.codec.decode(data)
        if not isinstance(value, list) or not all(
            isinstance(e, list) and len(e) == 12 and isinstance(e[0], str) for e in value
        ):
            raise CorruptCheckpoint(
                f"checkpoint pack {session}/{last_seq} must be a list of 12-field entries",
                rule="pack",
                session=session,
                last_seq=last_seq,
            )
        return value

    def _packs(self, session: int) -> list[tuple[int, list[list[Any]]]]:
        """A session's packs, oldest first, as (last seq, decoded entries)."""
        rows = self._db.execute(
            "SELECT last_seq, data FROM packs WHERE session = ? ORDER BY last_seq", (session,)
        ).fetchall()
        return [(int(r[0]), self._decode_pack(session, int(r[0]), bytes(r[1]))) for r in rows]

    def _packs_of(self, checkpoint_ids: Iterable[str]) -> dict[tuple[int, int], list[list[Any]]]:
        """The decoded packs holding these (packed) checkpoint ids, by (session, last seq)."""
        places: set[tuple[int, int]] = set()
        for id_key in {_id_key(i) for i in checkpoint_ids}:
            places.update(
                self._db.execute(
                    "SELECT session, seq FROM packed_ids WHERE key = ?", (id_key,)
                ).fetchall()
            )
        packs: dict[tuple[int, int], list[list[Any]]] = {}
        memo: _Memo = {}
        for session, seq in sorted(places):
            if any(k[0] == session and k[1] >= seq for k in packs):
                continue
            row = self._db.execute(
                "SELECT last_seq, data FROM packs WHERE session = ? AND last_seq >= ? "
                "ORDER BY last_seq LIMIT 1",
                (session, seq),
            ).fetchone()
            if row is not None:
                key = (int(session), int(row[0]))
                packs[key] = self._expand(key[0], self._decode_pack(*key, bytes(row[1])), memo)
        return packs

    def _full_at(self, session: int, seq: int, memo: _Memo) -> tuple[Manifest, int]:
        """The full manifest of the packed full checkpoint ``seq`` (and its delta depth)."""
        if (session, seq) not in memo:
            row = self._db.execute(
                "SELECT last_seq, data FROM packs WHERE session = ? AND last_seq >= ? "
                "ORDER BY last_seq LIMIT 1",
                (session, seq),
            ).fetchone()
            stored = self._decode_pack(session, int(row[0]), bytes(row[1])) if row else []
            if any(e[2] == seq and e[3] for e in stored):
                self._expand_fulls(session, stored, memo)
        if (session, seq) not in memo:
            raise CorruptCheckpoint(
                f"a packed full manifest must find its base, full checkpoint {seq} (missing)",
                rule="pack",
                session=session,
                seq=seq,
            )
        return memo[(session, seq)]

    def _expand_fulls(self, session: int, stored: list[list[Any]], memo: _Memo) -> None:
        """Put every full manifest of a pack into ``memo``, in full (see ``_compact``)."""
        for entry in stored:
            if not entry[3]:
                continue
            manifest = entry[10]
            try:
                if entry[11] is None:
                    full, depth = Manifest.from_plain(manifest), 0
                else:
                    base_seq, depth = int(entry[11][0]), int(entry[11][1])
                    if base_seq >= entry[2]:
                        raise ValueError("a base must come first")
                    full = self._full_at(session, base_seq, memo)[0].copy()
                    full.apply(manifest)
            except (TypeError, ValueError, IndexError, AttributeError) as exc:
                raise CorruptCheckpoint(
                    f"a packed full manifest must be full or a delta of an earlier one ({exc})",
                    rule="pack",
                ) from None
            memo[(session, entry[2])] = (full, depth)

    def _expand(self, session: int, stored: list[list[Any]], memo: _Memo) -> list[list[Any]]:
        """A pack's entries with every full manifest in full (see ``_compact``)."""
        self._expand_fulls(session, stored, memo)
        return [[*e[:10], memo[(session, e[2])][0].to_plain() if e[3] else e[10]] for e in stored]

    def _full_before(self, session: int, seq: int, memo: _Memo) -> tuple[int, Manifest, int] | None:
        """The session's last packed full checkpoint before ``seq`` (a few packs back at most)."""
        rows = self._db.execute(
            "SELECT last_seq, data FROM packs WHERE session = ? AND last_seq < ? "
            "ORDER BY last_seq DESC LIMIT 4",
            (session, seq),
        ).fetchall()
        for last, data in rows:
            fulls = [e[2] for e in self._decode_pack(session, int(last), bytes(data)) if e[3]]
            if fulls:
                return (fulls[-1], *self._full_at(session, fulls[-1], memo))
        return None

    def _compact(self, session: int, entries: list[list[Any]], memo: _Memo) -> list[list[Any]]:
        """Pack entries as stored: a full manifest becomes a delta against the previous full
        one, tagged ``[base seq, depth]`` (full manifests repeat every hash of the log, and
        they make up most of a pack's bytes otherwise)."""
        base = self._full_before(session, entries[0][2], memo)
        out: list[list[Any]] = []
        for entry in entries:
            manifest, stamp = entry[10], None
            if entry[3]:
                full, depth = Manifest.from_plain(manifest), 0
                if base is not None and base[2] < _MAX_DEPTH:
                    delta = full.delta_from(base[1])
                    if delta is not None:
                        manifest, depth = delta, base[2] + 1
                        stamp = [base[0], depth]
                base = (entry[2], full, depth)
                memo[(session, entry[2])] = (full, depth)
            out.append([*entry[:10], manifest, stamp])
        return out

    def _packed_manifests(self, checkpoint_ids: Sequence[str]) -> dict[str, Any]:
        wanted = set(checkpoint_ids)
        found: dict[str, Any] = {}
        for entries in self._packs_of(wanted).values():
            found.update((e[0], e[10]) for e in entries if e[0] in wanted)
        return found

    def _store_pack(
        self,
        session: int,
        old_last: int | None,
        entries: list[list[Any]],
        memo: _Memo | None = None,
    ) -> None:
        """Replace a pack by ``entries`` (expanded; none left: drop it)."""
        if old_last is not None:
            self._db.execute(
                "DELETE FROM packs WHERE session = ? AND last_seq = ?", (session, old_last)
            )
        if entries:
            self._db.execute(
                "INSERT INTO packs (session, last_seq, data) VALUES (?, ?, ?)",
                (
                    session,
                    entries[-1][2],
                    self.codec.encode(
                        self._compact(session, entries, {} if memo is None else memo)
                    ),
                ),
            )

    def _pack_rows(self, session: int) -> None:
        """Move a session's oldest rows into a pack once enough have accumulated."""
        (count,) = self._db.execute(
            "SELECT count(*) FROM checkpoints WHERE session = ?", (session,)
        ).fetchone()
        keep = min(_PLAIN_ROWS, self.pack_checkpoints)
        if count < self.pack_checkpoints + keep:
            return
        rows = self._db.execute(
            f"SELECT {_PACKED} FROM checkpoints WHERE session = ? ORDER BY seq LIMIT ?",
            (session, count - keep),
        ).fetchall()
        entries = [[*r[:10], self.codec.decode(bytes(r[10]))] for r in rows]
        records = [(e[2], bool(e[3]), e[10]) for e in entries]
        self._extend_head(session, records, self._read_head(session))
        self._store_pack(session, None, entries)
        self._db.executemany(
            "INSERT INTO packed_ids (key, session, seq) VALUES (?, ?, ?)",
            ((_id_key(e[0]), session, e[2]) for e in entries),
        )
        self._db.execute(
            "DELETE FROM checkpoints WHERE session = ? AND seq <= ?", (session, entries[-1][2])
        )

    # -- session heads --------------------------------------------------------

    def _extend_head(
        self, session: int, records: list[tuple[int, bool, Any]], head: _Head | None
    ) -> None:
        """Bring the session head forward through consecutive checkpoints, oldest first.

        ``records`` are (seq, full, decoded manifest record); ``head`` is the current
        one. The head moves from the last full manifest among them, else from the head
        itself when they continue it; else it is emptied (or stays empty). Bodies are
        named by row id.
        """
        if head is not None:
            records = [r for r in records if r[0] > head[0]]
            if not records:
                return
        fulls = [i for i, r in enumerate(records) if r[1]]
        data = None
        if fulls:
            first = fulls[-1]
            manifest = Manifest.from_plain(records[first][2])
            apply_deltas(manifest, [r[2] for r in records[first + 1 :]])
            found = {r[0]: r[4] for r in self._session_bodies(session)}
            data = self._head_data(records[-1][0], len(records) - 1 - first, manifest, [], found)
        elif head is not None and records[0][0] == head[0] + 1:
            _, depth, plain = head
            known = plain["hashes"]
            shell = {**plain, "hashes": []}
            if plain.get("measure") is not None:
                shell["counts"] = []
            manifest = Manifest.from_plain(shell)
            apply_deltas(manifest, [r[2] for r in records])
            counts = list(plain.get("counts") or []) + manifest.counts
            manifest.counts = counts
            found = self._body_ids(set(manifest.hashes))
            data = self._head_data(records[-1][0], depth + len(records), manifest, known, found)
        self._db.execute("UPDATE sessions SET head = ? WHERE id = ?", (data, session))

    def _head_data(
        self,
        seq: int,
        depth: int,
        manifest: Manifest,
        known: list[Any],
        ids: Mapping[str, int],
    ) -> bytes | None:
        """The encoded head: ``known`` body ids, then those of ``manifest``'s hashes."""
        if not all(h in ids for h in manifest.hashes):
            return None
        plain = manifest.to_plain()
        plain["hashes"] = [*known, *(ids[h] for h in manifest.hashes)]
        return self.codec.encode([seq, depth, plain])

    def _body_ids(self, hashes: set[str]) -> dict[str, int]:
        """The row ids of these body hashes (those stored)."""
        found: dict[str, int] = {}
        for chunk in _chunks(sorted(hashes)):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT hash, id FROM bodies WHERE hash IN ({marks})", tuple(chunk)
            )
            found.update((r[0], r[1]) for r in rows)
        return found

    def _advance_head(self, session: int) -> None:
        """Move the head to the latest checkpoint through the plain rows after it."""
        head = self._read_head(session)
        rows = self._db.execute(
            "SELECT seq, full, manifest FROM checkpoints WHERE session = ? AND seq > ? "
            "ORDER BY seq",
            (session, -1 if head is None else head[0]),
        ).fetchall()
        records = [(r[0], bool(r[1]), self.codec.decode(bytes(r[2]))) for r in rows]
        self._extend_head(session, records, head)

    def _read_head(self, session: int) -> _Head | None:
        """The session's head: (seq, deltas since its last full, manifest naming body ids)."""
        row = self._db.execute("SELECT head FROM sessions WHERE id = ?", (session,)).fetchone()
        if row is None or row[0] is None:
            return None
        value = self.codec.decode(bytes(row[0]))
        if not (
            isinstance(value, list)
            and len(value) == 3
            and all(type(v) is int for v in value[:2])
            and isinstance(value[2], dict)
            and isinstance(value[2].get("hashes"), list)
        ):
            raise CorruptCheckpoint(
                f"the head of session {session} must be [seq, depth, manifest]", rule="head"
            )
        return value[0], value[1], value[2]

    def _head_manifest(
        self, session: int, plain: dict[str, Any], hashes: Mapping[int, str]
    ) -> Manifest:
        """A head's full manifest, its body ids turned back into hashes."""
        try:
            named = [hashes[i] for i in plain["hashes"]]
        except (KeyError, TypeError):
            raise CorruptCheckpoint(
                f"the head of session {session} must name bodies the session holds",
                rule="head",
            ) from None
        return Manifest.from_plain({**plain, "hashes": named})

    def _bodies(self, hashes: Iterable[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for chunk in _chunks(sorted(hashes)):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT b.hash, l.data FROM bodies b JOIN loose l ON l.id = b.id "
                f"WHERE b.hash IN ({marks})",
                tuple(chunk),
            )
            found.update((r[0], bytes(r[1])) for r in rows)
        return found

    def _decoded_bodies(self, hashes: Iterable[str]) -> dict[str, Any]:
        rows: list[Any] = []
        for chunk in _chunks(sorted(hashes)):
            marks = ",".join("?" * len(chunk))
            rows += self._db.execute(
                f"SELECT b.hash, b.segment, b.pos, l.data FROM bodies b LEFT JOIN loose l "
                f"ON l.id = b.id WHERE b.hash IN ({marks})",
                tuple(chunk),
            ).fetchall()
        return self._decode_placed(rows, None)

    def _session_bodies(self, session: int) -> list[Any]:
        """(hash, segment, pos, loose data, id) of every body a session references.

        A session references every body its checkpoints name, so one range scan of its
        references finds a checkpoint's bodies, instead of a lookup per hash.
        """
        return self._db.execute(
            "SELECT b.hash, b.segment, b.pos, l.data, b.id FROM session_bodies r "
            "JOIN bodies b ON b.id = r.body LEFT JOIN loose l ON l.id = b.id "
            "WHERE r.session = ?",
            (session,),
        ).fetchall()

    def _decode_placed(self, rows: list[Any], wanted: set[str] | None) -> dict[str, Any]:
        """Decode bodies from (hash, segment, pos, loose data) rows (only ``wanted`` ones)."""
        found: dict[str, Any] = {}
        placed = []
        for row in rows:
            if wanted is not None and row[0] not in wanted:
                continue
            if row[1] is not None:
                placed.append(row)
            elif row[3] is not None:
                found[row[0]] = self.codec.decode(bytes(row[3]))
        segments = self._segments(sorted({row[1] for row in placed if type(row[1]) is int}))
        for digest, segment, pos, *_ in placed:
            packed = segments.get(segment, ())
            if type(pos) is not int or not 0 <= pos < len(packed):
                raise CorruptCheckpoint(
                    f"body {digest!r} must be inside segment {segment} "
                    f"(position {pos} of {len(packed)})",
                    rule="segment",
                    segment=segment,
                )
            found[digest] = packed[pos]
        return found

    def _segments(self, ids: Sequence[int]) -> dict[int, list[Any]]:
        """The decoded bodies of segments, by id (missing ones left out)."""
        out: dict[int, list[Any]] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT id, data FROM segments WHERE id IN ({marks})", tuple(chunk)
            )
            out.update((int(i), self._segment_value(int(i), bytes(d))) for i, d in rows)
        return out

    def _segment(self, segment: int) -> list[Any]:
        """The decoded bodies of one segment, in position order; typed errors when damaged."""
        row = self._db.execute("SELECT data FROM segments WHERE id = ?", (segment,)).fetchone()
        return [] if row is None else self._segment_value(segment, bytes(row[0]))

    def _segment_value(self, segment: int, data: bytes) -> list[Any]:
        value = self.codec.decode(data)
        if not isinstance(value, list):
            raise CorruptCheckpoint(
                f"segment {segment} must be a list of bodies (got {type(value).__name__})",
                rule="segment",
                segment=segment,
            )
        return value

    def _pack(self) -> None:
        """Move the loose bodies into one new segment once enough have accumulated."""
        (count,) = self._db.execute("SELECT count(*) FROM loose").fetchone()
        if count < self.segment_bodies:
            return
        rows = self._db.execute(
            "SELECT b.id, b.hash, l.data FROM loose l JOIN bodies b ON b.id = l.id ORDER BY l.id"
        ).fetchall()
        packed = [self.codec.decode(bytes(data)) for _, _, data in rows]
        cursor = self._db.execute(
            "INSERT INTO segments (data) VALUES (?)", (self.codec.encode(packed),)
        )
        segment = int(cursor.lastrowid or 0)
        self._db.executemany(
            "UPDATE bodies SET segment = ?, pos = ? WHERE id = ?",
            ((segment, pos, row[0]) for pos, row in enumerate(rows)),
        )
        self._db.executemany("DELETE FROM loose WHERE id = ?", ((body,) for body, _, _ in rows))

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
        for digest, data in bodies.items():
            cursor = self._db.execute("INSERT OR IGNORE INTO bodies (hash) VALUES (?)", (digest,))
            if cursor.rowcount:
                self._db.execute(
                    "INSERT INTO loose (id, data) VALUES (?, ?)", (cursor.lastrowid, data)
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
        if bodies:
            self._pack()
        self._pack_rows(session)
        if record.seq % self.head_every == 0:
            self._advance_head(session)

    def _rewrite_full(self, checkpoint_id: str, manifest: bytes, mentioned: set[str]) -> None:
        row = self._db.execute(
            "SELECT session FROM checkpoints WHERE id = ?", (checkpoint_id,)
        ).fetchone()
        if row is not None:
            self._db.execute(
                "UPDATE checkpoints SET manifest = ?, full = 1 WHERE id = ?",
                (manifest, checkpoint_id),
            )
            self._reference(int(row[0]), mentioned)
            return
        for (session, last), entries in self._packs_of([checkpoint_id]).items():
            for entry in entries:
                if entry[0] == checkpoint_id:
                    entry[3], entry[10] = 1, self.codec.decode(manifest)
            self._store_pack(session, last, entries)
            self._reference(session, mentioned)

    def _unpack_session(self, session: int) -> list[tuple[int, list[list[Any]]]]:
        """Every pack of a session, expanded, oldest first."""
        memo: _Memo = {}
        return [
            (last, self._expand(session, stored, memo)) for last, stored in self._packs(session)
        ]

    def _delete(self, session_id: str, checkpoint_ids: Sequence[str]) -> None:
        self._db.execute("UPDATE sessions SET head = NULL WHERE name = ?", (session_id,))
        self._db.executemany("DELETE FROM checkpoints WHERE id = ?", ((i,) for i in checkpoint_ids))
        doomed = set(checkpoint_ids)
        row = self._db.execute("SELECT id FROM sessions WHERE name = ?", (session_id,)).fetchone()
        if row is None or not self._packs_of(doomed):
            return
        # A kept pack may store a full manifest as a delta of a doomed one: rewrite them all.
        session = int(row[0])
        packs = self._unpack_session(session)
        self._db.execute("DELETE FROM packs WHERE session = ?", (session,))
        memo: _Memo = {}
        gone: list[tuple[int, int, int]] = []
        for _, entries in packs:
            kept = [e for e in entries if e[0] not in doomed]
            gone.extend((_id_key(e[0]), session, e[2]) for e in entries if e[0] in doomed)
            if kept:
                self._store_pack(session, None, kept, memo)
        self._db.executemany(
            "DELETE FROM packed_ids WHERE key = ? AND session = ? AND seq = ?", gone
        )

    def _shrink(self, segment: int) -> None:
        """Drop a segment no body row points to; else rewrite it without deleted bodies.

        Rewriting (not just keeping) a shared segment is what makes erasure real:
        an erased session's bodies must not survive inside a segment another
        session still reads.
        """
        kept = self._db.execute(
            "SELECT id, pos FROM bodies WHERE segment = ? ORDER BY pos", (segment,)
        ).fetchall()
        if not kept:
            self._db.execute("DELETE FROM segments WHERE id = ?", (segment,))
            return
        packed = self._segment(segment)
        if len(kept) < len(packed):
            if not all(0 <= pos < len(packed) for _, pos in kept):
                raise CorruptCheckpoint(
                    f"segment {segment} must hold every body placed in it", rule="segment"
                )
            rest = [packed[pos] for _, pos in kept]
            self._db.execute(
                "UPDATE segments SET data = ? WHERE id = ?", (self.codec.encode(rest), segment)
            )
            self._db.executemany(
                "UPDATE bodies SET pos = ? WHERE id = ?",
                ((new, body) for new, (body, _) in enumerate(kept)),
            )

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
        touched: set[int] = set()
        for chunk in _chunks([body for _, body in dead]):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT DISTINCT segment FROM bodies WHERE id IN ({marks}) "
                "AND segment IS NOT NULL",
                tuple(chunk),
            )
            touched.update(int(r[0]) for r in rows)
        for _, body in dead:
            cursor = self._db.execute(
                "DELETE FROM bodies WHERE id = ? AND NOT EXISTS "
                "(SELECT 1 FROM session_bodies WHERE body = ?)",
                (body, body),
            )
            if cursor.rowcount:
                self._db.execute("DELETE FROM loose WHERE id = ?", (body,))
        for segment in sorted(touched):
            self._shrink(segment)
        left = self._db.execute(
            "SELECT 1 FROM checkpoints WHERE session = ? UNION ALL "
            "SELECT 1 FROM packs WHERE session = ? LIMIT 1",
            (session, session),
        )
        if left.fetchone() is None:
            self._db.execute("DELETE FROM session_bodies WHERE session = ?", (session,))
            self._db.execute("DELETE FROM sessions WHERE id = ?", (session,))
