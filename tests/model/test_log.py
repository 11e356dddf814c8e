"""Tests for the conversation's log: admission, positions, counts and taking back."""

from __future__ import annotations

import pytest

from ctxflow.errors import InvalidMessage
from ctxflow.model import Message, TextBlock, ToolUseBlock
from ctxflow.model._log import MessageLog, char_estimate


def test_admit_refuses_a_duplicate_id_before_any_change() -> None:
    """A batch repeating an id is refused at that message's log position; nothing is stored."""
    log = MessageLog()
    log.add([Message.user("a", id="u0")], [3])
    with pytest.raises(InvalidMessage) as caught:
        log.admit([Message.assistant("b", id="a0"), Message.user("c", id="a0")])
    assert (caught.value.rule, caught.value.details["index"]) == ("duplicate_message_id", 2)
    assert [m.id for m in log.messages] == ["u0"]


def test_positions_check_every_id_first() -> None:
    """positions() raises unknown_message for any unknown id, naming it."""
    log = MessageLog()
    log.add([Message.user("a", id="u0"), Message.assistant("b", id="a0")], [1, 2])
    assert log.positions(["a0", "u0"]) == [1, 0]
    with pytest.raises(InvalidMessage) as caught:
        log.positions(["u0", "nope"])
    assert caught.value.rule == "unknown_message"
    assert caught.value.details["message_id"] == "nope"


def test_pop_takes_back_the_last_message_with_its_count() -> None:
    """pop() removes the last message, its position and its tokens from the total."""
    log = MessageLog()
    log.add([Message.user("a", id="u0"), Message.assistant("b", id="a0")], [3, 4])
    assert log.pop().id == "a0"
    assert (len(log), log.total, "a0" in log.position) == (1, 3, False)


def test_char_estimate_counts_every_string_field() -> None:
    """The fallback measure is chars/4 over texts, ids, names and block types, plus 4."""
    use = ToolUseBlock(id="call_1", name="bash", input={"c": "ignored"})
    message = Message(role="assistant", content=(TextBlock(text="x" * 12), use))
    expected = (len("text") + 12 + len("tool_use") + len("call_1") + len("bash")) // 4 + 4
    assert char_estimate(message) == expected
