"""Invalidations: changes a node announces on the tenant's pub/sub channel, and the listener.

Fire and forget: a node that misses a message still cannot write stale data
(fencing and the stale-parent check refuse it); it only serves an old cached
copy longer.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import attrs
import msgpack

from ctxflow.persistence._redis.failures import REDIS_ERRORS
from ctxflow.sessions._ownership._link import Link, log

__all__ = ["Invalidation", "Invalidations"]


@attrs.frozen(kw_only=True)
class Invalidation:
    """A change another node announced: drop or refresh the cached copy of ``session_id``.

    ``kind`` is ``"record"`` (the versioned record moved to ``version``),
    ``"checkpoint"`` (a checkpoint ``checkpoint_id`` was committed),
    ``"claimed"``, ``"transferred"`` (to ``target``) or ``"released"``.
    ``instance`` is the announcing coordinator's own id (see ``SessionCoordinator``).
    """

    kind: str
    session_id: str
    node_id: str
    target: str | None = None
    version: int | None = None
    checkpoint_id: str | None = None
    instance: str | None = None


@attrs.define(kw_only=True)
class Invalidations:
    """The tenant's invalidation channel as one node sees it: publish, and hear the others.

    Other nodes' events go to ``handle`` on the listener's thread; a listener
    failure is logged unless ``stop`` is set.
    """

    link: Link
    handle: Callable[[Invalidation], None]
    stop: threading.Event
    _pubsub: Any = attrs.field(default=None, init=False)
    _listener: Any = attrs.field(default=None, init=False)

    def publish(self, event: Invalidation) -> None:
        """Announce ``event`` (best effort: a Redis failure is not an error here)."""
        payload = msgpack.packb(attrs.asdict(event))
        with contextlib.suppress(*REDIS_ERRORS):
            self.link.client.publish(self.link.channel, payload)

    def announce(
        self,
        kind: str,
        session_id: str,
        *,
        target: str | None = None,
        version: int | None = None,
        checkpoint_id: str | None = None,
    ) -> None:
        """Publish an invalidation of ``kind`` from this node."""
        event = Invalidation(
            kind=kind,
            session_id=session_id,
            node_id=self.link.node_id,
            target=target,
            version=version,
            checkpoint_id=checkpoint_id,
            instance=self.link.instance,
        )
        self.publish(event)

    def listen(self) -> None:
        """Subscribe and hand every other node's event to ``handle`` on a background thread."""
        self._pubsub = self.link.client.pubsub(ignore_subscribe_messages=True)
        subscribe = self._pubsub.subscribe
        self.link.call("subscribe", lambda: subscribe(**{self.link.channel: self._message}))
        self._listener = self._pubsub.run_in_thread(
            sleep_time=0.05, daemon=True, exception_handler=self._failed
        )

    def close(self) -> None:
        """Stop the listener thread and close the subscription."""
        if self._listener is not None:
            self._listener.stop()
            self._listener.join()
            self._listener = None
        if self._pubsub is not None:
            self._pubsub.close()
            self._pubsub = None

    def _message(self, message: dict[str, Any]) -> None:
        try:
            event = Invalidation(**msgpack.unpackb(message["data"], raw=False))
        except (TypeError, ValueError, msgpack.UnpackException):
            log.warning(
                "malformed_invalidation_ignored", node=self.link.node_id, channel=self.link.channel
            )
            return
        # Another process of this node's name is another node here.
        if event.node_id != self.link.node_id or event.instance != self.link.instance:
            self.handle(event)

    def _failed(self, exc: BaseException, pubsub: Any, thread: Any) -> None:
        if not self.stop.is_set():
            log.warning("invalidation_listener_failed", node=self.link.node_id, error=str(exc))
        thread.stop()
