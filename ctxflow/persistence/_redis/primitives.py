"""The Redis store's transaction and the primitives :class:`~ctxflow.persistence.BaseStore`
builds its operations on.

An operation runs inside one optimistic transaction: the session's keys are
WATCHed before they are read, writes are queued and sent in one MULTI/EXEC,
and if another client changed the session meanwhile EXEC fails and the
operation runs again from the start (:class:`Conflict`).

A fenced operation (see :meth:`RedisPrimitives._fencing`) also WATCHes the
session's ``owner`` and ``fence`` keys and checks them before it reads
anything of the session. The check and the EXEC therefore see the same lease:
a lease taken over in between changes a watched key, the operation runs again
and its check then fails with ``OwnershipLost``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import attrs
import redis

from ctxflow.errors import CorruptCheckpoint
from ctxflow.persistence._base import BaseStore, Encoded
from ctxflow.persistence._codec import EnvelopeCodec
from ctxflow.persistence._model import CheckpointRecord
from ctxflow.persistence._redis.failures import REDIS_ERRORS
from ctxflow.persistence._redis.keys import Fence, RedisKeys, fenced_out
from ctxflow.persistence._redis.records import decode_record, encode_record

__all__ = ["Conflict", "RedisPrimitives", "Txn"]


class Conflict(Exception):
    """Another client changed a WATCHed session during an optimistic transaction."""


@attrs.frozen(kw_only=True)
class Guard:
    """The fence one operation must hold on one session."""

    session_id: str
    fence: Fence


@attrs.define
class Txn:
    """One optimistic transaction: its pipeline, queued writes and what it read."""

    pipe: Any  # redis.client.Pipeline; its stubs type replies too loosely to be useful here
    write: bool
    guard: Guard | None = None
    session: str | None = None
    ops: list[Callable[[Any], Any]] = attrs.field(factory=list)
    after: list[Callable[[], Any]] = attrs.field(factory=list)
    records: dict[str, CheckpointRecord] = attrs.field(factory=dict)
    rewritten: dict[str, bytes] = attrs.field(factory=dict)


class RedisPrimitives(BaseStore):
    """The transaction and primitives of the Redis store (the store itself adds the rest)."""

    client: Any  # redis.Redis
    keys: RedisKeys
    codec: EnvelopeCodec
    _local: threading.local

    # -- fencing --------------------------------------------------------------

    @contextmanager
    def _fencing(self, session_id: str, fence: Fence | None) -> Iterator[None]:
        """Every transaction of this thread inside the block checks ``fence`` on ``session_id``
        first (no check when ``fence`` is None)."""
        previous = getattr(self._local, "guard", None)
        self._local.guard = None if fence is None else Guard(session_id=session_id, fence=fence)
        try:
            yield
        finally:
            self._local.guard = previous

    # -- the transaction --------------------------------------------------------

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[None]:
        txn = Txn(
            pipe=self.client.pipeline(transaction=True),
            write=write,
            guard=getattr(self._local, "guard", None),
        )
        self._local.txn = txn
        try:
            try:
                yield
            except BaseException as exc:
                if txn.session is not None and self._changed(txn):
                    raise Conflict() from exc
                raise
            if txn.session is not None or txn.ops:
                txn.pipe.multi()
                for op in txn.ops:
                    op(txn.pipe)
                try:
                    txn.pipe.execute()
                except redis.WatchError:
                    raise Conflict() from None
            for after in txn.after:
                after()
        finally:
            self._local.txn = None
            txn.pipe.reset()

    @staticmethod
    def _changed(txn: Txn) -> bool:
        try:
            txn.pipe.multi()
            txn.pipe.execute()
        except redis.WatchError:
            return True
        except REDIS_ERRORS:
            return False
        return False

    def _txn(self) -> Txn:
        txn: Txn | None = getattr(self._local, "txn", None)
        if txn is None:
            raise RuntimeError("Redis store primitives run only inside _transaction")
        return txn

    def _enter(self, session_id: str) -> Txn:
        """Watch a session's keys (once) before the transaction reads them; a guarded
        session's lease is checked here, before anything of the session is read."""
        txn = self._txn()
        if txn.session is None:
            txn.session = session_id
            keys = self.keys.checkpoint_keys(session_id)
            guard = txn.guard if txn.guard and txn.guard.session_id == session_id else None
            if guard is None:
                txn.pipe.watch(*keys)
            else:
                guard_keys = self.keys.guard_keys(session_id)
                txn.pipe.watch(*guard_keys, *keys)
                # Two GETs, not MGET: a cluster pipeline refuses MGET (both keys share a slot).
                owner, token = (txn.pipe.get(key) for key in guard_keys)
                if not guard.fence.holds(owner, token):
                    raise fenced_out(session_id, guard.fence, owner, token)
        elif txn.session != session_id:
            raise RuntimeError("one Redis transaction covers one session")
        return txn

    # -- reads ------------------------------------------------------------------

    def _session_ids(self) -> list[str]:
        """Every session id of this tenant, oldest first (expired ones skipped)."""
        names = [n.decode() for n in self.client.zrange(self.keys.sessions, 0, -1)]
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.exists(self.keys.session(name, "order"))
        return [n for n, live in zip(names, pipe.execute(), strict=True) if live]

    def _records(self, session_id: str) -> list[CheckpointRecord]:
        txn = self._enter(session_id)
        ids = txn.pipe.lrange(self.keys.session(session_id, "order"), 0, -1)
        if not ids:
            return []
        blobs = txn.pipe.hmget(self.keys.session(session_id, "rec"), ids)
        records = [decode_record(session_id, b) for b in blobs]
        txn.records.update((r.id, r) for r in records)
        return records

    def _latest(self, session_id: str) -> CheckpointRecord | None:
        txn = self._enter(session_id)
        latest = txn.pipe.lindex(self.keys.session(session_id, "order"), -1)
        if latest is None:
            return None
        return decode_record(
            session_id, txn.pipe.hget(self.keys.session(session_id, "rec"), latest)
        )

    def _exists(self, checkpoint_id: str) -> bool:
        txn = self._txn()
        if txn.session is None:
            return False
        return bool(txn.pipe.hexists(self.keys.session(txn.session, "rec"), checkpoint_id))

    def _manifests(self, checkpoint_ids: Sequence[str]) -> list[Any]:
        txn = self._txn()
        assert txn.session is not None
        if not checkpoint_ids:
            return []
        blobs = txn.pipe.hmget(self.keys.session(txn.session, "man"), list(checkpoint_ids))
        for checkpoint_id, blob in zip(checkpoint_ids, blobs, strict=True):
            if blob is None:
                raise CorruptCheckpoint(
                    f"checkpoint {checkpoint_id!r} of session {txn.session!r} must have its "
                    f"manifest in the store (missing)",
                    rule="missing_manifest",
                    session_id=txn.session,
                )
        # A queued rewrite is what later reads of this transaction must see.
        stored = [
            txn.rewritten.get(i, bytes(b)) for i, b in zip(checkpoint_ids, blobs, strict=True)
        ]
        return [self.codec.decode(b) for b in stored]

    def _bodies(self, hashes: Iterable[str]) -> dict[str, Any]:
        txn = self._txn()
        wanted = sorted(hashes)
        if txn.session is None or not wanted:
            return {}
        blobs = txn.pipe.hmget(self.keys.session(txn.session, "body"), wanted)
        decode = self.codec.decode
        return {h: decode(bytes(b)) for h, b in zip(wanted, blobs, strict=True) if b is not None}

    def _present(self, hashes: Iterable[str]) -> set[str]:
        txn = self._txn()
        wanted = sorted(hashes)
        sessions = [txn.session] if txn.session is not None else self._session_ids()
        found: set[str] = set()
        for session_id in sessions:
            if not wanted:
                break
            key = self.keys.session(session_id, "body")
            flags = self.client.hmget(key, wanted)
            found |= {h for h, b in zip(wanted, flags, strict=True) if b is not None}
        return found

    # -- writes (queued, sent at EXEC) ---------------------------------------------

    def _write(self, record: CheckpointRecord, encoded: Encoded) -> None:
        txn = self._enter(record.session_id)
        order, rec, man, body = self.keys.checkpoint_keys(record.session_id)
        bodies, manifest = dict(encoded.bodies), encoded.manifest
        txn.ops.append(lambda p: p.hset(body, mapping=bodies) if bodies else None)
        txn.ops.append(lambda p: p.hset(man, record.id, manifest))
        txn.ops.append(lambda p: p.hset(rec, record.id, encode_record(record)))
        txn.ops.append(lambda p: p.rpush(order, record.id))

    def _rewrite_full(self, checkpoint_id: str, manifest: bytes, mentioned: set[str]) -> None:
        txn = self._txn()
        assert txn.session is not None
        record = attrs.evolve(txn.records[checkpoint_id], full=True, size=len(manifest))
        man = self.keys.session(txn.session, "man")
        rec = self.keys.session(txn.session, "rec")
        txn.rewritten[checkpoint_id] = manifest
        txn.ops.append(lambda p: p.hset(man, checkpoint_id, manifest))
        txn.ops.append(lambda p: p.hset(rec, checkpoint_id, encode_record(record)))

    def _delete(self, session_id: str, checkpoint_ids: Sequence[str]) -> None:
        txn = self._enter(session_id)
        order, rec, man, _ = self.keys.checkpoint_keys(session_id)
        doomed = list(checkpoint_ids)
        left = txn.pipe.llen(order) - len(doomed)
        if left <= 0:
            txn.ops.append(lambda p: p.delete(order, rec, man))
            txn.after.append(lambda: self.client.zrem(self.keys.sessions, session_id))
            return
        if doomed:
            txn.ops.append(lambda p: p.ltrim(order, len(doomed), -1))
            txn.ops.append(lambda p: p.hdel(rec, *doomed))
            txn.ops.append(lambda p: p.hdel(man, *doomed))

    def _collect(self, session_id: str, live: set[str]) -> None:
        txn = self._enter(session_id)
        body = self.keys.session(session_id, "body")
        if not live:
            txn.ops.append(lambda p: p.delete(body))
            return
        dead = [h for h in (k.decode() for k in txn.pipe.hkeys(body)) if h not in live]
        if dead:
            txn.ops.append(lambda p: p.hdel(body, *dead))
