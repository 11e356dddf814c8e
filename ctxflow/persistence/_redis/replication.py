"""Acknowledged writes that wait for replicas: ``WAIT N timeout`` after the write.

Redis replicates asynchronously, so a write the primary confirmed can be lost
when a replica that had not received it is promoted. With ``replicas=N`` a
write is acknowledged only once ``N`` replicas hold it; when fewer confirm
within ``timeout`` seconds the operation raises
:class:`~ctxflow.errors.ReplicationError` instead of returning (the write is
then *not acknowledged*: it may or may not survive a failover, and the primary
may still hold it).

``WAIT`` counts the replicas that received every write *the connection it is
sent on* made before it, and redis-py hands each command or transaction a
pooled connection of its own. So the wait is pinned: a barrier write (``SET``
of a short-lived key in the written key's slot) and ``WAIT`` go together, in
one pipeline, on one connection of the primary that owns the slot. The
replication stream of a primary is one ordered log, and the barrier was sent
after the write's reply came back, so a replica that acknowledged the barrier
holds the write too. The barrier key shares the written key's hash tag
(``<prefix>sync:{<tag>}``): on Redis Cluster it lives on the same primary, and
a slot that moved meanwhile answers ``MOVED`` (an error, not an
acknowledgement).
"""

from __future__ import annotations

from typing import Any

import attrs
import redis

from ctxflow.errors import ReplicationError, StoreError

__all__ = ["Replication", "node_client", "slot_tag"]

#: How long a barrier key lives (ms): long enough to replicate, short enough to vanish.
_BARRIER_TTL_MS = 10_000
#: The longest wait accepted (a day): a finite bound, where WAIT's own 0 means forever.
_MAX_TIMEOUT_S = 86_400


def slot_tag(key: str) -> str:
    """The part of ``key`` Redis Cluster hashes: the first non-empty ``{...}``, else the key."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def node_client(client: Any, key: str) -> Any:
    """The client of the one server that owns ``key``: ``client`` itself unless it is a
    cluster client, then the client of the slot's primary."""
    if isinstance(client, redis.RedisCluster):
        cluster: Any = client  # redis-py leaves these two methods untyped
        return cluster.get_redis_connection(cluster.get_node_from_key(key))
    return client


def _check_replicas(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StoreError(
            f"'replicas' must be an integer >= 0 (got {value!r})", rule="replicas", replicas=value
        )


def _check_timeout(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value < _MAX_TIMEOUT_S
    ):
        raise StoreError(
            f"'replica_timeout' must be > 0 and < {_MAX_TIMEOUT_S} seconds (got {value!r})",
            rule="replica_timeout",
            replica_timeout=value,
        )


@attrs.frozen(kw_only=True)
class Replication:
    """How many replicas must hold a write before it is acknowledged, and how long to wait.

    ``replicas=0`` (the default) acknowledges on the primary's reply, as
    Redis does.
    """

    replicas: int = attrs.field(default=0, validator=_check_replicas)
    timeout: float = attrs.field(default=1.0, validator=_check_timeout)

    def confirm(self, client: Any, prefix: str, doing: str, *keys: str) -> None:
        """Return once ``replicas`` replicas hold every write made so far to ``keys``;
        ``ReplicationError`` when fewer confirm within the timeout.

        ``prefix`` is the start of the barrier key (the tenant's namespace).
        redis-py errors pass through (the caller names the operation).
        """
        if self.replicas == 0:
            return
        wait_ms = max(1, round(self.timeout * 1000))
        for tag in dict.fromkeys(slot_tag(k) for k in keys):
            barrier = f"{prefix}sync:{{{tag}}}"
            pipe = node_client(client, barrier).pipeline(transaction=False)
            pipe.set(barrier, "1", px=_BARRIER_TTL_MS)
            pipe.execute_command("WAIT", self.replicas, wait_ms)
            acknowledged = int(pipe.execute()[1])
            if acknowledged < self.replicas:
                raise ReplicationError(
                    f"{doing} must be acknowledged by {self.replicas} replica(s) within "
                    f"{self.timeout} s (got {acknowledged}); the write is not acknowledged",
                    rule="replicas",
                    operation=doing,
                    replicas=self.replicas,
                    acknowledged=acknowledged,
                    key=keys[0] if keys else None,
                )
