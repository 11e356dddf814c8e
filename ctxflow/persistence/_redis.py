"""The Redis store: checkpoints of many processes and machines in one Redis server or cluster.

Layout. Every key starts with ``ctxflow:{tenant}:``, so tenants (apps) never
see each other's keys. All keys of one session share the hash tag
``{session_id}``, so every transaction below touches one cluster slot and runs
unchanged on Redis Cluster::

    ctxflow:<tenant>:sessions                sorted set: session ids by first write
    ctxflow:<tenant>:s:{<sid>}:order         list: checkpoint ids, oldest first
    ctxflow:<tenant>:s:{<sid>}:rec           hash: checkpoint id -> record (msgpack)
    ctxflow:<tenant>:s:{<sid>}:man           hash: checkpoint id -> manifest (codec bytes)
    ctxflow:<tenant>:s:{<sid>}:body          hash: body hash -> body (codec bytes)

Trade-off: bodies are content-addressed *within a session*, not across the
store as in the memory and SQLite stores. A body shared by two sessions (a
fork) is stored twice, and a fork copies its bodies; in return a checkpoint
write, retention and erasure never leave the session's slot, and they delete
only what the session holds.

Atomicity. A put is one Lua script that checks the stale parent (and, when a
fencing token is given, the session's owner and token) and writes the record,
manifest and new bodies; Redis runs a script with nothing interleaved. Reads,
retention and erasure run the shared :class:`~ctxflow.persistence.BaseStore`
code inside an optimistic transaction: the session's keys are WATCHed before
they are read, writes are queued and sent in one MULTI/EXEC, and if another
client changed the session meanwhile the operation runs again from the start.

The session index is a key outside the session's slot, so it is updated
outside the session's transaction: added before the first write, removed
after erasure. A crash in between leaves an index entry of an empty session,
which :meth:`RedisStore.sessions` skips.

Failures. Every redis-py error is re-raised as :class:`~ctxflow.errors.StoreError`
naming the operation. Reads are retried on connection errors and timeouts
(``read_retries`` times); writes are not, because a write whose reply was
lost may have been applied. :meth:`RedisStore.from_url` turns redis-py's own
retries off for that reason (pass ``retry=`` to override). TTLs: ``ttl``
expires a session's checkpoints that long after its last write;
:meth:`RedisStore.expire` sets one session's expiry.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import attrs
import msgpack
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

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
from ctxflow.persistence._model import CheckpointDraft, CheckpointRecord, Snapshot

__all__ = ["Fence", "RedisKeys", "RedisStore", "check_session_id", "check_tenant"]

T = TypeVar("T")

_TENANT = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

# KEYS: order, rec, body.  ARGV: body hashes.  -> {latest record or '', present flags...}
_HEAD = """
local latest = redis.call('LINDEX', KEYS[1], -1)
local out = {''}
if latest then out[1] = redis.call('HGET', KEYS[2], latest) or '' end
for i = 1, #ARGV do out[#out + 1] = redis.call('HEXISTS', KEYS[3], ARGV[i]) end
return out
"""

# KEYS: order, rec, man, body, owner, fence.
# ARGV: owner value or '', token, expected parent or '', id, record, manifest, ttl ms,
#       n new bodies, n pairs (hash, body), then the hashes the manifest mentions.
_PUT = """
if ARGV[1] ~= '' then
  local owner = redis.call('GET', KEYS[5])
  local fence = redis.call('GET', KEYS[6])
  if owner ~= ARGV[1] or fence ~= ARGV[2] then return {'fenced', owner or '', fence or ''} end
end
local latest = redis.call('LINDEX', KEYS[1], -1) or ''
if latest ~= ARGV[3] then return {'stale', latest, ''} end
if redis.call('HEXISTS', KEYS[2], ARGV[4]) == 1 then return {'duplicate', '', ''} end
local n = tonumber(ARGV[8])
local given = {}
for i = 0, n - 1 do given[ARGV[9 + 2 * i]] = true end
for i = 9 + 2 * n, #ARGV do
  local h = ARGV[i]
  if not given[h] and redis.call('HEXISTS', KEYS[4], h) == 0 then return {'missing', h, ''} end
