"""The SDK clients, run through the real SDK code with a mock HTTP transport (no network)."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
from collections.abc import Callable
from typing import Any

import pytest

from ctxflow.adapters import (
    AnthropicClient,
    AsyncAnthropicClient,
    AsyncOpenAIClient,
    OpenAIClient,
    anthropic_body,
    openai_body,
    parse_anthropic,
    parse_openai,
)
from ctxflow.errors import ContextOverflow, ProviderError
from ctxflow.model import Message, ToolUseBlock
from ctxflow.protocols import AsyncLLMClient, LLMClient

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")
# The SDKs' HTTP library (httpx, or its successor httpx2) ships MockTransport.
http = importlib.import_module("httpx2" if importlib.util.find_spec("httpx2") else "httpx")

ANTHROPIC_REPLY = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [
        {"type": "text", "text": "Listing."},
        {"type": "tool_use", "id": "toolu_01", "name": "bash", "input": {"command": "ls"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 4, "cache_read_input_tokens": 30},
}

OPENAI_REPLY = {
    "id": "chatcmpl-01",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-x",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_01",
                        "type": "function",
                        "function": {"name": "bash", "arguments": '{"command": "ls"}'},
                    }
                ],
            },
        }
    ],
    "usage": {"prompt_tokens": 42, "completion_tokens": 4, "total_tokens": 46},
}

Handler = Callable[[Any], Any]


def _recording(status: int, payload: Any, seen: list[Any]) -> Handler:
    def handler(request: Any) -> Any:
        seen.append(request)
        return http.Response(status, json=payload)

    return handler


def _anthropic(handler: Handler, *, asynchronous: bool = False) -> Any:
    transport = http.MockTransport(handler)
    if asynchronous:
        return anthropic.AsyncAnthropic(
            api_key="test", max_retries=0, http_client=http.AsyncClient(transport=transport)
        )
    return anthropic.Anthropic(
        api_key="test", max_retries=0, http_client=http.Client(transport=transport)
    )


def _openai(handler: Handler, *, asynchronous: bool = False) -> Any:
    transport = http.MockTransport(handler)
    if asynchronous:
        return openai.AsyncOpenAI(
            api_key="test", max_retries=0, http_client=http.AsyncClient(transport=transport)
        )
    return openai.OpenAI(
        api_key="test", max_retries=0, http_client=http.Client(transport=transport)
    )


def _request(api: str) -> dict[str, Any]:
    messages = [Message.user("List the files.")]
    if api == "anthropic":
        return anthropic_body(
            system="Be brief.", messages=messages, model="claude-x", max_tokens=64
        )
    return openai_body(system="Be brief.", messages=messages, model="gpt-x", max_tokens=64)


def test_anthropic_client_sends_the_body_and_returns_plain_data() -> None:
    """The Anthropic client posts the rendered body and returns a dict the parser reads."""
    seen: list[Any] = []
    client = AnthropicClient(client=_anthropic(_recording(200, ANTHROPIC_REPLY, seen)))
    assert isinstance(client, LLMClient)
    request = _request("anthropic")
    response = client.complete(request)
    assert seen[0].url.path == "/v1/messages"
    assert json.loads(seen[0].content) == request
    assert isinstance(response, dict)
    parsed = parse_anthropic(response, allowed_tools=["bash"])
    assert parsed.tool_calls == (ToolUseBlock(id="toolu_01", name="bash", input={"command": "ls"}),)
    assert parsed.usage.prompt_tokens == 42


def test_openai_client_sends_the_body_and_returns_plain_data() -> None:
    """The OpenAI client posts the rendered body and returns a dict the parser reads."""
    seen: list[Any] = []
    client = OpenAIClient(client=_openai(_recording(200, OPENAI_REPLY, seen)))
    assert isinstance(client, LLMClient)
    request = _request("openai")
    response = client.complete(request)
    assert seen[0].url.path.endswith("/chat/completions")
    assert json.loads(seen[0].content) == request
    parsed = parse_openai(response, allowed_tools=["bash"])
    assert parsed.tool_calls == (ToolUseBlock(id="call_01", name="bash", input={"command": "ls"}),)
    assert parsed.usage.prompt_tokens == 42


def test_async_clients_round_trip() -> None:
    """The async clients send the same bodies and return the same plain data."""
    a_seen: list[Any] = []
    o_seen: list[Any] = []
    a_client = AsyncAnthropicClient(
        client=_anthropic(_recording(200, ANTHROPIC_REPLY, a_seen), asynchronous=True)
    )
    o_client = AsyncOpenAIClient(
        client=_openai(_recording(200, OPENAI_REPLY, o_seen), asynchronous=True)
    )
    assert isinstance(a_client, AsyncLLMClient) and isinstance(o_client, AsyncLLMClient)

    async def both() -> tuple[Any, Any]:
        return (
            await a_client.complete(_request("anthropic")),
            await o_client.complete(_request("openai")),
        )

    a_response, o_response = asyncio.run(both())
    assert parse_anthropic(a_response).id == "msg_01"
    assert parse_openai(o_response).id == "chatcmpl-01"
    assert json.loads(a_seen[0].content) == _request("anthropic")
    assert json.loads(o_seen[0].content) == _request("openai")


def test_anthropic_prompt_too_long_raises_context_overflow() -> None:
    """Anthropic's 400 "prompt is too long" becomes ContextOverflow, the SDK error its cause."""
    payload = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 208310 tokens > 200000 maximum",
        },
    }
    client = AnthropicClient(client=_anthropic(_recording(400, payload, [])))
    with pytest.raises(ContextOverflow, match="208310") as info:
        client.complete(_request("anthropic"))
    assert info.value.status == 400
    assert isinstance(info.value.__cause__, anthropic.BadRequestError)


def test_openai_context_length_exceeded_raises_context_overflow() -> None:
    """OpenAI's context_length_exceeded becomes ContextOverflow."""
    payload = {
        "error": {
            "message": "This model's maximum context length is 128000 tokens.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    client = OpenAIClient(client=_openai(_recording(400, payload, [])))
    with pytest.raises(ContextOverflow) as info:
        client.complete(_request("openai"))
    assert info.value.code == "context_length_exceeded"


def test_server_error_raises_provider_error() -> None:
    """A 500 becomes a plain ProviderError, not an overflow."""
    payload = {"type": "error", "error": {"type": "api_error", "message": "Internal"}}
    client = AnthropicClient(client=_anthropic(_recording(500, payload, [])))
    with pytest.raises(ProviderError) as info:
        client.complete(_request("anthropic"))
    assert not isinstance(info.value, ContextOverflow)
    assert info.value.status == 500


def test_async_overflow_is_translated() -> None:
    """The async client translates the overflow the same way."""
    payload = {
        "error": {
            "message": "x",
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        }
    }
    client = AsyncOpenAIClient(client=_openai(_recording(400, payload, []), asynchronous=True))
    with pytest.raises(ContextOverflow):
        asyncio.run(client.complete(_request("openai")))


def test_clients_build_their_sdk_client_from_keywords() -> None:
    """Without a client, keyword arguments build the SDK's own."""
    assert isinstance(AnthropicClient(api_key="test").client, anthropic.Anthropic)
    assert isinstance(OpenAIClient(api_key="test").client, openai.OpenAI)
