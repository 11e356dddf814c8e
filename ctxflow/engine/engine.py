"""The Engine: an agent's context driven by a statechart.

The engine holds the conversation, the layered state (frozen; the engine
swaps it), the model profile, the chart machine and the policies. Agent code
sends phase events; the engine applies each one as a unit:

1. check the event and its arguments (unknown name, wrong keywords, not
   allowed in this phase → typed error, nothing changed);
2. run the chart's microstep (python-statemachine, strict: ``catch_errors_as_events``
   is off, so an exception in a guard or action surfaces here as
   :class:`~ctxflow.errors.EventError` with the original as ``__cause__``);
3. on a phase change: reallocate the budget for the new phase and model and
   project the phase's tool set; entering a state with ``consolidate_memory``
   flushes memory; ``restore_last_good`` restores the latest good checkpoint;
4. run the compression guard against the (new) phase's allocation — when the
   hard limit cannot be met it raises :class:`~ctxflow.errors.BudgetExceeded`
   and the event is rolled back: same phase, same configuration and history,
   same layered state;
5. commit, take a checkpoint (every phase change; on ``step`` when the policy
   says so), keep a :class:`~ctxflow.engine.records.StepRecord`, log it, and
   call the listeners.

The collaborators are small seams with real defaults: ``allocator``
(``ctxflow.budget.plan_budget``), ``window_builder`` (``ctxflow.budget.build_window``),
``checkpointer`` (``ctxflow.checkpoints.Checkpointer`` over the ``store`` given,
else in process memory) and ``checkpoint_policy`` (``ctxflow.checkpoints.CheckpointPolicy``);
``compressor`` (the phase's ``ctxflow.compression.Ladder``: guard, then run to
target) and ``consolidator`` (decisions and constraints flushed into semantic
memory on entering ``reflection``). Chart callbacks never
do the work themselves: a chart action only marks an intent that the engine
carries out after the microstep, so the chart machine stays synchronous and
:class:`AsyncEngine` can await async collaborators with the same chart.

Gotcha: restoring a chart needs the configuration *and* the history values
(as state ids). Setting the configuration alone loses the history, and a later
``resume`` would land nowhere.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

import attrs
from statemachine.exceptions import TransitionNotAllowed
from statemachine.orderedset import OrderedSet

from ctxflow import checkpoints, errors
from ctxflow._critical import CriticalLock
from ctxflow._log import get_logger
from ctxflow.budget import (
    DEFAULT_POLICY,
    Allocation,
    Window,
    build_window,
    plan_budget,
    window_measure,
)
from ctxflow.checkpoints import CheckpointPolicy, new_session_id
from ctxflow.compression import (
    CompressionReport,
    Ladder,
    LadderPolicy,
    extract_facts,
    fixed_tokens,
    undo,
)
from ctxflow.context import AgentContext, ChartConfiguration, SessionInfo, to_checkpoint
from ctxflow.context import from_checkpoint as context_from_checkpoint
from ctxflow.engine.audit import AuditEvent, AuditLog, apply_tags, tags_of
from ctxflow.engine.charts import ACTIONS, Chart, PhaseConfig, load_chart
from ctxflow.engine.listeners import Listeners
from ctxflow.engine.records import StepRecord
from ctxflow.errors import CheckpointNotFound, CtxflowError, EventError, SessionEvicted
from ctxflow.layers import LayeredState
from ctxflow.model import Conversation, Message
from ctxflow.protocols import TokenCounter
from ctxflow.tokens import DEFAULT_MODEL, ModelProfile, counter_for, get_profile

__all__ = [
    "Allocator",
    "AsyncEngine",
    "Checkpointer",
    "CompressionGuard",
    "Engine",
    "EngineSnapshot",
    "EventNotAllowed",
    "MemoryCheckpointer",
    "StoreCheckpointer",
    "WindowBuilder",
]

log = get_logger("ctxflow.engine")
T = TypeVar("T")

#: Keyword arguments each built-in event accepts (other events take none).
EVENT_ARGUMENTS: Mapping[str, frozenset[str]] = {"start": frozenset({"task"})}


class EventNotAllowed(errors.EventNotAllowed, TransitionNotAllowed):
    """The event is not allowed in the current phase; nothing changed.

    Also a python-statemachine ``TransitionNotAllowed``, so code written
    against the library keeps catching it. ``event`` is the event name,
    ``phase`` the current phase and ``configuration`` the active state ids.
    """

    def __init__(self, message: str, *, rule: str = "event_not_allowed", **details: Any) -> None:
        # TransitionNotAllowed.__init__ takes (event, configuration): bypass it.
        Exception.__init__(self, message)
        self.message = message
        self.rule = rule
        self.details = details
        self.phase = details.get("phase")
        self.event = details.get("event")
        self.configuration = details.get("configuration", ())


# -- seams ----------------------------------------------------------------------


class Allocator(Protocol):
    """Shares the input budget over layers for a phase (e.g. ``ctxflow.budget``)."""

    def __call__(self, state: LayeredState, *, phase: str, policy: Any) -> Any:
        """An allocation: an object with ``layers`` (layer → tokens) or such a mapping."""
        ...


class WindowBuilder(Protocol):
    """Builds the window for the next model call (e.g. ``ctxflow.budget.build_window``)."""

    def __call__(
        self, conversation: Conversation, state: LayeredState, *, phase: str, policy: Any
    ) -> Any:
        """The window for one call in ``phase``."""
        ...


class CompressionGuard(Protocol):
    """Keeps the effective conversation under the guard threshold of an allocation."""

    def __call__(
        self,
        conversation: Conversation,
        state: LayeredState,
        allocation: Any,
        *,
        phase: str,
        policy: Any,
    ) -> Any:
        """None when nothing had to be done; else the run's report, or an object with
        ``state`` (the new layered state, memory flushed) and ``report``.

        Raises ``BudgetExceeded`` when the hard limit cannot be met, changing nothing.
        """
        ...


@attrs.frozen(kw_only=True)
class EngineSnapshot:
    """What a checkpoint gives back: the conversation, the plain layered state and chart.

    ``chart`` is ``{"chart": name, "configuration": [...], "history": {...}}``
    with state ids only. Checkpointers may return any object with these three
    attributes (``ctxflow.checkpoints.Restored`` has them).
    """

    conversation: Conversation
    state: Mapping[str, Any]
    chart: Mapping[str, Any]
    checkpoint_id: str = ""


class Checkpointer(Protocol):
    """Captures the conversation, layered state and chart configuration; gives them back.

    The shape of ``ctxflow.checkpoints.Checkpointer``: ``capture`` returns the
    new checkpoint's id or a record with an ``id``; ``restore`` returns an
    object with ``conversation``, ``state`` and ``chart``.
    """

    def capture(
        self,
        conversation: Conversation,
        *,
        state: Mapping[str, Any],
        chart: Mapping[str, Any],
        phase: str,
        trigger: str,
    ) -> Any:
        """Write one checkpoint; return its id (or a record with ``id``)."""
        ...

    def restore(self, checkpoint_id: str | None, *, measure: Any = None) -> Any:
        """The checkpoint ``checkpoint_id``, or the latest for None (``CheckpointNotFound``)."""
        ...


@attrs.frozen(kw_only=True)
class _Kept:
    messages: tuple[Message, ...]
    overlays: Mapping[str, Message]
    counts: tuple[str | None, list[int], dict[str, int]]  # measure key, log and overlay counts
    state: Mapping[str, Any]
    chart: Mapping[str, Any]
    phase: str
    trigger: str


class StoreCheckpointer:
    """The engine's checkpointer over a store: ``ctxflow.checkpoints.Checkpointer`` for writes.

    Reads (``restore``) load a checkpoint's data without moving the writer, so
    restoring an older checkpoint — ``recover`` does — never forks the session:
    the next write rebases the writer on the session's latest checkpoint and
    continues from there, recording the restored content (a full manifest when
    the log does not extend the last one). A write while another writer moved
    the session on still raises ``StaleCheckpoint``.
    """

    def __init__(self, store: Any, session_id: str | None = None, *, measure: Any = None) -> None:
        self.store = store
        # Checkpoints carry the conversation's counts (under its measure's key); with
        # that measure as the default, a restore takes them instead of counting again.
        self.writer = checkpoints.Checkpointer(store, session_id, measure=measure)
        self._rebase = False

    @property
    def session_id(self) -> str:
        """The session this checkpointer writes."""
        return self.writer.session_id

    def capture(
        self,
        conversation: Conversation,
        *,
        state: Mapping[str, Any],
        chart: Mapping[str, Any],
        phase: str,
        trigger: str,
    ) -> Any:
        """Write one checkpoint; return its record."""
        if self._rebase:
            self.writer.restore()
            self._rebase = False
        return self.writer.capture(
            conversation, state=state, chart=chart, phase=phase, trigger=trigger
        )

    def restore(self, checkpoint_id: str | None, *, measure: Any = None) -> Any:
        """Load a checkpoint of this session (conversation, state, chart, record).

        None loads the session's latest checkpoint, and the writer continues from it.
        """
        if checkpoint_id is None:
            self._rebase = False
            return self.writer.restore(measure=measure)
        restored = checkpoints.restore(self.store, self.session_id, checkpoint_id, measure=measure)
        self._rebase = restored.record.id != self.writer.last_id
        return restored


class MemoryCheckpointer:
    """The fallback checkpointer when no store is given: checkpoints kept in process memory.

    Messages are frozen values, so a checkpoint shares them with the live
    conversation; only the list is copied. Lost with the process: pass a store
    (``Engine(store=...)``, e.g. ``ctxflow.stores.SQLiteStore``) for anything durable.
    """

    def __init__(self) -> None:
        self._kept: dict[str, _Kept] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def capture(
        self,
        conversation: Conversation,
        *,
        state: Mapping[str, Any],
        chart: Mapping[str, Any],
        phase: str,
        trigger: str,
    ) -> str:
        """Keep one checkpoint; return its new id."""
        checkpoint_id = f"ckpt-{len(self._kept) + 1:06d}"
        overlays = conversation.overlays
        self._kept[checkpoint_id] = _Kept(
            messages=tuple(conversation.messages),
            overlays=overlays,
            counts=(
                conversation.measure_key,
                conversation.log_counts(),
                {i: conversation.tokens(i) for i in overlays},
            ),
            state=state,
            chart=chart,
            phase=phase,
            trigger=trigger,
        )
        return checkpoint_id

    def restore(self, checkpoint_id: str | None, *, measure: Any = None) -> EngineSnapshot:
        """The checkpoint kept under ``checkpoint_id`` (None: the latest), with a fresh
        conversation."""
        if checkpoint_id is None and self._kept:
            checkpoint_id = next(reversed(self._kept))
        try:
            if checkpoint_id is None:
                raise KeyError(checkpoint_id)
            kept = self._kept[checkpoint_id]
        except KeyError:
            raise CheckpointNotFound(
                f"no checkpoint with id {checkpoint_id!r}",
                rule="checkpoint_not_found",
                checkpoint_id=checkpoint_id,
            ) from None
        key, counts, overlay_counts = kept.counts
        if key is None or checkpoints.measure_key(measure) != key:
            conversation = Conversation(kept.messages, measure=measure)
            overlay_counts = {}
        else:  # the same measure counted them: take its counts again
            conversation = Conversation(kept.messages, measure=measure, counts=counts)
        if kept.overlays:
            conversation.set_overlays(kept.overlays, counts=overlay_counts)
        return EngineSnapshot(
            conversation=conversation,
            state=kept.state,
            chart=kept.chart,
            checkpoint_id=checkpoint_id,
        )

    def ids(self) -> list[str]:
        """Every checkpoint id, oldest first."""
        return list(self._kept)


def _checkpoint_id(written: Any) -> str:
    return written if isinstance(written, str) else str(written.id)


# -- the shared core --------------------------------------------------------------


def _layers_of(allocation: Any) -> dict[str, int]:
    if allocation is None:
        return {}
    layers = getattr(allocation, "layers", allocation)
    return {str(getattr(k, "value", k)): int(v) for k, v in dict(layers).items()}


@attrs.define
class _Pending:
    """An event being applied: staged values, committed only when every effect succeeded."""

    trigger: str
    source: str
    started: float
    config: OrderedSet[Any]
    history: dict[str, Any]
    state: LayeredState
    conversation: Conversation
    target: str = ""
    configuration: tuple[str, ...] = ()
    allocation: Any = None
    consolidate: bool = False
    restore: bool = False
    restored_from: str | None = None
    extra_checkpoint: bool = False
    compression: Any = None
    log_length: int = 0
    epoch: int = 0


class _Binder:
    """The chart's model: exposes only the allowlisted callback names, bound to the engine."""

    def __init__(self, core: _Core) -> None:
        self.state: Any = None  # python-statemachine writes the configuration value here
        for name in ACTIONS:
            setattr(self, name, _intent(core, name))
        self.has_task = lambda: bool(core._staged_state().task.statement)
        self.has_checkpoint = lambda: bool(core._checkpoints)
        for name, fn in core.chart.callbacks.items():
            setattr(self, name, _user_callback(core, fn))


