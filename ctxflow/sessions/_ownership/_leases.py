"""Leases: take, keep, give up and hand over a session's ownership under fencing tokens.

The owner key holds ``"<node>|<token>"`` and expires unless renewed; the token
comes from ``INCR`` on the session's fence key, which never expires, so each
new owner's token is larger than every token before it. Each script below
checks the owner value (and the token) in the same script as its change.
"""

from __future__ import annotations

import threading
from typing import Any

import attrs

from ctxflow.errors import OwnershipLost, SessionError, StoreError
from ctxflow.persistence._redis import Fence
from ctxflow.sessions._ownership._link import Link, text

__all__ = ["Lease", "LeaseTable"]

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


class LeaseTable:
    """The leases one node holds, and the scripts that take, keep and give them up.

    Safe across threads: the heartbeat, the claim loop and the invalidation
    listener change the table while the application uses it.
    """

    def __init__(self, link: Link, *, ttl_ms: int) -> None:
        self.link = link
        self.ttl_ms = ttl_ms
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

    def acquire(self, session_id: str) -> Lease:
        """Own a session under a new token, or keep owning it; ``SessionError`` if another
        node holds a live lease on it."""
        keys = self.link.guard(session_id)
        args = [self.link.node_id, self.ttl_ms]
        ok, value = self.link.call("acquire", lambda: self._acquire(keys=keys, args=args))
        if not ok:
            raise SessionError(
                f"session {session_id!r} must not be owned by another node to be acquired "
                f"(owned by {text(value)!r})",
                rule="owned_elsewhere",
                session_id=session_id,
                owner=text(value),
            )
        lease = Lease(session_id=session_id, node_id=self.link.node_id, token=int(value))
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
        pipe = self.link.client.pipeline(transaction=False)
        for lease in leases:
            self._renew_script(lease, client=pipe)
        results = self.link.call("renew", pipe.execute)
        lost = [lease for lease, ok in zip(leases, results, strict=True) if not ok]
        for lease in lost:
            self.lost(lease)
        return lost

    def release(self, lease: Lease) -> None:
        """Give a session up (nobody owns it until someone acquires it)."""
        owner = self.link.session(lease.session_id, "owner")
        released = self.link.call(
            "release", lambda: self._release(keys=[owner], args=[lease.owner])
        )
        self.drop(lease.session_id)
        if not released:
            raise self.lost(lease)
        self.link.call(
            "release (index)", lambda: self.link.client.hdel(self.link.owners, lease.session_id)
        )

    def transfer(self, lease: Lease, node_id: str) -> int:
        """Hand a session to ``node_id`` under a new token; returns that token."""
        keys = self.link.guard(lease.session_id)
        args = [lease.owner, node_id, self.ttl_ms]
        token = int(self.link.call("transfer", lambda: self._transfer(keys=keys, args=args)))
        if not token:
            raise self.lost(lease)
        self.drop(lease.session_id)
        self._index("transfer (index)", lease.session_id, node_id)
        return token

    def take(self, session_id: str, token: int) -> Lease | None:
        """Hold a lease another node handed over, once a renewal proves it current (else None)."""
        lease = Lease(session_id=session_id, node_id=self.link.node_id, token=token)
        try:
            self.renew(lease)
        except (OwnershipLost, StoreError):
            return None
        return self._hold(lease)

    def drop(self, session_id: str) -> Lease | None:
        """Stop holding a session's lease locally (Redis is not touched); the lease, if held."""
        with self._lock:
            return self._held.pop(session_id, None)

    def lost(self, lease: Lease) -> OwnershipLost:
        """Stop holding ``lease`` (if still held) and say why, as the error to raise."""
        with self._lock:
            if self._held.get(lease.session_id) == lease:
                del self._held[lease.session_id]
        return OwnershipLost(
            f"node {self.link.node_id!r} must hold the lease of session {lease.session_id!r} "
            f"with token {lease.token} (the lease expired or another node took it)",
            rule="lease_lost",
            session_id=lease.session_id,
            token=lease.token,
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
