"""What the tests of fixture stores written by earlier releases share: the keyed measure
they were written with, and what a checkpoint restores to, as the fixtures record it."""

from __future__ import annotations

from typing import Any

from ctxflow.model import Message
from ctxflow.persistence import restore
from ctxflow.stores import SQLiteStore


class CharMeasure:
    """The keyed measure the fixtures were written and recorded with."""

    key = "fixture/chars"

    def __call__(self, message: Message) -> int:
        return len(message.text) // 4 + 4


def seen(store: SQLiteStore, session: str, checkpoint_id: str | None) -> dict[str, Any]:
    """A checkpoint as the fixtures' JSON records it (None: the latest)."""
    got = restore(store, session, checkpoint_id, measure=CharMeasure())
    talk = got.conversation
    return {
        "id": got.record.id,
        "seq": got.record.seq,
        "full": got.record.full,
        "trigger": got.record.trigger,
        "message_count": got.record.message_count,
        "ids": [m.id for m in talk],
        "effective": [m.id for m in talk.effective()],
        "overlays": sorted(talk.overlays),
        "state": got.state,
        "tokens": [talk.tokens(m.id) for m in talk],
    }
