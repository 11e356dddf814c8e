"""Distributed session ownership on Redis: one writer per session, enforced by fencing tokens.

Each session is owned by at most one node. Ownership is a *lease*: the key
``ctxflow:<tenant>:s:{<sid>}:owner`` holds ``"<node>|<instance>|<token>"``
and expires (``PX``) unless the owner's heartbeat renews it. ``instance`` is
each coordinator's own id, so two processes with one ``node_id`` are two
owners. The token comes from ``INCR`` on the session's ``fence`` key, so
every acquisition gets a larger token than any before it; when that key is
gone (a restart without persistence) it is seeded from the server's clock
first, so tokens never repeat (``_leases``; docs/ownership.md says why).

Every write a node makes for a session under a lease — a checkpoint put,
retention, erasure, a fork (:class:`FencedStore`,
:meth:`SessionCoordinator.commit` and its variants) or the versioned session
record (:meth:`SessionCoordinator.update` and its variants) — checks the
lease *first*, and in the same script or WATCHed transaction as the write. A
paused or partitioned former owner therefore cannot change the session after
its lease ran out or another node took it: it gets
:class:`~ctxflow.errors.OwnershipLost` (never ``StaleCheckpoint``, never a
fork), the session leaves :meth:`SessionCoordinator.owned`, and ``on_lost``
is told. Nothing here votes or elects: the guarantees are those of Redis
primitives (``SET PX`` lease, ``INCR``, scripts and ``WATCH``) on one
primary.

What a write does when another writer got in first is a method, not a flag:
``commit`` raises, ``commit_with_retry`` rebuilds the draft on the latest
checkpoint (up to ``max_attempts``), ``commit_or_fork`` writes to a fork it
acquires; ``update`` raises, ``update_with_retry`` reapplies its function,
``update_or_fork`` starts a new session (acquired, under a lease).

Keys, beside the store's (see ``ctxflow.stores.RedisKeys``)::

    ctxflow:<tenant>:s:{<sid>}:owner     string "<node>|<instance>|<token>", expires: the lease
    ctxflow:<tenant>:s:{<sid>}:fence     counter, never expires: the last token given
    ctxflow:<tenant>:s:{<sid>}:state     hash version, data: the versioned session record
    ctxflow:<tenant>:node:{<node>}       string <instance>, expires: the node's heartbeat
    ctxflow:<tenant>:nodes               hash node -> time of its last beat
    ctxflow:<tenant>:owners              hash session -> the node that last took it
    ctxflow:<tenant>:events              pub/sub channel of invalidations

The parts, one private module each: ``_leases`` (the lease scripts and the
table of held leases), ``_heartbeat`` (the heartbeat and claim threads),
``_records`` (the versioned record), ``_invalidation`` (pub/sub),
``_fenced`` (fenced checkpoint writes and :class:`FencedStore`), composed by
``_coordinator``.

Gotchas:

- Redis replication is asynchronous. A failover can lose the last writes and
  leases unless the coordinator has ``replicas=N`` (its store's by default):
  then an acquisition, a transfer, a taken handover and a record update
  return only once ``N`` replicas hold them (``WAIT``), so a token handed out
  is on the replicas and a promoted one continues above it. Without
  replicas, tokens still never repeat after the counter is lost (the clock
  seed) as long as the new primary's clock is not behind.
- Redis Cluster: every script and transaction here takes one session's keys
  (one hash tag); the ``owners`` and ``nodes`` hashes and the node keys are
  only read and written by single commands.
- The fence key never expires: a token must never go back.
- Heartbeats: a background thread sets the node key (TTL ``lease_ttl``) and
  renews every owned lease every ``heartbeat_interval``. A claim thread
  looks every ``claim_interval`` for sessions in the owners index whose
  lease is gone (their node died or was paused past the TTL) and claims
  them, so a killed node's sessions move within ``lease_ttl +
  claim_interval``; the callback ``on_claim`` restores them from their
  latest checkpoint. The same pass takes sessions handed to this node whose
  announcement it missed. ``start`` after ``shutdown`` starts them again.
- redis-py 6+ retries every command on connection errors by default. A
  compare-and-set whose reply was lost and that is sent again reports a
  version conflict, and :meth:`SessionCoordinator.update_with_retry` then
  applies ``fn`` twice. For exactly-once updates give the coordinator a
  client made with ``retry=Retry(NoBackoff(), 0)`` (what
  :meth:`RedisStore.from_url` does).
- Invalidation is pub/sub: fire and forget. A node that misses a message
  still cannot write stale data (fencing and the stale-parent check refuse
  it); it only serves an old cached copy longer.
"""

from __future__ import annotations

from ctxflow.sessions._ownership._coordinator import SessionCoordinator
from ctxflow.sessions._ownership._fenced import FencedStore
from ctxflow.sessions._ownership._invalidation import Invalidation
from ctxflow.sessions._ownership._leases import Lease
from ctxflow.sessions._ownership._records import Versioned

__all__ = [
    "FencedStore",
    "Invalidation",
    "Lease",
    "SessionCoordinator",
    "Versioned",
]
