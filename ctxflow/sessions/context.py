"""A context (session) in memory, and the audit log of every change made to it.

A :class:`Context` holds one agent context: the conversation, the layered
state, the chart configuration and free-form user data. It is changed only
through its methods, each of which appends an :class:`AuditEvent` — what, when,
by whom, in which phase — to the context's :class:`AuditLog`. Replaying the
log over the latest checkpoint rebuilds the context exactly; a checkpoint is a
snapshot of the log (it records how far the log had got, and the events since
the previous checkpoint in light form: ids, not bodies).

Events hold references to the frozen messages and states they added, never
copies, so the log costs little memory. The manager trims events older than
the last checkpoint.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from ctxflow.layers import LayeredState
from ctxflow.model import Conversation, Message

__all__ = ["AuditEvent", "AuditLog", "Context", "conversation_diff"]

Clock = Callable[[], float]


@attrs.frozen(kw_only=True)
class AuditEvent:
    """One change to a context."""

    seq: int
    at: float
    actor: str | None
    phase: str
    kind: str
    payload: Mapping[str, Any] = attrs.field(factory=dict, repr=False)

    def light(self) -> dict[str, Any]:
        """The event as plain data, with message bodies replaced by their ids."""
        payload: dict[str, Any] = {}
        for key, value in self.payload.items():
            if key == "messages":
                payload["ids"] = [m.id for m in value]
            elif key == "state":
                payload["state"] = "replaced"
            elif key == "overlays":
                payload["overlays"] = sorted(value)
            else:
                payload[key] = value
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "phase": self.phase,
            "kind": self.kind,
            "payload": payload,
        }


class AuditLog:
    """The ordered events of one context since its last checkpoint."""

    def __init__(self, start: int = 0) -> None:
        self._events: list[AuditEvent] = []
        self.seq = start

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterable[AuditEvent]:
        return iter(self._events)

    @property
    def events(self) -> tuple[AuditEvent, ...]:
        """The events kept in memory, oldest first."""
        return tuple(self._events)

    def append(
        self, *, at: float, actor: str | None, phase: str, kind: str, **payload: Any
    ) -> AuditEvent:
        """Record one change."""
        self.seq += 1
        event = AuditEvent(
            seq=self.seq, at=at, actor=actor, phase=phase, kind=kind, payload=payload
        )
        self._events.append(event)
        return event

    def since(self, seq: int) -> list[AuditEvent]:
        """The events after ``seq``."""
        return [e for e in self._events if e.seq > seq]

    def trim(self, seq: int) -> None:
        """Forget events up to ``seq`` (they are in a checkpoint)."""
        self._events = [e for e in self._events if e.seq > seq]


def conversation_diff(
    conversation: Conversation,
    length: int,
    tags: Mapping[str, tuple[str | None, str | None]],
    overlays: Mapping[str, Message],
) -> dict[str, Any]:
    """What changed in ``conversation`` since a snapshot of (length, tags, overlays)."""
    log = conversation.messages
    new_tags = {
        m.id: (m.condense_parent, m.truncation_parent)
        for m in log[:length]
        if tags.get(m.id, (None, None)) != (m.condense_parent, m.truncation_parent)
    }
    current = conversation.overlays
    changed = {k: v for k, v in current.items() if overlays.get(k) is not v}
    removed = sorted(k for k in overlays if k not in current)
    return {
        "messages": tuple(log[length:]),
        "tags": new_tags,
        "overlays": changed,
        "removed_overlays": removed,
    }


def tag_snapshot(conversation: Conversation) -> dict[str, tuple[str | None, str | None]]:
    """The compression tags of every tagged message."""
    return {
        m.id: (m.condense_parent, m.truncation_parent) for m in conversation.messages if m.hidden
    }


def apply_diff(conversation: Conversation, diff: Mapping[str, Any]) -> None:
    """Apply a :func:`conversation_diff` to a conversation (used by replay)."""
    conversation.extend(diff.get("messages", ()))
    tags: Mapping[str, tuple[str | None, str | None]] = diff.get("tags", {})
    if tags:
        conversation.unhide(tags)
        by_tag: dict[tuple[str | None, str | None], list[str]] = {}
        for message_id, tag in tags.items():
            by_tag.setdefault(tag, []).append(message_id)
        for (condense, truncation), ids in by_tag.items():
            if condense is not None:
                conversation.hide(ids, condense_parent=condense)
            if truncation is not None:
                conversation.hide(ids, truncation_parent=truncation)
    removed = list(diff.get("removed_overlays", ()))
    if removed:
        conversation.remove_overlays(removed)
    if diff.get("overlays"):
        conversation.set_overlays(diff["overlays"])


@attrs.define(eq=False)
class Context:
    """One live context. Change it through its methods so every change is audited."""

    id: str
    conversation: Conversation
    state: LayeredState = attrs.field(factory=LayeredState)
    chart: dict[str, Any] = attrs.field(factory=dict)
    data: dict[str, Any] = attrs.field(factory=dict)
    version: int = 0
    saved_version: int = -1
    audit: AuditLog = attrs.field(factory=AuditLog)
    clock: Clock = attrs.field(default=time.time, repr=False)
    lock: threading.RLock = attrs.field(factory=threading.RLock, repr=False)
    deleted: bool = False

    @property
    def dirty(self) -> bool:
        """True when the context changed since it was last saved."""
        return self.version != self.saved_version

    @property
    def phase(self) -> str:
        """The phase recorded in the layered state's runtime layer."""
        return self.state.runtime.phase

    def _record(self, kind: str, actor: str | None, **payload: Any) -> AuditEvent:
        self.version += 1
        return self.audit.append(
            at=self.clock(), actor=actor, phase=self.phase, kind=kind, **payload
        )

    def append(self, messages: Sequence[Message], *, actor: str | None = None) -> None:
        """Append messages (checked first: a bad batch changes nothing)."""
        batch = tuple(messages)
        self.conversation.extend(batch)
        self._record("append", actor, messages=batch)

    def set_state(self, state: LayeredState, *, actor: str | None = None) -> None:
        """Replace the layered state."""
        if state is self.state:
            return
        self.state = state
        self._record("state", actor, state=state)

    def set_data(self, key: str, value: Any, *, actor: str | None = None) -> None:
        """Set one user-data entry (plain data: it is stored in checkpoints)."""
        self.data[key] = value
        self._record("data", actor, key=key, value=value)

    def set_chart(self, chart: Mapping[str, Any], *, actor: str | None = None) -> None:
        """Replace the chart configuration (plain data)."""
        self.chart = dict(chart)
        self._record("chart", actor, chart=dict(chart))

    def compress(
        self,
        run: Callable[[Conversation, LayeredState], LayeredState],
        *,
        actor: str | None = None,
        reason: str = "",
    ) -> AuditEvent | None:
        """Run a compression over the conversation and record what it changed.

        ``run`` tags, overlays or summarises through the Conversation's own
        methods and returns the (possibly new) layered state.
        """
        length = len(self.conversation)
        tags = tag_snapshot(self.conversation)
        overlays = self.conversation.overlays
        state = run(self.conversation, self.state)
        diff = conversation_diff(self.conversation, length, tags, overlays)
        changed = any(diff[k] for k in diff) or state is not self.state
        if not changed:
            return None
        self.state = state
        return self._record("compress", actor, reason=reason, state=state, **diff)

    def replay(self, events: Iterable[AuditEvent]) -> None:
        """Apply recorded events (from another copy of this context) to this one."""
        for event in events:
            payload = event.payload
            if event.kind == "append":
                self.conversation.extend(payload["messages"])
            elif event.kind == "state":
                self.state = payload["state"]
            elif event.kind == "data":
                self.data[payload["key"]] = payload["value"]
            elif event.kind == "chart":
                self.chart = dict(payload["chart"])
            elif event.kind == "compress":
                apply_diff(self.conversation, payload)
                self.state = payload["state"]
            self.version += 1
            self.audit.seq = event.seq
