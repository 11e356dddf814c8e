"""The coordinator: the one object a node holds, composing leases, heartbeats, records,
invalidations and fenced commits, and calling the application back."""

from __future__ import annotations

import itertools
import re
import threading
import uuid
from collections.abc import Callable
from typing import Any

import redis

from ctxflow.errors import (
    CheckpointError,
    ConflictError,
    OwnershipLost,
    SessionError,
    StaleCheckpoint,
    StoreError,
)
from ctxflow.persistence import CheckpointDraft, CheckpointRecord, new_session_id
from ctxflow.persistence._redis import RedisKeys, RedisStore, check_tenant
from ctxflow.persistence._redis.replication import Replication
from ctxflow.sessions._ownership._fenced import Commits, FencedStore
from ctxflow.sessions._ownership._heartbeat import Heartbeat
from ctxflow.sessions._ownership._invalidation import Invalidation, Invalidations
from ctxflow.sessions._ownership._leases import Lease, LeaseTable
from ctxflow.sessions._ownership._link import Link
from ctxflow.sessions._ownership._records import Records, Versioned

__all__ = ["SessionCoordinator"]

_NODE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class SessionCoordinator:
    """One node's view of distributed ownership: leases, heartbeats, claims, invalidations.

    Use it as a context manager (or call :meth:`start` and :meth:`shutdown`).
    Callbacks run on background threads: ``on_invalidate(Invalidation)`` for
    other nodes' changes, ``on_claim(Lease, reason)`` when this node takes a
    session over (``"claimed"`` from a dead node or ``"transferred"``), and
    ``on_lost(session_id)`` once when this node finds it lost a lease it held
    (a renewal, another node's announcement, or a write under the lease: then
    on the writing thread). ``instance`` tells this coordinator apart from
    another process with the same ``node_id``.

    ``client`` may be a ``redis.RedisCluster``: every key a script or
    transaction touches is a session's (one hash tag, one slot). ``replicas``
    and ``replica_timeout`` (default: the store's) make an acquisition, a
    transfer and a record update return only once that many replicas hold it,
    so a fencing token handed out survives a failover (docs/stores.md).
    """

    def __init__(
        self,
        client: redis.Redis | redis.RedisCluster,
        *,
        tenant: str,
        node_id: str | None = None,
        store: RedisStore | None = None,
        lease_ttl: float = 10.0,
        heartbeat_interval: float | None = None,
        claim_interval: float | None = None,
        on_invalidate: Callable[[Invalidation], None] | None = None,
        on_claim: Callable[[Lease, str], None] | None = None,
        on_lost: Callable[[str], None] | None = None,
        replicas: int | None = None,
        replica_timeout: float | None = None,
    ) -> None:
        check_tenant(tenant)
        held = store.replication if store is not None else Replication()
        replication = Replication(
            replicas=held.replicas if replicas is None else replicas,
            timeout=held.timeout if replica_timeout is None else replica_timeout,
        )
        node = _check_node(node_id or f"node-{uuid.uuid4().hex[:12]}")
        beat, claim = _intervals(lease_ttl, heartbeat_interval, claim_interval)
        if store is not None and store.tenant != tenant:
            raise SessionError(
                f"the store's tenant must be the coordinator's {tenant!r} (got {store.tenant!r})",
                rule="tenant_mismatch",
            )
        self.client: Any = client
        self.tenant = tenant
        self.keys = RedisKeys(tenant)
        self.node_id = node
        self.store = store
        self.lease_ttl = lease_ttl
        self.heartbeat_interval = beat
        self.claim_interval = claim
        self.on_invalidate = on_invalidate
        self.on_claim = on_claim
        self.on_lost = on_lost
        #: How many replicas must hold a lease, token or record before it is acknowledged.
        self.replication = replication
        #: This coordinator's own id: two processes with one ``node_id`` never share a lease.
        self.instance = uuid.uuid4().hex[:16]
        self._compose(int(lease_ttl * 1000))

    def _compose(self, ttl_ms: int) -> None:
        link = Link(
            client=self.client,
            keys=self.keys,
            node_id=self.node_id,
            instance=self.instance,
            replication=self.replication,
        )
        self._link = link
        self._stop = threading.Event()
        self._leases = LeaseTable(link, ttl_ms=ttl_ms, on_lost=self._report_lost)
        self._invalidations = Invalidations(link=link, handle=self._heard, stop=self._stop)
        self._records = Records(link, leases=self._leases, invalidations=self._invalidations)
        self._commits = Commits(
            store=self.store, leases=self._leases, invalidations=self._invalidations
        )
        self._heartbeat = Heartbeat(
            link=link,
            ttl_ms=ttl_ms,
            beat_interval=self.heartbeat_interval,
            claim_interval=self.claim_interval,
            stop=self._stop,
            renew=self.renew_all,
            claim=self.claim_orphans,
        )

    def __repr__(self) -> str:
        return f"<SessionCoordinator node={self.node_id!r} tenant={self.tenant!r}>"

    def node_key(self, node_id: str) -> str:
        """The heartbeat key of a node."""
        return self._link.node(node_id)

    @property
    def channel(self) -> str:
        """The pub/sub channel of this tenant's invalidations."""
        return self._link.channel

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> SessionCoordinator:
        """Send the first heartbeat, subscribe to invalidations, start the background threads
        (also after a :meth:`shutdown`; a running coordinator stays as it is)."""
        if self._heartbeat.running:
            return self
        self._heartbeat.beat()
        self._invalidations.listen()
        self._heartbeat.start()
        return self

    def __enter__(self) -> SessionCoordinator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def shutdown(self, *, handoff: bool = True) -> dict[str, str | None]:
        """Stop; hand each owned session to a live node (round robin) or release it.

        Returns session id -> the node it went to (None: released).
        """
        self._stop.set()
        self._heartbeat.join()
        others = [n for n in self.live_nodes() if n != self.node_id] if handoff else []
        targets = itertools.cycle(others) if others else None
        moved: dict[str, str | None] = {}
        for lease in self.owned().values():
            target = next(targets) if targets is not None else None
            try:
                if target is None:
                    self.release(lease)
                else:
                    self.transfer(lease, target)
            except (OwnershipLost, StoreError):
                continue
            moved[lease.session_id] = target
        self._heartbeat.leave()
        self._invalidations.close()
        return moved

    # -- leases ---------------------------------------------------------------

    def owned(self) -> dict[str, Lease]:
        """The leases this node holds, by session id."""
        return self._leases.owned()

    def live_nodes(self) -> list[str]:
        """The nodes whose heartbeat key is alive (this one included while it runs)."""
        return self._heartbeat.live_nodes()

    def acquire(self, session_id: str) -> Lease:
        """Own a session (a new fencing token), or keep owning it; ``SessionError`` if another
        node holds a live lease on it."""
        return self._leases.acquire(session_id)

    def renew(self, lease: Lease) -> Lease:
        """Extend a lease by ``lease_ttl``; ``OwnershipLost`` if it is no longer current."""
        return self._leases.renew(lease)

    def renew_all(self) -> list[str]:
        """Renew every owned lease in one round trip; returns (and reports) the lost ones."""
        return [lease.session_id for lease in self._leases.renew_all()]

    def release(self, lease: Lease) -> None:
        """Give a session up (nobody owns it until someone acquires it)."""
        self._leases.release(lease)
        self._invalidations.announce("released", lease.session_id)

    def transfer(self, lease: Lease, node_id: str) -> int:
        """Hand a session to another live node under a new token; returns that token."""
        instance = None if node_id == self.node_id else self._heartbeat.instance(node_id)
        if instance is None:
            raise SessionError(
                f"a session can be transferred only to another live node (got {node_id!r})",
                rule="node_not_live",
                session_id=lease.session_id,
                node_id=node_id,
            )
        token = self._leases.transfer(lease, node_id, instance)
        self._invalidations.announce("transferred", lease.session_id, target=node_id, version=token)
        return token

    def claim_orphans(self) -> list[Lease]:
        """One pass of the claim loop: take every indexed session whose lease is gone, and
        every session handed to this node whose announcement it missed."""
        claimed = []
        scan = self._heartbeat.scan(self.owned())
        for session_id, token in scan.handed.items():
            taken = self._leases.take(session_id, token)
            if taken is not None:
                claimed.append(taken)
                if self.on_claim is not None:
                    self.on_claim(taken, "transferred")
        for session_id in scan.orphans:
            try:
                lease = self._leases.acquire(session_id)
            except SessionError:
                continue
            claimed.append(lease)
            self._invalidations.announce("claimed", session_id)
            if self.on_claim is not None:
                self.on_claim(lease, "claimed")
        return claimed

    # -- checkpoints, fenced by the lease ---------------------------------------

    def commit(
        self, lease: Lease, draft: CheckpointDraft, *, expected_parent: str | None
    ) -> CheckpointRecord:
        """Write a checkpoint only while ``lease`` is current (checked in the write's script);
        ``StaleCheckpoint`` if the latest checkpoint is not ``expected_parent``."""
        return self._commits.put(lease, draft, expected_parent)

    def commit_with_retry(
        self,
        lease: Lease,
        draft: CheckpointDraft,
        *,
        expected_parent: str | None,
        rebuild: Callable[[CheckpointRecord], CheckpointDraft],
        max_attempts: int = 100,
    ) -> CheckpointRecord:
        """:meth:`commit`, but on a stale parent write ``rebuild(latest)`` on the latest
        checkpoint instead, up to ``max_attempts`` writes in all (then ``ConflictError``,
        rule ``contention``). A lost lease is never retried: ``OwnershipLost``."""
        if not callable(rebuild):
            raise CheckpointError(
                f"'rebuild' must be a callable making a draft from the latest record "
                f"(got {rebuild!r})",
                rule="rebuild",
            )
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise SessionError(
                f"'max_attempts' must be an integer >= 1 (got {max_attempts!r})",
                rule="max_attempts",
            )
        parent = expected_parent
        for _ in range(max_attempts - 1):
            try:
                return self._commits.put(lease, draft, parent)
            except StaleCheckpoint:
                latest = self._commits.latest(lease.session_id)
                draft, parent = rebuild(latest), latest.id
        try:
            return self._commits.put(lease, draft, parent)
        except StaleCheckpoint as exc:
            raise ConflictError(
                f"session {lease.session_id!r} must accept a checkpoint within "
                f"{max_attempts} attempts (other writers kept moving its latest checkpoint)",
                rule="contention",
                session_id=lease.session_id,
                attempts=max_attempts,
            ) from exc

    def commit_or_fork(
        self, lease: Lease, draft: CheckpointDraft, *, expected_parent: str | None
    ) -> CheckpointRecord:
        """:meth:`commit`, but on a stale parent fork the session at ``expected_parent``,
        acquire the fork and write the draft there (the returned record names it).

        A lost lease is not a stale parent: ``OwnershipLost``, no fork, and the
        session leaves :meth:`owned`."""
        try:
            return self._commits.put(lease, draft, expected_parent)
        except StaleCheckpoint:
            pass
        return self._commits.put_in_fork(lease, draft, expected_parent)

    def fenced(self, lease: Lease) -> FencedStore:
        """The store seen through ``lease``: every put is a fenced :meth:`commit`."""
        return FencedStore(self, lease)

    # -- session records ----------------------------------------------------------

    def read(self, session_id: str) -> Versioned:
        """The versioned record of a session; ``SessionNotFound`` if it was never written."""
        return self._records.read(session_id)

    def update(
        self, session_id: str, fn: Callable[[Any], Any], *, lease: Lease | None = None
    ) -> Versioned:
        """Compare-and-set the session record to ``fn(current data)`` (``None`` when unwritten);
        ``ConflictError`` if another writer changed it in between.

        With ``lease``, the write also requires the lease to be current.
        """
        attempt = self._records.attempt(session_id, fn, lease)
        if not attempt.written:
            raise self._records.conflict(attempt)
        return self._records.publish(attempt)

    def update_with_retry(
        self,
        session_id: str,
        fn: Callable[[Any], Any],
        *,
        lease: Lease | None = None,
        max_attempts: int = 10_000,
    ) -> Versioned:
        """:meth:`update`, but after a conflict read again and reapply ``fn``, up to
        ``max_attempts`` times (then ``SessionError``, rule ``contention``)."""
        if max_attempts < 1:
            raise SessionError(
                f"'max_attempts' must be at least 1 (got {max_attempts!r})", rule="max_attempts"
            )
        for _ in range(max_attempts):
            attempt = self._records.attempt(session_id, fn, lease)
            if attempt.written:
                return self._records.publish(attempt)
        raise SessionError(
            f"session {session_id!r} must accept an update within {max_attempts} attempts",
            rule="contention",
            session_id=session_id,
        )

    def update_or_fork(
        self, session_id: str, fn: Callable[[Any], Any], *, lease: Lease | None = None
    ) -> Versioned:
        """:meth:`update`, but after a conflict write the result as a new session's first
        version instead (the returned value names that session), and announce it.

        Under a lease, as :meth:`commit_or_fork`: the fork is acquired and written
        under its own lease, and a lost lease raises ``OwnershipLost`` (no fork)."""
        attempt = self._records.attempt(session_id, fn, lease)
        if attempt.written:
            return self._records.publish(attempt)
        target = new_session_id()
        fork_lease = self._leases.acquire(target) if lease is not None else None
        return self._records.publish(self._records.fork(attempt, target, fork_lease))

    # -- other nodes' announcements -----------------------------------------------

    def _report_lost(self, session_id: str) -> None:
        if self.on_lost is not None:
            self.on_lost(session_id)

    def _heard(self, event: Invalidation) -> None:
        if event.kind == "transferred" and event.target == self.node_id and event.version:
            lease = self._leases.take(event.session_id, event.version)
            if lease is not None and self.on_claim is not None:
                self.on_claim(lease, "transferred")
            return
        taken = event.kind in ("claimed", "transferred")
        if taken and self._leases.drop(event.session_id) and self.on_lost is not None:
            self.on_lost(event.session_id)
        if self.on_invalidate is not None:
            self.on_invalidate(event)


def _check_node(node: str) -> str:
    if not isinstance(node, str) or not _NODE.match(node):
        raise SessionError(
            f"'node_id' must be 1-64 letters, digits, '_', '.' or '-' (got {node!r})",
            rule="node_id",
        )
    return node


def _intervals(
    lease_ttl: float, heartbeat_interval: float | None, claim_interval: float | None
) -> tuple[float, float]:
    """The heartbeat and claim intervals (defaults: a third and a half of the TTL), checked."""
    if not lease_ttl > 0:
        raise SessionError(f"'lease_ttl' must be > 0 seconds (got {lease_ttl!r})", rule="ttl")
    beat = lease_ttl / 3 if heartbeat_interval is None else heartbeat_interval
    claim = lease_ttl / 2 if claim_interval is None else claim_interval
    if not 0 < beat < lease_ttl:
        raise SessionError(
            f"'heartbeat_interval' must be > 0 and below lease_ttl {lease_ttl} (got {beat!r})",
            rule="heartbeat_interval",
        )
    if not claim > 0:
        raise SessionError(f"'claim_interval' must be > 0 (got {claim!r})", rule="interval")
    return beat, claim