def _intent(core: _Core, name: str) -> Callable[[], None]:
    def mark() -> None:
        pending = core._pending
        if pending is None:
            return
        if name == "consolidate_memory":
            pending.consolidate = True
        elif name == "restore_last_good":
            pending.restore = True
        else:
            pending.extra_checkpoint = True

    mark.__name__ = name
    return mark


def _user_callback(core: _Core, fn: Callable[[Any], Any]) -> Callable[[], Any]:
    def call() -> Any:
        return fn(core)

    call.__name__ = getattr(fn, "__name__", "callback")
    return call


class _Core:
    """What the sync and async engines share: the chart, the stores, staging and commit."""

    _async = False

    def __init__(
        self,
        chart: Chart | str | Any = "agent_loop",
        *,
        model: str | ModelProfile = DEFAULT_MODEL,
        counter: TokenCounter | None = None,
        conversation: Conversation | Iterable[Message] | None = None,
        state: LayeredState | None = None,
        phases: Mapping[str, PhaseConfig] | None = None,
        allocator: Allocator | None = None,
        compressor: CompressionGuard | None = None,
        consolidator: Callable[[Conversation, LayeredState], Any] | None = None,
        window_builder: WindowBuilder | None = None,
        summarizer: Any = None,
        budget: int | None = None,
        store: Any = None,
        checkpointer: Checkpointer | None = None,
        checkpoint_policy: Any = None,
        listeners: Iterable[object] = (),
        session_id: str | None = None,
        data: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.chart: Chart = chart if isinstance(chart, Chart) else load_chart(chart)
        self.phases: dict[str, PhaseConfig] = dict(phases or {})
        self.chart.check_phases(self.phases)
        for phase, config in self.phases.items():
            if not isinstance(config, PhaseConfig):
                raise errors.PolicyError(
                    f"phase configurations must be PhaseConfig values "
                    f"(got {type(config).__name__} for {phase!r})",
                    rule="phase_config",
                    phase=phase,
                )
        self.profile = model if isinstance(model, ModelProfile) else get_profile(model)
        self.counter: TokenCounter = counter or counter_for(self.profile.encoding)
        # The builder's own measure, so cached counts are exactly what windows are checked with.
        self.measure = window_measure(self.counter, overhead=self.profile.per_message_overhead)
        if isinstance(conversation, Conversation):
            self._conversation = conversation
        else:
            self._conversation = Conversation(conversation or (), measure=self.measure)
        self._state = state if state is not None else LayeredState()
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0
        ):
            raise errors.PolicyError(
                f"'budget' must be a positive integer or None (got {budget!r})",
                rule="engine_budget",
            )
        self.budget = budget
        self.allocator: Allocator = allocator if allocator is not None else self._plan_budget
        for phase, config in self.phases.items():
            policy = config.compression_policy
            if policy is not None and not isinstance(policy, LadderPolicy | Ladder):
                raise errors.PolicyError(
                    f"a phase's compression policy must be a LadderPolicy or a Ladder "
                    f"(got {type(policy).__name__} for {phase!r})",
                    rule="phase_config",
                    phase=phase,
                )
        self.summarizer = summarizer
        self._ladders: dict[str, Ladder] = {}
        self.compressor: CompressionGuard = compressor if compressor is not None else self._compress
        self.consolidator: Callable[[Conversation, LayeredState], Any] = (
            consolidator if consolidator is not None else self._consolidate
        )
        self.window_builder: WindowBuilder = (
            window_builder if window_builder is not None else self._build_window
        )
        if store is not None and checkpointer is not None:
            raise errors.PolicyError(
                "give the engine a 'store' or a 'checkpointer', not both", rule="engine_store"
            )
        self.checkpointer: Checkpointer
        if checkpointer is not None:
            self.checkpointer = checkpointer
        elif store is not None:
            self.checkpointer = StoreCheckpointer(store, session_id, measure=self.measure)
        else:
            self.checkpointer = MemoryCheckpointer()
        self.session_id: str = (
            session_id or getattr(self.checkpointer, "session_id", None) or new_session_id()
        )
        self.checkpoint_policy = (
            checkpoint_policy if checkpoint_policy is not None else CheckpointPolicy()
        )
        self.listeners = Listeners(listeners)
        self.records: list[StepRecord] = []
        self._checkpoints: list[tuple[str, str]] = []  # (id, phase), oldest first
        self._mark: Any = None
        self._pending: _Pending | None = None
        self._allocation: Any = None
        #: Serializes threads using this engine; every change takes it.
        self.lock = CriticalLock()
        #: The changes since the last checkpoint, for replay over it.
        self.audit = AuditLog()
        self.clock = clock
        self._data: dict[str, Any] = _plain_data(dict(data or {}), "data")
        self._version = 0
        self._saved_version = -1
        self._retired: str | None = None
        self._binder = _Binder(self)
        self._machine = self._new_machine()
        self._configuration = self._read_configuration()
        self._phase = self._leaf(self._configuration)
        self._state = self._state.with_runtime(phase=self._phase, tools=self._tools(self._phase))

    # -- read-only views -----------------------------------------------------

    @property
    def phase(self) -> str:
        """The current phase (the active atomic state)."""
        return self._phase

    @property
    def configuration(self) -> tuple[str, ...]:
        """Every active state id, outermost first (e.g. ``('active', 'execution')``)."""
        return self._configuration

    @property
    def history(self) -> dict[str, list[str]]:
        """The chart's history values as state ids (history pseudo-state → remembered states)."""
        return {k: [str(s.id) for s in v] for k, v in self._machine.history_values.items()}

    @property
    def state(self) -> LayeredState:
        """The layered state (frozen; each applied event may swap it)."""
        return self._state

    @property
    def conversation(self) -> Conversation:
        """The conversation (append-only; compression tags, never deletes)."""
        return self._conversation

    @property
    def allocation(self) -> Any:
        """The current phase's allocation (None before the first phase and in final states)."""
        return self._allocation

    @property
    def allowed_events(self) -> list[str]:
        """The events the chart has a transition for in the current phase (guards aside)."""
        return [t.event for t in self.chart.transitions_from(self._phase)]

    @property
    def checkpoint_ids(self) -> list[str]:
        """The checkpoints this engine wrote or restored from, oldest first."""
        return [cid for cid, _ in self._checkpoints]

    @property
    def is_final(self) -> bool:
        """True once the chart reached a final state."""
        return self._phase in self.chart.finals

    @property
    def context(self) -> AgentContext:
        """The agent's context as one value: conversation, layered state, chart configuration."""
        return AgentContext(
            conversation=self._conversation, state=self._state, chart=self.chart_configuration
        )

    @property
    def chart_configuration(self) -> ChartConfiguration:
        """The chart's name, active state ids and history values."""
        return ChartConfiguration(
            chart=self.chart.name, configuration=self._configuration, history=self.history
        )

    @property
    def data(self) -> Mapping[str, Any]:
        """The session's user data (plain data, stored in checkpoints; read-only view)."""
        return MappingProxyType(self._data)

    @property
    def version(self) -> int:
        """Moves on every change to the session (optimistic updates compare it)."""
        return self._version

    @property
    def session(self) -> SessionInfo:
        """The session's bookkeeping: user data, version, audit position."""
        return SessionInfo(data=self._data, version=self._version, audit_seq=self.audit.seq)

    @property
    def dirty(self) -> bool:
        """True when the session changed since its last checkpoint."""
        return self._version != self._saved_version

    @property
    def retired(self) -> bool:
        """True once the engine's manager unloaded it: it refuses every change."""
        return self._retired is not None

    def retire(self, reason: str) -> None:
        """Refuse every later change with :class:`~ctxflow.errors.SessionEvicted`.

        A manager retires the engines it unloads, so no change goes to a copy
        that is no longer the session's live one.
        """
        with self.lock:
            self._retired = reason

    def _check_live(self) -> None:
        if self._retired is not None:
            raise SessionEvicted(
                f"session {self.session_id!r} {self._retired}; this engine refuses changes "
                "(get the live one from its manager again)",
                rule="engine_retired",
                session_id=self.session_id,
            )

    def _record(
        self, kind: str, actor: str | None = None, *, phase: str | None = None, **payload: Any
    ) -> AuditEvent:
        """Count one change and log it, in the phase it happened in (default: the current)."""
        self._version += 1
        return self.audit.append(
            at=self.clock(),
            actor=actor,
            phase=self._phase if phase is None else phase,
            kind=kind,
            **payload,
        )

    def _saved(self, version: int, seq: int) -> None:
        self._saved_version = version
        self.audit.trim(seq)

    # -- messages --------------------------------------------------------------

    def add_message(self, message: Message, *, actor: str | None = None) -> Message:
        """Append one message (counted once, indexed once)."""
        with self.lock:
            self._check_live()
            added = self._conversation.append(message)
            self._record("append", actor, messages=(added,))
            return added

    def add_messages(self, messages: Iterable[Message], *, actor: str | None = None) -> None:
        """Append messages in order (checked first: a bad batch changes nothing)."""
        batch = tuple(messages)
        with self.lock:
            self._check_live()
            self._conversation.extend(batch)
            self._record("append", actor, messages=batch)

    def set_state(self, state: LayeredState, *, actor: str | None = None) -> None:
        """Replace the layered state (the runtime layer is kept as the engine set it)."""
        if not isinstance(state, LayeredState):
            raise errors.PolicyError(
                f"'state' must be a LayeredState (got {type(state).__name__})",
                rule="engine_state",
            )
        with self.lock:
            self._check_live()
            new = attrs.evolve(state, runtime=self._state.runtime)
            if new == self._state:
                return
            self._state = new
            self._record("state", actor, state=new)

    def set_data(self, key: str, value: Any, *, actor: str | None = None) -> None:
        """Set one user-data entry (plain data: it is stored in checkpoints)."""
        if not isinstance(key, str):
            raise errors.PolicyError(
                f"a data key must be a string (got {type(key).__name__})", rule="engine_data"
            )
        _plain_data(value, f"data[{key!r}]")
        with self.lock:
            self._check_live()
            self._data[key] = value
            self._record("data", actor, key=key, value=value)

    def set_chart(self, chart: ChartConfiguration, *, actor: str | None = None) -> None:
        """Move the chart to ``chart``'s configuration and history; no event, guard or action runs.

        For sessions that start somewhere other than the chart's initial state
        (a merged or split session keeps its source's phase). The phase's
        budget is reallocated; nothing else changes.
        """
        if not isinstance(chart, ChartConfiguration):
            raise errors.PolicyError(
                f"'chart' must be a ChartConfiguration (got {type(chart).__name__})",
                rule="engine_chart",
            )
        with self.lock:
            self._check_live()
            left = self._phase
            self._move_chart(chart)
            self._record("chart", actor, phase=left, chart=self.chart_configuration)

    def _move_chart(self, chart: ChartConfiguration) -> None:
        if chart.chart not in ("", self.chart.name):
            raise errors.CheckpointError(
                f"a chart configuration must be one of chart {self.chart.name!r} "
                f"(got {chart.chart!r})",
                rule="chart_mismatch",
            )
        if not chart.configuration:
            return
        previous = (list(self._configuration), self.history)
        self._set_chart(chart.configuration, chart.history)
        try:
            allocation = self._allocate(self._state, self._phase)
        except CtxflowError:
            self._set_chart(*previous)
            raise
        self._allocation = allocation
        self._state = self._state.with_runtime(phase=self._phase, tools=self._tools(self._phase))

    def compress(
        self,
        run: Callable[[Conversation, LayeredState], LayeredState],
        *,
        actor: str | None = None,
        reason: str = "",
    ) -> AuditEvent | None:
        """Run a compression of your own over the conversation; record what it changed.

        ``run`` tags, overlays or summarises through the Conversation's own
        methods and returns the (possibly new) layered state. The runtime
        layer stays as the engine set it.
        """
        with self.lock:
            self._check_live()
            length, epoch = len(self._conversation), self._conversation.epoch
            state = run(self._conversation, self._state)
            if not isinstance(state, LayeredState):
                raise errors.PolicyError(
                    f"a compression must return a LayeredState (got {type(state).__name__})",
                    rule="engine_state",
                )
            state = attrs.evolve(state, runtime=self._state.runtime)
            changes = self._changes(self._conversation, length, epoch)
            if not changes and state == self._state:
                return None
            self._state = state
            return self._record("compress", actor, reason=reason, state=state, **changes)

    @staticmethod
    def _changes(conversation: Conversation, length: int, epoch: int) -> dict[str, Any]:
        """What changed in ``conversation`` since it had ``length`` messages at ``epoch``."""
        changes: dict[str, Any] = {}
        if len(conversation) > length:
            changes["messages"] = tuple(conversation.messages[length:])
        if conversation.epoch != epoch:
            changes.update(tags_of(conversation))
        return changes

    def replay(self, events: Iterable[AuditEvent]) -> None:
        """Apply recorded events (another copy's, since this one's checkpoint) to this engine."""
        with self.lock:
            self._check_live()
            for event in events:
                self._replay_one(event)
                self._version += 1
                self.audit.seq = event.seq

    def _replay_one(self, event: AuditEvent) -> None:
        payload = event.payload
        if event.kind == "data":
            self._data[payload["key"]] = payload["value"]
            return
        if event.kind == "restore":
            self._load_restored(
                self.checkpointer.restore(payload["checkpoint"], measure=self.measure),
                payload["checkpoint"],
            )
            return
        if "messages" in payload:
            self._conversation.extend(payload["messages"])
        if "tags" in payload:
            apply_tags(self._conversation, payload["tags"], payload["overlays"])
        if "chart" in payload:
            self._move_chart(payload["chart"])
        if "state" in payload:
            self._state = payload["state"]

    def window(self) -> Any:
        """The window for the next model call in the current phase (within its budget)."""
        with self.lock:
            return self.window_builder(
                self._conversation,
                self._state,
                phase=self._phase,
                policy=self._budget_policy(self._phase),
            )

    def ladder(self, phase: str) -> Ladder:
        """The compression ladder of ``phase`` (its own policy, or the default one)."""
        ladder = self._ladders.get(phase)
        if ladder is None:
            config = self.phases.get(phase)
            policy = config.compression_policy if config is not None else None
            if isinstance(policy, Ladder):
                ladder = policy
            else:
                ladder = Ladder(policy=policy, summarizer=self.summarizer)
            self._ladders[phase] = ladder
        return ladder

    def _compress(
        self,
        conversation: Conversation,
        state: LayeredState,
        allocation: Any,
        *,
        phase: str,
        policy: Any,
    ) -> Any:
        flexible = getattr(allocation, "flexible", None)
        if not isinstance(flexible, int) or flexible <= 0:
            return None
        ladder = self.ladder(phase)
        fixed = fixed_tokens(conversation)
        if not ladder.guard(conversation, budget=flexible, fixed=fixed):
            return None
        run = ladder.arun if self._async else ladder.run
        return run(conversation, state, budget=flexible, fixed=fixed, turn=state.runtime.step)

    def _consolidate(self, conversation: Conversation, state: LayeredState) -> LayeredState:
        """Flush the decisions and constraints stated so far into semantic memory."""
        return state.with_facts(extract_facts(conversation.effective()))

    def _plan_budget(self, state: LayeredState, *, phase: str, policy: Any) -> Allocation:
        return plan_budget(
            state,
            phase=phase,
            counter=self.counter,
            profile=self.profile,
            budget=self.budget,
            policy=policy if policy is not None else DEFAULT_POLICY,
        )

    def _build_window(
        self, conversation: Conversation, state: LayeredState, *, phase: str, policy: Any
    ) -> Window:
        return build_window(
            state,
            conversation,
            phase=phase,
            counter=self.counter,
            profile=self.profile,
            budget=self.budget,
            policy=policy if policy is not None else DEFAULT_POLICY,
            measure=self.measure,
        )

    # -- chart machine ---------------------------------------------------------

    def _new_machine(self) -> Any:
        return self.chart.machine_class(model=self._binder)

    def _read_configuration(self) -> tuple[str, ...]:
        return tuple(str(v) for v in self._machine.configuration_values)

    def _leaf(self, configuration: Sequence[str]) -> str:
        parents = self.chart.parents
        for state_id in reversed(configuration):
            if state_id not in self.chart.compounds and state_id in parents:
                return state_id
        return configuration[-1] if configuration else ""

    def _set_chart(
        self, configuration: Sequence[str], history: Mapping[str, Sequence[str]]
    ) -> None:
        states_map = self.chart.machine_class.states_map
        unknown = [s for s in configuration if s not in states_map] + [
            s for ids in history.values() for s in ids if s not in states_map
        ]
        unknown += [h for h in history if h not in self.chart.history]
        if unknown or not configuration:
            raise errors.CheckpointError(
                f"a chart configuration must name states of chart {self.chart.name!r} "
                f"(got {list(configuration)}, history {dict(history)})",
                rule="chart_configuration",
                unknown=unknown,
            )
        machine = self._machine
        if machine.is_terminated:
            machine = self._machine = self._new_machine()
        machine.configuration = OrderedSet(states_map[s] for s in configuration)
        machine.history_values = {h: [states_map[s] for s in ids] for h, ids in history.items()}
        self._configuration = self._read_configuration()
        self._phase = self._leaf(self._configuration)

    def chart_plain(self) -> dict[str, Any]:
        """The chart configuration with its history values, as plain data."""
        return self.chart_configuration.to_plain()

    def _staged_state(self) -> LayeredState:
        return self._pending.state if self._pending is not None else self._state

    def _tools(self, phase: str) -> tuple[str, ...] | None:
        config = self.phases.get(phase)
        return config.tools if config is not None else None

    # -- applying an event, in stages ----------------------------------------------

    def _begin(self, event: str, kwargs: Mapping[str, Any]) -> _Pending:
        if self._pending is not None:
            raise EventError(
                f"events must not be sent while another is being applied (got {event!r} "
                f"during {self._pending.trigger!r})",
                rule="reentrant_event",
                trigger=event,
            )
        if not isinstance(event, str) or event not in self.chart.events:
            raise EventError(
                f"the event must be one of chart {self.chart.name!r}'s events "
                f"({', '.join(self.chart.events)}) (got {event!r})",
                rule="unknown_event",
                trigger=event,
            )
        allowed = EVENT_ARGUMENTS.get(event, frozenset())
        unexpected = sorted(set(kwargs) - allowed)
        if unexpected:
            raise EventError(
                f"event {event!r} accepts the keyword arguments "
                f"{sorted(allowed) or 'none'} (got {unexpected})",
                rule="event_arguments",
                trigger=event,
                unexpected=unexpected,
            )
        state = self._state
        if event == "start" and "task" in kwargs:
            task = kwargs["task"]
            if not isinstance(task, str) or not task.strip():
                raise EventError(
                    f"'task' must be a non-empty string (got {task!r})",
                    rule="event_arguments",
                    trigger=event,
                )
            state = attrs.evolve(state, task=attrs.evolve(state.task, statement=task))
        if event not in self.allowed_events:
            raise self._not_allowed(event)
        machine = self._machine
        pending = _Pending(
            trigger=event,
            source=self._phase,
            started=time.perf_counter(),
            config=OrderedSet(machine.configuration),
            history=dict(machine.history_values),
            state=state,
            conversation=self._conversation,
            log_length=len(self._conversation),
            epoch=self._conversation.epoch,
        )
        self._pending = pending
        try:
            machine.send(event)
        except TransitionNotAllowed:
            self._rollback(pending)
            raise self._not_allowed(event) from None
        except CtxflowError:
            self._rollback(pending)
            raise
        except Exception as exc:
            self._rollback(pending)
            raise EventError(
                f"a chart callback failed while applying {event!r} in phase "
                f"{pending.source!r}: {type(exc).__name__}: {exc}",
                rule="callback_failed",
                trigger=event,
                phase=pending.source,
            ) from exc
        configuration = self._read_configuration()
        pending.configuration = configuration
        pending.target = (
            pending.source if configuration == self._configuration else self._leaf(configuration)
        )
        if event == "step":
            runtime = pending.state.runtime
            pending.state = attrs.evolve(
                pending.state, runtime=attrs.evolve(runtime, step=runtime.step + 1)
            )
        return pending

    def _not_allowed(self, event: str) -> EventNotAllowed:
        return EventNotAllowed(
            f"event {event!r} is not allowed in phase {self._phase!r} "
            f"(allowed: {', '.join(self.allowed_events) or 'none'})",
            event=event,
            phase=self._phase,
            configuration=self._configuration,
        )

    def _rollback(self, pending: _Pending) -> None:
        self._pending = None
        report = pending.compression
        if isinstance(report, CompressionReport) and report.changed:
            undo(pending.conversation, report)
        machine = self._machine
        if machine.is_terminated:
            self._set_chart(
                [str(s.id) for s in pending.config],
                {k: [str(s.id) for s in v] for k, v in pending.history.items()},
            )
            return
        machine.configuration = pending.config
        machine.history_values = pending.history

    def _restore_target(self, pending: _Pending) -> str | None:
        """The latest checkpoint taken outside the phase being left (a 'good' one)."""
        for checkpoint_id, phase in reversed(self._checkpoints):
            if phase != pending.source:
                return checkpoint_id
        return None

    def _apply_restore(self, pending: _Pending, restored: Any, cid: str) -> None:
        context, _ = self._unpack(restored, cid)
        pending.conversation = context.conversation
        pending.log_length, pending.epoch = len(context.conversation), context.conversation.epoch
        pending.state = attrs.evolve(context.state, runtime=pending.state.runtime)
        pending.restored_from = cid

    def _enter(self, pending: _Pending) -> None:
        """Stage the phase's runtime layer: phase name and projected tool set."""
        if pending.target != pending.source:
            pending.state = pending.state.with_runtime(
                phase=pending.target, tools=self._tools(pending.target)
            )

    def _reallocate(self, pending: _Pending) -> None:
        """Stage the allocation: a new one on a phase change, else the current one."""
        if pending.target == pending.source and self._allocation is not None:
            pending.allocation = self._allocation
        else:
            pending.allocation = self._allocate(pending.state, pending.target)

    def _allocate(self, state: LayeredState, phase: str) -> Any:
        if phase in self.chart.finals:
            return None
        return self.allocator(state, phase=phase, policy=self._budget_policy(phase))

    def _budget_policy(self, phase: str) -> Any:
        config = self.phases.get(phase)
        return config.budget_policy if config else None

    def _guard_args(self, pending: _Pending) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        if self.compressor is None or pending.target in self.chart.finals:
            return None
        config = self.phases.get(pending.target)
        return (pending.conversation, pending.state, pending.allocation), {
            "phase": pending.target,
            "policy": config.compression_policy if config else None,
        }

    def _compressed(self, pending: _Pending, result: Any) -> None:
        """Take the guard's outcome: None, a report, or a result with a new state and a report."""
        if result is None:
            return
        state = getattr(result, "state", None)
        if isinstance(state, LayeredState) and hasattr(result, "report"):
            pending.state = attrs.evolve(state, runtime=pending.state.runtime)
            pending.compression = result.report
        else:
            pending.compression = result

    def _commit(self, pending: _Pending) -> None:
        self._pending = None
        self._state = pending.state
        self._conversation = pending.conversation
        self._configuration = pending.configuration
        self._phase = pending.target
        self._allocation = pending.allocation

    def _checkpoint_trigger(self, pending: _Pending) -> str | None:
        if pending.target != pending.source:
            return "transition"
        if pending.extra_checkpoint:
            return "chart"
        policy = self.checkpoint_policy
        if policy is None:
            return None
        trigger: str | None = policy.should_checkpoint(
            phase=pending.target,
            message_count=len(pending.conversation),
            tokens=pending.conversation.effective_tokens,
            last=self._mark,
        )
        return trigger

    def _capture_args(
        self, trigger: str, pending: _Pending | None = None
    ) -> tuple[tuple[Conversation], dict[str, Any]]:
        """The checkpointer's arguments for the current context, or for ``pending``'s."""
        if pending is None:
            context, events = self.context, self.audit.events
            session = self.session
        else:
            context = AgentContext(
                conversation=pending.conversation,
                state=pending.state,
                chart=ChartConfiguration(
                    chart=self.chart.name,
                    configuration=pending.configuration,
                    history=self.history,
                ),
            )
            staged = AuditEvent(
                seq=self.audit.seq + 1,
                at=self.clock(),
                actor=None,
                phase=pending.source,
                kind="event",
                payload=self._event_payload(pending),
            )
            events = (*self.audit.events, staged)
            session = SessionInfo(data=self._data, version=self._version + 1, audit_seq=staged.seq)
        state, chart = to_checkpoint(context, session, [e.light() for e in events])
        return (context.conversation,), {
            "state": state,
            "chart": chart,
            "phase": context.phase,
            "trigger": trigger,
        }

    def _event_payload(self, pending: _Pending) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "trigger": pending.trigger,
            "source": pending.source,
            "chart": ChartConfiguration(
                chart=self.chart.name, configuration=pending.configuration, history=self.history
            ),
            "state": pending.state,
        }
        if pending.restored_from is not None:
            payload["restored"] = pending.restored_from
        payload.update(self._changes(pending.conversation, pending.log_length, pending.epoch))
        return payload

    def _after_checkpoint(self, checkpoint_id: str, trigger: str) -> None:
        self._checkpoints.append((checkpoint_id, self._phase))
        self._saved(self._version, self.audit.seq)
        self._remark()
        for hook in self.listeners.checkpoint:
            hook(checkpoint_id, trigger=trigger, phase=self._phase)

    def _remark(self) -> None:
        policy = self.checkpoint_policy
        if policy is not None and hasattr(policy, "mark"):
            self._mark = policy.mark(
                phase=self._phase,
                message_count=len(self._conversation),
                tokens=self._conversation.effective_tokens,
            )

    def _land(
        self,
        pending: _Pending,
        tokens_before: int,
        allocation_before: Any,
        checkpoint: tuple[str, str] | None,
    ) -> StepRecord:
        """Commit an applied event: the new values, its audit event, its checkpoint, its record."""
        payload = self._event_payload(pending)
        self._commit(pending)
        self._record("event", phase=pending.source, **payload)
        if checkpoint is not None:
            self._after_checkpoint(*checkpoint)
        return self._finish(pending, tokens_before, allocation_before, checkpoint)

    def _finish(
        self,
        pending: _Pending,
        tokens_before: int,
        allocation_before: Any,
        checkpoint: tuple[str, str] | None,
    ) -> StepRecord:
        record = StepRecord(
            index=len(self.records),
            trigger=pending.trigger,
            source=pending.source,
            target=pending.target,
            phase_changed=pending.target != pending.source,
            configuration=pending.configuration,
            allocation_before=_layers_of(allocation_before),
            allocation_after=_layers_of(self._allocation),
            checkpoint_id=checkpoint[0] if checkpoint else None,
            checkpoint_trigger=checkpoint[1] if checkpoint else None,
            compression=pending.compression,
            consolidated=pending.consolidate,
            restored_from=pending.restored_from,
            tokens_before=tokens_before,
            tokens_after=self._conversation.effective_tokens,
            duration_ms=(time.perf_counter() - pending.started) * 1000,
        )
        self.records.append(record)
        if record.phase_changed:
            log.info(
                "transition",
                trigger=record.trigger,
                source=record.source,
                target=record.target,
                tokens=record.tokens_after,
                checkpoint=record.checkpoint_id,
                compressed=record.compressed,
                session=self.session_id,
                duration_ms=round(record.duration_ms, 3),
            )
        for hook in self.listeners.transition:
            hook(record)
        if pending.compression is not None:
            for hook in self.listeners.compression:
                hook(pending.compression, phase=self._phase)
        return record

    def _unpack(self, restored: Any, checkpoint_id: str) -> tuple[AgentContext, SessionInfo]:
        """The context and session info a checkpointer gave back, checked against this chart."""
        chart = getattr(restored, "chart", None)
        conversation = getattr(restored, "conversation", None)
        if not isinstance(conversation, Conversation) or not (
            isinstance(chart, Mapping) and isinstance(getattr(restored, "state", None), Mapping)
        ):
            raise errors.CorruptCheckpoint(
                f"checkpoint {checkpoint_id!r} must give back a conversation, a state and a "
                f"chart (got {type(restored).__name__})",
                rule="checkpoint_snapshot",
                checkpoint_id=checkpoint_id,
            )
        if chart.get("chart", "") not in ("", self.chart.name) or (
            chart.get("chart") and "configuration" not in chart
        ):
            raise errors.CheckpointError(
                f"checkpoint {checkpoint_id!r} must hold a configuration of chart "
                f"{self.chart.name!r} (got {chart.get('chart')!r})",
                rule="chart_mismatch",
                checkpoint_id=checkpoint_id,
            )
        try:
            return context_from_checkpoint(conversation, restored.state, chart)
        except errors.FormatError as exc:
            raise errors.CorruptCheckpoint(
                f"checkpoint {checkpoint_id!r} holds a malformed context: {exc}",
                rule="checkpoint_snapshot",
                checkpoint_id=checkpoint_id,
            ) from None

    def _load_restored(self, restored: Any, checkpoint_id: str) -> SessionInfo:
        """Replace conversation, state and chart configuration with the checkpoint's."""
        context, session = self._unpack(restored, checkpoint_id)
        previous = (list(self._configuration), self.history)
        if context.chart.configuration:
            self._set_chart(context.chart.configuration, context.chart.history)
        try:
            self._allocation = self._allocate(context.state, self._phase)
        except CtxflowError:
            self._set_chart(*previous)
            raise
        self._conversation = context.conversation
        self._state = context.state.with_runtime(phase=self._phase)
        self._checkpoints.append((checkpoint_id, self._phase))
        self._remark()
        return session

    def _open(self, restored: Any, checkpoint_id: str) -> None:
        """Become the session a checkpoint holds, data and version included (not dirty)."""
        session = self._load_restored(restored, checkpoint_id)
        self._data = dict(session.data)
        self._version = self._saved_version = session.version
        self.audit = AuditLog(session.audit_seq)