end
for i = 0, n - 1 do redis.call('HSETNX', KEYS[4], ARGV[9 + 2 * i], ARGV[10 + 2 * i]) end
redis.call('HSET', KEYS[3], ARGV[4], ARGV[6])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
redis.call('RPUSH', KEYS[1], ARGV[4])
local ttl = tonumber(ARGV[7])
if ttl > 0 then
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
end
return {'ok', '', ''}
"""


def check_tenant(tenant: str) -> str:
    """Refuse a tenant name that could break out of its key namespace."""
    if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
        raise StoreError(
            f"'tenant' must be 1-64 characters of letters, digits, '_', '.' or '-' "
            f"(got {tenant!r})",
            rule="tenant",
            tenant=tenant,
        )
    return tenant


def check_session_id(session_id: str) -> str:
    """Refuse a session id that would break its hash tag (braces) or is empty."""
    if not isinstance(session_id, str) or not session_id or "{" in session_id or "}" in session_id:
        raise CheckpointError(
            f"a session id must be a non-empty string without braces (got {session_id!r})",
            rule="session_id",
            session_id=session_id,
        )
    return session_id


@attrs.frozen
class RedisKeys:
    """The key names of one tenant (see the module docstring for the layout)."""

    tenant: str

    @property
    def prefix(self) -> str:
        """``ctxflow:<tenant>:``, the start of every key of the tenant."""
        return f"ctxflow:{self.tenant}:"

    @property
    def sessions(self) -> str:
        """The sorted set of session ids."""
        return f"{self.prefix}sessions"

    def session(self, session_id: str, part: str) -> str:
        """One key of a session, under the session's hash tag."""
        return f"{self.prefix}s:{{{session_id}}}:{part}"

    def checkpoint_keys(self, session_id: str) -> list[str]:
        """The keys holding a session's checkpoints (order, rec, man, body)."""
        return [self.session(session_id, p) for p in ("order", "rec", "man", "body")]


@attrs.frozen(kw_only=True)
class Fence:
    """The owner value and fencing token a guarded write must still match."""

    owner: str
    token: int


def _encode_record(record: CheckpointRecord) -> bytes:
    out: bytes = msgpack.packb(
        [
            record.id,
            record.session_id,
            record.parent_id,
            record.seq,
            record.created_at,
            record.phase,
            record.trigger,
            record.tokens,
            record.message_count,
            record.size,
            record.full,
        ]
    )
    return out


def _decode_record(session_id: str, data: bytes | None) -> CheckpointRecord:
    try:
        fields = msgpack.unpackb(data or b"", raw=False)
        (id_, sid, parent, seq, created, phase, trigger, tokens, count, size, full) = fields
        return CheckpointRecord(
            id=id_,
            session_id=sid,
            parent_id=parent,
            seq=int(seq),
            created_at=float(created),
            phase=phase,
            trigger=trigger,
            tokens=int(tokens),
            message_count=int(count),
            size=int(size),
            full=bool(full),
        )
    except (ValueError, TypeError, msgpack.UnpackException):
        raise CorruptCheckpoint(
            f"session {session_id!r}: a stored checkpoint record must be a msgpack record "
            f"(got {(data or b'')[:16]!r})",
            rule="record",
            session_id=session_id,
        ) from None


class _Conflict(Exception):
    """Another client changed a WATCHed session during an optimistic transaction."""


@attrs.define
class _Txn:
    pipe: Any  # redis.client.Pipeline; its stubs type replies too loosely to be useful here
    write: bool
    session: str | None = None
    ops: list[Callable[[Any], Any]] = attrs.field(factory=list)
    after: list[Callable[[], Any]] = attrs.field(factory=list)
    records: dict[str, CheckpointRecord] = attrs.field(factory=dict)
    rewritten: dict[str, bytes] = attrs.field(factory=dict)


