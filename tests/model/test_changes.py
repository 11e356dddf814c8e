"""Tests for the rules a compression's change must meet before anything changes."""

from __future__ import annotations

import pytest

from ctxflow.errors import InvalidMessage
from ctxflow.model import Message
from ctxflow.model._changes import check_truncations, mark_summaries
from ctxflow.model._log import MessageLog
from ctxflow.model._view import SUMMARY_OF


def _log() -> MessageLog:
    log = MessageLog()
    log.add(
        [Message.user("task", id="u0", important=True), Message.assistant("b", id="a0")], [1, 1]
    )
    return log


def test_summaries_are_marked_with_what_they_cover() -> None:
    """A later summary may cover an earlier one of the same change; each is marked."""
    marked = mark_summaries(
        _log(),
        [(Message.user("g1", id="g1"), ["a0"]), (Message.user("g2", id="g2"), ["g1"])],
    )
    assert [m.metadata[SUMMARY_OF] for m in marked] == [["a0"], ["g1"]]


def test_a_pinned_message_refuses_to_be_condensed_or_truncated() -> None:
    """Covering or truncating an important message raises the pinned rule."""
    with pytest.raises(InvalidMessage) as caught:
        mark_summaries(_log(), [(Message.user("g", id="g"), ["u0"])])
    assert caught.value.rule == "pinned"
    with pytest.raises(InvalidMessage) as caught:
        check_truncations(_log(), {"a0": "t", "u0": "t"})
    assert caught.value.rule == "pinned"


def test_a_truncation_tag_must_be_a_non_empty_string() -> None:
    """An empty truncation tag is refused with the tag rule, naming the message."""
    with pytest.raises(InvalidMessage) as caught:
        check_truncations(_log(), {"a0": ""})
    assert (caught.value.rule, caught.value.details["message_id"]) == ("tag", "a0")