def _restored_id(restored: Any, requested: str | None) -> str:
    if requested is not None:
        return requested
    found = getattr(restored, "checkpoint_id", None) or getattr(
        getattr(restored, "record", None), "id", None
    )
    return str(found)


def _plain_data(value: Any, where: str, depth: int = 0) -> Any:
    """``value`` when it is plain data a checkpoint can store; else a typed error."""
    if depth > 64:
        raise errors.PolicyError(f"{where} must nest at most 64 deep", rule="engine_data")
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if isinstance(value, list | tuple):
        for at, item in enumerate(value):
            _plain_data(item, f"{where}[{at}]", depth + 1)
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise errors.PolicyError(
                    f"{where} must have string keys (got {type(key).__name__})",
                    rule="engine_data",
                )
            _plain_data(item, f"{where}[{key!r}]", depth + 1)
        return value
    raise errors.PolicyError(
        f"{where} must be plain data (None, bool, int, float, str, bytes, list, dict) "
        f"(got {type(value).__name__})",
        rule="engine_data",
    )


def _effect_failed(pending: _Pending, exc: Exception) -> EventError:
    return EventError(
        f"an engine effect failed while applying {pending.trigger!r} in phase "
        f"{pending.source!r}: {type(exc).__name__}: {exc}",
        rule="effect_failed",
        trigger=pending.trigger,
        phase=pending.source,
    )


