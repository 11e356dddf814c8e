"""The PostgreSQL store: :class:`PostgresStore`, the shared store code over PostgreSQL tables.

See :mod:`ctxflow.persistence._postgres` for the layout, the locks and fencing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar, Unpack

import psycopg
import psycopg.conninfo
import psycopg.errors
import psycopg_pool

from ctxflow._log import get_logger
from ctxflow.errors import (
    CheckpointError,
    CheckpointNotFound,
    CorruptCheckpoint,
    OwnershipLost,
    StoreError,
)
from ctxflow.persistence._base import (
    BaseStore,
    Encoded,
    duplicate_id,
    missing_bodies,
    no_session,
    record_for,
    stale_parent,
)
from ctxflow.persistence._codec import EnvelopeCodec, default_codec
from ctxflow.persistence._model import CheckpointDraft, CheckpointRecord
from ctxflow.persistence._names import check_schema, check_tenant, redact
from ctxflow.persistence._postgres.schema import (
    COLUMNS,
    STORE_TABLES,
    check_ready,
    check_search_path,
    lock_key,
    prepare,
    record,
)
from ctxflow.persistence._protocol import Retention

__all__ = ["FenceLike", "PostgresStore", "open_pool"]

T = TypeVar("T")
_log = get_logger("ctxflow.stores")

_SESSION_ROWS = (
    f"SELECT {COLUMNS} FROM checkpoints c JOIN sessions s ON s.id = c.session "
    "WHERE s.tenant = %s AND s.name = %s"
)
_WRITE = """
WITH b AS (
    INSERT INTO bodies (tenant, hash, data)
    SELECT %(tenant)s, h, d FROM unnest(%(hashes)s::text[], %(datas)s::bytea[]) AS x (h, d)
    ON CONFLICT (tenant, hash) DO UPDATE SET data = excluded.data
), s AS (
    INSERT INTO sessions (tenant, name, latest, latest_seq)
    VALUES (%(tenant)s, %(session)s, %(id)s, %(seq)s)
    ON CONFLICT (tenant, name) DO UPDATE
    SET latest = excluded.latest, latest_seq = excluded.latest_seq
    RETURNING id
), c AS (
    INSERT INTO checkpoints (tenant, id, session, parent, seq, "full", created_at, phase,
                             trigger, tokens, message_count, size, manifest)
    SELECT %(tenant)s, %(id)s, s.id, %(parent)s, %(seq)s, %(full)s, %(created_at)s,
           %(phase)s, %(trigger)s, %(tokens)s, %(message_count)s, %(size)s, %(manifest)s
    FROM s
)
INSERT INTO session_bodies (tenant, session, hash)
SELECT %(tenant)s, s.id, h FROM s, unnest(%(mentioned)s::text[]) AS h
ON CONFLICT DO NOTHING
"""
_FENCE = "SELECT owner, token FROM fences WHERE tenant = %s AND name = %s"
_LATEST = (
    f"SELECT {COLUMNS}, s.latest, s.latest_seq FROM checkpoints c "
    "JOIN sessions s ON s.id = c.session WHERE s.tenant = %s AND s.name = %s "
    "ORDER BY c.seq DESC LIMIT 1"
)
#: Errors after which PostgreSQL rolled the whole transaction back: running it again is safe.
_AGAIN = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)


class FenceLike(Protocol):
    """The owner value and fencing token of a lease (``ctxflow.stores.Fence`` is one)."""

    @property
    def owner(self) -> str: ...

    @property
    def token(self) -> int: ...


def open_pool(
    url: str,
    *,
    schema: str,
    min_size: int = 1,
    max_size: int = 8,
    timeout: float = 10.0,
) -> psycopg_pool.ConnectionPool:
    """A connection pool on ``url`` whose connections work in ``schema`` (opened and checked:
    ``StoreError`` when the server does not answer within ``timeout`` seconds)."""
    check_schema(schema)
    try:
        # libpq options given in the URL (e.g. -c synchronous_commit=off) are kept.
        given = psycopg.conninfo.conninfo_to_dict(url).get("options") or ""
    except psycopg.Error as exc:
        raise _bad_url(url, exc) from exc
    options = f"{given} -c search_path={schema}".strip()
    kwargs: dict[str, Any] = {"autocommit": True, "options": options}
    # One plain connection first: a server that refuses (down, bad credentials, a bad
    # option) is reported at once with its own reason, not after the pool's retries.
    try:
        psycopg.connect(
            url, autocommit=True, options=options, connect_timeout=max(1, round(timeout))
        ).close()
    except psycopg.Error as exc:
        raise StoreError(
            f"a PostgreSQL store must reach its server ({redact(url)}: {_one_line(exc)})",
            rule="postgres_connect",
            url=redact(url),
        ) from exc
    try:
        pool: psycopg_pool.ConnectionPool = psycopg_pool.ConnectionPool(
            url, min_size=min_size, max_size=max_size, kwargs=kwargs, timeout=timeout, open=False
        )
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        raise _bad_url(url, exc) from exc
    try:
        pool.open(wait=True, timeout=timeout)
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        pool.close()
        raise StoreError(
            f"a PostgreSQL store must reach its server ({redact(url)} did not answer within "
            f"{timeout} s: {_one_line(exc)})",
            rule="postgres_connect",
            url=redact(url),
        ) from exc
    return pool


def _bad_url(url: str, exc: Exception) -> StoreError:
    return StoreError(
        f"'url' must be a usable PostgreSQL URL (got {redact(url)}: {_one_line(exc)})",
        rule="postgres_url",
        url=redact(url),
    )


def _one_line(exc: Exception) -> str:
    """An error's text on one line (libpq's messages span several)."""
    return " ".join(str(exc).split())


def _check_text(value: str, what: str) -> str:
    """PostgreSQL text cannot hold NUL: an id with one is refused before any statement."""
    if "\x00" in value:
        raise CheckpointError(
            f"a {what} must not contain NUL characters (got {value!r})",
            rule=what.replace(" ", "_"),
            value=value,
        )
    return value


class PostgresStore(BaseStore):
    """A :class:`~ctxflow.persistence.Store` in PostgreSQL (safe across threads, processes,
    machines); see :mod:`ctxflow.persistence._postgres`."""

    def __init__(
        self,
        pool: psycopg_pool.ConnectionPool,
        *,
        tenant: str = "default",
        schema: str = "ctxflow",
        codec: EnvelopeCodec | None = None,
        read_retries: int = 2,
        conflict_retries: int = 20,
        read_only: bool = False,
        owns_pool: bool = False,
    ) -> None:
        self.tenant = check_tenant(tenant)
        self.schema = check_schema(schema)
        self.pool = pool
        self.codec = codec or default_codec()
        self.read_retries = read_retries
        self.conflict_retries = conflict_retries
        self.read_only = read_only
        self._owns_pool = owns_pool
        self._local = threading.local()
        try:
            self._run("open", self._prepare_schema, read=False)
        except BaseException:
            if owns_pool:
                pool.close()
            raise

    def _prepare_schema(self) -> None:
        with self.pool.connection() as conn:
            check_search_path(conn, self.schema)
            if self.read_only:
                check_ready(conn, self.schema, "store")
            else:
                prepare(conn, self.schema, "store", STORE_TABLES)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        tenant: str = "default",
        schema: str = "ctxflow",
        codec: EnvelopeCodec | None = None,
        min_size: int = 1,
        max_size: int = 8,
        timeout: float = 10.0,
        read_only: bool = False,
    ) -> PostgresStore:
        """A store on a new connection pool from a ``postgresql://`` URL (libpq's form).

        ``min_size``/``max_size`` bound the pool; ``timeout`` is how long to wait
        for a connection, at open and later. ``read_only``: the store's tables must
        exist already (nothing is created or upgraded) and every write raises
        ``StoreError``.
        """
        check_tenant(tenant)
        pool = open_pool(url, schema=schema, min_size=min_size, max_size=max_size, timeout=timeout)
        return cls(
            pool, tenant=tenant, schema=schema, codec=codec, read_only=read_only, owns_pool=True
        )

    def __repr__(self) -> str:
        mode = " read-only" if self.read_only else ""
        return f"<PostgresStore schema={self.schema!r} tenant={self.tenant!r}{mode}>"

    def close(self) -> None:
        """Close the pool if this store opened it."""
        if self._owns_pool:
            self.pool.close()

    # -- running operations -----------------------------------------------------

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except psycopg_pool.PoolTimeout as exc:
            raise self._failed(doing, exc, "postgres_pool") from exc
        except psycopg.Error as exc:
            if isinstance(exc, (*_AGAIN, psycopg.OperationalError)):
                raise
            raise self._failed(doing, exc, "postgres") from exc

    def _failed(self, doing: str, exc: Exception, rule: str) -> StoreError:
        return StoreError(
            f"PostgreSQL {doing} failed for tenant {self.tenant!r} in schema {self.schema!r}: "
            f"{type(exc).__name__}: {_one_line(exc)}",
            rule=rule,
            operation=doing,
            tenant=self.tenant,
            postgres_error=str(exc),
        )

    def _run(self, doing: str, fn: Callable[[], T], *, read: bool) -> T:
        """Run ``fn`` again after a serialization failure or deadlock (always: PostgreSQL
        rolled it back) and after a lost connection (reads only: a write may have landed)."""
        failures = 0
        for attempt in range(self.conflict_retries):
            try:
                with self._errors(doing):
                    return fn()
            except _AGAIN as exc:
                _log.debug("postgres_retry", operation=doing, attempt=attempt, reason=str(exc))
                time.sleep(0.001 * attempt)
                continue
            except psycopg.OperationalError as exc:
                failures += 1
                if not read or failures > self.read_retries:
                    raise self._failed(doing, exc, "postgres") from exc
                time.sleep(0.05 * failures)
        raise StoreError(
            f"{doing} must finish within {self.conflict_retries} attempts "
            f"(other clients kept conflicting with it)",
            rule="contention",
            tenant=self.tenant,
        )

    # -- fencing ------------------------------------------------------------------

    @contextmanager
    def _fencing(self, session_id: str, fence: FenceLike | None) -> Iterator[None]:
        """Every transaction of this thread in the block checks ``fence`` on ``session_id``
        when it first touches that session (no check when ``fence`` is None)."""
        previous = getattr(self._local, "guard", None)
        self._local.guard = None if fence is None else (session_id, fence)
        try:
            yield
        finally:
            self._local.guard = previous

    def claim(self, session_id: str, fence: FenceLike) -> None:
        """Record ``fence`` as the session's lease, so no write under an older token lands.

        ``OwnershipLost`` when the session already records a newer token (or the
        same token of another owner). A fenced write claims its fence too; a new
        owner calls this on taking the lease to shut an old one out at once.
        """
        _check_text(session_id, "session id")
        with self._fencing(session_id, fence):
            self._atomic("claim", lambda: self._lock(session_id), write=True)

    def fence_of(self, session_id: str) -> tuple[str, int] | None:
        """The owner value and token the session last recorded (None: never fenced)."""
        _check_text(session_id, "session id")

        def read() -> tuple[str, int] | None:
            row = (
                self._conn()
                .execute(
                    "SELECT owner, token FROM fences WHERE tenant = %s AND name = %s",
                    (self.tenant, session_id),
                )
                .fetchone()
            )
            return None if row is None else (str(row[0]), int(row[1]))

        return self._atomic("fence", read, write=False)

    def _check_fence(self, session_id: str, fence: FenceLike, *, write: bool) -> None:
        """Refuse a fence older than the session's; a write records a newer one (locked)."""
        lock = " FOR UPDATE" if write else ""
        row = self._conn().execute(_FENCE + lock, (self.tenant, session_id)).fetchone()
        self._hold_fence(session_id, fence, row, write=write)

    def _hold_fence(self, session_id: str, fence: FenceLike, row: Any, *, write: bool) -> None:
        """Given the session's recorded fence ``row`` (owner, token, or None): refuse an
        older ``fence``; in a write, record a newer one."""
        if row is not None:
            owner, token = str(row[0]), int(row[1])
            if token > fence.token or (token == fence.token and owner != fence.owner):
                raise OwnershipLost(
                    f"a fenced write to session {session_id!r} must hold the current lease "
                    f"(owner {fence.owner!r}, token {fence.token}; "
                    f"got owner {owner!r}, token {token})",
                    rule="fencing_token",
                    session_id=session_id,
                    owner=owner,
                    token=token,
                )
            if token == fence.token:
                return
        if write:
            self._conn().execute(
                "INSERT INTO fences (tenant, name, owner, token) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (tenant, name) DO UPDATE SET owner = excluded.owner, "
                "token = excluded.token",
                (self.tenant, session_id, fence.owner, fence.token),
            )

    # -- the transaction ------------------------------------------------------------

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[None]:
        if getattr(self._local, "conn", None) is not None:
            raise RuntimeError("a PostgreSQL store transaction does not nest")
        if write and self.read_only:
            raise StoreError(
                f"a store opened read-only must not be written (schema {self.schema!r}, "
                f"tenant {self.tenant!r})",
                rule="read_only",
                schema=self.schema,
            )
        with self.pool.connection() as conn, conn.transaction():
            # Reads see one snapshot (a load never mixes two checkpoints); writes read
            # committed data after taking their locks (module docstring).
            if not write:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            self._local.conn, self._local.write = conn, write
            self._local.locked, self._local.bodies = set(), set()
            try:
                yield
            finally:
                self._local.conn = None

    def _conn(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None:
            raise RuntimeError("PostgreSQL store primitives run only inside _transaction")
        return conn

    def _lock(self, session_id: str) -> None:
        """Before a transaction first touches a session: a write locks it; a guarded
        session's fence is checked (and, in a write, recorded) before anything is read."""
        locked: set[str] = self._local.locked
        if session_id in locked:
            return
        locked.add(session_id)
        write: bool = self._local.write
        if write:
            self._conn().execute(
                "SELECT pg_advisory_xact_lock(%s)",
                (lock_key(self.schema, self.tenant, session_id),),
            )
        guard = getattr(self._local, "guard", None)
        if guard is not None and guard[0] == session_id:
            self._check_fence(session_id, guard[1], write=write)

    def _bodies_lock(self, *, exclusive: bool) -> None:
        """Puts share the tenant's body lock; deleting bodies takes it alone, so a body a
        put reuses is never deleted before the put's reference to it commits."""
        held: set[bool] = self._local.bodies
        if not self._local.write or exclusive in held:
            return
        held.add(exclusive)
        fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        self._conn().execute(
            f"SELECT {fn}(%s)",
            (lock_key(self.schema, self.tenant, "\x00bodies"),),
        )

    # -- primitives -------------------------------------------------------------------

    def _session(self, session_id: str) -> int | None:
        row = (
            self._conn()
            .execute(
                "SELECT id FROM sessions WHERE tenant = %s AND name = %s", (self.tenant, session_id)
            )
            .fetchone()
        )
        return None if row is None else int(row[0])

    def _session_ids(self) -> list[str]:
        rows = self._conn().execute(
            "SELECT s.name FROM sessions s WHERE s.tenant = %s "
            "AND EXISTS (SELECT 1 FROM checkpoints c WHERE c.session = s.id) ORDER BY s.id",
            (self.tenant,),
        )
        return [str(r[0]) for r in rows]

    def _records(self, session_id: str) -> list[CheckpointRecord]:
        self._lock(_check_text(session_id, "session id"))
        rows = (
            self._conn()
            .execute(_SESSION_ROWS + " ORDER BY c.seq", (self.tenant, session_id))
            .fetchall()
        )
        return [record(r) for r in rows]

    def _chain_records(self, session_id: str, checkpoint_id: str | None) -> list[CheckpointRecord]:
        # Only the rows from the last full manifest at or before the checkpoint (and the
        # one before it, which the chain check reads) are fetched, not the whole session.
        self._lock(_check_text(session_id, "session id"))
        conn = self._conn()
        row = conn.execute(
            "SELECT s.id, coalesce(max(c.seq), 0) FROM sessions s "
            "LEFT JOIN checkpoints c ON c.session = s.id AND (%s::text IS NULL OR c.id = %s) "
            "WHERE s.tenant = %s AND s.name = %s GROUP BY s.id",
            (checkpoint_id, checkpoint_id, self.tenant, session_id),
        ).fetchone()
        if row is None or not row[1]:
            return self._known(session_id)
        session, target = int(row[0]), int(row[1])
        rows = conn.execute(
            f"SELECT {COLUMNS} FROM checkpoints c JOIN sessions s ON s.id = c.session "
            "WHERE c.session = %s AND c.seq <= %s AND c.seq >= coalesce(("
            '  SELECT max(seq) FROM checkpoints WHERE session = %s AND "full" AND seq <= %s'
            "), 0) - 1 ORDER BY c.seq",
            (session, target, session, target),
        ).fetchall()
        records = [record(r) for r in rows]
        if checkpoint_id is None and records:
            self._check_latest(session_id, records[-1])
        return records

    def _check_latest(self, session_id: str, latest: CheckpointRecord) -> None:
        """Refuse a session whose last checkpoints are gone: its row records a later one."""
        row = (
            self._conn()
            .execute(
                "SELECT latest, latest_seq FROM sessions WHERE tenant = %s AND name = %s",
                (self.tenant, session_id),
            )
            .fetchone()
        )
        expected, seq = row or (None, None)
        self._refuse_lost_latest(session_id, latest, expected, seq)

    @staticmethod
    def _refuse_lost_latest(
        session_id: str, latest: CheckpointRecord, expected: str | None, seq: int | None
    ) -> None:
        if seq is not None and int(seq) > latest.seq:
            raise CorruptCheckpoint(
                f"session {session_id!r} must hold its latest checkpoint {expected!r}, "
                f"seq {seq} (missing; the last one stored is {latest.id!r}, seq {latest.seq})",
                rule="missing_latest",
                session_id=session_id,
                checkpoint_id=expected,
            )

    def _latest(self, session_id: str) -> CheckpointRecord | None:
        self._lock(_check_text(session_id, "session id"))
        row = self._conn().execute(_LATEST, (self.tenant, session_id)).fetchone()
        return self._latest_of(session_id, row)

    def _latest_of(self, session_id: str, row: Any) -> CheckpointRecord | None:
        """The latest record of a row of :data:`_LATEST` (None: no row), checked against the
        session's own record of it."""
        if row is None:
            return None
        latest = record(row)
        self._refuse_lost_latest(session_id, latest, row[11], row[12])
        return latest

    def _exists(self, checkpoint_id: str) -> bool:
        _check_text(checkpoint_id, "checkpoint id")
        row = (
            self._conn()
            .execute(
                "SELECT 1 FROM checkpoints WHERE tenant = %s AND id = %s",
                (self.tenant, checkpoint_id),
            )
            .fetchone()
        )
        return row is not None

    def _manifests(self, checkpoint_ids: Sequence[str]) -> list[Any]:
        rows = self._conn().execute(
            "SELECT id, manifest FROM checkpoints WHERE tenant = %s AND id = ANY(%s)",
            (self.tenant, list(checkpoint_ids)),
        )
        found = {str(r[0]): bytes(r[1]) for r in rows}
        out = []
        for checkpoint_id in checkpoint_ids:
            if checkpoint_id not in found:
                raise CorruptCheckpoint(
                    f"checkpoint {checkpoint_id!r} must have its manifest in the store (missing)",
                    rule="missing_manifest",
                    checkpoint_id=checkpoint_id,
                )
            out.append(self.codec.decode(found[checkpoint_id]))
        return out

    def _bodies(self, hashes: Iterable[str]) -> dict[str, Any]:
        wanted = sorted(set(hashes))
        if not wanted:
            return {}
        rows = self._conn().execute(
            "SELECT hash, data FROM bodies WHERE tenant = %s AND hash = ANY(%s)",
            (self.tenant, wanted),
        )
        decode = self.codec.decode
        return {str(h): decode(bytes(d)) for h, d in rows}

    def _present(self, hashes: Iterable[str]) -> set[str]:
        wanted = sorted(set(hashes))
        self._bodies_lock(exclusive=False)
        if not wanted:
            return set()
        rows = self._conn().execute(
            "SELECT hash FROM bodies WHERE tenant = %s AND hash = ANY(%s)", (self.tenant, wanted)
        )
        return {str(r[0]) for r in rows}

    def _write(self, record: CheckpointRecord, encoded: Encoded) -> None:
        # One statement: the bodies (a given body the store holds is one it could not
        # read: replaced), the session row, the checkpoint row, the session's references.
        self._bodies_lock(exclusive=False)
        hashes = list(encoded.bodies)
        self._conn().execute(
            _WRITE,
            {
                "tenant": self.tenant,
                "hashes": hashes,
                "datas": [encoded.bodies[h] for h in hashes],
                "session": record.session_id,
                "id": record.id,
                "parent": record.parent_id,
                "seq": record.seq,
                "full": record.full,
                "created_at": record.created_at,
                "phase": record.phase,
                "trigger": record.trigger,
                "tokens": record.tokens,
                "message_count": record.message_count,
                "size": record.size,
                "manifest": encoded.manifest,
                "mentioned": sorted(encoded.mentioned),
            },
        )

    def _reference(self, session: int, hashes: Iterable[str]) -> None:
        wanted = sorted(hashes)
        if wanted:
            self._conn().execute(
                "INSERT INTO session_bodies (tenant, session, hash) "
                "SELECT %s, %s, h FROM unnest(%s::text[]) AS h ON CONFLICT DO NOTHING",
                (self.tenant, session, wanted),
            )

    def _rewrite_full(self, checkpoint_id: str, manifest: bytes, mentioned: set[str]) -> None:
        row = (
            self._conn()
            .execute(
                'UPDATE checkpoints SET manifest = %s, "full" = true WHERE tenant = %s AND id = %s '
                "RETURNING session",
                (manifest, self.tenant, checkpoint_id),
            )
            .fetchone()
        )
        if row is not None:
            self._reference(int(row[0]), mentioned)

    def _delete(self, session_id: str, checkpoint_ids: Sequence[str]) -> None:
        self._conn().execute(
            "DELETE FROM checkpoints WHERE tenant = %s AND id = ANY(%s)",
            (self.tenant, list(checkpoint_ids)),
        )

    def _collect(self, session_id: str, live: set[str]) -> None:
        session = self._session(session_id)
        if session is None:
            return
        conn = self._conn()
        self._bodies_lock(exclusive=True)
        dropped = conn.execute(
            "DELETE FROM session_bodies WHERE session = %s AND NOT (hash = ANY(%s)) RETURNING hash",
            (session, sorted(live)),
        ).fetchall()
        self._drop_unreferenced([str(r[0]) for r in dropped])
        left = conn.execute("SELECT 1 FROM checkpoints WHERE session = %s LIMIT 1", (session,))
        if left.fetchone() is None:
            conn.execute("DELETE FROM session_bodies WHERE session = %s", (session,))
            conn.execute("DELETE FROM sessions WHERE id = %s", (session,))

    def _drop_unreferenced(self, hashes: list[str]) -> None:
        if hashes:
            self._conn().execute(
                "DELETE FROM bodies b WHERE b.tenant = %s AND b.hash = ANY(%s) AND NOT EXISTS ("
                "SELECT 1 FROM session_bodies r WHERE r.tenant = b.tenant AND r.hash = b.hash)",
                (self.tenant, hashes),
            )

    def _erase(self, session_id: str) -> None:
        # Every row of the session goes without being read: damage never blocks erasure.
        self._lock(_check_text(session_id, "session id"))
        session = self._session(session_id)
        if session is None:
            raise no_session(session_id)
        conn = self._conn()
        self._bodies_lock(exclusive=True)
        conn.execute("DELETE FROM checkpoints WHERE session = %s", (session,))
        dropped = conn.execute(
            "DELETE FROM session_bodies WHERE session = %s RETURNING hash", (session,)
        ).fetchall()
        self._drop_unreferenced([str(r[0]) for r in dropped])
        conn.execute("DELETE FROM sessions WHERE id = %s", (session,))

    def _fork_target(self, session_id: str) -> str:
        return _check_text(session_id, "session id")

    # -- public operations with a fence ---------------------------------------------

    def put(
        self,
        draft: CheckpointDraft,
        *,
        expected_parent: str | None,
        fence: FenceLike | None = None,
    ) -> CheckpointRecord:
        """Write one checkpoint atomically; see :meth:`Store.put`.

        With ``fence``, the write lands only while no newer lease of the session
        is recorded (checked first, in the same transaction), else ``OwnershipLost``.
        """
        session_id = _check_text(draft.session_id, "session id")
        _check_text(draft.id, "checkpoint id")
        encoded = self._prepare(draft, expected_parent)
        wanted = sorted(encoded.mentioned | encoded.bodies.keys())

        def write() -> CheckpointRecord:
            # BaseStore.put's checks, their reads sent in one round trip: each statement
            # still runs after the one before it, so the reads follow the session lock.
            conn = self._conn()
            self._local.locked.add(session_id)
            self._local.bodies.add(False)
            with conn.pipeline():
                conn.execute(
                    "SELECT pg_advisory_xact_lock(%s)",
                    (lock_key(self.schema, self.tenant, session_id),),
                )
                fenced = (
                    conn.execute(_FENCE + " FOR UPDATE", (self.tenant, session_id))
                    if fence is not None
                    else None
                )
                latest_row = conn.execute(_LATEST, (self.tenant, session_id))
                exists = conn.execute(
                    "SELECT 1 FROM checkpoints WHERE tenant = %s AND id = %s",
                    (self.tenant, draft.id),
                )
                conn.execute(
                    "SELECT pg_advisory_xact_lock_shared(%s)",
                    (lock_key(self.schema, self.tenant, "\x00bodies"),),
                )
                found = conn.execute(
                    "SELECT hash FROM bodies WHERE tenant = %s AND hash = ANY(%s)",
                    (self.tenant, wanted),
                )
            if fenced is not None and fence is not None:
                self._hold_fence(session_id, fence, fenced.fetchone(), write=True)
            latest = self._latest_of(session_id, latest_row.fetchone())
            latest_id = latest.id if latest else None
            if latest_id != expected_parent:
                raise stale_parent(session_id, latest_id, expected_parent)
            if exists.fetchone() is not None:
                raise duplicate_id(draft.id)
            present = {str(r[0]) for r in found.fetchall()}
            missing = encoded.mentioned - present - encoded.bodies.keys()
            if missing:
                raise missing_bodies(missing)
            reused = present & encoded.bodies.keys()
            new = encoded.without(present - self._unreadable(reused) if reused else present)
            written = record_for(draft, latest, new)
            self._write(written, new)
            return written

        return self._atomic("put", write, write=True)

    def prune(
        self, session_id: str, *, fence: FenceLike | None = None, **retention: Unpack[Retention]
    ) -> list[str]:
        """Delete old checkpoints of a session; see :meth:`Store.prune` (``fence`` as in
        :meth:`put`)."""
        with self._fencing(session_id, fence):
            return super().prune(session_id, **retention)

    def erase(self, session_id: str, *, fence: FenceLike | None = None) -> None:
        """Delete a whole session; ``fence`` as in :meth:`put`. The session's recorded
        lease stays, so a token never goes back."""
        with self._fencing(session_id, fence):
            super().erase(session_id)

    def fork(
        self,
        session_id: str,
        checkpoint_id: str,
        *,
        new_session_id: str | None = None,
        fence: FenceLike | None = None,
    ) -> CheckpointRecord:
        """Start a new session from a checkpoint; see :meth:`Store.fork`. With ``fence``, the
        checkpoint is read only under the source session's lease, else ``OwnershipLost``."""
        with self._fencing(session_id, fence):
            return super().fork(session_id, checkpoint_id, new_session_id=new_session_id)

    # -- for tests of damaged data -------------------------------------------------------

    def corrupt(self, checkpoint_id: str, data: bytes) -> None:
        """Replace a checkpoint's stored manifest bytes (for tests of damaged data)."""

        def run() -> None:
            cursor = self._conn().execute(
                "UPDATE checkpoints SET manifest = %s WHERE tenant = %s AND id = %s",
                (data, self.tenant, checkpoint_id),
            )
            if cursor.rowcount == 0:
                raise CheckpointNotFound(f"checkpoint {checkpoint_id!r} must exist (not found)")

        self._atomic("corrupt", run, write=True)
