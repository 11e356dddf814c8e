"""Leases: take, keep, give up and hand over a session's ownership under fencing tokens.

The owner key holds ``"<node>|<instance>|<token>"`` and expires unless
renewed. Every acquisition and every transfer takes a new token with
``INCR`` on the session's fence key, so a token names one acquisition, whoever
the node is and whatever it is called. Each script below checks the owner
value (and the token) in the same script as its change.

Tokens never repeat, also across a Redis restart that lost the fence key (no
persistence, or a failover to a replica that had not received it): when the
fence key is missing, the next token is seeded from the server's clock,
``TIME`` in microseconds, before the ``INCR``. Every token handed out before
was at most the clock reading of its own counter's seed plus one per
acquisition since, which stays below the clock as long as a session is not
acquired more than once a microsecond on average; a restart adds its own
seconds of margin. The assumption left is a server clock that does not go
back by more than that margin (docs/ownership.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import attrs
import redis

from ctxflow.errors import OwnershipLost, SessionError, StoreError
from ctxflow.persistence._redis import Fence
from ctxflow.sessions._ownership._link import Link, text

__all__ = ["Lease", "LeaseTable"]

# The next token of the fence key KEYS[2], as a string (a Lua number of 16 digits would
# print in exponent form): seeded from the server clock (microseconds) when missing.
_NEXT_TOKEN = """
local function next_token()
  if redis.call('EXISTS', KEYS[2]) == 0 then
    local t = redis.call('TIME')
    redis.call('SET', KEYS[2], t[1] .. string.format('%06d', tonumber(t[2])))
  end
  redis.call('INCR', KEYS[2])
  return redis.call('GET', KEYS[2])
end
"""

# KEYS: owner, fence.  ARGV: holder "<node>|<instance>", ttl ms.
# -> {1, token} or {0, current owner}
_ACQUIRE = (
    _NEXT_TOKEN
    + """
local cur = redis.call('GET', KEYS[1])
if cur then
  local holder, tok = string.match(cur, '^(.*)|(%d+)$')
  if holder == ARGV[1] and redis.call('GET', KEYS[2]) == tok then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, tok}
  end
  return {0, cur}
end
local tok = next_token()
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. tok, 'PX', ARGV[2])
return {1, tok}
"""
)

# KEYS: owner, fence.  ARGV: owner value, token, ttl ms.  -> 1 renewed, 0 lost
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 0
"""

