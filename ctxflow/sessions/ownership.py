"""Distributed session ownership on Redis: one writer per session, enforced by fencing tokens.

Each session is owned by at most one node. Ownership is a *lease*: the key
``ctxflow:<tenant>:s:{<sid>}:owner`` holds ``"<node>|<token>"`` and expires
(``PX``) unless the owner's heartbeat renews it. The token comes from
``INCR`` on the session's ``fence`` key, so every new owner gets a larger
token than any owner before it. Every write a node makes for a session —
a checkpoint (:meth:`SessionCoordinator.commit`) or the versioned session
record (:meth:`SessionCoordinator.update`) — runs in one Lua script that
checks the owner value and the token *in the same script as the write*. A
paused or partitioned former owner therefore cannot write after its lease
ran out or another node claimed the session: its script sees another value
and it gets :class:`~ctxflow.errors.OwnershipLost`. Nothing here votes or
elects: the guarantees are those of Redis primitives (``SET NX PX``-style
lease, ``INCR`` and compare-and-set in Lua) on one primary.

Gotchas:

- Redis replication is asynchronous. A failover to a replica that had not
  received the latest ``INCR`` can hand out a token again; run the primary
  with AOF ``appendfsync always`` (and ``WAIT`` if you need more) when that
  matters.
- The fence key never expires: a token must never go back to 1.
- Heartbeats: a background thread sets the node key
  (``ctxflow:<tenant>:node:{<node>}``, TTL ``lease_ttl``) and renews every
  owned lease every ``heartbeat_interval``. A claim thread looks every
  ``claim_interval`` for sessions in the owners index whose lease is gone
  (their node died or was paused past the TTL) and claims them, so a killed
  node's sessions move within ``lease_ttl + claim_interval``; the callback
  ``on_claim`` restores them from their latest checkpoint.
- redis-py 6+ retries every command on connection errors by default. A
  compare-and-set whose reply was lost and that is sent again reports a
  version conflict, and the ``"retry"`` policy then applies ``fn`` twice.
  For exactly-once updates give the coordinator a client made with
  ``retry=Retry(NoBackoff(), 0)`` (what :meth:`RedisStore.from_url` does).
- Invalidation is pub/sub on ``ctxflow:<tenant>:events``: fire and forget. A
  node that misses a message still cannot write stale data (fencing and the
  stale-parent check refuse it); it only serves an old cached copy longer.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import attrs
import msgpack
import redis

from ctxflow._log import get_logger
from ctxflow.checkpoints.model import (
    CheckpointDraft,
    CheckpointRecord,
    Snapshot,
    new_session_id,
)
from ctxflow.errors import (
    CheckpointError,
    OwnershipLost,
    SessionError,
    SessionNotFound,
    StaleCheckpoint,
    StoreError,
)
from ctxflow.stores.redis import Fence, RedisKeys, RedisStore, check_session_id, check_tenant

__all__ = [
    "ConflictPolicy",
    "FencedStore",
    "Invalidation",
    "Lease",
    "SessionCoordinator",
    "Versioned",
]

ConflictPolicy = Literal["retry", "fork", "raise"]
_POLICIES = ("retry", "fork", "raise")
_NODE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
log = get_logger("ctxflow.sessions.ownership")

# KEYS: owner, fence.  ARGV: node, ttl ms.  -> {1, token} or {0, current owner}
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local node, tok = string.match(cur, '^(.*)|(%d+)$')
  if node == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, tonumber(tok)}
  end
  return {0, cur}
end
local tok = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. tok, 'NX', 'PX', ARGV[2])
return {1, tok}
"""

# KEYS: owner, fence.  ARGV: owner value, token, ttl ms.  -> 1 renewed, 0 lost
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 0
"""

# KEYS: owner.  ARGV: owner value.  -> 1 released, 0 not the owner
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: owner, fence.  ARGV: owner value, target node, ttl ms.  -> new token, or 0 when lost
_TRANSFER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local tok = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[2] .. '|' .. tok, 'PX', ARGV[3])
return tok
"""

# KEYS: state, owner, fence.  ARGV: owner value or '', token, expected version, data.
# -> {1, new version} | {0, current version} | {-1, current owner}
_CAS = """
if ARGV[1] ~= '' then
  if redis.call('GET', KEYS[2]) ~= ARGV[1] or redis.call('GET', KEYS[3]) ~= ARGV[2] then
    return {-1, redis.call('GET', KEYS[2]) or ''}
  end
end
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if v ~= tonumber(ARGV[3]) then return {0, v} end
redis.call('HSET', KEYS[1], 'version', v + 1, 'data', ARGV[4])
return {1, v + 1}
"""


