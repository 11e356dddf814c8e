"""An audit event records only the tags and overlays its change touched, and replays exactly."""

from __future__ import annotations

from hypothesis import given, settings

from ctxflow.engine._audit import apply_tags, tags_of
from ctxflow.model import Conversation, Message
from tests.checkpoints.test_change_journal import OPS, _apply


def _copy(conversation: Conversation) -> Conversation:
    copy = Conversation(conversation.messages)
    apply_tags(copy, **tags_of(conversation))
    return copy


@settings(max_examples=60, deadline=None)
@given(ops=OPS)
def test_changed_tags_replay_onto_a_copy(ops: list[tuple[str, int, int]]) -> None:
    """Each span of changes, recorded from the journal, takes a copy to the same view."""
    conversation = Conversation([Message.user("task", id="m0")])
    copy = _copy(conversation)
    length, mark = len(conversation), conversation.change_mark
    for n, (op, pick, width) in enumerate(ops, 1):
        if op != "capture":
            _apply(conversation, op, pick, width, n)
            continue
        recorded = tags_of(conversation, conversation.changes_since(mark))
        assert "whole" not in recorded
        copy.extend(conversation.since(length))
        apply_tags(copy, recorded["tags"], recorded["overlays"], whole=False)
        assert copy.messages == conversation.messages
        assert copy.overlays == conversation.overlays
        assert copy.effective() == conversation.effective()
        length, mark = len(conversation), conversation.change_mark


def test_a_lost_mark_records_everything() -> None:
    """When the journal no longer reaches back, the event records every tag and overlay."""
    conversation = Conversation([Message.user("a", id="a"), Message.assistant("b", id="b")])
    conversation.hide(["b"], truncation_parent="t")
    recorded = tags_of(conversation, None)
    assert recorded["whole"] is True
    assert recorded["tags"] == {"b": (None, "t")}
