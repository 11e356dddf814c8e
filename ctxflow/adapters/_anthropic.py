"""Anthropic Messages API: request bodies from a window, assistant messages from responses.

Rendering goes beyond :func:`ctxflow.model.messages_to_anthropic` where the
API is stricter than the model:

- leading ``system`` messages (the corpus convention) join the top-level
  ``system``; a system message later in the conversation has no Anthropic
  form and is an error;
- whitespace-only text blocks are dropped (Anthropic rejects them); a message
  left with no block is an error;
- adjacent messages of one role are merged into one, tool results first
  (Anthropic requires tool_result blocks to lead their user message).

Parsing reads content blocks with :func:`ctxflow.model._anthropic.block_from_anthropic`
and refuses, with a :class:`~ctxflow.errors.ResponseError` naming the field,
any body it cannot read faithfully. An ``{"type": "error"}`` body is raised as
a :class:`~ctxflow.errors.ProviderError` (``ContextOverflow`` for "prompt is
too long").
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ctxflow.adapters import _base as base
from ctxflow.adapters._base import ParsedResponse, StopReason, Usage, WindowLike, usage_count
from ctxflow.adapters._caching import CachePolicy, apply_breakpoints
from ctxflow.adapters._errors import provider_error
from ctxflow.errors import InvalidConversation, InvalidMessage, PolicyError, ResponseError
from ctxflow.layers import ToolDef
from ctxflow.model import Block, Message, Role, ToolResultBlock
from ctxflow.model._anthropic import block_from_anthropic, block_to_anthropic

__all__ = [
    "anthropic_body",
    "anthropic_usage",
    "parse_anthropic",
    "render_anthropic",
    "tool_to_anthropic",
]

_RENDERED = frozenset({"model", "max_tokens", "system", "messages", "tools"})

_STOPS = {
    "end_turn": StopReason.END_TURN,
    "tool_use": StopReason.TOOL_USE,
    "max_tokens": StopReason.MAX_TOKENS,
    "stop_sequence": StopReason.STOP_SEQUENCE,
    "refusal": StopReason.REFUSAL,
    "pause_turn": StopReason.PAUSE,
    "model_context_window_exceeded": StopReason.CONTEXT_FULL,
}


def tool_to_anthropic(tool: ToolDef) -> dict[str, Any]:
    """A tool definition as an Anthropic tool object (the schema copied)."""
    out: dict[str, Any] = {"name": tool.name}
    if tool.description:
        out["description"] = tool.description
    out["input_schema"] = copy.deepcopy(dict(tool.input_schema))
    return out


def _blank(block: Mapping[str, Any]) -> bool:
    return block.get("type") == "text" and not str(block.get("text", "")).strip()


def _render_messages(
    messages: Sequence[Message],
) -> tuple[list[str], list[dict[str, Any]], list[tuple[int, int] | None]]:
    """Leading system texts, the rendered messages, and where each input message ends."""
    system: list[str] = []
    # Per rendered message: its role and (input index, block) pairs, so merging
    # and reordering can still say where each input message ends.
    grouped: list[tuple[str, list[tuple[int, dict[str, Any]]]]] = []
    for index, message in enumerate(messages):
        if message.role is Role.SYSTEM:
            if grouped:
                raise InvalidConversation(
                    f"message {index}: a system message must lead the conversation for "
                    f"Anthropic (got one after {index} messages)",
                    rule="system_not_leading",
                    index=index,
                    message_id=message.id,
                )
            if message.text.strip():
                system.append(message.text)
            continue
        blocks = [block_to_anthropic(b) for b in message.content]
        kept = [b for b in blocks if not _blank(b)]
        if not kept:
            raise InvalidConversation(
                f"message {index}: a message must keep at least one non-blank block "
                f"(got {len(blocks)} blank or no blocks)",
                rule="empty_message",
                index=index,
                message_id=message.id,
            )
        pairs = [(index, b) for b in kept]
        if grouped and grouped[-1][0] == message.role.value:
            grouped[-1][1].extend(pairs)
        else:
            grouped.append((message.role.value, pairs))
    rendered: list[dict[str, Any]] = []
    ends: list[tuple[int, int] | None] = [None] * len(messages)
    for position, (role, pairs) in enumerate(grouped):
        if role == "user":
            pairs = [p for p in pairs if p[1]["type"] == "tool_result"] + [
                p for p in pairs if p[1]["type"] != "tool_result"
            ]
        for b, (index, _) in enumerate(pairs):
            current = ends[index]
            if current is None or current < (position, b):
                ends[index] = (position, b)
        rendered.append({"role": role, "content": [block for _, block in pairs]})
    return system, rendered, ends


def anthropic_body(
    *,
    messages: Sequence[Message],
    model: str,
    max_tokens: int,
    system: str | Sequence[str] = "",
    tools: Sequence[ToolDef] = (),
    cache: CachePolicy | None = None,
    options: Mapping[str, Any] | None = None,
    context: str = "",
) -> dict[str, Any]:
    """An Anthropic Messages request body.

    ``system`` is one text or several parts (each becomes a text block, so a
    cache breakpoint can end the stable parts); leading system messages are
    appended to it. ``context`` (a window's late context) follows every
    message and every breakpoint, as the last block of a user message. ``cache``
    marks prompt-cache breakpoints; ``options`` adds other request fields
    (``stop_sequences``, ``tool_choice``, ``thinking``, ...) but may not
    replace a rendered one.
    """
    if not isinstance(max_tokens, int) or max_tokens <= 0:
        raise PolicyError(
            f"'max_tokens' must be a positive integer (got {max_tokens!r})", rule="max_tokens"
        )
    base.check_options(options, _RENDERED)
    leading, rendered, ends = _render_messages(messages)
    parts = [system] if isinstance(system, str) else list(system)
    parts = [p for p in [*parts, *leading] if p.strip()]
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
    if parts:
        body["system"] = (
            parts[0] if len(parts) == 1 else [{"type": "text", "text": p} for p in parts]
        )
    body["messages"] = rendered
    if tools:
        body["tools"] = [tool_to_anthropic(t) for t in tools]
    body.update(options or {})
    if cache is not None:
        stable_end = None
        if cache.stable_messages:
            covered = [e for e in ends[: cache.stable_messages] if e is not None]
            stable_end = max(covered) if covered else None
        apply_breakpoints(body, cache, stable_end=stable_end)
    if context:
        base.append_context(body["messages"], context)
    return body


def render_anthropic(
    window: WindowLike,
    *,
    model: str,
    max_tokens: int,
    cache: CachePolicy | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`anthropic_body` of a window's system, messages and tools."""
    return anthropic_body(
        **base.window_parts(window),
        model=model,
        max_tokens=max_tokens,
        cache=cache,
        options=options,
    )


def anthropic_usage(usage: Any) -> Usage:
    """A normalised :class:`Usage` from an Anthropic ``usage`` object (None: zeros)."""
    usage = base.usage_object(usage)
    written = usage_count(usage, "cache_creation_input_tokens")
    read = usage_count(usage, "cache_read_input_tokens")
    return Usage(
        prompt_tokens=usage_count(usage, "input_tokens") + written + read,
        output_tokens=usage_count(usage, "output_tokens"),
        cache_read_tokens=read,
        cache_write_tokens=written,
    )


def parse_anthropic(
    body: Any,
    *,
    allowed_tools: Iterable[str | ToolDef] | None = None,
    message_id: str | None = None,
) -> ParsedResponse:
    """Read an Anthropic Messages response body into an assistant message and its usage.

    ``allowed_tools`` (names or definitions) are the tools the request
    offered; a tool call naming another raises a ``ResponseError``.
    """
    body = base.response_object(body)
    if body.get("type") == "error":
        raise provider_error(body, api="anthropic")
    if body.get("type", "message") != "message" or body.get("role", "assistant") != "assistant":
        raise ResponseError(
            "an Anthropic response must be an assistant message "
            f"(got type={body.get('type')!r}, role={body.get('role')!r})",
            rule="response_shape",
            field="type",
        )
    content = base.get_path(body, "content", list, "")
    allowed = base.tool_names(allowed_tools)
    blocks: list[Block] = []
    for i, raw in enumerate(content):
        field = f"content[{i}]"
        if isinstance(raw, Mapping):
            # SDK dumps carry optional fields as None; the request types reject some.
            raw = {k: v for k, v in raw.items() if v is not None}
        try:
            block = block_from_anthropic(raw, field)
        except InvalidMessage as exc:
            raise ResponseError(exc.message, rule=exc.rule, field=field) from None
        if isinstance(block, ToolResultBlock):
            raise ResponseError(
                f"'{field}' must be a block an assistant may send (got tool_result)",
                rule="block_not_allowed",
                field=field,
            )
        if block.type == "tool_use":
            base.check_tool_name(getattr(block, "name", None), allowed, f"{field}.name")
        blocks.append(block)
    message = base.assistant_message(blocks, message_id, "content")
    raw_stop = body.get("stop_reason")
    return base.parsed_response(
        body,
        message,
        anthropic_usage(body.get("usage")),
        stop=_STOPS.get(raw_stop, StopReason.OTHER)
        if isinstance(raw_stop, str)
        else StopReason.OTHER,
        raw_stop=raw_stop,
        api="anthropic",
    )
