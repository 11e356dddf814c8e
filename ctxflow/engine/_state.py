"""Changes to an engine's context: messages, state, chart moves, replay, and their record.

Each takes the engine's lock, refuses a retired engine, and logs one audit
event; replaying the events over the checkpoint they follow rebuilds the
session (a change to the conversation's tags and overlays is logged in
full, and only when the conversation's ``epoch`` says it happened).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import attrs

from ctxflow import _telemetry, errors
from ctxflow._telemetry import STATE as TELEMETRY
from ctxflow.context import AgentContext, ChartConfiguration, SessionInfo, to_checkpoint
from ctxflow.engine._audit import AuditEvent, apply_tags, tags_of
from ctxflow.engine._effects import Capture, Pending
from ctxflow.engine._session import SessionBase
from ctxflow.errors import CtxflowError
from ctxflow.layers import LayeredState
from ctxflow.model import Conversation, Message

if TYPE_CHECKING:
    from ctxflow.engine._charts import Chart
    from ctxflow.engine._machine import ChartMachine
    from ctxflow.engine._seams import AllocationLike, SupportsCheckpoints
    from ctxflow.protocols import Measure

__all__ = ["ContextOps"]


class ContextOps(SessionBase):
    """The engine's changes outside events (a part of the engine's core)."""

    # what the core provides
    chart: Chart
    checkpointer: SupportsCheckpoints
    measure: Measure
    _conversation: Conversation
    _state: LayeredState
    _phase: str
    _configuration: tuple[str, ...]
    _allocation: AllocationLike | None
    _machine: ChartMachine

    _pending: Pending | None

    if TYPE_CHECKING:  # what the core and SessionBase define

        @property
        def context(self) -> AgentContext: ...

        @property
        def history(self) -> dict[str, list[str]]: ...

        @property
        def chart_configuration(self) -> ChartConfiguration: ...

        def _allocate_now(self, state: LayeredState, phase: str) -> AllocationLike | None: ...

        def _in_phase(self, state: LayeredState, phase: str) -> LayeredState: ...

        def _set_chart(
            self, configuration: tuple[str, ...], history: Mapping[str, tuple[str, ...]]
        ) -> None: ...

        def _load_restored(self, restored: object, checkpoint_id: str) -> SessionInfo: ...

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
        _require(state, LayeredState, "state")
        with self.lock:
            self._check_live()
            new = attrs.evolve(state, runtime=self._state.runtime)
            if new == self._state:
                return
            self._state = new
            self._record("state", actor, state=new)

    def set_plan(self, plan: str, *, actor: str | None = None) -> None:
        """Replace the agent's plan: kept in the work buffer, checkpointed, shown in every window.

        An empty string clears it. ``PolicyError`` for anything but a string.
        """
        _require(plan, str, "plan")
        with self.lock:
            self._check_live()
            if plan == self._state.work.plan:
                return
            self._state = self._state.with_plan(plan)
            self._record("state", actor, state=self._state)

    @property
    def plan(self) -> str:
        """The agent's current plan ("" when none)."""
        return self._state.work.plan

    def set_chart(self, chart: ChartConfiguration, *, actor: str | None = None) -> None:
        """Move the chart to ``chart``'s configuration and history; no event, guard or action runs.

        For sessions that start somewhere other than the chart's initial state
        (a merged or split session keeps its source's phase). The phase's
        budget is reallocated; nothing else changes.
        """
        _require(chart, ChartConfiguration, "chart")
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
        before = (self._configuration, {k: tuple(v) for k, v in self.history.items()})
        self._set_chart(chart.configuration, chart.history)
        try:
            allocation = self._allocate_now(self._state, self._phase)
        except CtxflowError:
            self._set_chart(*before)
            raise
        self._allocation = allocation
        self._state = self._in_phase(self._state, self._phase)

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
            conversation = self._conversation
            length, epoch, mark = len(conversation), conversation.epoch, conversation.change_mark
            started, tokens = time.perf_counter(), conversation.effective_tokens
            state = run(self._conversation, self._state)
            if not isinstance(state, LayeredState):
                raise errors.PolicyError(
                    f"a compression must return a LayeredState (got {type(state).__name__})",
                    rule="engine_state",
                )
            state = attrs.evolve(state, runtime=self._state.runtime)
            changes = self._changes(self._conversation, length, epoch, mark)
            if not changes and state == self._state:
                return None
            self._state = state
            recorded = self._record("compress", actor, payload=changes, reason=reason, state=state)
            if TELEMETRY.on:
                _telemetry.compressed(
                    started,
                    session_id=self.session_id,
                    phase=self._phase,
                    reason=reason or "manual",
                    tokens_before=tokens,
                    tokens_after=self._conversation.effective_tokens,
                )
            return recorded

    @staticmethod
    def _changes(
        conversation: Conversation, length: int, epoch: int, mark: int
    ) -> dict[str, object]:
        """What changed in ``conversation`` since it had ``length`` messages at ``epoch``
        (and change-journal ``mark``)."""
        changes: dict[str, object] = {}
        if len(conversation) > length:
            changes["messages"] = conversation.since(length)
        if conversation.epoch != epoch:
            changes.update(tags_of(conversation, conversation.changes_since(mark)))
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
        if event.kind == "restore" or "restored" in payload:
            checkpoint_id = str(payload.get("checkpoint", payload.get("restored")))
            self._load_restored(
                self.checkpointer.restore(checkpoint_id, measure=self.measure), checkpoint_id
            )
            if event.kind == "restore":
                return
        if "messages" in payload:
            self._conversation.extend(payload["messages"])
        if "tags" in payload:
            apply_tags(
                self._conversation,
                payload["tags"],
                payload["overlays"],
                whole=bool(payload.get("whole")),
            )
        if "chart" in payload:
            self._move_chart(payload["chart"])
        if "state" in payload:
            self._state = payload["state"]

    def _capture_effect(self, trigger: str, pending: Pending | None = None) -> Capture:
        """The checkpoint of the current context, or of ``pending``'s (with its event logged)."""
        if pending is None:
            context, events, session = self.context, self.audit.events, self.session
        else:
            chart = ChartConfiguration(
                chart=self.chart.name, configuration=pending.configuration, history=self.history
            )
            context = AgentContext(
                conversation=pending.conversation, state=pending.state, chart=chart
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
        state, chart_plain = to_checkpoint(context, session, [e.light() for e in events])
        return Capture(
            conversation=context.conversation,
            state=state,
            chart=chart_plain,
            phase=context.phase,
            trigger=trigger,
        )

    def _event_payload(self, pending: Pending) -> dict[str, object]:
        """What the event changed, for its audit record (built once per event)."""
        if pending.payload is not None:
            return pending.payload
        payload: dict[str, object] = {
            "trigger": pending.trigger,
            "source": pending.source,
            "state": pending.state,
        }
        if pending.target != pending.source or pending.configuration != self._configuration:
            payload["chart"] = ChartConfiguration(
                chart=self.chart.name, configuration=pending.configuration, history=self.history
            )
        if pending.restored_from is not None:
            payload["restored"] = pending.restored_from
        payload.update(
            self._changes(pending.conversation, pending.log_length, pending.epoch, pending.mark)
        )
        pending.payload = payload
        return payload


def _require(value: object, kind: type, name: str) -> None:
    """``PolicyError`` (rule ``engine_<name>``) unless ``value`` is a ``kind``."""
    if not isinstance(value, kind):
        raise errors.PolicyError(
            f"'{name}' must be a {kind.__name__} (got {type(value).__name__})",
            rule=f"engine_{name}",
        )
