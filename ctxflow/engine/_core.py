"""The engine's core: an agent's context driven by a statechart, each operation written once.

The core holds the context (conversation, layered state, chart machine), the
model profile, the policies and the collaborators. Its operations — apply an
event, take a checkpoint, restore one, open a session — are generators
(:data:`~ctxflow.engine._effects.Steps`) that yield the effects they need and
are sent the results; the sync and async drivers carry the effects out. An
event is applied as a unit:

1. check the event and its arguments (unknown name, wrong keywords, not
   allowed in this phase → typed error, nothing changed);
2. run the chart's microstep (strict: an exception in a guard or action
   surfaces as :class:`~ctxflow.errors.EventError` with the original as
   ``__cause__``); chart actions only mark intents;
3. on a phase change: reallocate the budget for the new phase and model and
   project the phase's tool set; an intent to consolidate memory or to
   restore the latest good checkpoint is carried out;
4. run the compression guard against the (new) phase's allocation — when the
   hard limit cannot be met it raises :class:`~ctxflow.errors.BudgetExceeded`
   and the event is rolled back: same phase, configuration and history, same
   layered state, the compression's tags undone;
5. commit, take a checkpoint (every phase change; on ``step`` when the policy
   says so), log the change in the audit log, keep a
   :class:`~ctxflow.engine._records.StepRecord`, log the transition and call
   the listeners.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import attrs

from ctxflow import _telemetry, errors
from ctxflow._log import get_logger
from ctxflow._telemetry import STATE as TELEMETRY
from ctxflow.budget import window_measure
from ctxflow.compression import (
    CompressionReport,
    CompressionResult,
    Ladder,
    undo,
)
from ctxflow.context import AgentContext, ChartConfiguration, SessionInfo
from ctxflow.engine import _seams as seams
from ctxflow.engine._charts import Chart, PhaseConfig, load_chart
from ctxflow.engine._defaults import DefaultSeams
from ctxflow.engine._effects import (
    Allocate,
    Capture,
    Compress,
    Consolidate,
    Effect,
    Pending,
    Restore,
    Steps,
)
from ctxflow.engine._listeners import Listeners
from ctxflow.engine._machine import (
    Binder,
    ChartMachine,
    Intents,
    NotAllowed,
    checked_event,
)
from ctxflow.engine._records import KEEP_RECORDS, StepRecord, StepRecords
from ctxflow.engine._session import SessionBase
from ctxflow.engine._state import ContextOps
from ctxflow.errors import CtxflowError, EventError
from ctxflow.layers import LayeredState
from ctxflow.memory import Consolidator, MemoryLimits, Owner, Retriever, SharedMemory
from ctxflow.memory._sync import SharedSync
from ctxflow.model import Conversation, Message
from ctxflow.persistence import CheckpointPolicy, MemoryStore, Restored, Store, new_session_id
from ctxflow.protocols import AsyncSummarizer, Summarizer, TokenCounter
from ctxflow.tokens import DEFAULT_MODEL, ModelProfile, counter_for, get_profile

__all__ = ["Core"]

log = get_logger("ctxflow.engine")


class Core(DefaultSeams, ContextOps):
    """What the sync and async engines share: the chart, the collaborators, every operation."""

    _async = False

    def __init__(
        self,
        chart: Chart | str = "agent_loop",
        *,
        model: str | ModelProfile = DEFAULT_MODEL,
        counter: TokenCounter | None = None,
        conversation: Conversation | Iterable[Message] | None = None,
        state: LayeredState | None = None,
        phases: Mapping[str, PhaseConfig] | None = None,
        allocator: seams.Allocator | None = None,
        compressor: seams.CompressionGuard | None = None,
        consolidator: seams.Consolidator | None = None,
        window_builder: seams.WindowBuilder | None = None,
        summarizer: Summarizer | AsyncSummarizer | None = None,
        memory_limits: MemoryLimits | None = None,
        retriever: Retriever | None = None,
        shared_memory: SharedMemory | None = None,
        owners: Sequence[Owner] = (),
        budget: int | None = None,
        store: Store | None = None,
        checkpointer: seams.SupportsCheckpoints | None = None,
        checkpoint_policy: CheckpointPolicy | None = None,
        listeners: Iterable[object] = (),
        session_id: str | None = None,
        data: Mapping[str, object] | None = None,
        clock: Callable[[], float] = time.time,
        keep_records: int = KEEP_RECORDS,
        freeze_gc: bool = False,
        page_hidden: bool | None = None,
    ) -> None:
        self.chart: Chart = chart if isinstance(chart, Chart) else load_chart(chart)
        self.phases: dict[str, PhaseConfig] = dict(phases or {})
        self.chart.check_phases(self.phases)
        for phase, config in self.phases.items():
            seams.check_phase_config(phase, config)
        self.profile = model if isinstance(model, ModelProfile) else get_profile(model)
        self.counter: TokenCounter = counter or counter_for(self.profile.encoding)
        # The builder's own measure, so cached counts are exactly what windows are checked with.
        self.measure = window_measure(self.counter, overhead=self.profile.per_message_overhead)
        if isinstance(conversation, Conversation):
            self._conversation = conversation
        else:
            self._conversation = Conversation(conversation or (), measure=self.measure)
        self._state = state if state is not None else LayeredState()
        #: the link to memory shared across sessions (None: this session's memory is its own)
        self._shared: SharedSync | None = None
        if shared_memory is not None:
            self._shared = SharedSync(shared_memory, owners)
            self._state = self._shared.load_into(self._state)
        elif owners:
            raise errors.PolicyError(
                "'owners' need a 'shared_memory' to keep their memory in", rule="shared_memory"
            )
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0
        ):
            raise errors.PolicyError(
                f"'budget' must be a positive integer or None (got {budget!r})",
                rule="engine_budget",
            )
        self.budget = budget if budget is None else self.profile.check_budget(budget)
        self.summarizer = summarizer
        if memory_limits is not None and not isinstance(memory_limits, MemoryLimits):
            raise errors.PolicyError(
                f"'memory_limits' must be a MemoryLimits (got {type(memory_limits).__name__})",
                rule="engine_memory_limits",
            )
        self.memory_limits = memory_limits
        if retriever is not None and not isinstance(retriever, Retriever):
            raise errors.PolicyError(
                f"'retriever' must be a Retriever (got {type(retriever).__name__})",
                rule="engine_retriever",
            )
        #: ranks memory items when a tier's do not all fit (None: BM25)
        self.retriever = retriever
        self._consolidator: Consolidator | None = None
        self._ladders: dict[str, Ladder] = {}
        self.allocator: seams.Allocator = allocator if allocator is not None else self._plan_budget
        self.compressor: seams.CompressionGuard = (
            compressor if compressor is not None else self._guard
        )
        self.consolidator: seams.Consolidator = (
            consolidator if consolidator is not None else self._consolidate
        )
        self.window_builder: seams.WindowBuilder = (
            window_builder if window_builder is not None else self._build_window
        )
        if store is not None and checkpointer is not None:
            raise errors.PolicyError(
                "give the engine a 'store' or a 'checkpointer', not both", rule="engine_store"
            )
        if page_hidden is not None and checkpointer is not None:
            raise errors.PolicyError(
                "'page_hidden' is the engine's own checkpointer's: give it to yours",
                rule="engine_page_hidden",
            )
        self.checkpointer: seams.SupportsCheckpoints = checkpointer or seams.StoreCheckpointer(
            store if store is not None else MemoryStore(),
            session_id,
            measure=self.measure,
            page_hidden=page_hidden,
        )
        self.session_id: str = (
            session_id or getattr(self.checkpointer, "session_id", None) or new_session_id()
        )
        self.checkpoint_policy = (
            checkpoint_policy if checkpoint_policy is not None else CheckpointPolicy()
        )
        self.listeners = Listeners(listeners)
        self.records = StepRecords(keep_records)
        _require_bool(freeze_gc, "freeze_gc")
        self.freeze_gc = freeze_gc
        self._checkpoints: list[tuple[str, str]] = []  # (id, phase), oldest first
        self._mark: object = None
        self._pending: Pending | None = None
        self._allocation: seams.AllocationLike | None = None
        SessionBase.__init__(self, data, clock)
        self._machine = ChartMachine(self.chart, Binder(self, self.chart, self))
        self._configuration = self._machine.configuration
        self._phase = self._machine.leaf(self._configuration)
        self._state = self._in_phase(self._state, self._phase)

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
        return self._machine.history

    @property
    def state(self) -> LayeredState:
        """The layered state (frozen; each applied event may swap it)."""
        return self._state

    @property
    def conversation(self) -> Conversation:
        """The conversation (append-only; compression tags, never deletes)."""
        return self._conversation

    @property
    def allocation(self) -> seams.AllocationLike | None:
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

    def chart_plain(self) -> dict[str, object]:
        """The chart configuration with its history values, as plain data."""
        return self.chart_configuration.to_plain()

    # what the chart's model reads (see ctxflow.engine._machine.Binder)
    @property
    def intents(self) -> Intents | None:
        """The intents of the event being applied (None between events)."""
        return self._pending.intents if self._pending is not None else None

    @property
    def staged_state(self) -> LayeredState:
        """The layered state as the event being applied has it so far."""
        return self._pending.state if self._pending is not None else self._state

    @property
    def has_checkpoints(self) -> bool:
        """True once the engine wrote or restored a checkpoint."""
        return bool(self._checkpoints)

    def _perform(self, effect: Effect) -> object:
        """Hand one effect to its collaborator; the result may be awaitable."""
        match effect:
            case Restore():
                return self.checkpointer.restore(effect.checkpoint_id, measure=self.measure)
            case Consolidate():
                return self.consolidator(effect.conversation, effect.state)
            case Allocate():
                return self.allocator(effect.state, phase=effect.phase, policy=effect.policy)
            case Compress():
                return self.compressor(
                    effect.conversation,
                    effect.state,
                    effect.allocation,
                    phase=effect.phase,
                    policy=effect.policy,
                )
            case Capture():
                return self.checkpointer.capture(
                    effect.conversation,
                    state=effect.state,
                    chart=effect.chart,
                    phase=effect.phase,
                    trigger=effect.trigger,
                )

    # -- the operations, each once -------------------------------------------

    def _send_steps(self, event: str, kwargs: Mapping[str, object]) -> Steps[StepRecord]:
        """Apply ``event`` (see the module docstring); typed errors leave everything as it was."""
        self._check_live()
        tokens_before, allocation_before = self._conversation.effective_tokens, self._allocation
        pending = self._begin(event, kwargs)
        if TELEMETRY.on:
            pending.span = _telemetry.transition_started(self.session_id, event, pending.source)
        try:
            if pending.intents.restore:
                target = self._restore_target(pending)
                if target is not None:
                    self._apply_restore(pending, (yield Restore(checkpoint_id=target)), target)
            self._enter(pending)
            if pending.intents.consolidate:
                consolidated = yield Consolidate(
                    conversation=pending.conversation, state=pending.state
                )
                pending.state = seams.checked_state(consolidated, "consolidator")
            if pending.target == pending.source and self._allocation is not None:
                pending.allocation = self._allocation
            elif pending.target not in self.chart.finals:
                pending.allocation = seams.checked_allocation(
                    (yield self._allocate_effect(pending.state, pending.target))
                )
            if pending.allocation is not None:
                policy = self._compression_policy(pending.target)
                started = time.perf_counter()
                outcome = yield Compress(
                    conversation=pending.conversation,
                    state=pending.state,
                    allocation=pending.allocation,
                    phase=pending.target,
                    policy=policy,
                )
                self._compressed(pending, outcome)
                if TELEMETRY.on and pending.compression is not None:
                    self._report_compression(pending, started)
                if pending.compression is not None and not pending.intents.consolidate:
                    # what the compression took from view is consolidated into memory
                    consolidated = yield Consolidate(
                        conversation=pending.conversation, state=pending.state
                    )
                    pending.state = seams.checked_state(consolidated, "consolidator")
                    pending.intents.consolidate = True
                if pending.compression is not None:
                    # the prefix breaks here anyway: memory so far moves in front of the messages
                    pending.state = attrs.evolve(
                        pending.state, memory=pending.state.memory.settle()
                    )
            checkpoint = None
            trigger = self._checkpoint_trigger(pending)
            if trigger is not None:
                started = time.perf_counter()
                written = yield self._capture_effect(trigger, pending)
                checkpoint = (seams.checkpoint_id_of(written), trigger)
                if TELEMETRY.on:
                    _telemetry.checkpointed(
                        checkpoint[0],
                        started,
                        session_id=self.session_id,
                        phase=pending.target,
                        trigger=trigger,
                        parent=pending.span,
                    )
        except CtxflowError as exc:
            self._rollback(pending, exc)
            raise
        except Exception as exc:
            self._rollback(pending, exc)
            raise EventError(
                f"an engine effect failed while applying {pending.trigger!r} in phase "
                f"{pending.source!r}: {type(exc).__name__}: {exc}",
                rule="effect_failed",
                trigger=pending.trigger,
                phase=pending.source,
            ) from exc
        return self._land(pending, tokens_before, allocation_before, checkpoint)

    def _checkpoint_steps(self, trigger: str) -> Steps[str]:
        """Take a checkpoint now; its id."""
        started = time.perf_counter()
        checkpoint_id = seams.checkpoint_id_of((yield self._capture_effect(trigger)))
        self._after_checkpoint(checkpoint_id, trigger)
        if TELEMETRY.on:
            _telemetry.checkpointed(
                checkpoint_id,
                started,
                session_id=self.session_id,
                phase=self._phase,
                trigger=trigger,
            )
        return checkpoint_id

    def _restore_steps(self, checkpoint_id: str) -> Steps[None]:
        """Restore messages, layered state and chart configuration (with history)."""
        if not isinstance(checkpoint_id, str) or not checkpoint_id:
            raise errors.CheckpointError(
                f"'checkpoint_id' must be a non-empty string (got {checkpoint_id!r})",
                rule="checkpoint_id",
            )
        self._check_live()
        self._load_restored((yield Restore(checkpoint_id=checkpoint_id)), checkpoint_id)
        self._record("restore", checkpoint=checkpoint_id)
        self._frozen()

    def _open_steps(self, checkpoint_id: str | None) -> Steps[None]:
        """Become the session a checkpoint holds (None: its latest), data and version included."""
        restored = yield Restore(checkpoint_id=checkpoint_id)
        if checkpoint_id is None and isinstance(restored, Restored):
            checkpoint_id = restored.record.id
        self._become(self._load_restored(restored, str(checkpoint_id)))
        self._frozen()

    def _frozen(self) -> None:
        """With ``freeze_gc``: after a restore, move every object alive to the collector's
        permanent generation, so later collections do not walk the restored history
        again (``gc.freeze``: it applies to the whole process)."""
        if self.freeze_gc:
            gc.collect()
            gc.freeze()

    # -- applying an event, in stages ----------------------------------------

    def _begin(self, event: str, kwargs: Mapping[str, object]) -> Pending:
        if self._pending is not None:
            raise EventError(
                f"events must not be sent while another is being applied (got {event!r} "
                f"during {self._pending.trigger!r})",
                rule="reentrant_event",
                trigger=event,
            )
        state = checked_event(self.chart, self._state, event, kwargs)
        if event not in self.allowed_events:
            raise self._not_allowed(event)
        pending = Pending(
            trigger=event,
            source=self._phase,
            started=time.perf_counter(),
            before=self._machine.snapshot(),
            state=state,
            conversation=self._conversation,
            log_length=len(self._conversation),
            epoch=self._conversation.epoch,
            mark=self._conversation.change_mark,
        )
        self._pending = pending
        try:
            self._machine.send(event)
        except CtxflowError as exc:
            self._rollback(pending, exc)
            raise
        except Exception as exc:
            self._rollback(pending, exc)
            if _is_not_allowed(exc):
                raise self._not_allowed(event) from None
            raise EventError(
                f"a chart callback failed while applying {event!r} in phase "
                f"{pending.source!r}: {type(exc).__name__}: {exc}",
                rule="callback_failed",
                trigger=event,
                phase=pending.source,
            ) from exc
        pending.configuration = self._machine.configuration
        if pending.configuration != self._configuration:
            pending.target = self._machine.leaf(pending.configuration)
        else:
            pending.target = pending.source
        if event == "step":
            pending.state = pending.state.with_runtime(step=pending.state.runtime.step + 1)
        return pending

    def _not_allowed(self, event: str) -> NotAllowed:
        return NotAllowed(
            f"event {event!r} is not allowed in phase {self._phase!r} "
            f"(allowed: {', '.join(self.allowed_events) or 'none'})",
            event=event,
            phase=self._phase,
            configuration=self._configuration,
        )

    def _rollback(self, pending: Pending, error: Exception | None = None) -> None:
        self._pending = None
        if pending.span is not None:
            _telemetry.transition_ended(pending.span, error=error)
        compression = pending.compression
        report = compression.report if compression is not None else None
        if isinstance(report, CompressionReport) and report.changed:
            undo(pending.conversation, report)
        self._machine.rollback(pending.before)

    def _restore_target(self, pending: Pending) -> str | None:
        """The latest checkpoint taken outside the phase being left (a 'good' one)."""
        for checkpoint_id, phase in reversed(self._checkpoints):
            if phase != pending.source:
                return checkpoint_id
        return None

    def _apply_restore(self, pending: Pending, restored: object, cid: str) -> None:
        context, _ = self._unpack(restored, cid)
        pending.conversation = context.conversation
        conversation = context.conversation
        pending.log_length, pending.epoch = len(conversation), conversation.epoch
        pending.mark = conversation.change_mark
        pending.state = attrs.evolve(context.state, runtime=pending.state.runtime)
        pending.restored_from = cid

    def _enter(self, pending: Pending) -> None:
        """Stage the phase's runtime layer: phase name and projected tool set."""
        if pending.target != pending.source:
            pending.state = self._in_phase(pending.state, pending.target)

    def _in_phase(self, state: LayeredState, phase: str) -> LayeredState:
        """``state`` with its runtime layer in ``phase``: the phase's name and tool set."""
        config = self.phases.get(phase)
        return state.with_runtime(phase=phase, tools=config.tools if config is not None else None)

    def _budget_policy(self, phase: str) -> object:
        config = self.phases.get(phase)
        return config.budget_policy if config else None

    def _compression_policy(self, phase: str) -> object:
        config = self.phases.get(phase)
        return config.compression_policy if config else None

    def _allocate_effect(self, state: LayeredState, phase: str) -> Allocate:
        return Allocate(state=state, phase=phase, policy=self._budget_policy(phase))

    def _allocate_now(self, state: LayeredState, phase: str) -> seams.AllocationLike | None:
        """Allocate synchronously (restores and chart moves, outside an event)."""
        if phase in self.chart.finals:
            return None
        return seams.checked_allocation(self._perform(self._allocate_effect(state, phase)))

    def _compressed(self, pending: Pending, outcome: object) -> None:
        """Take the guard's outcome: None, or the run's new state and report."""
        if outcome is None:
            return
        if not isinstance(outcome, CompressionResult):
            raise errors.PolicyError(
                f"a compression guard must return a CompressionResult or None "
                f"(got {type(outcome).__name__})",
                rule="guard_result",
            )
        pending.compression = outcome
        pending.state = attrs.evolve(outcome.state, runtime=pending.state.runtime)

    def _report_compression(self, pending: Pending, started: float) -> None:
        """Report the event's compression to telemetry (it ran from the guard's start on)."""
        report = pending.compression.report if pending.compression is not None else None
        _telemetry.compressed(
            started,
            session_id=self.session_id,
            phase=pending.target,
            reason="guard",
            tokens_before=getattr(report, "tokens_before", None),
            tokens_after=getattr(report, "tokens_after", None),
            parent=pending.span,
        )

    def _checkpoint_trigger(self, pending: Pending) -> str | None:
        if pending.target != pending.source:
            return "transition"
        if pending.intents.checkpoint:
            return "chart"
        return self.checkpoint_policy.should_checkpoint(
            phase=pending.target,
            message_count=len(pending.conversation),
            tokens=pending.conversation.effective_tokens,
            last=self._mark,  # type: ignore[arg-type]
        )

    def _after_checkpoint(self, checkpoint_id: str, trigger: str) -> None:
        self._checkpoints.append((checkpoint_id, self._phase))
        self._saved(self._version, self.audit.seq)
        self._remark()
        for hook in self.listeners.checkpoint:
            hook(checkpoint_id, trigger=trigger, phase=self._phase)

    def _remark(self) -> None:
        policy = self.checkpoint_policy
        if hasattr(policy, "mark"):
            self._mark = policy.mark(
                phase=self._phase,
                message_count=len(self._conversation),
                tokens=self._conversation.effective_tokens,
            )

    def _changed(self) -> None:
        """Push the memory a change touched to the shared store (when there is one)."""
        if self._shared is not None:
            self._shared.push(self._state)

    def _land(
        self,
        pending: Pending,
        tokens_before: int,
        allocation_before: seams.AllocationLike | None,
        checkpoint: tuple[str, str] | None,
    ) -> StepRecord:
        """Commit an applied event: the new values, its audit event, its checkpoint, its record."""
        payload = self._event_payload(pending)
        self._pending = None
        self._state = pending.state
        self._conversation = pending.conversation
        self._configuration = pending.configuration
        self._phase = pending.target
        self._allocation = pending.allocation
        self._record("event", phase=pending.source, payload=payload)
        if checkpoint is not None:
            self._after_checkpoint(*checkpoint)
        record = pending.record(
            index=self.records.total,
            allocation_before=allocation_before,
            tokens_before=tokens_before,
            tokens_after=self._conversation.effective_tokens,
            checkpoint=checkpoint,
            now=time.perf_counter(),
        )
        self.records.append(record)
        if pending.span is not None:
            _telemetry.transition_ended(pending.span, record)
        self.listeners.announce(record, phase=self._phase, session=self.session_id)
        return record

    # -- restored checkpoints ------------------------------------------------

    def _unpack(self, restored: object, checkpoint_id: str) -> tuple[AgentContext, SessionInfo]:
        """The context and session info a checkpointer gave back, checked against this chart."""
        return seams.unpack_restored(restored, checkpoint_id, self.chart.name)

    def _load_restored(self, restored: object, checkpoint_id: str) -> SessionInfo:
        """Replace conversation, state and chart configuration with the checkpoint's."""
        context, session = self._unpack(restored, checkpoint_id)
        before = (self._configuration, {k: tuple(v) for k, v in self.history.items()})
        if context.chart.configuration:
            self._set_chart(context.chart.configuration, context.chart.history)
        try:
            self._allocation = self._allocate_now(context.state, self._phase)
        except CtxflowError:
            self._set_chart(*before)
            raise
        self._conversation = context.conversation
        self._state = context.state.with_runtime(phase=self._phase)
        self._checkpoints.append((checkpoint_id, self._phase))
        self._remark()
        return session

    def _set_chart(
        self, configuration: tuple[str, ...], history: Mapping[str, tuple[str, ...]]
    ) -> None:
        self._machine.set(configuration, history)
        self._configuration = self._machine.configuration
        self._phase = self._machine.leaf(self._configuration)


def _require_bool(value: object, name: str) -> None:
    if value is not True and value is not False:
        raise errors.PolicyError(
            f"'{name}' must be True or False (got {value!r})", rule=f"engine_{name}"
        )


def _is_not_allowed(exc: Exception) -> bool:
    from statemachine.exceptions import TransitionNotAllowed

    return isinstance(exc, TransitionNotAllowed)
