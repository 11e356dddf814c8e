"""Tests for the per-provider adapter objects and the provider-error classification."""

from __future__ import annotations

from typing import Any

import pytest

from ctxflow.adapters import (
    Adapter,
    AnthropicAdapter,
    OpenAIAdapter,
    count_breakpoints,
    is_overflow,
    provider_error,
)
from ctxflow.errors import ContextOverflow, ProviderError, ResponseError
from ctxflow.testing._llm import ScriptedLLM, text_response, tool_call_response


def test_anthropic_adapter_renders_with_caching_and_parses(
    window: Any, anthropic_types: Any
) -> None:
    """The Anthropic adapter marks tools, system and the conversation's end, and parses replies."""
    adapter = AnthropicAdapter(
        model="claude-x", max_tokens=100, options={"stop_sequences": ["END"]}
    )
    assert isinstance(adapter, Adapter)
    body = adapter.render(window)
    assert count_breakpoints(body) == 3 and body["stop_sequences"] == ["END"]
    assert "cache_control" in body["messages"][-1]["content"][-1]
    anthropic_types(body)
    reply = adapter.parse(text_response("fine"))
    assert reply.message.text == "fine"


def test_openai_adapter_round_trip_through_the_double(window: Any, openai_types: Any) -> None:
    """The OpenAI adapter's body goes through a client and its reply parses back."""
    adapter = OpenAIAdapter(model="gpt-x", max_tokens=50, system_role="developer")
    assert isinstance(adapter, Adapter)
    llm = ScriptedLLM([tool_call_response("bash", {"command": "pwd"}, api="openai")])
    body = adapter.render(window)
    openai_types(body)
    reply = adapter.parse(llm.complete(body), allowed_tools=window.tools)
    assert reply.tool_calls[0].name == "bash"
    assert llm.last_request["messages"][0]["role"] == "developer"
    with pytest.raises(ResponseError):
        adapter.parse(llm.responses[0], allowed_tools=["read"])


@pytest.mark.parametrize(
    ("status", "body", "overflow"),
    [
        (400, {"error": {"message": "prompt is too long: 9 tokens > 8 maximum"}}, True),
        (413, {"type": "error", "error": {"type": "request_too_large", "message": "big"}}, True),
        (400, {"error": {"code": "context_length_exceeded", "message": "x"}}, True),
        (400, {"error": {"message": "max_tokens: must be positive"}}, False),
        (500, {"error": {"message": "maximum context length"}}, False),
        (429, "rate limited", False),
    ],
)
def test_overflow_classification(status: int, body: Any, overflow: bool) -> None:
    """Only the providers' too-long refusals count as context overflow."""
    assert is_overflow(status, body) is overflow
    error = provider_error(body, api="anthropic", status=status)
    assert isinstance(error, ProviderError)
    assert isinstance(error, ContextOverflow) is overflow
