"""Session records: one versioned msgpack value per session, changed by compare-and-set.

An update reads the record, applies ``fn`` and writes the result only if the
version is unchanged (and, with a lease, only while the lease is current), in
one Lua script. A conflict (another writer got in first) comes back as an
:class:`Attempt`, and what to do about it is the caller's choice of method
(``SessionCoordinator.update``, ``update_with_retry``, ``update_or_fork``).

With a lease, the lease is checked first: a node that no longer holds it
gets ``OwnershipLost`` before ``fn`` runs, and the script checks the owner and
token again before it looks at the version.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import msgpack

from ctxflow.errors import ConflictError, SessionError, SessionNotFound
from ctxflow.sessions._ownership._invalidation import Invalidations
from ctxflow.sessions._ownership._leases import Lease, LeaseTable
from ctxflow.sessions._ownership._link import Link

__all__ = ["Attempt", "Records", "Versioned"]

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
class Versioned:
    """A session record at one version (0 and ``None`` data: never written)."""

    session_id: str
    version: int
    data: Any = None


@attrs.frozen(kw_only=True)
class Attempt:
    """One compare-and-set: the record read, the value tried, and the version it met."""

    current: Versioned
    packed: bytes
    written: bool
    version: int  # the new version when written, else the one another writer left


class Records:
    """The versioned session records of one tenant, as one node reads and writes them."""

    def __init__(
        self,
        link: Link,
        *,
        leases: LeaseTable,
        invalidations: Invalidations,
    ) -> None:
        self.link = link
        self._leases = leases
        self._invalidations = invalidations
        self._cas = link.client.register_script(_CAS)

    def read(self, session_id: str) -> Versioned:
        """The record of a session; ``SessionNotFound`` if it was never written."""
        version, data = self._get(session_id)
        if version is None:
            raise SessionNotFound(
                f"session {session_id!r} must have a session record in tenant "
                f"{self.link.keys.tenant!r} (none found)",
                rule="unknown_session",
                session_id=session_id,
            )
        return _versioned(session_id, version, data)

    def attempt(self, session_id: str, fn: Callable[[Any], Any], lease: Lease | None) -> Attempt:
        """One compare-and-set of the record to ``fn(current data)`` (``None`` when unwritten).

        With ``lease``, the script also requires the lease to be current, else
        ``OwnershipLost``. A conflict is returned, not raised: see the module docstring.
        """
        if lease is not None:
            self._leases.check(lease)
        keys = [self.link.session(session_id, "state"), *self.link.guard(session_id)]
        version, data = self._get(session_id)
        current = _versioned(session_id, version or 0, data)
        packed: bytes = msgpack.packb(fn(current.data))
        owner, token = (lease.owner, str(lease.token)) if lease else ("", "")
        args = [owner, token, current.version, packed]
        status, value = self.link.call("update", lambda: self._cas(keys=keys, args=args))
        if status == -1:
            assert lease is not None  # the script checks the owner only when given one
            raise self._leases.lost(lease)
        if status == 1:
            self.link.confirm("update", keys[0])
        return Attempt(current=current, packed=packed, written=status == 1, version=int(value))

    def publish(self, attempt: Attempt) -> Versioned:
        """Announce the record a successful attempt wrote to the other nodes; return it."""
        session_id = attempt.current.session_id
        self._invalidations.announce("record", session_id, version=attempt.version)
        data = msgpack.unpackb(attempt.packed)
        return Versioned(session_id=session_id, version=attempt.version, data=data)

    @staticmethod
    def conflict(attempt: Attempt) -> ConflictError:
        """The error of an attempt another writer got in before."""
        session_id = attempt.current.session_id
        return ConflictError(
            f"session {session_id!r} must still be at version {attempt.current.version} "
            f"to be updated (got {attempt.version})",
            rule="version_conflict",
            session_id=session_id,
            expected=attempt.current.version,
            actual=attempt.version,
        )

    def fork(self, attempt: Attempt, target: str, lease: Lease | None) -> Attempt:
        """Write the value an attempt tried as the first version of the new session
        ``target`` (under ``lease``, a lease on ``target``, when given)."""
        keys = [self.link.session(target, "state"), *self.link.guard(target)]
        owner, token = (lease.owner, str(lease.token)) if lease else ("", "")
        args = [owner, token, 0, attempt.packed]
        status, value = self.link.call("update (fork)", lambda: self._cas(keys=keys, args=args))
        if status == -1:
            assert lease is not None
            raise self._leases.lost(lease)
        forked = Attempt(
            current=Versioned(session_id=target, version=0),
            packed=attempt.packed,
            written=status == 1,
            version=int(value),
        )
        if not forked.written:
            raise self.conflict(forked)
        self.link.confirm("update (fork)", keys[0])
        return forked

    def _get(self, session_id: str) -> tuple[Any, Any]:
        key = self.link.session(session_id, "state")
        version, data = self.link.call(
            "read", lambda: self.link.client.hmget(key, ["version", "data"])
        )
        return version, data


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