def _not_awaitable(value: T, what: str) -> T:
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        raise errors.PolicyError(
            f"the sync Engine needs a sync {what} (got an awaitable); use AsyncEngine",
            rule="async_collaborator",
        )
    return value


async def _resolve(value: T | Awaitable[T]) -> T:
    if inspect.isawaitable(value):
        return await value
    return value


class Engine(_Core):
    """The synchronous engine: ``send`` applies an event and returns its step record."""

    def send(self, event: str, **kwargs: Any) -> StepRecord:
        """Apply ``event``; typed errors leave everything as it was."""
        with self.lock:
            self._check_live()
            tokens_before = self._conversation.effective_tokens
            allocation_before = self._allocation
            pending = self._begin(event, kwargs)
            try:
                if pending.restore:
                    target = self._restore_target(pending)
                    if target is not None:
                        restored = _not_awaitable(
                            self.checkpointer.restore(target, measure=self.measure),
                            "checkpointer",
                        )
                        self._apply_restore(pending, restored, target)
                self._enter(pending)
                if pending.consolidate and self.consolidator is not None:
                    pending.state = _not_awaitable(
                        self.consolidator(pending.conversation, pending.state), "consolidator"
                    )
                self._reallocate(pending)
                guard = self._guard_args(pending)
                if guard is not None:
                    args, kw = guard
                    result = _not_awaitable(self.compressor(*args, **kw), "compressor")
                    self._compressed(pending, result)
                checkpoint = None
                trigger = self._checkpoint_trigger(pending)
                if trigger is not None:
                    args, kw = self._capture_args(trigger, pending)
                    written = _not_awaitable(self.checkpointer.capture(*args, **kw), "checkpointer")
                    checkpoint = (_checkpoint_id(written), trigger)
            except CtxflowError:
                self._rollback(pending)
                raise
            except Exception as exc:
                self._rollback(pending)
                raise _effect_failed(pending, exc) from exc
            return self._land(pending, tokens_before, allocation_before, checkpoint)

    def checkpoint(self, trigger: str = "manual") -> str:
        """Take a checkpoint now; return its id."""
        with self.lock:
            args, kw = self._capture_args(trigger)
            written = _not_awaitable(self.checkpointer.capture(*args, **kw), "checkpointer")
            checkpoint_id = _checkpoint_id(written)
            self._after_checkpoint(checkpoint_id, trigger)
            return checkpoint_id

    def restore(self, checkpoint_id: str) -> None:
        """Restore messages, layered state and chart configuration (with history)."""
        checkpoint_id = _checkpoint_arg(checkpoint_id)
        with self.lock:
            self._check_live()
            restored = _not_awaitable(
                self.checkpointer.restore(checkpoint_id, measure=self.measure), "checkpointer"
            )
            self._load_restored(restored, checkpoint_id)
            self._record("restore", checkpoint=checkpoint_id)

    @classmethod
    def from_checkpoint(cls, checkpoint_id: str | None = None, **kwargs: Any) -> Engine:
        """A new engine (same keyword arguments as the constructor) opened at a checkpoint.

        Without ``checkpoint_id``, at the latest checkpoint of the session
        ``session_id`` names. The engine takes the session's data and version
        with it, and is not dirty.
        """
        engine = cls(**kwargs)
        restored = _not_awaitable(
            engine.checkpointer.restore(checkpoint_id, measure=engine.measure), "checkpointer"
        )
        engine._open(restored, _restored_id(restored, checkpoint_id))
        return engine


