"""Tests for merging and splitting contexts."""

from __future__ import annotations

import pytest

from ctxflow.errors import SessionError
from ctxflow.layers import Episode, LayeredState
from ctxflow.model import Conversation, Message, ToolResultBlock, ToolUseBlock, check
from ctxflow.sessions._merge import Part, merge_parts, originals, split_messages


def turn(tool_id: str, t: float) -> list[Message]:
    call = Message(
        role="assistant",
        content=(ToolUseBlock(id=tool_id, name="bash", input={}),),
        timestamp=t,
    )
    result = Message(
        role="user", content=(ToolResultBlock(tool_use_id=tool_id, content="ok"),), timestamp=t
    )
    return [call, result]


def part(name: str, t0: float, state: LayeredState | None = None, **data: object) -> Part:
    msgs = [Message.system("sys"), Message.user(f"task {name}", timestamp=t0)]
    msgs += turn(f"{name}1", t0 + 1) + turn(f"{name}2", t0 + 3)
    return Part(id=name, messages=tuple(msgs), state=state or LayeredState(), data=data)


def test_merge_interleaves_by_time_and_stays_valid() -> None:
    """Units interleave by timestamp, pairs stay together, and the result is valid."""
    merged, _, _ = merge_parts([part("a", 0), part("b", 0.5)])
    report = check(merged)
    assert report.ok, report.violations
    calls = [u.id for m in merged for u in m.tool_uses]
    assert calls == ["a1", "b1", "a2", "b2"]
    assert merged[0].role.value == "system"
    assert sum(m.role.value == "system" for m in merged) == 1


def test_merge_strategies_for_data_and_layers() -> None:
    """last, first and deep strategies pick or combine data and memories."""
    sa = LayeredState().with_fact("k", "from a").with_episode(Episode(id="e1", summary="a"))
    sb = LayeredState().with_fact("k", "from b").with_fact("j", "only b")
    a = part("a", 0, sa, x={"p": 1, "q": 1})
    b = part("b", 1, sb, x={"q": 2})
    _, state, data = merge_parts([a, b], strategy="last")
    assert state == sb and data == {"x": {"q": 2}}
    _, state, data = merge_parts([a, b], strategy="first")
    assert state == sa and data == {"x": {"p": 1, "q": 1}}
    _, state, data = merge_parts([a, b], strategy="deep")
    assert data == {"x": {"p": 1, "q": 2}}
    assert state.memory.fact("k").value == "from b"  # type: ignore[union-attr]
    assert state.memory.fact("j") is not None
    assert [e.id for e in state.memory.episodic] == ["e1"]


def test_merge_refuses_conflicting_tool_ids() -> None:
    """Two contexts using one tool id cannot merge; the error names both."""
    a = part("a", 0)
    b = Part(id="b", messages=(Message.user("x"), *turn("a1", 5)), state=LayeredState())
    with pytest.raises(SessionError, match=r"'a1'.*'a' and 'b'") as info:
        merge_parts([a, b])
    assert info.value.rule == "merge_tool_conflict"


def test_merge_bad_arguments() -> None:
    """An unknown strategy or a single context is refused."""
    with pytest.raises(SessionError, match="'strategy' must be one of"):
        merge_parts([part("a", 0), part("b", 0)], strategy="union")  # type: ignore[arg-type]
    with pytest.raises(SessionError, match="at least two"):
        merge_parts([part("a", 0)])


def conversation() -> Conversation:
    msgs = [Message.system("s"), Message.user("first", id="u1"), *turn("t1", 1)]
    msgs += [Message.assistant("done"), Message.user("second", id="u2"), *turn("t2", 2)]
    return Conversation(msgs)


def test_split_at_user_turn_keeps_everything() -> None:
    """Both halves are valid; together they hold every original message."""
    conv = conversation()
    head, tail = split_messages(conv, "u2")
    assert check(head).ok and check(tail).ok
    assert tail[0].role.value == "system"
    assert [m.id for m in head] + [m.id for m in tail[1:]] == [m.id for m in conv]


def test_split_inside_a_pair_is_refused() -> None:
    """Splitting at a tool result or an assistant message is a typed error."""
    conv = conversation()
    result_id = conv.messages[3].id
    with pytest.raises(SessionError, match="answers a tool call") as info:
        split_messages(conv, result_id, context_id="c1")
    assert info.value.rule == "split_inside_pair"
    with pytest.raises(SessionError, match=r"is not a user message \(assistant\)"):
        split_messages(conv, conv.messages[2].id)
    with pytest.raises(SessionError, match="no message 'nope'"):
        split_messages(conv, "nope")
    with pytest.raises(SessionError, match="first part empty"):
        split_messages(conv, "u1")


def test_originals_drop_compression_artefacts() -> None:
    """Tags are cleared and summaries left out, so halves never reference each other."""
    conv = conversation()
    conv.add_summary(Message.user("[summary]"), [m.id for m in conv.messages[2:5]])
    plain = originals(conv)
    assert len(plain) == len(conv) - 1
    assert not any(m.hidden for m in plain)
