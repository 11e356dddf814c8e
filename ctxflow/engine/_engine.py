"""The Engine and the AsyncEngine: thin drivers over one core.

Every operation — ``send``, ``checkpoint``, ``restore``, ``from_checkpoint``
— is written once in :class:`~ctxflow.engine._core.Core` as a generator of
effects. A driver runs it under the engine's lock and carries each effect
out: the sync :class:`Engine` calls the collaborator (and refuses an
awaitable with a typed error), the :class:`AsyncEngine` awaits it. A failure
is thrown back into the core, which rolls back where it knows what to undo.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Generic, Self, TypeVar

from ctxflow import errors
from ctxflow.engine._core import Core
from ctxflow.engine._effects import Effect, Steps
from ctxflow.engine._records import StepRecord

__all__ = ["AsyncEngine", "Engine"]

T = TypeVar("T")


class _Run(Generic[T]):
    """One operation being driven: sends each result (or throws each failure) back in."""

    def __init__(self, steps: Steps[T]) -> None:
        self.steps = steps
        self.result: object = None
        self.failure: Exception | None = None
        self.value: T

    def next(self) -> Effect | None:
        """The next effect to carry out; None once the operation returned its value."""
        failure, self.failure = self.failure, None
        try:
            if failure is not None:
                return self.steps.throw(failure)
            return self.steps.send(self.result)
        except StopIteration as done:
            self.value = done.value
            return None


class Engine(Core):
    """The synchronous engine: ``send`` applies an event and returns its step record."""

    def send(self, event: str, **kwargs: object) -> StepRecord:
        """Apply ``event``; typed errors leave everything as it was."""
        with self.lock:
            return self._drive(self._send_steps(event, kwargs))

    def checkpoint(self, trigger: str = "manual") -> str:
        """Take a checkpoint now; return its id."""
        with self.lock:
            return self._drive(self._checkpoint_steps(trigger))

    def restore(self, checkpoint_id: str) -> None:
        """Restore messages, layered state and chart configuration (with history)."""
        with self.lock:
            self._drive(self._restore_steps(checkpoint_id))

    @classmethod
    def from_checkpoint(cls, checkpoint_id: str | None = None, **kwargs: object) -> Self:
        """A new engine (same keyword arguments as the constructor) opened at a checkpoint.

        Without ``checkpoint_id``, at the latest checkpoint of the session
        ``session_id`` names. The engine takes the session's data and version
        with it, and is not dirty.
        """
        _check_open(kwargs)
        engine = cls(**kwargs)  # type: ignore[arg-type]
        with engine.lock:
            engine._drive(engine._open_steps(checkpoint_id))
        return engine

    def _drive(self, steps: Steps[T]) -> T:
        """Carry out each effect ``steps`` yields, synchronously."""
        run = _Run(steps)
        while (effect := run.next()) is not None:
            try:
                result = self._perform(effect)
                if inspect.isawaitable(result):
                    if inspect.iscoroutine(result):
                        result.close()
                    raise errors.PolicyError(
                        f"the sync Engine needs a sync {effect.seam} (got an awaitable); "
                        "use AsyncEngine",
                        rule="async_collaborator",
                    )
                run.result = result
            except Exception as exc:
                run.failure = exc
        return run.value


class AsyncEngine(Core):
    """The asynchronous engine: ``await send(...)``; collaborators may be sync or async."""

    _async = True

    async def send(self, event: str, **kwargs: object) -> StepRecord:
        """Apply ``event``; typed errors leave everything as it was."""
        with self.lock:
            return await self._drive(self._send_steps(event, kwargs))

    async def checkpoint(self, trigger: str = "manual") -> str:
        """Take a checkpoint now; return its id."""
        with self.lock:
            return await self._drive(self._checkpoint_steps(trigger))

    async def restore(self, checkpoint_id: str) -> None:
        """Restore messages, layered state and chart configuration (with history)."""
        with self.lock:
            await self._drive(self._restore_steps(checkpoint_id))

    @classmethod
    async def from_checkpoint(cls, checkpoint_id: str | None = None, **kwargs: object) -> Self:
        """A new engine (same keyword arguments as the constructor) opened at a checkpoint.

        Without ``checkpoint_id``, at the latest checkpoint of the session
        ``session_id`` names.
        """
        _check_open(kwargs)
        engine = cls(**kwargs)  # type: ignore[arg-type]
        with engine.lock:
            await engine._drive(engine._open_steps(checkpoint_id))
        return engine

    async def _drive(self, steps: Steps[T]) -> T:
        """Carry out each effect ``steps`` yields, awaiting async collaborators."""
        run = _Run(steps)
        while (effect := run.next()) is not None:
            try:
                result = self._perform(effect)
                run.result = await result if inspect.isawaitable(result) else result
            except Exception as exc:
                run.failure = exc
        return run.value


def _check_open(kwargs: Mapping[str, object]) -> None:
    """A store's checkpoint belongs to a session: opening one needs its ``session_id``."""
    if kwargs.get("store") is not None and not kwargs.get("session_id"):
        raise errors.CheckpointError(
            "from_checkpoint with a 'store' needs the 'session_id' whose checkpoint to open "
            "(got none)",
            rule="session_id_required",
        )
