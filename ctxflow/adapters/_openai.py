"""OpenAI Chat Completions: request bodies from a window, assistant messages from responses.

Messages are rendered by :func:`ctxflow.model.to_openai` (what the format
cannot carry, such as thinking and ``is_error``, is dropped there and
documented there); this module adds the system text, the tools and the
request fields. OpenAI caches prompt prefixes on its own, so there are no
breakpoints to mark; an unchanged prefix still renders to the same bytes.

Parsing reads one choice. Tool-call ``arguments`` arrive as a JSON *string*;
one that is not JSON, or not a JSON object, raises a
:class:`~ctxflow.errors.ResponseError` naming the exact field.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from ctxflow.adapters import _base as base
from ctxflow.adapters._base import ParsedResponse, StopReason, Usage, WindowLike, usage_count
from ctxflow.adapters._errors import provider_error
from ctxflow.errors import InvalidConversation, PolicyError, ResponseError
from ctxflow.layers import ToolDef
from ctxflow.model import (
    Block,
    Message,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    to_openai,
)
from ctxflow.model._openai import tool_arguments

__all__ = [
    "openai_body",
    "openai_usage",
    "parse_openai",
    "render_openai",
    "tool_to_openai",
]

_RENDERED = frozenset({"model", "messages", "tools", "max_completion_tokens"})

_STOPS = {
    "stop": StopReason.END_TURN,
    "tool_calls": StopReason.TOOL_USE,
    "function_call": StopReason.TOOL_USE,
    "length": StopReason.MAX_TOKENS,
    "content_filter": StopReason.REFUSAL,
}


def tool_to_openai(tool: ToolDef) -> dict[str, Any]:
    """A tool definition as an OpenAI function tool (the schema copied)."""
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = copy.deepcopy(dict(tool.input_schema))
    return {"type": "function", "function": function}


def openai_body(
    *,
    messages: Sequence[Message],
    model: str,
    system: str | Sequence[str] = "",
    tools: Sequence[ToolDef] = (),
    max_tokens: int | None = None,
    system_role: Literal["system", "developer"] = "system",
    options: Mapping[str, Any] | None = None,
    context: str = "",
) -> dict[str, Any]:
    """An OpenAI Chat Completions request body.

    ``system`` (one text or parts joined by blank lines) becomes a leading
    ``system_role`` message (``developer`` for reasoning models); ``context``
    (a window's late context) ends the body in a user message, so the prefix
    OpenAI caches automatically stays the same from turn to turn;
    ``max_tokens`` becomes ``max_completion_tokens``. ``options`` adds other
    request fields but may not replace a rendered one.
    """
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens <= 0):
        raise PolicyError(
            f"'max_tokens' must be a positive integer or None (got {max_tokens!r})",
            rule="max_tokens",
        )
    base.check_options(options, _RENDERED)
    rendered, _lost = to_openai(messages)
    for index, entry in enumerate(rendered):
        if entry["role"] == "assistant" and entry["content"] is None and "tool_calls" not in entry:
            raise InvalidConversation(
                f"rendered message {index}: an assistant message needs text or tool calls "
                "for OpenAI (got neither; thinking is not sent)",
                rule="empty_message",
                index=index,
            )
    parts = [system] if isinstance(system, str) else list(system)
    text = "\n\n".join(p for p in parts if p.strip())
    body: dict[str, Any] = {"model": model, "messages": []}
    if text:
        body["messages"].append({"role": system_role, "content": text})
    body["messages"].extend(rendered)
    if context:
        base.append_context(body["messages"], context)
    if tools:
        body["tools"] = [tool_to_openai(t) for t in tools]
    if max_tokens is not None:
        body["max_completion_tokens"] = max_tokens
    body.update(options or {})
    return body


def render_openai(
    window: WindowLike,
    *,
    model: str,
    max_tokens: int | None = None,
    system_role: Literal["system", "developer"] = "system",
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`openai_body` of a window's system, messages and tools."""
    return openai_body(
        **base.window_parts(window),
        model=model,
        max_tokens=max_tokens,
        system_role=system_role,
        options=options,
    )


def openai_usage(usage: Any) -> Usage:
    """A normalised :class:`Usage` from an OpenAI ``usage`` object (None: zeros)."""
    usage = base.usage_object(usage)
    prompt_details = usage.get("prompt_tokens_details") or {}
    output_details = usage.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=usage_count(usage, "prompt_tokens", "usage"),
        output_tokens=usage_count(usage, "completion_tokens", "usage"),
        cache_read_tokens=usage_count(
            prompt_details, "cached_tokens", "usage.prompt_tokens_details"
        ),
        reasoning_tokens=usage_count(
            output_details, "reasoning_tokens", "usage.completion_tokens_details"
        ),
    )


