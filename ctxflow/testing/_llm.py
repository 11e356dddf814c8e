"""Scripted LLM test doubles: canned responses in order, every request recorded.

:class:`ScriptedLLM` implements :class:`ctxflow.protocols.LLMClient` and
:class:`AsyncScriptedLLM` the async form. A script item is a response body
(build one with :func:`text_response` or :func:`tool_call_response`, in the
Anthropic or OpenAI shape), an exception to raise (:func:`prompt_too_long`
builds the provider's "prompt is too long" refusal), or a callable that gets
the request and returns a body, for replies that depend on what was asked.

Requests and responses are deep-copied, so a test can inspect exactly what
was sent even if the caller later mutates its dicts. Running past the end of
the script raises :class:`ScriptExhausted`, an ``AssertionError``: a loop that
calls the model more often than the test expected fails loudly.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeAlias

from ctxflow.adapters._errors import provider_error
from ctxflow.errors import ContextOverflow

__all__ = [
    "AsyncScriptedLLM",
    "ScriptExhausted",
    "ScriptItem",
    "ScriptedLLM",
    "prompt_too_long",
    "text_response",
    "tool_call_response",
]

API: TypeAlias = Literal["anthropic", "openai"]
ScriptItem: TypeAlias = (
    Mapping[str, Any] | BaseException | Callable[[Mapping[str, Any]], Mapping[str, Any]]
)

_ids = itertools.count(1)


class ScriptExhausted(AssertionError):
    """The scripted model was called more often than its script has items."""


def _usage(api: API, prompt_tokens: int, output_tokens: int, cached: int) -> dict[str, Any]:
    if api == "anthropic":
        return {
            "input_tokens": prompt_tokens - cached,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached,
        }
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": prompt_tokens + output_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _anthropic(
    content: list[dict[str, Any]], stop: str, model: str, usage: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": f"msg_scripted_{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


def _openai(
    message: dict[str, Any], finish: str, model: str, usage: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-scripted-{next(_ids)}",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": usage,
    }


def text_response(
    text: str,
    *,
    api: API = "anthropic",
    prompt_tokens: int = 10,
    output_tokens: int = 5,
    cached_tokens: int = 0,
    stop_reason: str | None = None,
    thinking: str | None = None,
    model: str = "scripted-model",
) -> dict[str, Any]:
    """A response body holding one text reply (Anthropic or OpenAI shape).

    ``prompt_tokens`` counts the whole prompt, ``cached_tokens`` of it read
    from the cache; ``thinking`` adds an Anthropic thinking block (or OpenAI
    ``reasoning_content``).
    """
    usage = _usage(api, prompt_tokens, output_tokens, cached_tokens)
    if api == "anthropic":
        content: list[dict[str, Any]] = []
        if thinking is not None:
            content.append({"type": "thinking", "thinking": thinking, "signature": "scripted"})
        content.append({"type": "text", "text": text})
        return _anthropic(content, stop_reason or "end_turn", model, usage)
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if thinking is not None:
        message["reasoning_content"] = thinking
    return _openai(message, stop_reason or "stop", model, usage)


def tool_call_response(
    name: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    api: API = "anthropic",
    id: str | None = None,
    text: str | None = None,
    prompt_tokens: int = 10,
    output_tokens: int = 5,
    cached_tokens: int = 0,
    model: str = "scripted-model",
) -> dict[str, Any]:
    """A response body holding one tool call (and optional text before it).

    ``id`` defaults to a fresh ``call_scripted_<n>``, unique in the process.
    """
    call_id = id or f"call_scripted_{next(_ids)}"
    usage = _usage(api, prompt_tokens, output_tokens, cached_tokens)
    args = dict(arguments or {})
    if api == "anthropic":
        content: list[dict[str, Any]] = []
        if text is not None:
            content.append({"type": "text", "text": text})
        content.append({"type": "tool_use", "id": call_id, "name": name, "input": args})
        return _anthropic(content, "tool_use", model, usage)
    message = {
        "role": "assistant",
        "content": text,
        "refusal": None,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
        ],
    }
    return _openai(message, "tool_calls", model, usage)


def prompt_too_long(
    *, api: API = "anthropic", prompt_tokens: int = 210_000, limit: int = 200_000
) -> ContextOverflow:
    """The error a provider raises for a prompt over the window, as the clients raise it."""
    if api == "anthropic":
        body: dict[str, Any] = {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": f"prompt is too long: {prompt_tokens} tokens > {limit} maximum",
            },
        }
    else:
        body = {
            "error": {
                "message": f"This model's maximum context length is {limit} tokens. However, "
                f"your messages resulted in {prompt_tokens} tokens. Please reduce the length "
                "of the messages.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        }
    error = provider_error(body, api=api, status=400)
    assert isinstance(error, ContextOverflow)
    return error


class _Script:
    """The shared state of both doubles: the items left and the requests seen."""

    def __init__(self, script: Iterable[ScriptItem]) -> None:
        self._items = list(script)
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []

    @property
    def remaining(self) -> int:
        """How many script items are left."""
        return len(self._items)

    @property
    def last_request(self) -> dict[str, Any]:
        """The most recent request (an AssertionError when none came)."""
        if not self.requests:
            raise AssertionError("the scripted model has not been called")
        return self.requests[-1]

    def add(self, *items: ScriptItem) -> None:
        """Append items to the script."""
        with self._lock:
            self._items.extend(items)

    def _next(self, request: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(copy.deepcopy(dict(request)))
            if not self._items:
                raise ScriptExhausted(
                    f"the scripted model got request {len(self.requests)} but its script "
                    f"had {len(self.requests) - 1} items"
                )
            item = self._items.pop(0)
        if isinstance(item, BaseException):
            raise item
        body = item(request) if callable(item) else item
        response = copy.deepcopy(dict(body))
        self.responses.append(response)
        return copy.deepcopy(response)


class ScriptedLLM(_Script):
    """An :class:`~ctxflow.protocols.LLMClient` that answers from a script."""

    def complete(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """The next scripted response (or raise the next scripted error)."""
        return self._next(request)


class AsyncScriptedLLM(_Script):
    """An :class:`~ctxflow.protocols.AsyncLLMClient` that answers from a script."""

    async def complete(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """The next scripted response (or raise the next scripted error)."""
        return self._next(request)