class AsyncEngine(_Core):
    """The asynchronous engine: ``await send(...)``; collaborators may be sync or async."""

    _async = True

    async def send(self, event: str, **kwargs: Any) -> StepRecord:
        """Apply ``event``; typed errors leave everything as it was."""
        with self.lock:
            self._check_live()
            tokens_before = self._conversation.effective_tokens
            allocation_before = self._allocation
            pending = self._begin(event, kwargs)
            try:
                if pending.restore:
                    target = self._restore_target(pending)
                    if target is not None:
                        restored = await _resolve(
                            self.checkpointer.restore(target, measure=self.measure)
                        )
                        self._apply_restore(pending, restored, target)
                self._enter(pending)
                if pending.consolidate and self.consolidator is not None:
                    pending.state = await _resolve(
                        self.consolidator(pending.conversation, pending.state)
                    )
                self._reallocate(pending)
                guard = self._guard_args(pending)
                if guard is not None:
                    args, kw = guard
                    self._compressed(pending, await _resolve(self.compressor(*args, **kw)))
                checkpoint = None
                trigger = self._checkpoint_trigger(pending)
                if trigger is not None:
                    args, kw = self._capture_args(trigger, pending)
                    written = await _resolve(self.checkpointer.capture(*args, **kw))
                    checkpoint = (_checkpoint_id(written), trigger)
            except CtxflowError:
                self._rollback(pending)
                raise
            except Exception as exc:
                self._rollback(pending)
                raise _effect_failed(pending, exc) from exc
            return self._land(pending, tokens_before, allocation_before, checkpoint)

    async def checkpoint(self, trigger: str = "manual") -> str:
        """Take a checkpoint now; return its id."""
        with self.lock:
            args, kw = self._capture_args(trigger)
            checkpoint_id = _checkpoint_id(await _resolve(self.checkpointer.capture(*args, **kw)))
            self._after_checkpoint(checkpoint_id, trigger)
            return checkpoint_id

    async def restore(self, checkpoint_id: str) -> None:
        """Restore messages, layered state and chart configuration (with history)."""
        checkpoint_id = _checkpoint_arg(checkpoint_id)
        with self.lock:
            self._check_live()
            restored = await _resolve(
                self.checkpointer.restore(checkpoint_id, measure=self.measure)
            )
            self._load_restored(restored, checkpoint_id)
            self._record("restore", checkpoint=checkpoint_id)

    @classmethod
    async def from_checkpoint(cls, checkpoint_id: str | None = None, **kwargs: Any) -> AsyncEngine:
        """A new engine (same keyword arguments as the constructor) opened at a checkpoint.

        Without ``checkpoint_id``, at the latest checkpoint of the session
        ``session_id`` names.
        """
        engine = cls(**kwargs)
        restored = await _resolve(
            engine.checkpointer.restore(checkpoint_id, measure=engine.measure)
        )
        engine._open(restored, _restored_id(restored, checkpoint_id))
        return engine


def _checkpoint_arg(checkpoint_id: Any) -> str:
    if not isinstance(checkpoint_id, str) or not checkpoint_id:
        raise errors.CheckpointError(
            f"'checkpoint_id' must be a non-empty string (got {checkpoint_id!r})",
            rule="checkpoint_id",
        )
    return checkpoint_id
