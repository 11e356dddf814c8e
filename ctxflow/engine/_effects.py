"""The effects an event asks for, as values: one core yields them, a driver carries them out.

Applying an event, restoring or capturing a checkpoint is written once, as a
generator (``Steps``) in the engine's core. Where it needs a collaborator it
yields an effect and is sent the result back; a failure is thrown back into
it, so rollback lives in one place. The sync driver calls each collaborator
and refuses an awaitable; the async driver awaits one. Nothing else differs
between :class:`~ctxflow.engine.Engine` and :class:`~ctxflow.engine.AsyncEngine`.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import TypeVar

import attrs

from ctxflow.compression import CompressionResult
from ctxflow.engine._machine import Intents, MachineSnapshot
from ctxflow.engine._records import StepRecord
from ctxflow.engine._seams import AllocationLike, layers_of
from ctxflow.layers import LayeredState
from ctxflow.model import Conversation

__all__ = [
    "Allocate",
    "Capture",
    "Compress",
    "Consolidate",
    "Effect",
    "Pending",
    "Restore",
    "Steps",
]

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class Restore:
    """Load a checkpoint (None: the session's latest) through the checkpointer."""

    checkpoint_id: str | None
    seam = "checkpointer"


@attrs.frozen(kw_only=True)
class Consolidate:
    """Consolidate memory on entering a phase that asks for it."""

    conversation: Conversation
    state: LayeredState
    seam = "consolidator"


@attrs.frozen(kw_only=True)
class Allocate:
    """Share the input budget over layers for the phase being entered."""

    state: LayeredState
    phase: str
    policy: object
    seam = "allocator"


@attrs.frozen(kw_only=True)
class Compress:
    """Run the compression guard against the phase's allocation."""

    conversation: Conversation
    state: LayeredState
    allocation: AllocationLike
    phase: str
    policy: object
    seam = "compressor"


@attrs.frozen(kw_only=True)
class Capture:
    """Write a checkpoint of the (staged) context."""

    conversation: Conversation
    state: Mapping[str, object]
    chart: Mapping[str, object]
    phase: str
    trigger: str
    seam = "checkpointer"


Effect = Restore | Consolidate | Allocate | Compress | Capture

#: A core operation: yields effects, is sent their results, returns its value.
Steps = Generator[Effect, object, T]


@attrs.define
class Pending:
    """An event being applied: staged values, committed only when every effect succeeded."""

    trigger: str
    source: str
    started: float
    before: MachineSnapshot
    state: LayeredState
    conversation: Conversation
    log_length: int
    epoch: int
    mark: int = 0  # the conversation's change-journal mark when the event began
    intents: Intents = attrs.field(factory=Intents)
    target: str = ""
    configuration: tuple[str, ...] = ()
    allocation: AllocationLike | None = None
    restored_from: str | None = None
    compression: CompressionResult | None = None
    #: The event's audit payload, built once (its checkpoint and its commit both log it).
    payload: dict[str, object] | None = None
    #: The event's telemetry span (None while telemetry is off).
    span: object = None

    def record(
        self,
        *,
        index: int,
        allocation_before: AllocationLike | None,
        tokens_before: int,
        tokens_after: int,
        checkpoint: tuple[str, str] | None,
        now: float,
    ) -> StepRecord:
        """The record of this event once it landed (its allocation is the engine's now)."""
        before = layers_of(allocation_before)
        unchanged = allocation_before is self.allocation
        return StepRecord(
            index=index,
            trigger=self.trigger,
            source=self.source,
            target=self.target,
            phase_changed=self.target != self.source,
            configuration=self.configuration,
            allocation_before=before,
            allocation_after=before if unchanged else layers_of(self.allocation),
            checkpoint_id=checkpoint[0] if checkpoint else None,
            checkpoint_trigger=checkpoint[1] if checkpoint else None,
            compression=self.compression.report if self.compression is not None else None,
            consolidated=self.intents.consolidate,
            restored_from=self.restored_from,
            tokens_before=tokens_before,
            tokens_after=tokens_after,
            duration_ms=(now - self.started) * 1000,
        )
