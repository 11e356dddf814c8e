"""Tests for the Anthropic renderer and response parser."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ctxflow.adapters import (
    StopReason,
    Usage,
    anthropic_body,
    parse_anthropic,
    render_anthropic,
)
from ctxflow.errors import (
    ContextOverflow,
    InvalidConversation,
    PolicyError,
    ProviderError,
    ResponseError,
)
from ctxflow.model import (
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    messages_to_anthropic,
)


def test_render_window_shape(window: Any, anthropic_types: Any) -> None:
    """A window renders to model, max_tokens, system, messages and tools, and the SDK accepts it."""
    body = render_anthropic(window, model="claude-x", max_tokens=512)
    assert list(body) == ["model", "max_tokens", "system", "messages", "tools"]
    assert body["system"] == "You are terse."
    assert body["tools"][0] == {
        "name": "bash",
        "description": "Run a shell command.",
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
    }
    assert body["messages"] == messages_to_anthropic(window.messages)
    anthropic_types(body)


def test_render_without_system_or_tools(make_loop: Any, anthropic_types: Any) -> None:
    """An empty system and no tools leave those keys out."""
    body = anthropic_body(messages=make_loop(1), model="m", max_tokens=10)
    assert "system" not in body and "tools" not in body
    anthropic_types(body)


def test_leading_system_messages_join_system(anthropic_types: Any) -> None:
    """A leading system message becomes part of the top-level system."""
    messages = [Message.system("Corpus prompt."), Message.user("hi")]
    body = anthropic_body(system="Layers.", messages=messages, model="m", max_tokens=10)
    assert body["system"] == [
        {"type": "text", "text": "Layers."},
        {"type": "text", "text": "Corpus prompt."},
    ]
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    anthropic_types(body)


def test_system_message_later_is_an_error() -> None:
    """A system message after the first user message has no Anthropic form."""
    messages = [Message.user("hi"), Message.system("late")]
    with pytest.raises(InvalidConversation, match="must lead") as info:
        anthropic_body(messages=messages, model="m", max_tokens=10)
    assert info.value.index == 1


def test_whitespace_text_dropped_next_to_tool_use(anthropic_types: Any) -> None:
    """A whitespace-only text block beside a tool_use is dropped; the call stays."""
    call = Message(
        role="assistant",
        content=(
            TextBlock(text="  \n"),
            ToolUseBlock(id="toolu_1", name="bash", input={}),
        ),
    )
    result = Message(role="user", content=(ToolResultBlock(tool_use_id="toolu_1", content="x"),))
    body = anthropic_body(messages=[Message.user("go"), call, result], model="m", max_tokens=10)
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {}}
    ]
    anthropic_types(body)


def test_message_left_empty_is_an_error() -> None:
    """A message holding only whitespace text cannot be sent, and the error names it."""
    blank = Message.assistant("   ")
    with pytest.raises(InvalidConversation, match="non-blank") as info:
        anthropic_body(messages=[Message.user("hi"), blank], model="m", max_tokens=10)
    assert info.value.rule == "empty_message"
    assert info.value.message_id == blank.id


def test_adjacent_same_role_messages_merge_tool_results_first(anthropic_types: Any) -> None:
    """Adjacent user messages merge into one, with tool results leading it."""
    call = Message(role="assistant", content=(ToolUseBlock(id="t1", name="bash", input={}),))
    note = Message.user("note first")
    result = Message(role="user", content=(ToolResultBlock(tool_use_id="t1", content="ok"),))
    body = anthropic_body(
        messages=[Message.user("go"), call, note, result], model="m", max_tokens=9
    )
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert [b["type"] for b in body["messages"][2]["content"]] == ["tool_result", "text"]
    anthropic_types(body)


def test_options_add_fields_but_cannot_replace_rendered_ones() -> None:
    """Options such as stop_sequences are added; one naming a rendered field is refused."""
    body = anthropic_body(
        messages=[Message.user("hi")], model="m", max_tokens=5, options={"stop_sequences": ["END"]}
    )
    assert body["stop_sequences"] == ["END"]
    with pytest.raises(PolicyError, match="owns") as info:
        anthropic_body(messages=[Message.user("hi")], model="m", max_tokens=5, options={"model": 1})
    assert info.value.fields == ["model"]


def test_max_tokens_must_be_positive() -> None:
    """A zero max_tokens is refused with the value named."""
    with pytest.raises(PolicyError, match=r"\(got 0\)"):
        anthropic_body(messages=[Message.user("hi")], model="m", max_tokens=0)


def _response(content: list[Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": content,
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 100, "output_tokens": 7},
    } | extra


def test_parse_text_usage_and_stop() -> None:
    """A text reply parses to an assistant message, its usage and stop reason."""
    parsed = parse_anthropic(_response([{"type": "text", "text": "Hello", "citations": None}]))
    assert parsed.message.role.value == "assistant"
    assert parsed.message.content == (TextBlock(text="Hello"),)
    assert parsed.usage == Usage(prompt_tokens=100, output_tokens=7)
    assert parsed.stop is StopReason.END_TURN and parsed.stop_reason == "end_turn"
    assert (parsed.model, parsed.id, parsed.api) == ("claude-x", "msg_1", "anthropic")


def test_parse_thinking_and_tool_use() -> None:
    """Thinking and tool_use blocks come back as ctxflow blocks, in order."""
    body = _response(
        [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "tool_use", "id": "toolu_9", "name": "bash", "input": {"command": "ls"}},
        ],
        stop_reason="tool_use",
    )
    parsed = parse_anthropic(body, allowed_tools=["bash"])
    assert parsed.message.content[0] == ThinkingBlock(thinking="hmm", signature="sig")
    assert parsed.tool_calls == (ToolUseBlock(id="toolu_9", name="bash", input={"command": "ls"}),)
    assert parsed.stop is StopReason.TOOL_USE


def test_parse_cache_usage_sums_the_prompt() -> None:
    """Cache reads and writes count into the prompt tokens, and are reported apart."""
    usage = {
        "input_tokens": 10,
        "output_tokens": 3,
        "cache_creation_input_tokens": 200,
        "cache_read_input_tokens": 1000,
    }
    parsed = parse_anthropic(_response([{"type": "text", "text": "x"}], usage=usage))
    assert parsed.usage == Usage(
        prompt_tokens=1210, output_tokens=3, cache_read_tokens=1000, cache_write_tokens=200
    )
    assert parsed.usage.uncached_prompt_tokens == 10


@pytest.mark.parametrize(
    ("raw", "stop"),
    [
        ("max_tokens", StopReason.MAX_TOKENS),
        ("stop_sequence", StopReason.STOP_SEQUENCE),
        ("refusal", StopReason.REFUSAL),
        ("pause_turn", StopReason.PAUSE),
        ("model_context_window_exceeded", StopReason.CONTEXT_FULL),
        ("something_new", StopReason.OTHER),
        (None, StopReason.OTHER),
    ],
)
def test_stop_reasons_map(raw: str | None, stop: StopReason) -> None:
    """Each Anthropic stop reason maps to its neutral form; unknown ones to OTHER."""
    parsed = parse_anthropic(_response([{"type": "text", "text": "x"}], stop_reason=raw))
    assert parsed.stop is stop


def test_parse_leaves_the_body_unchanged() -> None:
    """Parsing never mutates the response body it reads."""
    body = _response([{"type": "text", "text": "x", "citations": None}])
    before = copy.deepcopy(body)
    parse_anthropic(body)
    assert body == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([1, 2], "body"),
        ({"type": "message", "role": "assistant"}, "content"),
        ({"type": "completion", "content": []}, "type"),
        (_response([{"type": "mystery"}]), "content[0]"),
        (_response([{"type": "text"}]), "content[0]"),
        (_response([{"type": "tool_result", "tool_use_id": "t", "content": ""}]), "content[0]"),
        (_response([], usage={"input_tokens": -1}), "usage.input_tokens"),
        (_response([], usage=[1]), "usage"),
    ],
)
def test_bad_bodies_name_the_field(body: Any, field: str) -> None:
    """A body of an unknown shape raises ResponseError naming the field."""
    with pytest.raises(ResponseError) as info:
        parse_anthropic(body)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_tool_not_offered_is_refused(tools: Any) -> None:
    """A tool call naming a tool that was not offered raises ResponseError."""
    body = _response([{"type": "tool_use", "id": "t1", "name": "rm_rf", "input": {}}])
    with pytest.raises(ResponseError, match="'rm_rf'") as info:
        parse_anthropic(body, allowed_tools=tools)
    assert info.value.field == "content[0].name"
    assert info.value.tool == "rm_rf"


def test_error_body_raises_context_overflow() -> None:
    """An error body saying the prompt is too long raises ContextOverflow."""
    body = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "prompt is too long: 5 > 4"},
    }
    with pytest.raises(ContextOverflow, match="prompt is too long"):
        parse_anthropic(body)


def test_other_error_body_raises_provider_error() -> None:
    """Any other error body raises a plain ProviderError carrying its type."""
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(ProviderError) as info:
        parse_anthropic(body)
    assert not isinstance(info.value, ContextOverflow)
    assert info.value.error_type == "overloaded_error"


def test_parsed_message_renders_back(anthropic_types: Any) -> None:
    """A parsed reply appended to the conversation renders to a valid request again."""
    reply = parse_anthropic(
        _response([{"type": "tool_use", "id": "toolu_5", "name": "bash", "input": {}}])
    ).message
    result = Message(role="user", content=(ToolResultBlock(tool_use_id="toolu_5", content="ok"),))
    body = anthropic_body(messages=[Message.user("go"), reply, result], model="m", max_tokens=5)
    anthropic_types(body)
