"""The store protocols, sync and async: what the checkpointer and the engine need of a store.

A store holds checkpoints of sessions. Each session is a linear chain: a put
names the parent it was based on (``expected_parent``) and is refused with
:class:`~ctxflow.errors.StaleCheckpoint` when that is not the session's
latest checkpoint, so two writers never fork a session silently. Forking is
explicit (:meth:`Store.fork`) and makes a new session.

Bodies are shared by content hash: a body is deleted (by retention or erasure)
only when no remaining manifest record references it. Retention keeps every
remaining checkpoint loadable.

This module is the bottom of :mod:`ctxflow.persistence`: it imports the
checkpoint model and nothing else of the package, so anything above may
depend on it without a cycle.
"""

from __future__ import annotations

from typing import Protocol, TypedDict, Unpack, runtime_checkable

from ctxflow.persistence._model import CheckpointDraft, CheckpointRecord, Snapshot

__all__ = ["AsyncStore", "Retention", "Store"]


class Retention(TypedDict, total=False):
    """Which old checkpoints ``prune`` deletes (keyword arguments; none given deletes none).

    ``keep_last``: keep the newest that many; ``max_age``: delete those older
    than that many seconds before ``now`` (default: the current time).
    """

    keep_last: int | None
    max_age: float | None
    now: float | None


@runtime_checkable
class Store(Protocol):
    """Where checkpoints live: put, list, load, fork, retention and erasure."""

    def put(self, draft: CheckpointDraft, *, expected_parent: str | None) -> CheckpointRecord:
        """Write one checkpoint atomically; ``StaleCheckpoint`` if the latest is not
        ``expected_parent`` (None: the session must not exist yet)."""
        ...

    def sessions(self) -> list[str]:
        """Every session id in the store, oldest first."""
        ...

    def checkpoints(self, session_id: str) -> list[CheckpointRecord]:
        """A session's checkpoints, oldest first; ``CheckpointNotFound`` for an unknown one."""
        ...

    def latest(self, session_id: str) -> CheckpointRecord:
        """The newest checkpoint of a session; ``CheckpointNotFound`` for an unknown one."""
        ...

    def load(self, session_id: str, checkpoint_id: str | None = None) -> Snapshot:
        """A checkpoint's full manifest and bodies (the latest when no id is given)."""
        ...

    def fork(
        self, session_id: str, checkpoint_id: str, *, new_session_id: str | None = None
    ) -> CheckpointRecord:
        """Start a new session whose first checkpoint equals the given one."""
        ...

    def prune(self, session_id: str, **retention: Unpack[Retention]) -> list[str]:
        """Delete old checkpoints (see :class:`Retention`); the latest always stays.
        Returns the deleted ids."""
        ...

    def erase(self, session_id: str) -> None:
        """Delete a whole session, and its bodies that no other session references."""
        ...

    def close(self) -> None:
        """Release the backend's resources."""
        ...


@runtime_checkable
class AsyncStore(Protocol):
    """The async form of :class:`Store` (same operations, awaited)."""

    async def put(self, draft: CheckpointDraft, *, expected_parent: str | None) -> CheckpointRecord:
        """See :meth:`Store.put`."""
        ...

    async def sessions(self) -> list[str]:
        """See :meth:`Store.sessions`."""
        ...

    async def checkpoints(self, session_id: str) -> list[CheckpointRecord]:
        """See :meth:`Store.checkpoints`."""
        ...

    async def latest(self, session_id: str) -> CheckpointRecord:
        """See :meth:`Store.latest`."""
        ...

    async def load(self, session_id: str, checkpoint_id: str | None = None) -> Snapshot:
        """See :meth:`Store.load`."""
        ...

    async def fork(
        self, session_id: str, checkpoint_id: str, *, new_session_id: str | None = None
    ) -> CheckpointRecord:
        """See :meth:`Store.fork`."""
        ...

    async def prune(self, session_id: str, **retention: Unpack[Retention]) -> list[str]:
        """See :meth:`Store.prune`."""
        ...

    async def erase(self, session_id: str) -> None:
        """See :meth:`Store.erase`."""
        ...

    async def close(self) -> None:
        """See :meth:`Store.close`."""
        ...
