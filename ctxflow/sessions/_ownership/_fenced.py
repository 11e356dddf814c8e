"""Checkpoint writes under a lease: the fenced put, retention, erasure and fork, the put in a
fork, and :class:`FencedStore`, the store view to give a ``Checkpointer``.

Every write checks the lease first: locally (a lease this node already knows
it lost is refused without a round trip), then in Redis, in the same script
or transaction as the write (:class:`~ctxflow.stores.RedisStore` with a
``fence``). A paused or partitioned former owner therefore gets
``OwnershipLost``, never a write, and is never retried; the lease leaves the
node's table and ``on_lost`` hears of it. What to do about a stale parent is
the caller's choice of method (``SessionCoordinator.commit``,
``commit_with_retry``, ``commit_or_fork``); a lost lease is never a stale
parent.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar, Unpack

import attrs

from ctxflow.errors import CheckpointError, OwnershipLost, SessionError
from ctxflow.persistence import CheckpointDraft, CheckpointRecord, Retention
from ctxflow.sessions._ownership._invalidation import Invalidations
from ctxflow.sessions._ownership._leases import Lease, LeaseTable
from ctxflow.stores import RedisStore

if TYPE_CHECKING:
    from ctxflow.sessions._ownership._coordinator import SessionCoordinator

__all__ = ["Commits", "FencedStore", "need_store"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def need_store(store: RedisStore | None) -> RedisStore:
    """``store``, or the error of a coordinator made without one."""
    if store is None:
        raise SessionError(
            "a coordinator needs a RedisStore to commit checkpoints (got store=None)",
            rule="no_store",
        )
    return store


@attrs.define(kw_only=True)
class Commits:
    """Checkpoint writes that land when, and only when, the writer's lease is current."""

    store: RedisStore | None
    leases: LeaseTable
    invalidations: Invalidations

    def put(self, lease: Lease, draft: CheckpointDraft, parent: str | None) -> CheckpointRecord:
        """Write ``draft`` on ``parent`` while ``lease`` is current, and announce it.

        ``OwnershipLost`` (and the lease is forgotten) if the lease is not
        current, checked first; else ``StaleCheckpoint`` if the latest
        checkpoint is not ``parent``.
        """
        store = need_store(self.store)
        _same_session(lease, draft.session_id)
        record = self._fenced(
            lease, lambda: store.put(draft, expected_parent=parent, fence=lease.fence)
        )
        self.invalidations.announce("checkpoint", lease.session_id, checkpoint_id=record.id)
        return record

    def prune(self, lease: Lease, session_id: str, **retention: Unpack[Retention]) -> list[str]:
        """Retention of the leased session, only while ``lease`` is current."""
        store = need_store(self.store)
        _same_session(lease, session_id)
        return self._fenced(
            lease,
            lambda: store.prune(session_id, fence=lease.fence, **retention),
        )

    def erase(self, lease: Lease, session_id: str) -> None:
        """Erase the leased session, only while ``lease`` is current."""
        store = need_store(self.store)
        _same_session(lease, session_id)
        self._fenced(lease, lambda: store.erase(session_id, fence=lease.fence))

    def fork(
        self, lease: Lease, session_id: str, checkpoint_id: str, new_session_id: str | None
    ) -> CheckpointRecord:
        """Fork the leased session, only while ``lease`` is current (when the source is read)."""
        store = need_store(self.store)
        _same_session(lease, session_id)
        return self._fenced(
            lease,
            lambda: store.fork(
                session_id, checkpoint_id, new_session_id=new_session_id, fence=lease.fence
            ),
        )

    def latest(self, session_id: str) -> CheckpointRecord:
        """The latest checkpoint of a session, to rebuild a stale draft on."""
        return need_store(self.store).latest(session_id)

    def put_in_fork(
        self, lease: Lease, draft: CheckpointDraft, parent: str | None
    ) -> CheckpointRecord:
        """Fork the leased session at ``parent`` (while the lease is current), acquire the
        fork and write ``draft`` there."""
        if parent is None:
            raise CheckpointError(
                f"a fork of session {lease.session_id!r} needs a parent to fork at "
                f"(got expected_parent=None)",
                rule="fork_parent",
            )
        forked = self.fork(lease, lease.session_id, parent, None)
        moved = attrs.evolve(draft, session_id=forked.session_id, parent_id=forked.id)
        return self.put(self.leases.acquire(forked.session_id), moved, forked.id)

    def _fenced(self, lease: Lease, write: Callable[[], T]) -> T:
        """Run ``write`` if this node still holds ``lease``; forget the lease on
        ``OwnershipLost``."""
        self.leases.check(lease)
        try:
            return write()
        except OwnershipLost:
            raise self.leases.lost(lease) from None


def _same_session(lease: Lease, session_id: str) -> None:
    if session_id != lease.session_id:
        raise SessionError(
            f"a fenced write must go to the leased session {lease.session_id!r} "
            f"(got {session_id!r})",
            rule="session_mismatch",
            session_id=session_id,
        )


def _through(
    method: Callable[Concatenate[RedisStore, P], R],
) -> Callable[Concatenate[FencedStore, P], R]:
    """A :class:`FencedStore` method that runs the wrapped store's method of the same name."""
    name = method.__name__

    @functools.wraps(method)
    def call(self: FencedStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        bound: Callable[P, R] = getattr(self.store, name)
        return bound(*args, **kwargs)

    return call


class FencedStore:
    """A :class:`~ctxflow.stores.Store` view whose writes hold a lease (give it to a
    Checkpointer).

    ``put``, ``prune``, ``erase`` and ``fork`` write only while the lease is
    current, and only to the leased session (``SessionError`` for another
    one); reads run on the coordinator's store as they are.
    """

    def __init__(self, coordinator: SessionCoordinator, lease: Lease) -> None:
        self.coordinator = coordinator
        self.lease = lease
        self.store = need_store(coordinator.store)
        self._commits = coordinator._commits

    def __repr__(self) -> str:
        return f"<FencedStore session={self.lease.session_id!r} token={self.lease.token}>"

    def put(self, draft: CheckpointDraft, *, expected_parent: str | None) -> CheckpointRecord:
        """Write a checkpoint only while the lease is current."""
        return self._commits.put(self.lease, draft, expected_parent)

    def prune(self, session_id: str, **retention: Unpack[Retention]) -> list[str]:
        """Delete old checkpoints of the leased session only while the lease is current."""
        return self._commits.prune(self.lease, session_id, **retention)

    def erase(self, session_id: str) -> None:
        """Delete the leased session only while the lease is current."""
        self._commits.erase(self.lease, session_id)

    def fork(
        self, session_id: str, checkpoint_id: str, *, new_session_id: str | None = None
    ) -> CheckpointRecord:
        """Start a new session from a checkpoint of the leased session only while the lease
        is current (the new session is not acquired)."""
        return self._commits.fork(self.lease, session_id, checkpoint_id, new_session_id)

    sessions = _through(RedisStore.sessions)
    checkpoints = _through(RedisStore.checkpoints)
    latest = _through(RedisStore.latest)
    load = _through(RedisStore.load)

    def close(self) -> None:
        """Nothing to release (the coordinator's store stays open)."""
