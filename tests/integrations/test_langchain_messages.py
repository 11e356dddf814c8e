"""LangChain ↔ ctxflow message conversion: lossless round trips and API-valid merging."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain_core", reason="needs the [langchain] extra")

from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from ctxflow.errors import InvalidMessage
from ctxflow.integrations.langchain import from_ctxflow, to_ctxflow
from ctxflow.model import Role, TextBlock, ToolResultBlock, check


def rich() -> list[BaseMessage]:
    """A conversation using most of what LangChain messages carry."""
    return [
        SystemMessage(content="You read files."),
        HumanMessage(content="Read a.py and b.py", id="h1", name="ana"),
        AIMessage(
            content=[
                {"type": "text", "text": "Reading.", "cache_control": {"type": "ephemeral"}},
                {"type": "tool_use", "id": "t1", "name": "read", "input": {"path": "a.py"}},
            ],
            tool_calls=[
                {"name": "read", "args": {"path": "a.py"}, "id": "t1", "type": "tool_call"},
                {"name": "read", "args": {"path": "b.py"}, "id": "call b/2", "type": "tool_call"},
            ],
            id="a1",
            usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
            response_metadata={"model_name": "m", "stop_reason": "tool_use"},
            invalid_tool_calls=[{"name": "x", "args": "{", "id": "bad", "error": "json"}],
        ),
        ToolMessage(content="print(1)", tool_call_id="t1", id="r1", name="read", artifact=[1]),
        ToolMessage(
            content=[{"type": "text", "text": "no such file"}],
            tool_call_id="call b/2",
            status="error",
        ),
        HumanMessage(content=["and this:", {"type": "image_url", "image_url": {"url": "data:x"}}]),
        AIMessage(
            content=[
                {"type": "thinking", "thinking": "a.py prints", "signature": "sig"},
                {"type": "text", "text": "a.py prints 1; b.py is missing."},
                {"type": "reasoning", "summary": ["kept verbatim"]},
            ]
        ),
    ]


def test_round_trip_is_lossless() -> None:
    """``from_ctxflow(to_ctxflow(m))`` gives back every field of every message."""
    messages = rich()
    back = from_ctxflow(to_ctxflow(messages))
    assert [m.model_dump() for m in back] == [m.model_dump() for m in messages]
    assert [type(m) for m in back] == [type(m) for m in messages]


def test_tool_results_and_a_following_turn_merge_into_one_valid_user_message() -> None:
    """Tool messages and the human turn after them become one user message: roles
    alternate and each result answers the call before it, for both APIs."""
    converted = to_ctxflow(rich())
    assert [m.role for m in converted] == [
        Role.SYSTEM,
        Role.USER,
        Role.ASSISTANT,
        Role.USER,
        Role.ASSISTANT,
    ]
    results = [b for b in converted[3].content if isinstance(b, ToolResultBlock)]
    assert [r.is_error for r in results] == [False, True]
    # The id ctxflow cannot carry is replaced the same way in the call and its result.
    assert results[1].tool_use_id == converted[2].content[-1].id != "call b/2"
    for api in ("anthropic", "openai"):
        assert check(converted[1:], api=api).ok


def test_a_changed_message_converts_by_its_role() -> None:
    """A tool result ctxflow cleared comes back as a tool message with its call id."""
    converted = to_ctxflow(rich())
    user = converted[3]
    cleared = ToolResultBlock(tool_use_id="t1", content="[read result cleared by ctxflow]")
    changed = user.__class__(
        role=user.role,
        content=(cleared, *user.content[1:3]),
        id=user.id,
        metadata={},
    )
    back = from_ctxflow([changed])
    assert isinstance(back[0], ToolMessage)
    assert back[0].tool_call_id == "t1"
    assert back[0].content == "[read result cleared by ctxflow]"
    assert isinstance(back[1], ToolMessage) and back[1].tool_call_id == "call b/2"
    assert isinstance(back[2], HumanMessage)


def test_an_unknown_message_type_is_refused_by_name() -> None:
    """A message of a type ctxflow has no role for raises ``InvalidMessage``."""
    with pytest.raises(InvalidMessage, match="got 'chat'"):
        to_ctxflow([ChatMessage(role="critic", content="hm")])


texts = st.text(alphabet="abc xyz\n", min_size=1, max_size=20)


@st.composite
def conversations(draw: Any) -> list[BaseMessage]:
    """Turns of a tool-using agent: a question, tool rounds, an answer."""
    messages: list[BaseMessage] = []
    calls = 0
    for _turn in range(draw(st.integers(1, 3))):
        messages.append(HumanMessage(content=draw(texts), id=f"h{len(messages)}"))
        for _round in range(draw(st.integers(0, 2))):
            ids = [f"c{calls + i}" for i in range(draw(st.integers(1, 3)))]
            calls += len(ids)
            messages.append(
                AIMessage(
                    content=draw(st.one_of(st.just(""), texts)),
                    tool_calls=[
                        {"name": "f", "args": {"x": draw(texts)}, "id": i, "type": "tool_call"}
                        for i in ids
                    ],
                )
            )
            messages.extend(
                ToolMessage(
                    content=draw(texts),
                    tool_call_id=i,
                    status=draw(st.sampled_from(["success", "error"])),
                )
                for i in ids
            )
        messages.append(AIMessage(content=draw(texts)))
    return messages


@settings(max_examples=60, deadline=None)
@given(conversations())
def test_any_agent_conversation_round_trips_and_is_valid(messages: list[BaseMessage]) -> None:
    """Every generated agent conversation converts back unchanged and is valid for both APIs."""
    converted = to_ctxflow(messages)
    assert [m.model_dump() for m in from_ctxflow(converted)] == [m.model_dump() for m in messages]
    assert check(converted, api="anthropic").ok
    assert check(converted, api="openai").ok
    assert all(isinstance(b, TextBlock | ToolResultBlock) for b in converted[0].content)
