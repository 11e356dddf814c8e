"""Conversion between messages and the Anthropic Messages format.

Anthropic → ctxflow → Anthropic is exact: a message whose ``content`` was a
plain string is marked (``metadata["anthropic.string_content"]``) and rendered
as a string again, and block fields ctxflow does not model (``cache_control``,
``citations``, ...) are kept in each block's ``extra``. ctxflow → Anthropic →
ctxflow keeps roles and content exactly; message ids, timestamps, metadata and
tags are ctxflow's own and are not part of the Anthropic format.

A ``system`` role inside the messages list (the corpus convention) is accepted
as the system prompt; so is the request body's top-level ``system``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ctxflow.errors import InvalidMessage
from ctxflow.model import _messages as m
from ctxflow.model._messages import Block, Message, Role, new_id

__all__ = [
    "STRING_CONTENT",
    "block_from_anthropic",
    "block_to_anthropic",
    "message_from_anthropic",
    "message_to_anthropic",
    "messages_from_anthropic",
    "messages_to_anthropic",
]

#: Metadata flag: the message's content was a plain string in its source.
STRING_CONTENT = "anthropic.string_content"

_KNOWN: dict[str, tuple[str, ...]] = {
    "text": ("type", "text"),
    "tool_use": ("type", "id", "name", "input"),
    "tool_result": ("type", "tool_use_id", "content", "is_error"),
    "thinking": ("type", "thinking", "signature"),
    "redacted_thinking": ("type", "data"),
    "image": ("type", "source"),
}


def _fail(where: str, rule: str, text: str, **details: Any) -> InvalidMessage:
    return InvalidMessage(f"{where}: {text}", rule=rule, where=where, **details)


def _extra(data: Mapping[str, Any], kind: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in _KNOWN[kind]}


def _need_str(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise _fail(
            where,
            "missing_field",
            f"{data.get('type', 'block')} block needs a string {key!r} "
            f"(got {type(value).__name__})",
            field=key,
        )
    return value


def block_from_anthropic(data: Any, where: str = "block") -> Block:
    """Build a block from an Anthropic content-block object."""
    if not isinstance(data, Mapping):
        raise _fail(where, "block_not_object", f"content block must be an object (got {data!r})")
    kind = data.get("type")
    if kind not in _KNOWN:
        raise _fail(where, "unknown_block_type", f"unknown content block type {kind!r}", type=kind)
    extra = _extra(data, kind)
    if kind == "text":
        return m.TextBlock(text=_need_str(data, "text", where), extra=extra)
    if kind == "tool_use":
        tool_id = data.get("id")
        if not isinstance(tool_id, str) or not tool_id:
            raise _fail(where, "tool_use_id", "tool_use block has no id")
        tool_input = data.get("input")
        if not isinstance(tool_input, Mapping):
            raise _fail(
                where,
                "tool_input_not_object",
                f"tool_use {tool_id!r} input must be a JSON object "
                f"(got {type(tool_input).__name__})",
            )
        return m.ToolUseBlock(
            id=tool_id, name=_need_str(data, "name", where), input=dict(tool_input), extra=extra
        )
    if kind == "tool_result":
        content = data.get("content", "")
        parsed: str | tuple[Block, ...]
        if isinstance(content, str):
            parsed = content
        elif isinstance(content, list):
            parsed = tuple(
                block_from_anthropic(b, f"{where}.content[{i}]") for i, b in enumerate(content)
            )
        else:
            raise _fail(where, "tool_result_content", "tool_result content must be text or list")
        if "is_error" not in data:
            extra["ctxflow.no_is_error"] = True
        return m.ToolResultBlock(
            tool_use_id=_need_str(data, "tool_use_id", where),
            content=parsed,
            is_error=bool(data.get("is_error", False)),
            extra=extra,
        )
    if kind == "thinking":
        if "signature" not in data:
            extra["ctxflow.no_signature"] = True
        return m.ThinkingBlock(
            thinking=_need_str(data, "thinking", where),
            signature=str(data.get("signature", "")),
            extra=extra,
        )
    if kind == "redacted_thinking":
        return m.RedactedThinkingBlock(data=_need_str(data, "data", where), extra=extra)
    source = data.get("source")
    if not isinstance(source, Mapping):
        raise _fail(where, "image_source", "image block needs a source object")
    return m.ImageBlock(source=dict(source), extra=extra)


def block_to_anthropic(block: Block) -> dict[str, Any]:
    """Render a block as an Anthropic content-block object."""
    out: dict[str, Any]
    extra = {k: v for k, v in block.extra.items() if not k.startswith("ctxflow.")}
    if isinstance(block, m.TextBlock):
        out = {"type": "text", "text": block.text}
    elif isinstance(block, m.ToolUseBlock):
        out = {"type": "tool_use", "id": block.id, "name": block.name, "input": dict(block.input)}
    elif isinstance(block, m.ToolResultBlock):
        content: Any = (
            block.content
            if isinstance(block.content, str)
            else [block_to_anthropic(b) for b in block.content]
        )
        out = {"type": "tool_result", "tool_use_id": block.tool_use_id, "content": content}
        if not block.extra.get("ctxflow.no_is_error") or block.is_error:
            out["is_error"] = block.is_error
    elif isinstance(block, m.ThinkingBlock):
        out = {"type": "thinking", "thinking": block.thinking}
        if not block.extra.get("ctxflow.no_signature") or block.signature:
            out["signature"] = block.signature
    elif isinstance(block, m.RedactedThinkingBlock):
        out = {"type": "redacted_thinking", "data": block.data}
    else:
        out = {"type": "image", "source": dict(block.source)}
    out.update(extra)
    return out


def message_from_anthropic(
    data: Any, index: int = 0, *, message_id: str | None = None, where: str = ""
) -> Message:
    """Build a message from an Anthropic message object (``role`` and ``content``)."""
    here = where or f"message {index}"
    if not isinstance(data, Mapping):
        raise _fail(here, "message_not_object", f"message must be an object (got {data!r})")
    role = data.get("role")
    if role not in ("system", "user", "assistant"):
        raise _fail(
            here,
            "unknown_role",
            f"'role' must be one of system, user, assistant (got {role!r})",
            index=index,
        )
    content = data.get("content")
    metadata: dict[str, Any] = {}
    blocks: tuple[Block, ...]
    if isinstance(content, str):
        blocks = (m.TextBlock(text=content),)
        metadata[STRING_CONTENT] = True
    elif isinstance(content, list):
        blocks = tuple(
            block_from_anthropic(b, f"{here}.content[{i}]") for i, b in enumerate(content)
        )
    else:
        raise _fail(here, "content_type", "'content' must be a string or a list of blocks")
    try:
        return Message(
            role=Role(role),
            content=blocks,
            id=message_id or new_id(),
            metadata=metadata,
        )
    except InvalidMessage as exc:
        raise _fail(here, exc.rule, exc.message, index=index) from None


def message_to_anthropic(message: Message) -> dict[str, Any]:
    """Render a message as an Anthropic message object."""
    if message.metadata.get(STRING_CONTENT) and len(message.content) == 1:
        only = message.content[0]
        if isinstance(only, m.TextBlock) and not only.extra:
            return {"role": message.role.value, "content": only.text}
    return {
        "role": message.role.value,
        "content": [block_to_anthropic(b) for b in message.content],
    }


def messages_from_anthropic(
    items: Iterable[Any], *, ids: Sequence[str] | None = None, where: str = ""
) -> list[Message]:
    """Build messages from an Anthropic messages list (a leading system message allowed)."""
    out = []
    for index, item in enumerate(items):
        message_id = ids[index] if ids is not None else None
        here = f"{where}message {index}" if where else ""
        out.append(message_from_anthropic(item, index, message_id=message_id, where=here))
    return out


def messages_to_anthropic(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Render messages as an Anthropic messages list (a system message stays in the list)."""
    return [message_to_anthropic(message) for message in messages]


def dumps_input(value: Mapping[str, Any]) -> str:
    """Serialise a tool input the way the providers do (compact, UTF-8 kept)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
