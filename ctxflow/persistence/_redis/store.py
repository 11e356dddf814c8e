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
from redis.backoff import NoBackoff
from redis.retry import Retry

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
from ctxflow.persistence._redis.keys import (
    Fence,
    RedisKeys,
    check_session_id,
    check_tenant,
    fenced_out,
)
from ctxflow.persistence._redis.primitives import Conflict, RedisPrimitives
from ctxflow.persistence._redis.records import decode_record, encode_record
from ctxflow.persistence._redis.scripts import HEAD, PUT

__all__ = ["RedisStore"]

T = TypeVar("T")


class RedisStore(RedisPrimitives):
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
            except Conflict:
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
        return record

    def prune(
        self, session_id: str, *, fence: Fence | None = None, **retention: Unpack[Retention]
    ) -> list[str]:
        """Delete old checkpoints of a session; see :meth:`Store.prune`.

        With ``fence``, only while the session's lease is ``fence`` (checked
        first, and held until the deletion lands), else ``OwnershipLost``.
        """
        with self._fencing(session_id, fence):
            return super().prune(session_id, **retention)

    def erase(self, session_id: str, *, fence: Fence | None = None) -> None:
        """Delete a whole session; with ``fence``, only under that lease (as :meth:`prune`)."""
        with self._fencing(session_id, fence):
            super().erase(session_id)

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
