"""Heartbeats and orphan claims: a node's two background threads, and who is alive.

The heartbeat thread sets the node key (TTL: the lease TTL) and renews every
held lease each ``beat_interval``. The claim thread looks each
``claim_interval`` for sessions in the owners index whose lease is gone and
takes them, so a dead node's sessions move within TTL + one claim interval.
The same pass takes the sessions another node handed to this one whose
announcement it missed (pub/sub is fire and forget): their owner key already
names this coordinator, so they move within one claim interval, not a TTL.

A node's heartbeat key holds its coordinator's instance id: a transfer to a
node goes to the instance that beat last under that name.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Container
from functools import partial

import attrs

from ctxflow.errors import StoreError
from ctxflow.persistence._redis.failures import REDIS_ERRORS
from ctxflow.sessions._ownership._link import Link, log, text

__all__ = ["Heartbeat", "Scan"]

# KEYS: node key.  ARGV: instance.  -> 1 when this instance's key went
_LEAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


@attrs.frozen(kw_only=True)
class Scan:
    """One look at the owners index: sessions nobody holds, and sessions handed to this
    coordinator that it does not hold yet (session id -> token)."""

    orphans: list[str]
    handed: dict[str, int]


@attrs.define(kw_only=True)
class Heartbeat:
    """A node's liveness in Redis and the threads that keep it and its leases alive.

    The threads call ``renew`` and ``claim`` until ``stop`` is set.
    """

    link: Link
    ttl_ms: int
    beat_interval: float
    claim_interval: float
    stop: threading.Event
    renew: Callable[[], object]
    claim: Callable[[], object]
    _threads: list[threading.Thread] = attrs.field(factory=list, init=False)

    def beat(self) -> None:
        """Mark this node alive for one TTL."""
        now = str(time.time())
        pipe = self.link.client.pipeline(transaction=False)
        pipe.set(self.link.node(self.link.node_id), self.link.instance, px=self.ttl_ms)
        pipe.hset(self.link.nodes, self.link.node_id, now)
        self.link.call("heartbeat", pipe.execute)

    def live_nodes(self) -> list[str]:
        """The nodes whose heartbeat key is alive, sorted."""
        nodes = self.link.call("nodes", lambda: self.link.client.hkeys(self.link.nodes))
        names = sorted(text(n) for n in nodes)
        if not names:
            return []
        pipe = self.link.client.pipeline(transaction=False)
        for name in names:
            pipe.exists(self.link.node(name))
        flags = self.link.call("nodes", pipe.execute)
        return [n for n, alive in zip(names, flags, strict=True) if alive]

    def instance(self, node_id: str) -> str | None:
        """The coordinator instance that beat last under ``node_id`` (None: not alive)."""
        value = self.link.call("nodes", lambda: self.link.client.get(self.link.node(node_id)))
        return None if value is None else text(value)

    def scan(self, held: Container[str]) -> Scan:
        """Indexed sessions not in ``held``: those whose lease is gone and whose data
        remains, and those whose owner key already names this coordinator.

        An indexed session with no data left (erased or expired) is dropped
        from the index: there is nothing to take over.
        """
        index = self.link.call("claim", lambda: self.link.client.hgetall(self.link.owners))
        candidates = [text(s) for s in index if text(s) not in held]
        if not candidates:
            return Scan(orphans=[], handed={})
        pipe = self.link.client.pipeline(transaction=False)
        for session_id in candidates:
            pipe.get(self.link.session(session_id, "owner"))
            pipe.exists(
                self.link.session(session_id, "order"), self.link.session(session_id, "state")
            )
        flags = self.link.call("claim", pipe.execute)
        mine = f"{self.link.holder}|"
        found: list[str] = []
        handed: dict[str, int] = {}
        for session_id, owner, stored in zip(candidates, flags[::2], flags[1::2], strict=True):
            if owner is not None:
                value = text(owner)
                if value.startswith(mine) and value[len(mine) :].isdigit():
                    handed[session_id] = int(value[len(mine) :])
                continue
            if stored:
                found.append(session_id)
                continue
            forget = partial(self.link.client.hdel, self.link.owners, session_id)
            self.link.call("claim (index)", forget)
        return Scan(orphans=found, handed=handed)

    def start(self) -> None:
        """Start the heartbeat and claim threads (the caller beats once first), again after
        a stop too."""
        if self._threads:
            return
        self.stop.clear()
        for loop, name in ((self._beat_loop, "heartbeat"), (self._claim_loop, "claim")):
            thread = threading.Thread(
                target=loop, name=f"ctxflow-{name}-{self.link.node_id}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    @property
    def running(self) -> bool:
        """True while the threads run (between :meth:`start` and :meth:`join`)."""
        return bool(self._threads)

    def join(self) -> None:
        """Wait for the threads to end (after the stop event is set)."""
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def leave(self) -> None:
        """Remove this node's heartbeat key and its entry in the nodes hash, unless another
        process of the same name beat since (best effort)."""
        key = self.link.node(self.link.node_id)
        with contextlib.suppress(*REDIS_ERRORS):
            if self.link.client.eval(_LEAVE, 1, key, self.link.instance):
                self.link.client.hdel(self.link.nodes, self.link.node_id)

    def _beat_loop(self) -> None:
        while not self.stop.wait(self.beat_interval):
            try:
                self.beat()
                self.renew()
            except StoreError as exc:
                log.warning("heartbeat_failed", node=self.link.node_id, error=str(exc))

    def _claim_loop(self) -> None:
        while not self.stop.wait(self.claim_interval):
            try:
                self.claim()
            except StoreError as exc:
                log.warning("claim_loop_failed", node=self.link.node_id, error=str(exc))
