"""Tests for the scripted LLM test doubles."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ctxflow.adapters import (
    StopReason,
    anthropic_body,
    openai_body,
    parse_anthropic,
    parse_openai,
)
from ctxflow.errors import ContextOverflow
from ctxflow.model import Message, ThinkingBlock
from ctxflow.protocols import AsyncLLMClient, LLMClient
from ctxflow.testing._llm import (
    AsyncScriptedLLM,
    ScriptedLLM,
    ScriptExhausted,
    prompt_too_long,
    text_response,
    tool_call_response,
)


def _request(text: str = "hi") -> dict[str, Any]:
    return anthropic_body(messages=[Message.user(text)], model="m", max_tokens=16)


def test_answers_in_order_and_records_requests() -> None:
    """Responses come back in script order and every request is recorded."""
    llm = ScriptedLLM([text_response("one"), text_response("two")])
    assert isinstance(llm, LLMClient)
    first = parse_anthropic(llm.complete(_request("a")))
    second = parse_anthropic(llm.complete(_request("b")))
    assert (first.message.text, second.message.text) == ("one", "two")
    assert [r["messages"][0]["content"][0]["text"] for r in llm.requests] == ["a", "b"]
    assert llm.last_request == _request("b")
    assert llm.remaining == 0


def test_recorded_requests_are_copies() -> None:
    """Mutating a request after sending it does not change what was recorded."""
    llm = ScriptedLLM([text_response("x")])
    request = _request()
    llm.complete(request)
    request["messages"].clear()
    assert llm.requests[0]["messages"]


def test_tool_call_helper_in_both_shapes() -> None:
    """tool_call_response builds a tool call each parser reads, with usage."""
    llm = ScriptedLLM(
        [
            tool_call_response("bash", {"command": "ls"}, id="toolu_a", prompt_tokens=50),
            tool_call_response("bash", {"command": "ls"}, api="openai", text="Running."),
        ]
    )
    a = parse_anthropic(llm.complete(_request()), allowed_tools=["bash"])
    o = parse_openai(llm.complete(openai_body(messages=[Message.user("x")], model="m")))
    assert a.tool_calls[0].id == "toolu_a" and a.usage.prompt_tokens == 50
    assert a.stop is StopReason.TOOL_USE
    assert o.tool_calls[0].input == {"command": "ls"} and o.message.text == "Running."
    assert o.stop is StopReason.TOOL_USE


def test_text_helper_usage_and_thinking() -> None:
    """text_response carries cached usage and optional thinking in both shapes."""
    a = parse_anthropic(text_response("x", thinking="t", prompt_tokens=100, cached_tokens=80))
    o = parse_openai(text_response("x", api="openai", thinking="t", prompt_tokens=100))
    assert a.message.content[0] == ThinkingBlock(thinking="t", signature="scripted")
    assert (a.usage.prompt_tokens, a.usage.cache_read_tokens) == (100, 80)
    assert o.message.content[0] == ThinkingBlock(thinking="t")
    assert o.usage.prompt_tokens == 100


def test_scripted_error_is_raised_and_request_still_recorded() -> None:
    """A scripted prompt-too-long error is raised; the request that caused it is recorded."""
    llm = ScriptedLLM([prompt_too_long(prompt_tokens=9, limit=8), text_response("ok")])
    with pytest.raises(ContextOverflow, match="9 tokens > 8") as info:
        llm.complete(_request("long"))
    assert info.value.status == 400
    assert len(llm.requests) == 1
    assert parse_anthropic(llm.complete(_request())).message.text == "ok"


def test_openai_prompt_too_long() -> None:
    """The OpenAI form of the overflow carries the context_length_exceeded code."""
    error = prompt_too_long(api="openai")
    assert isinstance(error, ContextOverflow)
    assert error.code == "context_length_exceeded"


def test_callable_items_see_the_request() -> None:
    """A callable script item answers from the request it gets."""
    llm = ScriptedLLM([lambda request: text_response(request["model"])])
    assert parse_anthropic(llm.complete(_request())).message.text == "m"


def test_running_past_the_script_fails_loudly() -> None:
    """A call beyond the script raises ScriptExhausted, an AssertionError."""
    llm = ScriptedLLM([])
    llm.add(text_response("only"))
    llm.complete(_request())
    with pytest.raises(ScriptExhausted, match="request 2"):
        llm.complete(_request())
    with pytest.raises(AssertionError, match="not been called"):
        _ = ScriptedLLM([]).last_request


def test_async_double() -> None:
    """The async double answers and records like the sync one."""
    llm = AsyncScriptedLLM([text_response("async")])
    assert isinstance(llm, AsyncLLMClient)
    response = asyncio.run(llm.complete(_request()))
    assert parse_anthropic(response).message.text == "async"
    assert llm.requests == [_request()]
