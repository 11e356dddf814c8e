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
recorded (:func:`tags_of`) only when the event changed them, which the
conversation's ``epoch`` tells at no cost, and then only for the messages
its change journal names (in full when the journal no longer reaches back).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
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


def tags_of(conversation: Conversation, positions: Sequence[int] | None = None) -> dict[str, Any]:
    """The conversation's compression tags and overlays, for replay.

    With ``positions`` (from the conversation's change journal), only the
    messages there: ``tags`` maps each to its tags or None (shown), ``overlays``
    to its overlay or None (lifted). Without, every hidden message and every
    overlay, marked ``whole``.
    """
    if positions is None:
        tags = {
            m.id: (m.condense_parent, m.truncation_parent)
            for m in conversation.messages
            if m.hidden
        }
        return {"tags": tags, "overlays": conversation.overlays, "whole": True}
    changed: dict[str, tuple[str | None, str | None] | None] = {}
    overlays: dict[str, Message | None] = {}
    size = len(conversation)
    for at in dict.fromkeys(positions):
        if at >= size:
            continue  # appended by a compression taken back
        message = conversation.at(at)
        hidden = message.hidden
        changed[message.id] = (
            (message.condense_parent, message.truncation_parent) if hidden else None
        )
        overlays[message.id] = conversation.overlay(message.id)
    return {"tags": changed, "overlays": overlays}


def apply_tags(
    conversation: Conversation,
    tags: Mapping[str, Any],
    overlays: Mapping[str, Message | None],
    *,
    whole: bool = True,
) -> None:
    """Give ``conversation`` the tags and overlays :func:`tags_of` recorded: exactly
    these (``whole``), or these changes."""
    if whole:
        current = tags_of(conversation)
        stale = [i for i, tag in current["tags"].items() if tags.get(i) != tag]
        gone = [i for i in current["overlays"] if i not in overlays]
        was: Mapping[str, Any] = current["tags"]
        laid: Mapping[str, Any] = current["overlays"]
    else:
        was = {
            i: (m.condense_parent, m.truncation_parent)
            for i in tags
            if (m := conversation.original(i)).hidden
        }
        stale = [i for i, tag in tags.items() if was.get(i) is not None and was[i] != tag]
        gone = [i for i, o in overlays.items() if o is None and conversation.overlay(i) is not None]
        laid = {i: conversation.overlay(i) for i in overlays}
    if stale:
        conversation.unhide(stale)
    by_tag: dict[tuple[str | None, str | None], list[str]] = {}
    for message_id, tag in tags.items():
        if tag is not None and (message_id in stale or was.get(message_id) != tag):
            by_tag.setdefault(tuple(tag), []).append(message_id)
    for (condense, truncation), ids in by_tag.items():
        if condense is not None:
            conversation.hide(ids, condense_parent=condense)
        if truncation is not None:
            conversation.hide(ids, truncation_parent=truncation)
    if gone:
        conversation.remove_overlays(gone)
    changed = {k: v for k, v in overlays.items() if v is not None and laid.get(k) is not v}
    if changed:
        conversation.set_overlays(changed)
