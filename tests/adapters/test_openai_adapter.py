"""Tests for the OpenAI Chat Completions renderer and response parser."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from ctxflow.adapters import StopReason, Usage, openai_body, parse_openai, render_openai
from ctxflow.errors import ContextOverflow, InvalidConversation, PolicyError, ResponseError
from ctxflow.model import Message, TextBlock, ThinkingBlock, ToolUseBlock, to_openai


def test_render_window_shape(window: Any, openai_types: Any) -> None:
    """A window renders to model, messages (system first), tools and max_completion_tokens."""
    body = render_openai(window, model="gpt-x", max_tokens=256)
    assert list(body) == ["model", "messages", "tools", "max_completion_tokens"]
    assert body["messages"][0] == {"role": "system", "content": "You are terse."}
    assert body["messages"][1:] == to_openai(window.messages)[0]
    assert body["tools"][0] == {
        "type": "function",
        "function": {
            "name": "bash",
            "description": "Run a shell command.",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}},
        },
    }
    assert body["max_completion_tokens"] == 256
    openai_types(body)


def test_developer_role_and_no_limit(make_loop: Any, openai_types: Any) -> None:
    """The system text can go as a developer message; no max_tokens leaves the field out."""
    body = openai_body(
        system=["a", "b"], messages=make_loop(1), model="o3", system_role="developer"
    )
    assert body["messages"][0] == {"role": "developer", "content": "a\n\nb"}
    assert "max_completion_tokens" not in body and "tools" not in body
    openai_types(body)


def test_render_does_not_change_the_schema(window: Any) -> None:
    """Mutating a rendered tool schema leaves the ToolDef untouched."""
    body = render_openai(window, model="m")
    body["tools"][0]["function"]["parameters"]["properties"].clear()
    assert window.tools[0].input_schema["properties"] == {"command": {"type": "string"}}


def test_thinking_only_message_is_an_error() -> None:
    """An assistant message holding only thinking has nothing OpenAI can carry."""
    thought = Message(role="assistant", content=(ThinkingBlock(thinking="hm", signature="s"),))
    with pytest.raises(InvalidConversation, match="needs text or tool calls"):
        openai_body(messages=[Message.user("hi"), thought], model="m")


def test_option_clash_and_bad_limit() -> None:
    """Options may not replace rendered fields, and max_tokens must be positive."""
    with pytest.raises(PolicyError, match="owns"):
        openai_body(messages=[Message.user("x")], model="m", options={"messages": []})
    with pytest.raises(PolicyError, match=r"\(got -3\)"):
        openai_body(messages=[Message.user("x")], model="m", max_tokens=-3)


def _response(message: dict[str, Any], finish: str = "stop", **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-x",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 9,
            "total_tokens": 129,
            "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": None},
            "completion_tokens_details": {"reasoning_tokens": 4},
        },
    } | extra


def test_parse_text_usage_and_stop() -> None:
    """A text reply parses to a message, cached and reasoning usage, and a stop reason."""
    parsed = parse_openai(_response({"role": "assistant", "content": "Hi", "refusal": None}))
    assert parsed.message.content == (TextBlock(text="Hi"),)
    assert parsed.usage == Usage(
        prompt_tokens=120, output_tokens=9, cache_read_tokens=64, reasoning_tokens=4
    )
    assert parsed.stop is StopReason.END_TURN
    assert (parsed.model, parsed.id, parsed.api) == ("gpt-x", "chatcmpl-1", "openai")


def test_parse_tool_calls_and_reasoning() -> None:
    """Tool calls (arguments decoded) and reasoning_content become blocks."""
    message = {
        "role": "assistant",
        "content": None,
        "reasoning_content": "think",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "bash", "arguments": '{"command": "ls"}'},
            },
            {"id": "call_2", "type": "function", "function": {"name": "read", "arguments": ""}},
        ],
    }
    parsed = parse_openai(_response(message, "tool_calls"), allowed_tools={"bash", "read"})
    assert parsed.message.content == (
        ThinkingBlock(thinking="think"),
        ToolUseBlock(id="call_1", name="bash", input={"command": "ls"}),
        ToolUseBlock(id="call_2", name="read", input={}),
    )
    assert parsed.stop is StopReason.TOOL_USE


def test_refusal_becomes_text_and_stop() -> None:
    """A refusal is kept as the message text and stops as REFUSAL."""
    parsed = parse_openai(_response({"role": "assistant", "content": None, "refusal": "No."}))
    assert parsed.message.text == "No."
    assert parsed.stop is StopReason.REFUSAL


@pytest.mark.parametrize(
    ("raw", "stop"),
    [("length", StopReason.MAX_TOKENS), ("content_filter", StopReason.REFUSAL), ("x", "other")],
)
def test_finish_reasons_map(raw: str, stop: StopReason) -> None:
    """Each finish_reason maps to its neutral stop reason."""
    parsed = parse_openai(_response({"role": "assistant", "content": "x"}, raw))
    assert parsed.stop == stop and parsed.stop_reason == raw


def _call(arguments: Any, name: str = "bash") -> dict[str, Any]:
    return _response(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}
            ],
        }
    )


@pytest.mark.parametrize(
    ("body", "rule", "field"),
    [
        (_call("{not json"), "tool_arguments_json", "choices[0].message.tool_calls[0].function"),
        (_call("[1, 2]"), "tool_input_not_object", "choices[0].message.tool_calls[0].function"),
        (_call(42), "tool_arguments_json", "choices[0].message.tool_calls[0].function"),
        ({"object": "list"}, "response_shape", "choices"),
        (_response({}) | {"choices": []}, "response_shape", "choices"),
        (_response({}) | {"choices": ["x"]}, "response_shape", "choices[0]"),
        (_response({"role": "assistant", "content": [1]}), "response_shape", "choices[0].message"),
        (_response({"tool_calls": {}}), "response_shape", "choices[0].message.tool_calls"),
        (
            _response({"tool_calls": [{"id": "c", "type": "custom", "custom": {}}]}),
            "tool_call_type",
            "choices[0].message.tool_calls[0].type",
        ),
        (
            _response({"tool_calls": [{"type": "function", "function": {"name": "x"}}]}),
            "response_shape",
            "choices[0].message.tool_calls[0].id",
        ),
    ],
)
def test_bad_bodies_name_the_field(body: Any, rule: str, field: str) -> None:
    """Malformed bodies and tool-call arguments raise ResponseError naming the field."""
    before = copy.deepcopy(body)
    with pytest.raises(ResponseError) as info:
        parse_openai(body)
    assert info.value.rule == rule
    assert info.value.field.startswith(field)
    assert body == before


def test_arguments_error_names_the_arguments_field() -> None:
    """Bad JSON arguments are reported at ...function.arguments with the decoder's reason."""
    with pytest.raises(ResponseError, match="valid JSON") as info:
        parse_openai(_call('{"a": '))
    assert info.value.field == "choices[0].message.tool_calls[0].function.arguments"


def test_tool_not_offered_is_refused() -> None:
    """A call to a tool that was not offered raises ResponseError naming the tool."""
    with pytest.raises(ResponseError, match="'delete'") as info:
        parse_openai(_call(json.dumps({}), name="delete"), allowed_tools=["bash"])
    assert info.value.field == "choices[0].message.tool_calls[0].function.name"


def test_choice_out_of_range() -> None:
    """Asking for a choice the body does not hold names the count."""
    with pytest.raises(ResponseError, match="got 1 choices"):
        parse_openai(_response({"role": "assistant", "content": "x"}), choice=1)


def test_error_body_raises_context_overflow() -> None:
    """An error body with code context_length_exceeded raises ContextOverflow."""
    body = {"error": {"message": "too long", "code": "context_length_exceeded", "type": "x"}}
    with pytest.raises(ContextOverflow):
        parse_openai(body)
