"""The audit log of a session: every change made to an engine, and how to replay it.

Each change to an engine — messages appended, the layered state or user data
replaced, an event applied, a compression run, a checkpoint restored —
appends an :class:`AuditEvent` (what, when, by whom, in which phase) to the
engine's :class:`AuditLog`. Replaying the events since a checkpoint over that
checkpoint rebuilds the session exactly; each checkpoint records how far the
log had got, and the events since the previous one in light form (ids, not
bodies).

Events hold references to the frozen messages and states they added, never
copies, so the log costs little memory; a checkpoint trims the events it
covers. An event's effect on the conversation's tags and overlays is
recorded in full (:func:`tags_of`) only when the event changed them, which
the conversation's ``epoch`` tells at no cost.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from ctxflow.model import Conversation, Message

__all__ = ["AuditEvent", "AuditLog", "apply_tags", "tags_of"]

#: Message id → (condense parent, truncation parent) of every hidden message.
Tags = Mapping[str, tuple[str | None, str | None]]


@attrs.frozen(kw_only=True)
class AuditEvent:
    """One change to a session."""

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
            elif key in ("state", "chart"):
                payload[key] = "replaced"
            elif key == "tags":
                payload["tags"] = len(value)
            elif key == "overlays":  # a count, as for tags: the manifest holds which
                payload["overlays"] = len(value)
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
    """The ordered events of one session since its last checkpoint."""

    def __init__(self, start: int = 0) -> None:
        self._events: list[AuditEvent] = []
        self.seq = start

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[AuditEvent]:
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
        """Forget events up to ``seq`` (a checkpoint holds them)."""
        self._events = [e for e in self._events if e.seq > seq]


def tags_of(conversation: Conversation) -> dict[str, Any]:
    """The conversation's compression tags and overlays, in full (for replay)."""
    tags = {
        m.id: (m.condense_parent, m.truncation_parent) for m in conversation.messages if m.hidden
    }
    return {"tags": tags, "overlays": conversation.overlays}


def apply_tags(conversation: Conversation, tags: Tags, overlays: Mapping[str, Message]) -> None:
    """Make ``conversation``'s tags and overlays exactly ``tags`` and ``overlays``."""
    current = tags_of(conversation)
    stale = [i for i, tag in current["tags"].items() if tags.get(i) != tag]
    if stale:
        conversation.unhide(stale)
    by_tag: dict[tuple[str | None, str | None], list[str]] = {}
    for message_id, tag in tags.items():
        if current["tags"].get(message_id) != tag:
            by_tag.setdefault(tag, []).append(message_id)
    for (condense, truncation), ids in by_tag.items():
        if condense is not None:
            conversation.hide(ids, condense_parent=condense)
        if truncation is not None:
            conversation.hide(ids, truncation_parent=truncation)
    gone = [i for i in current["overlays"] if i not in overlays]
    if gone:
        conversation.remove_overlays(gone)
    changed = {k: v for k, v in overlays.items() if current["overlays"].get(k) is not v}
    if changed:
        conversation.set_overlays(changed)