@attrs.frozen(kw_only=True)
class Lease:
    """This node's ownership of one session, with the fencing token it writes under."""

    session_id: str
    node_id: str
    token: int

    @property
    def owner(self) -> str:
        """The owner key's value while this lease holds: ``"<node>|<token>"``."""
        return f"{self.node_id}|{self.token}"

    @property
    def fence(self) -> Fence:
        """The guard a fenced store write checks."""
        return Fence(owner=self.owner, token=self.token)


@attrs.frozen(kw_only=True)
class Versioned:
    """A session record at one version (0 and ``None`` data: never written)."""

    session_id: str
    version: int
    data: Any = None


@attrs.frozen(kw_only=True)
class Invalidation:
    """A change another node announced: drop or refresh the cached copy of ``session_id``.

    ``kind`` is ``"record"`` (the versioned record moved to ``version``),
    ``"checkpoint"`` (a checkpoint ``checkpoint_id`` was committed),
    ``"claimed"``, ``"transferred"`` (to ``target``) or ``"released"``.
    """

    kind: str
    session_id: str
    node_id: str
    target: str | None = None
    version: int | None = None
    checkpoint_id: str | None = None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SessionCoordinator:
    """One node's view of distributed ownership: leases, heartbeats, claims, invalidations.

    Use it as a context manager (or call :meth:`start` and :meth:`shutdown`).
    Callbacks run on background threads: ``on_invalidate(Invalidation)`` for
    other nodes' changes, ``on_claim(Lease, reason)`` when this node takes a
    session over (``"claimed"`` from a dead node or ``"transferred"``), and
    ``on_lost(session_id)`` when a renewal finds the lease gone.
    """

    def __init__(
        self,
        client: redis.Redis,
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
    ) -> None:
        check_tenant(tenant)
        node = node_id or f"node-{uuid.uuid4().hex[:12]}"
        if not isinstance(node, str) or not _NODE.match(node):
            raise SessionError(
                f"'node_id' must be 1-64 letters, digits, '_', '.' or '-' (got {node!r})",
                rule="node_id",
            )
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
        self._ttl_ms = int(lease_ttl * 1000)
        self._leases: dict[str, Lease] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener: Any = None
        self._pubsub: Any = None
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._transfer = client.register_script(_TRANSFER)
        self._cas = client.register_script(_CAS)

    def __repr__(self) -> str:
        return f"<SessionCoordinator node={self.node_id!r} tenant={self.tenant!r}>"

    # -- keys -----------------------------------------------------------------

    def _key(self, session_id: str, part: str) -> str:
        return self.keys.session(check_session_id(session_id), part)

    @property
    def _node_key(self) -> str:
        return self.node_key(self.node_id)

    def node_key(self, node_id: str) -> str:
        """The heartbeat key of a node."""
        return f"{self.keys.prefix}node:{{{node_id}}}"

    @property
    def channel(self) -> str:
        """The pub/sub channel of this tenant's invalidations."""
        return f"{self.keys.prefix}events"

    def _call(self, doing: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except redis.RedisError as exc:
            raise StoreError(
                f"Redis {doing} failed for node {self.node_id!r}: {type(exc).__name__}: {exc}",
                rule="redis",
                operation=doing,
                tenant=self.tenant,
            ) from exc

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> SessionCoordinator:
        """Send the first heartbeat, subscribe to invalidations, start the background threads."""
        self._beat()
        self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self._call("subscribe", lambda: self._pubsub.subscribe(**{self.channel: self._message}))
        self._listener = self._pubsub.run_in_thread(
            sleep_time=0.05, daemon=True, exception_handler=self._listener_failed
        )
        for target, name in ((self._heartbeat_loop, "heartbeat"), (self._claim_loop, "claim")):
            thread = threading.Thread(
                target=target, name=f"ctxflow-{name}-{self.node_id}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
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
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        moved: dict[str, str | None] = {}
        others = [n for n in self.live_nodes() if n != self.node_id] if handoff else []
        targets = itertools.cycle(others) if others else None
        for lease in list(self.owned().values()):
            try:
                if targets is not None:
                    target = next(targets)
                    self.transfer(lease, target)
                    moved[lease.session_id] = target
                else:
                    self.release(lease)
                    moved[lease.session_id] = None
            except (OwnershipLost, StoreError):
                continue
        with contextlib.suppress(redis.RedisError):
            self.client.delete(self._node_key)
            self.client.hdel(self.keys.prefix + "nodes", self.node_id)
        if self._listener is not None:
            self._listener.stop()
            self._listener.join()
            self._listener = None
        if self._pubsub is not None:
            self._pubsub.close()
            self._pubsub = None
        return moved

    def _listener_failed(self, exc: BaseException, pubsub: Any, thread: Any) -> None:
        if not self._stop.is_set():
            log.warning("invalidation_listener_failed", node=self.node_id, error=str(exc))
        thread.stop()

    def _beat(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self._node_key, str(time.time()), px=self._ttl_ms)
        pipe.hset(self.keys.prefix + "nodes", self.node_id, str(time.time()))
        self._call("heartbeat", pipe.execute)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_interval):
            try:
                self._beat()
                self.renew_all()
            except StoreError as exc:
                log.warning("heartbeat_failed", node=self.node_id, error=str(exc))

    def _claim_loop(self) -> None:
        while not self._stop.wait(self.claim_interval):
            try:
                self.claim_orphans()
            except StoreError as exc:
                log.warning("claim_loop_failed", node=self.node_id, error=str(exc))

    # -- leases ---------------------------------------------------------------

    def owned(self) -> dict[str, Lease]:
        """The leases this node holds, by session id."""
        with self._lock:
            return dict(self._leases)

    def live_nodes(self) -> list[str]:
        """The nodes whose heartbeat key is alive (this one included while it runs)."""
        nodes = self.keys.prefix + "nodes"
        names = sorted(_text(n) for n in self._call("nodes", lambda: self.client.hkeys(nodes)))
        if not names:
            return []
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.exists(self.node_key(name))
        flags = self._call("nodes", pipe.execute)
        return [n for n, alive in zip(names, flags, strict=True) if alive]

    def acquire(self, session_id: str) -> Lease:
        """Own a session (a new fencing token), or keep owning it; ``SessionError`` if another
        node holds a live lease on it."""
        owner = self._key(session_id, "owner")
        fence = self._key(session_id, "fence")
        ok, value = self._call(
            "acquire",
            lambda: self._acquire(keys=[owner, fence], args=[self.node_id, self._ttl_ms]),
        )
        if not ok:
            raise SessionError(
                f"session {session_id!r} must not be owned by another node to be acquired "
                f"(owned by {_text(value)!r})",
                rule="owned_elsewhere",
                session_id=session_id,
                owner=_text(value),
            )
        return self._adopt(session_id, int(value))

    def _adopt(self, session_id: str, token: int) -> Lease:
        lease = Lease(session_id=session_id, node_id=self.node_id, token=token)
        with self._lock:
            self._leases[session_id] = lease
        self._call(
            "acquire (index)",
            lambda: self.client.hset(self.keys.prefix + "owners", session_id, self.node_id),
        )
        return lease

    def _lost(self, lease: Lease) -> OwnershipLost:
        with self._lock:
            if self._leases.get(lease.session_id) == lease:
                del self._leases[lease.session_id]
        return OwnershipLost(
            f"node {self.node_id!r} must hold the lease of session {lease.session_id!r} "
            f"with token {lease.token} (the lease expired or another node took it)",
            rule="lease_lost",
            session_id=lease.session_id,
            token=lease.token,
        )

    def renew(self, lease: Lease) -> Lease:
        """Extend a lease by ``lease_ttl``; ``OwnershipLost`` if it is no longer current."""
        keys = [self._key(lease.session_id, "owner"), self._key(lease.session_id, "fence")]
        args: list[Any] = [lease.owner, str(lease.token), self._ttl_ms]
        if not self._call("renew", lambda: self._renew(keys=keys, args=args)):
            raise self._lost(lease)
        return lease

    def renew_all(self) -> list[str]:
        """Renew every owned lease in one round trip; returns (and reports) the lost ones."""
        leases = list(self.owned().values())
        if not leases:
            return []
        pipe = self.client.pipeline(transaction=False)
        for lease in leases:
            self._renew(
                keys=[self._key(lease.session_id, "owner"), self._key(lease.session_id, "fence")],
                args=[lease.owner, str(lease.token), self._ttl_ms],
                client=pipe,
            )
        results = self._call("renew", pipe.execute)
        lost = []
        for lease, ok in zip(leases, results, strict=True):
            if not ok:
                self._lost(lease)
                lost.append(lease.session_id)
                if self.on_lost is not None:
                    self.on_lost(lease.session_id)
        return lost

    def release(self, lease: Lease) -> None:
        """Give a session up (nobody owns it until someone acquires it)."""
        released = self._call(
            "release",
            lambda: self._release(keys=[self._key(lease.session_id, "owner")], args=[lease.owner]),
        )
        with self._lock:
            self._leases.pop(lease.session_id, None)
        if not released:
            raise self._lost(lease)
        self._call(
            "release (index)",
            lambda: self.client.hdel(self.keys.prefix + "owners", lease.session_id),
        )
        self._publish(
            Invalidation(kind="released", session_id=lease.session_id, node_id=self.node_id)
        )

    def transfer(self, lease: Lease, node_id: str) -> int:
        """Hand a session to another live node under a new token; returns that token."""
        if node_id == self.node_id or node_id not in self.live_nodes():
            raise SessionError(
                f"a session can be transferred only to another live node (got {node_id!r})",
                rule="node_not_live",
                session_id=lease.session_id,
                node_id=node_id,
            )
        keys = [self._key(lease.session_id, "owner"), self._key(lease.session_id, "fence")]
        token = int(
            self._call(
                "transfer",
                lambda: self._transfer(keys=keys, args=[lease.owner, node_id, self._ttl_ms]),
            )
        )
        if not token:
            raise self._lost(lease)
        with self._lock:
            self._leases.pop(lease.session_id, None)
        self._call(
            "transfer (index)",
            lambda: self.client.hset(self.keys.prefix + "owners", lease.session_id, node_id),
        )
        self._publish(
            Invalidation(
                kind="transferred",
                session_id=lease.session_id,
                node_id=self.node_id,
                target=node_id,
                version=token,
            )
        )
        return token

    def claim_orphans(self) -> list[Lease]:
        """One pass of the claim loop: take every indexed session whose lease is gone."""
        index = self._call("claim", lambda: self.client.hgetall(self.keys.prefix + "owners"))
        candidates = [_text(s) for s, n in index.items() if _text(s) not in self.owned()]
        if not candidates:
            return []
        pipe = self.client.pipeline(transaction=False)
        for session_id in candidates:
            pipe.exists(self._key(session_id, "owner"))
            pipe.exists(self._key(session_id, "order"), self._key(session_id, "state"))
        flags = self._call("claim", pipe.execute)
        claimed = []
        for session_id, held, stored in zip(candidates, flags[::2], flags[1::2], strict=True):
            if held:
                continue
            if not stored:  # erased or expired: nothing to take over, forget it
                self._call(
                    "claim (index)",
                    partial(self.client.hdel, self.keys.prefix + "owners", session_id),
                )
                continue
            try:
                lease = self.acquire(session_id)
            except SessionError:
                continue
            claimed.append(lease)
            self._publish(Invalidation(kind="claimed", session_id=session_id, node_id=self.node_id))
            if self.on_claim is not None:
                self.on_claim(lease, "claimed")
        return claimed

    # -- writes guarded by the fencing token ------------------------------------

    def commit(
        self,
        lease: Lease,
        draft: CheckpointDraft,
        *,
        expected_parent: str | None,
        policy: ConflictPolicy = "raise",
        rebuild: Callable[[CheckpointRecord], CheckpointDraft] | None = None,
    ) -> CheckpointRecord:
        """Write a checkpoint only while ``lease`` is current (checked in the write's script).

        On a stale parent: ``"raise"`` raises ``StaleCheckpoint``; ``"retry"``
        calls ``rebuild(latest)`` for a draft based on the latest checkpoint and
        writes again; ``"fork"`` forks the session at ``expected_parent``,
        acquires the fork and writes the draft there (the returned record names
        the new session). ``OwnershipLost`` is never retried.
        """
        store = self._need_store()
        self._check_policy(policy)
        if policy == "retry" and rebuild is None:
            raise CheckpointError(
                "policy 'retry' needs a 'rebuild' callable (got None)", rule="conflict_policy"
            )
        if draft.session_id != lease.session_id:
            raise SessionError(
                f"a draft must belong to the leased session {lease.session_id!r} "
                f"(got {draft.session_id!r})",
                rule="session_mismatch",
            )
        parent = expected_parent
        while True:
            try:
                record = store.put(draft, expected_parent=parent, fence=lease.fence)
            except OwnershipLost:
                raise self._lost(lease) from None
            except StaleCheckpoint:
                if policy == "raise":
                    raise
                if policy == "fork":
                    return self._commit_fork(lease, draft, expected_parent)
                assert rebuild is not None
                latest = store.latest(lease.session_id)
                draft = rebuild(latest)
                parent = latest.id
                continue
            self._publish(
                Invalidation(
                    kind="checkpoint",
                    session_id=lease.session_id,
                    node_id=self.node_id,
                    checkpoint_id=record.id,
                )
            )
            return record

    def _commit_fork(
        self, lease: Lease, draft: CheckpointDraft, parent: str | None
    ) -> CheckpointRecord:
        store = self._need_store()
        if parent is None:
            raise CheckpointError(
                f"policy 'fork' needs a parent to fork session {lease.session_id!r} at (got None)",
                rule="conflict_policy",
            )
        forked = store.fork(lease.session_id, parent)
        new_lease = self.acquire(forked.session_id)
        moved = attrs.evolve(draft, session_id=forked.session_id, parent_id=forked.id)
        return self.commit(new_lease, moved, expected_parent=forked.id, policy="raise")

    def read(self, session_id: str) -> Versioned:
        """The versioned record of a session; ``SessionNotFound`` if it was never written."""
        state = self._call(
            "read", lambda: self.client.hmget(self._key(session_id, "state"), ["version", "data"])
        )
        if state[0] is None:
            raise SessionNotFound(
                f"session {session_id!r} must have a session record in tenant {self.tenant!r} "
                f"(none found)",
                rule="unknown_session",
                session_id=session_id,
            )
        return self._versioned(session_id, state[0], state[1])

    @staticmethod
    def _versioned(session_id: str, version: Any, data: Any) -> Versioned:
        try:
            value = msgpack.unpackb(data, raw=False) if data is not None else None
        except (ValueError, msgpack.UnpackException):
            raise SessionError(
                f"session {session_id!r}: the session record must be msgpack "
                f"(got {bytes(data)[:16]!r})",
                rule="corrupt_record",
                session_id=session_id,
            ) from None
        return Versioned(session_id=session_id, version=int(version), data=value)

    def update(
        self,
        session_id: str,
        fn: Callable[[Any], Any],
        *,
        lease: Lease | None = None,
        policy: ConflictPolicy = "retry",
        max_attempts: int = 10_000,
    ) -> Versioned:
        """Compare-and-set the session record to ``fn(current data)`` (``None`` when unwritten).

        With ``lease``, the write also requires the lease to be current. On a
        version conflict: ``"retry"`` reads again and reapplies ``fn``;
        ``"fork"`` writes the result as a new session's first version (the
        returned value names it); ``"raise"`` raises ``SessionError``
        (rule ``version_conflict``).
        """
        self._check_policy(policy)
        key = self._key(session_id, "state")
        guard = [
            self._key(session_id, "owner"),
            self._key(session_id, "fence"),
        ]
        for _ in range(max_attempts):
            version, data = self._call("read", lambda: self.client.hmget(key, ["version", "data"]))
            current = self._versioned(session_id, version or 0, data)
            new = msgpack.packb(fn(current.data))
            args = [
                lease.owner if lease else "",
                str(lease.token) if lease else "",
                current.version,
                new,
            ]
            status, value = self._call("update", partial(self._cas, keys=[key, *guard], args=args))
            if status == 1:
                self._publish(
                    Invalidation(
                        kind="record", session_id=session_id, node_id=self.node_id, version=value
                    )
                )
                return Versioned(
                    session_id=session_id, version=int(value), data=msgpack.unpackb(new)
                )
            if status == -1:
                assert lease is not None
                raise self._lost(lease)
            if policy == "raise":
                raise SessionError(
                    f"session {session_id!r} must still be at version {current.version} to be "
                    f"updated (got {value})",
                    rule="version_conflict",
                    session_id=session_id,
                    expected=current.version,
                    actual=int(value),
                )
            if policy == "fork":
                target = new_session_id()
                keys = [self._key(target, p) for p in ("state", "owner", "fence")]
                self._call("update (fork)", partial(self._cas, keys=keys, args=["", "", 0, new]))
                return Versioned(session_id=target, version=1, data=msgpack.unpackb(new))
        raise SessionError(
            f"session {session_id!r} must accept an update within {max_attempts} attempts",
            rule="contention",
            session_id=session_id,
        )

    # -- invalidation -----------------------------------------------------------

    def _publish(self, event: Invalidation) -> None:
        payload = msgpack.packb(attrs.asdict(event))
        with contextlib.suppress(redis.RedisError):
            self.client.publish(self.channel, payload)

    def _message(self, message: dict[str, Any]) -> None:
        try:
            event = Invalidation(**msgpack.unpackb(message["data"], raw=False))
        except (TypeError, ValueError, msgpack.UnpackException):
            log.warning("malformed_invalidation_ignored", node=self.node_id, channel=self.channel)
            return
        if event.node_id == self.node_id:
            return
        if event.kind == "transferred" and event.target == self.node_id and event.version:
            lease = Lease(session_id=event.session_id, node_id=self.node_id, token=event.version)
            try:
                self.renew(lease)
            except (OwnershipLost, StoreError):
                return
            with self._lock:
                self._leases[event.session_id] = lease
            if self.on_claim is not None:
                self.on_claim(lease, "transferred")
            return
        with self._lock:
            mine = self._leases.get(event.session_id)
        if mine is not None and event.kind in ("claimed", "transferred"):
            with self._lock:
                self._leases.pop(event.session_id, None)
            if self.on_lost is not None:
                self.on_lost(event.session_id)
        if self.on_invalidate is not None:
            self.on_invalidate(event)

    def fenced(self, lease: Lease) -> FencedStore:
        """The store seen through ``lease``: every put is a fenced :meth:`commit`."""
        return FencedStore(self, lease)

    # -- helpers ----------------------------------------------------------------

    def _need_store(self) -> RedisStore:
        if self.store is None:
            raise SessionError(
                "a coordinator needs a RedisStore to commit checkpoints (got store=None)",
                rule="no_store",
            )
        return self.store

    @staticmethod
    def _check_policy(policy: str) -> None:
        if policy not in _POLICIES:
            raise SessionError(
                f"'policy' must be one of {', '.join(_POLICIES)} (got {policy!r})",
                rule="conflict_policy",
            )


class FencedStore:
    """A :class:`~ctxflow.stores.Store` view whose writes hold a lease (give it to a Checkpointer).

    Puts go through :meth:`SessionCoordinator.commit` with the ``"raise"``
    policy; everything else reads or changes the underlying store directly.
    """

    def __init__(self, coordinator: SessionCoordinator, lease: Lease) -> None:
        self.coordinator = coordinator
        self.lease = lease
        self.store = coordinator._need_store()

    def put(self, draft: CheckpointDraft, *, expected_parent: str | None) -> CheckpointRecord:
        """Write a checkpoint only while the lease is current."""
        return self.coordinator.commit(self.lease, draft, expected_parent=expected_parent)

    def sessions(self) -> list[str]:
        """See :meth:`RedisStore.sessions`."""
        return self.store.sessions()

    def checkpoints(self, session_id: str) -> list[CheckpointRecord]:
        """See :meth:`RedisStore.checkpoints`."""
        return self.store.checkpoints(session_id)

    def latest(self, session_id: str) -> CheckpointRecord:
        """See :meth:`RedisStore.latest`."""
        return self.store.latest(session_id)

    def load(self, session_id: str, checkpoint_id: str | None = None) -> Snapshot:
        """See :meth:`RedisStore.load`."""
        return self.store.load(session_id, checkpoint_id)

    def fork(
        self, session_id: str, checkpoint_id: str, *, new_session_id: str | None = None
    ) -> CheckpointRecord:
        """See :meth:`RedisStore.fork`."""
        return self.store.fork(session_id, checkpoint_id, new_session_id=new_session_id)

    def prune(
        self,
        session_id: str,
        *,
        keep_last: int | None = None,
        max_age: float | None = None,
        now: float | None = None,
    ) -> list[str]:
        """See :meth:`RedisStore.prune`."""
        return self.store.prune(session_id, keep_last=keep_last, max_age=max_age, now=now)

    def erase(self, session_id: str) -> None:
        """See :meth:`RedisStore.erase`."""
        self.store.erase(session_id)

    def close(self) -> None:
        """Nothing to release (the coordinator's store stays open)."""
