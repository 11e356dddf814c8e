"""Checkpoint writes under a lease: the fenced put, the put in a fork, and :class:`FencedStore`,
the store view to give a ``Checkpointer``.

The owner and token are checked in the same Lua script as the write
(:meth:`RedisStore.put` with a ``fence``), so a paused or partitioned former
owner gets ``OwnershipLost``, never a write, and is never retried. What to do
about a stale parent is the caller's choice of method
(``SessionCoordinator.commit``, ``commit_with_retry``, ``commit_or_fork``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

import attrs

from ctxflow.errors import CheckpointError, OwnershipLost, SessionError
from ctxflow.persistence import CheckpointDraft, CheckpointRecord
from ctxflow.sessions._ownership._invalidation import Invalidations
from ctxflow.sessions._ownership._leases import Lease, LeaseTable
from ctxflow.stores import RedisStore

if TYPE_CHECKING:
    from ctxflow.sessions._ownership._coordinator import SessionCoordinator

__all__ = ["Commits", "FencedStore", "need_store"]

P = ParamSpec("P")
R = TypeVar("R")


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

        ``StaleCheckpoint`` if the latest checkpoint is not ``parent``;
        ``OwnershipLost`` (and the lease is dropped) if the lease is not current.
        """
        store = need_store(self.store)
        if draft.session_id != lease.session_id:
            raise SessionError(
                f"a draft must belong to the leased session {lease.session_id!r} "
                f"(got {draft.session_id!r})",
                rule="session_mismatch",
            )
        try:
            record = store.put(draft, expected_parent=parent, fence=lease.fence)
        except OwnershipLost:
            raise self.leases.lost(lease) from None
        self.invalidations.announce("checkpoint", lease.session_id, checkpoint_id=record.id)
        return record

    def latest(self, session_id: str) -> CheckpointRecord:
        """The latest checkpoint of a session, to rebuild a stale draft on."""
        return need_store(self.store).latest(session_id)

    def put_in_fork(
        self, lease: Lease, draft: CheckpointDraft, parent: str | None
    ) -> CheckpointRecord:
        """Fork the leased session at ``parent``, acquire the fork and write ``draft`` there."""
        if parent is None:
            raise CheckpointError(
                f"a fork of session {lease.session_id!r} needs a parent to fork at "
                f"(got expected_parent=None)",
                rule="fork_parent",
            )
        forked = need_store(self.store).fork(lease.session_id, parent)
        moved = attrs.evolve(draft, session_id=forked.session_id, parent_id=forked.id)
        return self.put(self.leases.acquire(forked.session_id), moved, forked.id)


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
    """A :class:`~ctxflow.stores.Store` view whose puts hold a lease (give it to a Checkpointer).

    Puts go through :meth:`SessionCoordinator.commit`; every other operation
    runs on the coordinator's store as it is, unfenced.
    """

    def __init__(self, coordinator: SessionCoordinator, lease: Lease) -> None:
        self.coordinator = coordinator
        self.lease = lease
        self.store = need_store(coordinator.store)

    def __repr__(self) -> str:
        return f"<FencedStore session={self.lease.session_id!r} token={self.lease.token}>"

    def put(self, draft: CheckpointDraft, *, expected_parent: str | None) -> CheckpointRecord:
        """Write a checkpoint only while the lease is current."""
        return self.coordinator.commit(self.lease, draft, expected_parent=expected_parent)

    sessions = _through(RedisStore.sessions)
    checkpoints = _through(RedisStore.checkpoints)
    latest = _through(RedisStore.latest)
    load = _through(RedisStore.load)
    fork = _through(RedisStore.fork)
    prune = _through(RedisStore.prune)
    erase = _through(RedisStore.erase)

    def close(self) -> None:
        """Nothing to release (the coordinator's store stays open)."""