def _tool_call(call: Any, field: str, allowed: frozenset[str] | None) -> ToolUseBlock:
    if not isinstance(call, Mapping):
        raise ResponseError(
            f"'{field}' must be an object (got {type(call).__name__})",
            rule="response_shape",
            field=field,
        )
    if call.get("type", "function") != "function":
        raise ResponseError(
            f"'{field}.type' must be function (got {call.get('type')!r})",
            rule="tool_call_type",
            field=f"{field}.type",
        )
    call_id = base.get_path(call, "id", str, field)
    function = base.get_path(call, "function", Mapping, field)
    name = base.get_path(function, "name", str, f"{field}.function")
    base.check_tool_name(name, allowed, f"{field}.function.name")
    arguments = tool_arguments(
        function.get("arguments"), f"{field}.function.arguments", error=ResponseError
    )
    return ToolUseBlock(id=call_id, name=name, input=arguments)


def parse_openai(
    body: Any,
    *,
    allowed_tools: Iterable[str | ToolDef] | None = None,
    choice: int = 0,
    message_id: str | None = None,
) -> ParsedResponse:
    """Read an OpenAI Chat Completions response body (one choice) into a message and usage.

    ``reasoning_content`` (sent by some compatible servers) becomes a thinking
    block; a ``refusal`` becomes the message text.
    """
    body = base.response_object(body)
    if "choices" not in body and isinstance(body.get("error"), Mapping):
        raise provider_error(body, api="openai")
    choices = base.get_path(body, "choices", list, "")
    if not 0 <= choice < len(choices):
        raise ResponseError(
            f"'choices' must hold choice {choice} (got {len(choices)} choices)",
            rule="response_shape",
            field="choices",
        )
    where = f"choices[{choice}]"
    picked = choices[choice]
    if not isinstance(picked, Mapping):
        raise ResponseError(
            f"'{where}' must be an object (got {type(picked).__name__})",
            rule="response_shape",
            field=where,
        )
    data = base.get_path(picked, "message", Mapping, where)
    where = f"{where}.message"
    allowed = base.tool_names(allowed_tools)
    blocks: list[Block] = []
    reasoning = data.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        blocks.append(ThinkingBlock(thinking=reasoning))
    content = data.get("content")
    if content is not None and not isinstance(content, str):
        raise ResponseError(
            f"'{where}.content' must be a string or null (got {type(content).__name__})",
            rule="response_shape",
            field=f"{where}.content",
        )
    if content:
        blocks.append(TextBlock(text=content))
    refusal = data.get("refusal")
    if isinstance(refusal, str) and refusal:
        blocks.append(TextBlock(text=refusal, extra={"ctxflow.refusal": True}))
    calls = data.get("tool_calls")
    calls = [] if calls is None else calls
    if not isinstance(calls, list):
        raise ResponseError(
            f"'{where}.tool_calls' must be a list (got {type(calls).__name__})",
            rule="response_shape",
            field=f"{where}.tool_calls",
        )
    blocks.extend(_tool_call(c, f"{where}.tool_calls[{i}]", allowed) for i, c in enumerate(calls))
    message = base.assistant_message(blocks, message_id, where)
    raw_stop = picked.get("finish_reason")
    stop = _STOPS.get(raw_stop, StopReason.OTHER) if isinstance(raw_stop, str) else None
    if isinstance(refusal, str) and refusal:
        stop = StopReason.REFUSAL
    return base.parsed_response(
        body,
        message,
        openai_usage(body.get("usage")),
        stop=stop or StopReason.OTHER,
        raw_stop=raw_stop,
        api="openai",
    )
