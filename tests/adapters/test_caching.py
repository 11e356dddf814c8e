"""Tests for prompt-cache breakpoints, prefix byte-stability and prefix fingerprints."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxflow.adapters import (
    MAX_BREAKPOINTS,
    CachePolicy,
    anthropic_body,
    cached_prefix,
    canonical_json,
    count_breakpoints,
    prefix_fingerprint,
    prefix_preserved,
)
from ctxflow.errors import PolicyError
from ctxflow.layers import ToolDef
from ctxflow.model import Message, TextBlock, ThinkingBlock, ToolUseBlock

EPHEMERAL = {"type": "ephemeral"}


def _body(messages: list[Message], tools: Any, policy: CachePolicy | None, **kw: Any) -> Any:
    return anthropic_body(
        system=kw.pop("system", "Be brief."),
        messages=messages,
        tools=tools,
        model="m",
        max_tokens=64,
        cache=policy,
        **kw,
    )


def test_default_policy_marks_tools_and_system(
    make_loop: Any, tools: Any, anthropic_types: Any
) -> None:
    """The default policy marks the last tool and the system, which becomes a block list."""
    body = _body(make_loop(), tools, CachePolicy())
    assert body["tools"][-1]["cache_control"] == EPHEMERAL
    assert "cache_control" not in body["tools"][0]
    assert body["system"] == [{"type": "text", "text": "Be brief.", "cache_control": EPHEMERAL}]
    assert count_breakpoints(body) == 2
    anthropic_types(body)


def test_stable_and_last_message_marks(make_loop: Any, tools: Any, anthropic_types: Any) -> None:
    """stable_messages marks the end of that prefix; last_message marks the last block."""
    messages = make_loop(3)
    policy = CachePolicy(stable_messages=3, last_message=True, ttl="1h")
    body = _body(messages, tools, policy)
    mark = {"type": "ephemeral", "ttl": "1h"}
    assert body["messages"][2]["content"][-1]["cache_control"] == mark
    assert body["messages"][-1]["content"][-1]["cache_control"] == mark
    assert count_breakpoints(body) == MAX_BREAKPOINTS
    anthropic_types(body)


def test_stable_end_inside_a_merged_message(tools: Any) -> None:
    """When the stable prefix ends inside a merged message, the mark ends that input message."""
    messages = [Message.user("a"), Message.user("b"), Message.assistant("c")]
    body = _body(messages, tools, CachePolicy(tools=False, system=False, stable_messages=1))
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "a", "cache_control": EPHEMERAL},
        {"type": "text", "text": "b"},
    ]


def test_thinking_blocks_are_never_marked() -> None:
    """The mark moves back past a trailing thinking block to one that can carry it."""
    reply = Message(
        role="assistant",
        content=(TextBlock(text="x"), ThinkingBlock(thinking="t", signature="s")),
    )
    body = _body(
        [Message.user("q"), reply], (), CachePolicy(system=False, last_message=True), system=""
    )
    assert body["messages"][1]["content"][0]["cache_control"] == EPHEMERAL
    assert "cache_control" not in body["messages"][1]["content"][1]


def test_too_many_breakpoints_is_refused(tools: Any) -> None:
    """Marks already on blocks count toward the limit of four; the excess is refused."""
    marked = [
        Message(role="user", content=(TextBlock(text=str(i), extra={"cache_control": EPHEMERAL}),))
        for i in range(3)
    ]
    with pytest.raises(PolicyError, match="at most 4") as info:
        _body(marked, tools, CachePolicy())
    assert (info.value.existing, info.value.planned) == (3, 2)


def test_negative_stable_messages_is_refused() -> None:
    """A negative stable_messages is refused with its value."""
    with pytest.raises(PolicyError, match=r"\(got -1\)"):
        CachePolicy(stable_messages=-1)


def test_fingerprint_none_without_breakpoints(make_loop: Any) -> None:
    """A body with no breakpoint caches nothing: no fingerprint, nothing preserved."""
    body = _body(make_loop(), (), None)
    assert prefix_fingerprint(body) is None
    assert not prefix_preserved(body, body)


def test_string_and_block_system_fingerprint_alike(make_loop: Any, tools: Any) -> None:
    """The system as a string and as one text block are the same cached prefix."""
    plain = _body(make_loop(), tools, None)
    plain["tools"][-1]["cache_control"] = EPHEMERAL
    blocks = _body(make_loop(), tools, CachePolicy(system=False))
    blocks["system"] = [{"type": "text", "text": "Be brief."}]
    assert cached_prefix(plain) == cached_prefix(blocks)


def test_compression_of_the_cached_prefix_is_detected(make_loop: Any, tools: Any) -> None:
    """Dropping a message inside the cached prefix changes the fingerprint and is not preserved."""
    messages = make_loop(3)
    policy = CachePolicy(stable_messages=5)
    before = _body(messages, tools, policy)
    after = _body(messages[:1] + messages[3:], tools, policy)
    assert prefix_fingerprint(before) != prefix_fingerprint(after)
    assert not prefix_preserved(before, after)


def test_moving_the_last_message_mark_keeps_the_prefix(make_loop: Any, tools: Any) -> None:
    """Appending a turn moves the last-message mark but the old prefix is still a prefix."""
    messages = make_loop(2)
    policy = CachePolicy(last_message=True)
    before = _body(messages[:-1], tools, policy)
    after = _body(messages, tools, policy)
    assert prefix_preserved(before, after)
    assert prefix_fingerprint(before) != prefix_fingerprint(after)


def test_canonical_json_is_sorted_and_compact() -> None:
    """canonical_json sorts keys, drops spaces and keeps UTF-8."""
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


_texts = st.text(alphabet="abcxyz \n", min_size=1, max_size=12).filter(str.strip)


@st.composite
def _conversations(draw: st.DrawFn) -> list[Message]:
    n = draw(st.integers(min_value=1, max_value=5))
    out: list[Message] = []
    for i in range(n):
        out.append(Message.user(draw(_texts)))
        if draw(st.booleans()):
            out.append(
                Message(
                    role="assistant",
                    content=(ToolUseBlock(id=f"t{i}", name="bash", input={"c": draw(_texts)}),),
                )
            )
            out.append(Message.user(draw(_texts)))
        out.append(Message.assistant(draw(_texts)))
    return out


@settings(max_examples=40, deadline=None)
@given(conversation=_conversations(), extra=_texts, data=st.data())
def test_prefix_bytes_stable_when_a_message_is_appended(
    conversation: list[Message], extra: str, data: st.DataObject
) -> None:
    """Rendering again with one message appended keeps the cached prefix byte-identical."""
    tools = (ToolDef(name="bash", description="run"),)
    stable = data.draw(st.integers(min_value=0, max_value=len(conversation)))
    policy = CachePolicy(stable_messages=stable)
    first = _body(conversation, tools, policy)
    second = _body([*conversation, Message.user(extra)], tools, policy)
    assert cached_prefix(first) == cached_prefix(second)
    assert prefix_fingerprint(first) == prefix_fingerprint(second)
    assert prefix_preserved(first, second)
    # The prefix fields themselves serialise to the same bytes.
    for key in ("tools", "system"):
        assert json.dumps(first[key], sort_keys=True) == json.dumps(second[key], sort_keys=True)


def test_top_level_automatic_mark_counts(make_loop: Any, tools: Any) -> None:
    """A top-level cache_control option takes one of the four breakpoint slots."""
    options = {"cache_control": EPHEMERAL}
    policy = CachePolicy(stable_messages=1, last_message=True)
    with pytest.raises(PolicyError, match="1 already marked"):
        _body(make_loop(), tools, policy, options=options)
    body = _body(make_loop(), tools, CachePolicy(), options=options)
    assert count_breakpoints(body) == 3
