"""One node's link to one tenant's Redis: the keys ownership adds, and one error wrapper.

A node is named by the application (``node_id``, e.g. a pod name) and may be
restarted under the same name while its former process still runs (paused,
partitioned). Each coordinator therefore also has an ``instance`` id of its
own, and a lease's owner value names both (``"<node>|<instance>|<token>"``):
two processes called alike never pass each other's fence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from ctxflow._log import get_logger
from ctxflow.errors import StoreError
from ctxflow.persistence._redis import RedisKeys, check_session_id
from ctxflow.persistence._redis.failures import REDIS_ERRORS
from ctxflow.persistence._redis.replication import Replication

__all__ = ["Link", "log", "text"]

T = TypeVar("T")

log = get_logger("ctxflow.sessions._ownership")


def text(value: Any) -> str:
    """A Redis reply as text (bytes decoded)."""
    return value.decode() if isinstance(value, bytes) else str(value)


@attrs.frozen(kw_only=True)
class Link:
    """The client, key names and node of one coordinator, shared by its parts."""

    client: Any  # redis.Redis; its stubs type script and pipeline replies too loosely to help
    keys: RedisKeys
    node_id: str
    instance: str
    replication: Replication = attrs.field(factory=Replication)

    @property
    def holder(self) -> str:
        """``"<node>|<instance>"``: who holds a lease, in the owner key's value."""
        return f"{self.node_id}|{self.instance}"

    def session(self, session_id: str, part: str) -> str:
        """One key of a session (its id checked first), under the session's hash tag."""
        return self.keys.session(check_session_id(session_id), part)

    def guard(self, session_id: str) -> list[str]:
        """The owner and fence keys of a session: what every fenced script checks."""
        return self.keys.guard_keys(check_session_id(session_id))

    def node(self, node_id: str) -> str:
        """The heartbeat key of a node (expires unless the node beats)."""
        return f"{self.keys.prefix}node:{{{node_id}}}"

    @property
    def nodes(self) -> str:
        """The hash of every node that ever beat: node id -> time of its last beat."""
        return f"{self.keys.prefix}nodes"

    @property
    def owners(self) -> str:
        """The hash of owned sessions: session id -> the node that last took it."""
        return f"{self.keys.prefix}owners"

    @property
    def channel(self) -> str:
        """The pub/sub channel of the tenant's invalidations."""
        return f"{self.keys.prefix}events"

    def confirm(self, doing: str, *keys: str) -> None:
        """Return once the replicas the coordinator requires hold the writes to ``keys``;
        ``ReplicationError`` when too few do in time (``ctxflow.stores`` docs)."""
        if self.replication.replicas:
            confirm = self.replication.confirm
            self.call(doing, lambda: confirm(self.client, self.keys.prefix, doing, *keys))

    def call(self, doing: str, fn: Callable[[], T]) -> T:
        """Run one Redis call; a redis-py error comes out as ``StoreError`` naming ``doing``."""
        try:
            return fn()
        except REDIS_ERRORS as exc:
            raise StoreError(
                f"Redis {doing} failed for node {self.node_id!r}: {type(exc).__name__}: {exc}",
                rule="redis",
                operation=doing,
                tenant=self.keys.tenant,
            ) from exc
