"""``Conversation.history``: the log as a read-only sequence, without a copy."""

from __future__ import annotations

import pytest

from ctxflow.model import Conversation, Message


def test_history_reads_the_log_and_follows_appends() -> None:
    conversation = Conversation([Message.user("one", id="a"), Message.assistant("two", id="b")])
    history = conversation.history
    assert len(history) == 2 and history[0].id == "a" and history[-1].id == "b"
    assert history[1:] == (conversation.original("b"),)
    conversation.append(Message.user("three", id="c"))
    assert [m.id for m in history] == ["a", "b", "c"]
    assert tuple(history) == conversation.messages


def test_history_cannot_change_the_log() -> None:
    conversation = Conversation([Message.user("one", id="a")])
    history = conversation.history
    with pytest.raises(TypeError):
        history[0] = Message.user("other", id="z")  # type: ignore[index]
    with pytest.raises(AttributeError):
        history.append(Message.user("other", id="z"))  # type: ignore[attr-defined]
    assert [m.id for m in conversation.history] == ["a"]


def test_history_shows_tags_as_they_change() -> None:
    conversation = Conversation(
        [Message.user("one", id="a"), Message.assistant("two", id="b"), Message.user("3", id="c")]
    )
    history = conversation.history
    conversation.hide(["a", "b"], truncation_parent="cut")
    assert history[0].hidden and history[1].hidden and not history[2].hidden
