"""Listener hooks: plain objects with ``on_transition``, ``on_checkpoint`` or ``on_compression``.

No base class is needed: the engine calls a hook only when the object has
it. Hooks run after an event has fully landed (never inside the chart's
microstep), so a listener sees a consistent engine and cannot half-apply an
event. An exception in a hook propagates to the caller of ``send``; the event
itself has already been applied and recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from ctxflow._log import get_logger
from ctxflow.engine._records import StepRecord

__all__ = ["CompressionListener", "Listeners", "TransitionListener"]

log = get_logger("ctxflow.engine")


class TransitionListener(Protocol):
    """Called with the record of every applied event."""

    def on_transition(self, record: StepRecord) -> None:
        """React to one applied event."""
        ...


class CompressionListener(Protocol):
    """Called with the report each time the compression guard ran the ladder."""

    def on_compression(self, report: Any, *, phase: str) -> None:
        """React to one compression run."""
        ...


class Listeners:
    """The listeners of one engine, with each hook resolved once."""

    def __init__(self, listeners: Iterable[object] = ()) -> None:
        self._all: list[object] = []
        self.transition: list[Any] = []
        self.checkpoint: list[Any] = []
        self.compression: list[Any] = []
        for listener in listeners:
            self.add(listener)

    def add(self, listener: object) -> None:
        """Register ``listener`` for the hooks it has."""
        self._all.append(listener)
        for hook, bucket in (
            ("on_transition", self.transition),
            ("on_checkpoint", self.checkpoint),
            ("on_compression", self.compression),
        ):
            fn = getattr(listener, hook, None)
            if callable(fn):
                bucket.append(fn)

    def announce(self, record: StepRecord, *, phase: str, session: str) -> None:
        """Log a phase change and call the transition (and compression) hooks with ``record``."""
        if record.phase_changed:
            log.info(
                "transition",
                trigger=record.trigger,
                source=record.source,
                target=record.target,
                tokens=record.tokens_after,
                checkpoint=record.checkpoint_id,
                compressed=record.compressed,
                session=session,
                duration_ms=round(record.duration_ms, 3),
            )
        for hook in self.transition:
            hook(record)
        if record.compression is not None:
            for hook in self.compression:
                hook(record.compression, phase=phase)

    def __iter__(self) -> Any:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)
