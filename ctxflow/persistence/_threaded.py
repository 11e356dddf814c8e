"""An async store over any sync store, one worker thread per call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar, Unpack

from ctxflow.persistence._model import CheckpointDraft, CheckpointRecord, Snapshot
from ctxflow.persistence._protocol import Retention, Store

__all__ = ["ThreadedAsyncStore"]

T = TypeVar("T")


class ThreadedAsyncStore:
    """An :class:`AsyncStore` over any sync store: each call runs in ``asyncio.to_thread``.

    The sync store must tolerate calls from worker threads (the bundled ones
    do: the SQLite store serialises its connection with a lock). Calls are not
    cancelled mid-write: a cancelled await still lets the thread finish.
    """

    def __init__(self, store: Store) -> None:
        self.sync = store

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def put(self, draft: CheckpointDraft, *, expected_parent: str | None) -> CheckpointRecord:
        """See :meth:`Store.put`."""
        return await self._run(self.sync.put, draft, expected_parent=expected_parent)

    async def sessions(self) -> list[str]:
        """See :meth:`Store.sessions`."""
        return await self._run(self.sync.sessions)

    async def checkpoints(self, session_id: str) -> list[CheckpointRecord]:
        """See :meth:`Store.checkpoints`."""
        return await self._run(self.sync.checkpoints, session_id)

    async def latest(self, session_id: str) -> CheckpointRecord:
        """See :meth:`Store.latest`."""
        return await self._run(self.sync.latest, session_id)

    async def load(self, session_id: str, checkpoint_id: str | None = None) -> Snapshot:
        """See :meth:`Store.load`."""
        return await self._run(self.sync.load, session_id, checkpoint_id)

    async def fork(
        self, session_id: str, checkpoint_id: str, *, new_session_id: str | None = None
    ) -> CheckpointRecord:
        """See :meth:`Store.fork`."""
        return await self._run(
            self.sync.fork, session_id, checkpoint_id, new_session_id=new_session_id
        )

    async def prune(self, session_id: str, **retention: Unpack[Retention]) -> list[str]:
        """See :meth:`Store.prune`."""
        return await self._run(self.sync.prune, session_id, **retention)

    async def erase(self, session_id: str) -> None:
        """See :meth:`Store.erase`."""
        await self._run(self.sync.erase, session_id)

    async def close(self) -> None:
        """See :meth:`Store.close`."""
        await self._run(self.sync.close)