class RedisStore(BaseStore):
    """A :class:`~ctxflow.persistence.Store` in Redis (safe across threads, processes, machines)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        tenant: str,
        codec: EnvelopeCodec | None = None,
        ttl: float | None = None,
        read_retries: int = 2,
        conflict_retries: int = 100,
        owns_client: bool = False,
    ) -> None:
        self.keys = RedisKeys(check_tenant(tenant))
        if ttl is not None and not ttl > 0:
            raise StoreError(f"'ttl' must be > 0 seconds or None (got {ttl!r})", rule="ttl")
        self.client: Any = client
        self.tenant = tenant
        self.codec = codec or default_codec()
        self.ttl = ttl
        self.read_retries = read_retries
        self.conflict_retries = conflict_retries
        self._owns_client = owns_client
        self._local = threading.local()
        self._head = client.register_script(_HEAD)
        self._put = client.register_script(_PUT)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        tenant: str,
        codec: EnvelopeCodec | None = None,
        ttl: float | None = None,
        read_retries: int = 2,
        **redis_kwargs: Any,
    ) -> RedisStore:
        """A store on a new client from a ``redis://`` or ``rediss://`` URL.

        ``redis_kwargs`` go to :meth:`redis.Redis.from_url` (pool size, TLS,
        auth, timeouts). redis-py's own retries are off unless ``retry`` is given.
        """
        check_tenant(tenant)
        redis_kwargs.setdefault("retry", Retry(NoBackoff(), 0))
        try:
            client = redis.Redis.from_url(url, **redis_kwargs)
        except (ValueError, redis.RedisError) as exc:
            raise StoreError(f"'url' must be a usable Redis URL ({exc})", rule="redis_url") from exc
        return cls(
            client, tenant=tenant, codec=codec, ttl=ttl, read_retries=read_retries, owns_client=True
        )

    def __repr__(self) -> str:
        return f"<RedisStore tenant={self.tenant!r}>"

    def close(self) -> None:
        """Close the client if this store created it."""
        if self._owns_client:
            self.client.close()

    # -- running operations ---------------------------------------------------

    def _run(self, doing: str, fn: Callable[[], T], *, read: bool) -> T:
        """Run ``fn`` again after WATCH conflicts (always) and connection errors (reads only)."""
        failures = 0
        for _ in range(self.conflict_retries):
            try:
                return fn()
            except _Conflict:
                continue
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                failures += 1
                if not read or failures > self.read_retries:
                    raise self._failed(doing, exc) from exc
                time.sleep(0.05 * failures)
            except redis.RedisError as exc:
                raise self._failed(doing, exc) from exc
        raise StoreError(
            f"{doing} must finish within {self.conflict_retries} attempts "
            f"(other clients kept changing the session)",
            rule="contention",
            tenant=self.tenant,
        )

    def _failed(self, doing: str, exc: Exception) -> StoreError:
        return StoreError(
            f"Redis {doing} failed for tenant {self.tenant!r}: {type(exc).__name__}: {exc}",
            rule="redis",
            operation=doing,
            tenant=self.tenant,
            redis_error=str(exc),
        )

    # -- public operations ----------------------------------------------------

    def put(
        self,
        draft: CheckpointDraft,
        *,
        expected_parent: str | None,
        fence: Fence | None = None,
    ) -> CheckpointRecord:
        """Write one checkpoint atomically; see :meth:`Store.put`.

        With ``fence``, the write also requires the session's owner key and
        fencing token to match, in the same script, else ``OwnershipLost``.
        """
        session_id = check_session_id(draft.session_id)
        encoded = self._prepare(draft, expected_parent)
        keys = self.keys.checkpoint_keys(session_id)
        given = sorted(encoded.bodies)

        head = self._run(
            "put (read head)", lambda: self._head(keys=keys[:2] + keys[3:], args=given), read=True
        )
        latest = _decode_record(session_id, head[0]) if head[0] else None
        latest_id = latest.id if latest else None
        if latest_id != expected_parent:
            raise stale_parent(session_id, latest_id, expected_parent)
        new = encoded.without(h for h, flag in zip(given, head[1:], strict=True) if flag)
        record = record_for(draft, latest, new)
        args: list[Any] = [
            fence.owner if fence else "",
            str(fence.token) if fence else "",
            expected_parent or "",
            draft.id,
            _encode_record(record),
            new.manifest,
            int(self.ttl * 1000) if self.ttl else 0,
            len(new.bodies),
        ]
        for digest, blob in new.bodies.items():
            args += [digest, blob]
        args += sorted(encoded.mentioned)
        if latest is None:
            self._run(
                "put (index)",
                lambda: self.client.zadd(self.keys.sessions, {session_id: time.time()}, nx=True),
                read=True,
            )
        put_keys = [
            *keys,
            self.keys.session(session_id, "owner"),
            self.keys.session(session_id, "fence"),
        ]
        status, first, second = (
            x.decode() if isinstance(x, bytes) else x
            for x in self._run("put", lambda: self._put(keys=put_keys, args=args), read=False)
        )
        if status == "fenced":
            raise OwnershipLost(
                f"a fenced write to session {session_id!r} must hold the current lease "
                f"(owner {fence.owner if fence else None!r}, "
                f"token {fence.token if fence else None}; "
                f"got owner {first or None!r}, token {second or None})",
                rule="fencing_token",
                session_id=session_id,
                owner=first or None,
                token=int(second) if second else None,
            )
        if status == "stale":
            raise stale_parent(session_id, first or None, expected_parent)
        if status == "duplicate":
            raise duplicate_id(draft.id)
        if status == "missing":
            raise missing_bodies([first])
        return record

    def _fork_target(self, session_id: str) -> str:
        return check_session_id(session_id)

    def _fork_bodies(self, snapshot: Snapshot) -> Mapping[str, Mapping[str, Any]]:
        # Bodies live under each session's hash tag here, so a fork copies them.
        return dict(snapshot.bodies)

    def expire(self, session_id: str, seconds: float) -> None:
        """Let a session's checkpoints expire ``seconds`` from now (``CheckpointNotFound``
        for an unknown session)."""
        if not seconds > 0:
            raise StoreError(f"'seconds' must be > 0 (got {seconds!r})", rule="ttl")
        keys = self.keys.checkpoint_keys(check_session_id(session_id))

        def run() -> Any:
            pipe = self.client.pipeline()
            for key in keys:
                pipe.pexpire(key, int(seconds * 1000))
            return pipe.execute()

        if not self._run("expire", run, read=False)[0]:
            raise no_session(session_id)

    def corrupt(self, checkpoint_id: str, data: bytes) -> None:
        """Replace a checkpoint's stored manifest bytes (for tests of damaged data)."""
        for session_id in self.sessions():
            key = self.keys.session(session_id, "man")
            if self.client.hexists(key, checkpoint_id):
                self.client.hset(key, checkpoint_id, data)
                return
        raise CheckpointNotFound(f"checkpoint {checkpoint_id!r} must exist (not found)")

    # -- primitives -----------------------------------------------------------

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[None]:
        txn = _Txn(pipe=self.client.pipeline(transaction=True), write=write)
        self._local.txn = txn
        try:
            try:
                yield
            except BaseException as exc:
                if txn.session is not None and self._changed(txn):
                    raise _Conflict() from exc
                raise
            if txn.session is not None or txn.ops:
                txn.pipe.multi()
                for op in txn.ops:
                    op(txn.pipe)
                try:
                    txn.pipe.execute()
                except redis.WatchError:
                    raise _Conflict() from None
            for after in txn.after:
                after()
        finally:
            self._local.txn = None
            txn.pipe.reset()

    @staticmethod
    def _changed(txn: _Txn) -> bool:
        try:
            txn.pipe.multi()
            txn.pipe.execute()
        except redis.WatchError:
            return True
        except redis.RedisError:
            return False
        return False

    def _txn(self) -> _Txn:
        txn: _Txn | None = getattr(self._local, "txn", None)
        if txn is None:
            raise RuntimeError("Redis store primitives run only inside _transaction")
        return txn

    def _enter(self, session_id: str) -> _Txn:
        """Watch a session's keys (once) before the transaction reads them."""
        txn = self._txn()
        if txn.session is None:
            txn.session = session_id
            txn.pipe.watch(*self.keys.checkpoint_keys(session_id))
        elif txn.session != session_id:
            raise RuntimeError("one Redis transaction covers one session")
        return txn

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
        records = [_decode_record(session_id, b) for b in blobs]
        txn.records.update((r.id, r) for r in records)
        return records

    def _latest(self, session_id: str) -> CheckpointRecord | None:
        txn = self._enter(session_id)
        latest = txn.pipe.lindex(self.keys.session(session_id, "order"), -1)
        if latest is None:
            return None
        return _decode_record(
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

    def _write(self, record: CheckpointRecord, encoded: Encoded) -> None:
        txn = self._enter(record.session_id)
        order, rec, man, body = self.keys.checkpoint_keys(record.session_id)
        bodies, manifest = dict(encoded.bodies), encoded.manifest
        txn.ops.append(lambda p: p.hset(body, mapping=bodies) if bodies else None)
        txn.ops.append(lambda p: p.hset(man, record.id, manifest))
        txn.ops.append(lambda p: p.hset(rec, record.id, _encode_record(record)))
        txn.ops.append(lambda p: p.rpush(order, record.id))

    def _rewrite_full(self, checkpoint_id: str, manifest: bytes, mentioned: set[str]) -> None:
        txn = self._txn()
        assert txn.session is not None
        record = attrs.evolve(txn.records[checkpoint_id], full=True, size=len(manifest))
        man = self.keys.session(txn.session, "man")
        rec = self.keys.session(txn.session, "rec")
        txn.rewritten[checkpoint_id] = manifest
        txn.ops.append(lambda p: p.hset(man, checkpoint_id, manifest))
        txn.ops.append(lambda p: p.hset(rec, checkpoint_id, _encode_record(record)))

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
