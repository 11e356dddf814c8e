"""Tests for the tool-pair index: admission of a batch's tool blocks and pair lookups."""

from __future__ import annotations

import pytest

from ctxflow.errors import InvalidMessage
from ctxflow.model import Message, ToolResultBlock, ToolUseBlock
from ctxflow.model._pairs import PairIndex, ToolPair


def call(tool_id: str, id: str) -> Message:
    return Message(
        role="assistant", id=id, content=(ToolUseBlock(id=tool_id, name="bash", input={}),)
    )


def result(tool_id: str, id: str) -> Message:
    return Message(
        role="user", id=id, content=(ToolResultBlock(tool_use_id=tool_id, content="ok"),)
    )


def test_pair_answers_for_an_open_call_and_a_closed_one() -> None:
    """pair() names the calling message, and the answering one once the result is in."""
    index = PairIndex()
    index.add(index.admit([call("a", "m1"), result("a", "m2"), call("b", "m3")], 1))
    assert index.pair("a") == ToolPair(
        tool_use_id="a", name="bash", use_message="m1", result_message="m2"
    )
    assert index.pair("b").result_message is None
    assert [p.tool_use_id for p in index] == ["a", "b"]


def test_admit_refuses_an_orphan_result_and_indexes_nothing() -> None:
    """A result answering no call is refused at its log position; the index is unchanged."""
    index = PairIndex()
    index.add(index.admit([call("a", "m1")], 1))
    with pytest.raises(InvalidMessage) as caught:
        index.admit([result("a", "m2"), result("zz", "m3")], 2)
    assert (caught.value.rule, caught.value.details["index"]) == ("orphan_tool_result", 3)
    assert index.pair("a").result_message is None


def test_a_batch_without_tool_blocks_admits_nothing() -> None:
    """Plain messages give no batch to add; an unknown call id is a typed error."""
    index = PairIndex()
    admitted = index.admit([Message.user("hi", id="u0")], 0)
    assert admitted is None
    index.add(admitted)
    with pytest.raises(InvalidMessage) as caught:
        index.pair("a")
    assert caught.value.rule == "unknown_tool_use"
