"""The Redis store: the public operations over the transaction and primitives of
:mod:`.primitives` and the scripts of :mod:`.scripts`.

A put is two scripts: one reads the head (and checks the fence), the other
writes the record, manifest and new bodies after checking the fence and the
parent again. Retention, erasure and forks run the shared
:class:`~ctxflow.persistence.BaseStore` code in an optimistic transaction, and
take a ``fence`` too: see :mod:`ctxflow.persistence._redis`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, Unpack

import redis

from ctxflow.errors import CheckpointNotFound, CorruptCheckpoint, StoreError
from ctxflow.persistence._base import (
    duplicate_id,
    missing_bodies,
    no_session,
    record_for,
    stale_parent,
)
from ctxflow.persistence._bodies import body_hash
from ctxflow.persistence._codec import EnvelopeCodec, default_codec
from ctxflow.persistence._model import CheckpointDraft, CheckpointRecord, Snapshot
from ctxflow.persistence._protocol import Retention
from ctxflow.persistence._redis.failures import REDIS_ERRORS
from ctxflow.persistence._redis.keys import (
    Fence,
    RedisKeys,
    check_session_id,
    check_tenant,
    fenced_out,
)
from ctxflow.persistence._redis.primitives import Conflict, RedisPrimitives
from ctxflow.persistence._redis.records import decode_record, encode_record
from ctxflow.persistence._redis.replication import Replication
from ctxflow.persistence._redis.scripts import HEAD, PUT
from ctxflow.persistence._redis.url import parse_redis_url

__all__ = ["RedisStore"]

T = TypeVar("T")


class RedisStore(RedisPrimitives):
    """A :class:`~ctxflow.persistence.Store` in Redis (safe across threads, processes, machines)."""

    def __init__(
        self,
        client: redis.Redis | redis.RedisCluster,
        *,
        tenant: str,
        codec: EnvelopeCodec | None = None,
        ttl: float | None = None,
        read_retries: int = 2,
        conflict_retries: int = 100,
        replicas: int = 0,
        replica_timeout: float = 1.0,
        owns_client: bool = False,
    ) -> None:
        self.keys = RedisKeys(check_tenant(tenant))
        if ttl is not None and not ttl > 0:
            raise StoreError(f"'ttl' must be > 0 seconds or None (got {ttl!r})", rule="ttl")
        self.replication = Replication(replicas=replicas, timeout=replica_timeout)
        self.client = client
        self.tenant = tenant
        self.codec = codec or default_codec()
        self.ttl = ttl
        self.read_retries = read_retries
        self.conflict_retries = conflict_retries
        self._owns_client = owns_client
        self._local = threading.local()
        self._head = client.register_script(HEAD)
        self._put = client.register_script(PUT)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        tenant: str | None = None,
        codec: EnvelopeCodec | None = None,
        ttl: float | None = None,
        read_retries: int = 2,
        replicas: int | None = None,
        replica_timeout: float | None = None,
        **redis_kwargs: Any,
    ) -> RedisStore:
        """A store on a new client from a URL: ``redis://host:port/db``, ``rediss://...``,
        ``unix://...`` or, for Redis Cluster, ``redis+cluster://host:port`` (a seed node;
        database 0 only) and ``rediss+cluster://...``.

        The query may carry the store's own options (``?tenant=app&replicas=1``,
        also ``replica_timeout`` and ``ttl``); an option given both there and as
        a keyword is refused. ``tenant`` defaults to ``"default"``.
        ``redis_kwargs`` go to redis-py's ``from_url`` (pool size, TLS, auth,
        timeouts). A malformed URL or option raises ``StoreError``
        (``rule="redis_url"``) before any connection is made.
        """
        parsed = parse_redis_url(url)
        given = {
            "tenant": tenant,
            "ttl": ttl,
            "replicas": replicas,
            "replica_timeout": replica_timeout,
        }
        opts = _store_options(url, parsed.options, given)
        store_tenant = check_tenant(opts.get("tenant", "default"))
        replication = Replication(
            replicas=opts.get("replicas", 0), timeout=opts.get("replica_timeout", 1.0)
        )
        ttl_value = opts.get("ttl")
        if ttl_value is not None and not ttl_value > 0:
            raise StoreError(f"'ttl' must be > 0 seconds or None (got {ttl_value!r})", rule="ttl")
        client = parsed.client(**redis_kwargs)
        return cls(
            client,
            tenant=store_tenant,
            codec=codec,
            ttl=ttl_value,
            read_retries=read_retries,
            replicas=replication.replicas,
            replica_timeout=replication.timeout,
            owns_client=True,
        )

    def __repr__(self) -> str:
        return f"<RedisStore tenant={self.tenant!r}>"

    @property
    def replicas(self) -> int:
        """How many replicas must hold a write before it is acknowledged (0: the primary)."""
        return self.replication.replicas

    def _confirm(self, doing: str, *keys: str) -> None:
        """Wait for the replicas the store requires to hold the writes to ``keys`` (see
        :mod:`.replication`); ``ReplicationError`` when too few do in time."""
        if self.replication.replicas:
            self._run(
                f"{doing} (replicas)",
                lambda: self.replication.confirm(self.client, self.keys.prefix, doing, *keys),
                read=False,
            )

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
            except Conflict:
                continue
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                failures += 1
                if not read or failures > self.read_retries:
                    raise self._failed(doing, exc) from exc
                time.sleep(0.05 * failures)
            except REDIS_ERRORS as exc:
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
        fencing token to match, checked before the parent, in the same script
        as the write, else ``OwnershipLost``.
        """
        session_id = check_session_id(draft.session_id)
        encoded = self._prepare(draft, expected_parent)
        guard = self.keys.guard_keys(session_id)
        order, rec, man, body = self.keys.checkpoint_keys(session_id)
        fenced = [fence.owner, str(fence.token)] if fence else ["", ""]
        given = sorted(encoded.bodies)

        head = self._run(
            "put (read head)",
            lambda: self._head(keys=[*guard, order, rec, body], args=[*fenced, *given]),
            read=True,
        )
        if _text(head[0]) == "fenced":
            assert fence is not None  # the script checks the fence only when given one
            raise fenced_out(session_id, fence, head[1], head[2])
        latest = decode_record(session_id, head[1]) if head[1] else None
        latest_id = latest.id if latest else None
        if latest_id != expected_parent:
            raise stale_parent(session_id, latest_id, expected_parent)
        present = {h for h, flag in zip(given, head[2:], strict=True) if flag}
        if present:  # a damaged stored copy is written again from this fresh one
            present -= self._run(
                "put (check reused bodies)", lambda: self._damaged(session_id, present), read=True
            )
        new = encoded.without(present)
        record = record_for(draft, latest, new)
        args: list[Any] = [
            *fenced,
            expected_parent or "",
            draft.id,
            encode_record(record),
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
        put_keys = [*guard, order, rec, man, body]
        status, first, second = self._run(
            "put", lambda: self._put(keys=put_keys, args=args), read=False
        )
        status = _text(status)
        if status == "fenced":
            assert fence is not None
            raise fenced_out(session_id, fence, first, second)
        if status == "stale":
            raise stale_parent(session_id, _text(first) or None, expected_parent)
        if status == "duplicate":
            raise duplicate_id(draft.id)
        if status == "missing":
            raise missing_bodies([_text(first)])
        confirm = [order] if latest is not None else [order, self.keys.sessions]
        self._confirm("put", *confirm)
        return record

    def prune(
        self, session_id: str, *, fence: Fence | None = None, **retention: Unpack[Retention]
    ) -> list[str]:
        """Delete old checkpoints of a session; see :meth:`Store.prune`.

        With ``fence``, only while the session's lease is ``fence`` (checked
        first, and held until the deletion lands), else ``OwnershipLost``.
        """
        with self._fencing(session_id, fence):
            pruned = super().prune(session_id, **retention)
        self._confirm("prune", self.keys.session(session_id, "order"))
        return pruned

    def erase(self, session_id: str, *, fence: Fence | None = None) -> None:
        """Delete a whole session; with ``fence``, only under that lease (as :meth:`prune`)."""
        with self._fencing(session_id, fence):
            super().erase(session_id)
        self._confirm("erase", self.keys.session(session_id, "order"), self.keys.sessions)

    def fork(
        self,
        session_id: str,
        checkpoint_id: str,
        *,
        new_session_id: str | None = None,
        fence: Fence | None = None,
    ) -> CheckpointRecord:
        """Start a new session from a checkpoint; see :meth:`Store.fork`.

        With ``fence``, the checkpoint is read only under the source session's
        lease ``fence``, else ``OwnershipLost`` and no new session.
        """
        with self._fencing(session_id, fence):
            # The new session is written by put, which waits for the replicas.
            return super().fork(session_id, checkpoint_id, new_session_id=new_session_id)

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
        self._confirm("expire", keys[0])

    def _damaged(self, session_id: str, hashes: set[str]) -> set[str]:
        """Which of a session's stored bodies cannot be read back as the body of their hash."""
        wanted = sorted(hashes)
        blobs = self.client.hmget(self.keys.session(session_id, "body"), wanted)
        bad: set[str] = set()
        for digest, blob in zip(wanted, blobs, strict=True):
            try:
                if blob is None or body_hash(self.codec.decode(bytes(blob))) != digest:
                    bad.add(digest)
            except CorruptCheckpoint:
                bad.add(digest)
        return bad

    def corrupt(self, checkpoint_id: str, data: bytes) -> None:
        """Replace a checkpoint's stored manifest bytes (for tests of damaged data)."""
        for session_id in self.sessions():
            key = self.keys.session(session_id, "man")
            if self.client.hexists(key, checkpoint_id):
                self.client.hset(key, checkpoint_id, data)
                return
        raise CheckpointNotFound(f"checkpoint {checkpoint_id!r} must exist (not found)")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _store_options(url: str, in_url: Mapping[str, str], given: Mapping[str, Any]) -> dict[str, Any]:
    """The store options of a URL's query and of keywords (not None), converted; an
    option in both is refused."""
    opts: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    convert: dict[str, tuple[Callable[[str], Any], str]] = {
        "tenant": (str, "a name"),
        "replicas": (int, "an integer"),
        "replica_timeout": (float, "a number of seconds"),
        "ttl": (float, "a number of seconds"),
    }
    for name, raw in in_url.items():
        if name in opts:
            raise StoreError(
                f"the store option {name!r} must be given once, in the URL or as a keyword "
                f"(got both)",
                rule="redis_url",
                option=name,
            )
        parse, kind = convert[name]
        try:
            opts[name] = parse(raw)
        except ValueError:
            raise StoreError(
                f"the URL option {name!r} must be {kind} (got {raw!r})",
                rule="redis_url",
                option=name,
            ) from None
    return opts
