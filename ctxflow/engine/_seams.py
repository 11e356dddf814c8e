"""The engine's seams: the collaborators it is given, as protocols with typed results.

Each seam has a real default (the engine's own method over ``ctxflow.budget``,
``ctxflow.compression`` and the persistence core); tests and applications
pass their own. A seam may be sync or async: the sync engine refuses an
awaitable with a typed error, the async engine awaits it.

``StoreCheckpointer`` is the engine's one checkpointer: the persistence
core's ``Checkpointer`` over any store (the in-memory store when the engine
is given none), with reads that never fork the session.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Protocol

from ctxflow import errors, persistence
from ctxflow.budget import Allocation, Window
from ctxflow.compression import CompressionResult, Ladder, LadderPolicy
from ctxflow.context import AgentContext, SessionInfo
from ctxflow.context import from_checkpoint as context_from_checkpoint
from ctxflow.engine._charts import PhaseConfig
from ctxflow.layers import LayeredState
from ctxflow.model import Conversation
from ctxflow.persistence import BaseStore, CheckpointRecord, Restored, Store
from ctxflow.protocols import Measure

__all__ = [
    "AllocationLike",
    "Allocator",
    "CompressionGuard",
    "Consolidator",
    "StoreCheckpointer",
    "SupportsCheckpoints",
    "WindowBuilder",
    "check_phase_config",
    "checked_allocation",
    "checked_state",
    "checkpoint_id_of",
    "layers_of",
    "unpack_restored",
]

#: What an allocator gives: an ``Allocation``, or plain layer → tokens integers.
AllocationLike = Allocation | Mapping[str, int]


def layers_of(allocation: AllocationLike | None) -> dict[str, int]:
    """Layer name → tokens of an allocation (empty for None)."""
    if allocation is None:
        return {}
    layers = allocation.layers if isinstance(allocation, Allocation) else allocation
    return {str(getattr(k, "value", k)): int(v) for k, v in dict(layers).items()}


class Allocator(Protocol):
    """Shares the input budget over layers for a phase (e.g. ``ctxflow.budget.plan_budget``)."""

    def __call__(
        self, state: LayeredState, *, phase: str, policy: object
    ) -> AllocationLike | Awaitable[AllocationLike]:
        """The allocation of ``phase`` (``policy``: the phase's ``budget_policy``)."""
        ...


class WindowBuilder(Protocol):
    """Builds the window for the next model call (e.g. ``ctxflow.budget.build_window``)."""

    def __call__(
        self, conversation: Conversation, state: LayeredState, *, phase: str, policy: object
    ) -> Window:
        """The window for one call in ``phase``."""
        ...


class CompressionGuard(Protocol):
    """Keeps the effective conversation under the guard threshold of an allocation."""

    def __call__(
        self,
        conversation: Conversation,
        state: LayeredState,
        allocation: AllocationLike,
        *,
        phase: str,
        policy: object,
    ) -> CompressionResult | Awaitable[CompressionResult | None] | None:
        """None when nothing had to be done; else the run's new state and report.

        Raises ``BudgetExceeded`` when the hard limit cannot be met, changing nothing.
        """
        ...


class Consolidator(Protocol):
    """Consolidates memory on entering a phase that asks for it (e.g. reflection)."""

    def __call__(
        self, conversation: Conversation, state: LayeredState
    ) -> LayeredState | Awaitable[LayeredState]:
        """The layered state with memory consolidated."""
        ...


class SupportsCheckpoints(Protocol):
    """Captures the conversation, plain state and chart; gives them back."""

    def capture(
        self,
        conversation: Conversation,
        *,
        state: Mapping[str, object],
        chart: Mapping[str, object],
        phase: str,
        trigger: str,
    ) -> CheckpointRecord | Awaitable[CheckpointRecord]:
        """Write one checkpoint; return its record."""
        ...

    def restore(
        self, checkpoint_id: str | None, *, measure: Measure | None = None
    ) -> Restored | Awaitable[Restored]:
        """The checkpoint ``checkpoint_id``, or the latest for None (``CheckpointNotFound``)."""
        ...


class StoreCheckpointer:
    """The engine's checkpointer over a store: ``ctxflow.persistence.Checkpointer`` for writes.

    Reads (``restore``) are lazy: hidden messages stay in the store until read
    (the store must stay open while the engine runs). With ``page_hidden`` (by
    default on for a store whose bodies live outside the process), every capture
    pages the messages it finds hidden out the same way, so resident memory
    follows the view. Reads load a checkpoint's data without moving the writer, so
    restoring an older checkpoint — ``recover`` does — never forks the session:
    the next write rebases the writer on the session's latest checkpoint and
    continues from there, recording the restored content (a full manifest when
    the log does not extend the last one). A write while another writer moved
    the session on still raises ``StaleCheckpoint``.
    """

    def __init__(
        self,
        store: Store,
        session_id: str | None = None,
        *,
        measure: Measure | None = None,
        page_hidden: bool | None = None,
    ) -> None:
        self.store = store
        if page_hidden is None:
            # Paging out saves memory only where bodies live outside the process.
            page_hidden = isinstance(store, BaseStore) and not store.in_process
        # Checkpoints carry the conversation's counts (under its measure's key); with
        # that measure as the default, a restore takes them instead of counting again.
        self.writer = persistence.Checkpointer(
            store, session_id, measure=measure, page_hidden=page_hidden
        )
        self._rebase = False

    @property
    def session_id(self) -> str:
        """The session this checkpointer writes."""
        return self.writer.session_id

    def capture(
        self,
        conversation: Conversation,
        *,
        state: Mapping[str, object],
        chart: Mapping[str, object],
        phase: str,
        trigger: str,
    ) -> CheckpointRecord:
        """Write one checkpoint; return its record."""
        if self._rebase:
            self.writer.restore(lazy=True)
            self._rebase = False
        return self.writer.capture(
            conversation, state=state, chart=chart, phase=phase, trigger=trigger
        )

    def restore(self, checkpoint_id: str | None, *, measure: Measure | None = None) -> Restored:
        """Load a checkpoint of this session (conversation, state, chart, record).

        None loads the session's latest checkpoint, and the writer continues from it.
        """
        if checkpoint_id is None:
            self._rebase = False
            return self.writer.restore(measure=measure, lazy=True)
        restored = persistence.restore(
            self.store, self.session_id, checkpoint_id, measure=measure, lazy=True
        )
        self._rebase = restored.record.id != self.writer.last_id
        return restored


# -- what the engine checks of its collaborators' results ---------------------


def check_phase_config(phase: str, config: object) -> None:
    if not isinstance(config, PhaseConfig):
        raise errors.PolicyError(
            f"phase configurations must be PhaseConfig values "
            f"(got {type(config).__name__} for {phase!r})",
            rule="phase_config",
            phase=phase,
        )
    policy = config.compression_policy
    if policy is not None and not isinstance(policy, LadderPolicy | Ladder):
        raise errors.PolicyError(
            f"a phase's compression policy must be a LadderPolicy or a Ladder "
            f"(got {type(policy).__name__} for {phase!r})",
            rule="phase_config",
            phase=phase,
        )


def checked_state(value: object, seam: str) -> LayeredState:
    if not isinstance(value, LayeredState):
        raise errors.PolicyError(
            f"the {seam} must return a LayeredState (got {type(value).__name__})",
            rule="seam_result",
        )
    return value


def checked_allocation(value: object) -> AllocationLike:
    if isinstance(value, Allocation | Mapping):
        return value
    raise errors.PolicyError(
        f"an allocator must return an Allocation or a mapping of layer to tokens "
        f"(got {type(value).__name__})",
        rule="seam_result",
    )


def checkpoint_id_of(written: object) -> str:
    if isinstance(written, CheckpointRecord):
        return written.id
    raise errors.PolicyError(
        f"a checkpointer's capture must return a CheckpointRecord (got {type(written).__name__})",
        rule="seam_result",
    )


def unpack_restored(
    restored: object, checkpoint_id: str, chart_name: str
) -> tuple[AgentContext, SessionInfo]:
    """The context and session info a checkpointer gave back, checked against a chart."""
    if not isinstance(restored, Restored):
        raise errors.CorruptCheckpoint(
            f"checkpoint {checkpoint_id!r} must give back a conversation, a state and a "
            f"chart (got {type(restored).__name__})",
            rule="checkpoint_snapshot",
            checkpoint_id=checkpoint_id,
        )
    chart = restored.chart
    if chart.get("chart", "") not in ("", chart_name) or (
        chart.get("chart") and "configuration" not in chart
    ):
        raise errors.CheckpointError(
            f"checkpoint {checkpoint_id!r} must hold a configuration of chart "
            f"{chart_name!r} (got {chart.get('chart')!r})",
            rule="chart_mismatch",
            checkpoint_id=checkpoint_id,
        )
    try:
        return context_from_checkpoint(restored.conversation, restored.state, chart)
    except errors.FormatError as exc:
        raise errors.CorruptCheckpoint(
            f"checkpoint {checkpoint_id!r} holds a malformed context: {exc}",
            rule="checkpoint_snapshot",
            checkpoint_id=checkpoint_id,
        ) from None