# KEYS: owner, fence.  ARGV: owner value, token.  -> 1 released, 0 not the owner
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: owner, fence.  ARGV: owner value, token, target holder, ttl ms.
# -> the new token, or '' when the lease was lost
_TRANSFER = (
    _NEXT_TOKEN
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return ''
end
local tok = next_token()
redis.call('SET', KEYS[1], ARGV[3] .. '|' .. tok, 'PX', ARGV[4])
return tok
"""
)


@attrs.frozen(kw_only=True)
class Lease:
    """This node's ownership of one session, with the fencing token it writes under.

    ``instance`` tells apart two coordinators with the same ``node_id``.
    """

    session_id: str
    node_id: str
    token: int
    instance: str = ""

    @property
    def owner(self) -> str:
        """The owner key's value while this lease holds: ``"<node>|<instance>|<token>"``."""
        return f"{self.node_id}|{self.instance}|{self.token}"

    @property
    def fence(self) -> Fence:
        """The guard a fenced store write checks."""
        return Fence(owner=self.owner, token=self.token)


class LeaseTable:
    """The leases one node holds, and the scripts that take, keep and give them up.

    Safe across threads: the heartbeat, the claim loop and the invalidation
    listener change the table while the application uses it. A held lease
    found lost (by a renewal or by any fenced write) leaves the table and is
    reported to ``on_lost`` once, on the thread that found it.
    """

    def __init__(
        self, link: Link, *, ttl_ms: int, on_lost: Callable[[str], None] | None = None
    ) -> None:
        self.link = link
        self.ttl_ms = ttl_ms
        self.on_lost = on_lost
        self._held: dict[str, Lease] = {}
        self._lock = threading.RLock()
        self._acquire = link.client.register_script(_ACQUIRE)
        self._renew = link.client.register_script(_RENEW)
        self._release = link.client.register_script(_RELEASE)
        self._transfer = link.client.register_script(_TRANSFER)

    def owned(self) -> dict[str, Lease]:
        """The leases held, by session id."""
        with self._lock:
            return dict(self._held)

    def check(self, lease: Lease) -> Lease:
        """``lease`` if this node still holds it, else ``OwnershipLost`` (no round trip)."""
        with self._lock:
            held = self._held.get(lease.session_id) == lease
        if not held:
            raise self.lost(lease)
        return lease

    def acquire(self, session_id: str) -> Lease:
        """Own a session under a new token, or keep owning it; ``SessionError`` if another
        node, or another process of this node's name, holds a live lease on it."""
        keys = self.link.guard(session_id)
        args = [self.link.holder, self.ttl_ms]
        ok, value = self.link.call("acquire", lambda: self._acquire(keys=keys, args=args))
        if not ok:
            raise SessionError(
                f"session {session_id!r} must not be owned by another node to be acquired "
                f"(owned by {text(value)!r})",
                rule="owned_elsewhere",
                session_id=session_id,
                owner=text(value),
            )
        # The token is handed out only once the replicas hold the counter: see _link.
        self.link.confirm("acquire", *keys)
        lease = self._lease(session_id, int(value))
        self._hold(lease)
        self._index("acquire (index)", session_id, self.link.node_id)
        return lease

    def renew(self, lease: Lease) -> Lease:
        """Extend a lease by the TTL; ``OwnershipLost`` if it is no longer current."""
        if not self.link.call("renew", lambda: self._renew_script(lease)):
            raise self.lost(lease)
        return lease

    def renew_all(self) -> list[Lease]:
        """Renew every held lease in one round trip; returns the lost ones (no longer held)."""
        leases = list(self.owned().values())
        if not leases:
            return []

        def renew() -> list[Any]:
            pipe = self.link.client.pipeline(transaction=False)
            for lease in leases:
                self._renew_script(lease, client=pipe)
            return list(pipe.execute())

        def renew_loaded() -> list[Any]:
            try:
                return renew()
            except redis.exceptions.NoScriptError:
                # A cluster pipeline does not load scripts: load it on every primary, once.
                self.link.client.script_load(_RENEW)
                return renew()

        results = self.link.call("renew", renew_loaded)
        lost = [lease for lease, ok in zip(leases, results, strict=True) if not ok]
        for lease in lost:
            self.lost(lease)
        return lost

    def release(self, lease: Lease) -> None:
        """Give a session up (nobody owns it until someone acquires it)."""
        keys = self.link.guard(lease.session_id)
        args = [lease.owner, str(lease.token)]
        released = self.link.call("release", lambda: self._release(keys=keys, args=args))
        if not released:
            raise self.lost(lease)
        self.drop(lease.session_id)
        self.link.call(
            "release (index)", lambda: self.link.client.hdel(self.link.owners, lease.session_id)
        )

    def transfer(self, lease: Lease, node_id: str, instance: str) -> int:
        """Hand a session to the coordinator ``instance`` of ``node_id`` under a new token;
        returns that token."""
        keys = self.link.guard(lease.session_id)
        args = [lease.owner, str(lease.token), f"{node_id}|{instance}", self.ttl_ms]
        token = text(self.link.call("transfer", lambda: self._transfer(keys=keys, args=args)))
        if not token:
            raise self.lost(lease)
        self.drop(lease.session_id)
        self.link.confirm("transfer", *keys)
        self._index("transfer (index)", lease.session_id, node_id)
        return int(token)

    def take(self, session_id: str, token: int) -> Lease | None:
        """Hold a lease handed to this coordinator, once a renewal proves it current; None
        when it is not current or already held (so a handover is taken once)."""
        lease = self._lease(session_id, token)
        try:
            self.renew(lease)
            # A handed-over token is held only once the replicas hold it, as an acquired one.
            self.link.confirm("take", *self.link.guard(session_id))
        except (OwnershipLost, StoreError):
            return None
        with self._lock:
            if self._held.get(session_id) == lease:
                return None
            self._held[session_id] = lease
        return lease

    def drop(self, session_id: str) -> Lease | None:
        """Stop holding a session's lease locally (Redis is not touched); the lease, if held."""
        with self._lock:
            return self._held.pop(session_id, None)

    def lost(self, lease: Lease) -> OwnershipLost:
        """Forget ``lease`` (if still held, and then tell ``on_lost``) and say why, as the
        error to raise."""
        with self._lock:
            held = self._held.get(lease.session_id) == lease
            if held:
                del self._held[lease.session_id]
        if held and self.on_lost is not None:
            self.on_lost(lease.session_id)
        return OwnershipLost(
            f"node {self.link.node_id!r} must hold the lease of session {lease.session_id!r} "
            f"with token {lease.token} (the lease expired or another node took it)",
            rule="lease_lost",
            session_id=lease.session_id,
            token=lease.token,
        )

    def _lease(self, session_id: str, token: int) -> Lease:
        return Lease(
            session_id=session_id,
            node_id=self.link.node_id,
            token=token,
            instance=self.link.instance,
        )

    def _hold(self, lease: Lease) -> Lease:
        with self._lock:
            self._held[lease.session_id] = lease
        return lease

    def _index(self, doing: str, session_id: str, node_id: str) -> None:
        self.link.call(doing, lambda: self.link.client.hset(self.link.owners, session_id, node_id))

    def _renew_script(self, lease: Lease, client: Any = None) -> Any:
        args: list[Any] = [lease.owner, str(lease.token), self.ttl_ms]
        return self._renew(keys=self.link.guard(lease.session_id), args=args, client=client)
