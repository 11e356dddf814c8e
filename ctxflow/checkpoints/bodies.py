"""Messages as plain data, and the content hash that keys a stored body.

A *body* is a message without its compression tags (``condense_parent``,
``truncation_parent``): tagging a message later does not change its body, so
the body is stored once and the tag change costs a few bytes in the manifest.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

import msgpack

from ctxflow.errors import CorruptCheckpoint, InvalidMessage
from ctxflow.model import (
    Block,
    ImageBlock,
    Message,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)

__all__ = ["body_hash", "message_from_plain", "message_to_plain"]


def _block_to_plain(block: Block) -> dict[str, Any]:
    if isinstance(block, TextBlock):
        out: dict[str, Any] = {"type": "text", "text": block.text}
    elif isinstance(block, ToolUseBlock):
        out = {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    elif isinstance(block, ToolResultBlock):
        content: Any = (
            block.content
            if isinstance(block.content, str)
            else [_block_to_plain(b) for b in block.content]
        )
        out = {
            "type": "tool_result",
            "tool_use_id": block.tool_use_id,
            "content": content,
            "is_error": block.is_error,
        }
    elif isinstance(block, ThinkingBlock):
        out = {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    elif isinstance(block, RedactedThinkingBlock):
        out = {"type": "redacted_thinking", "data": block.data}
    else:
        out = {"type": "image", "source": block.source}
    if block.extra:
        out["extra"] = block.extra
    return out


def _block_from_plain(data: Mapping[str, Any]) -> Block:
    kind = data["type"]
    extra = data.get("extra") or {}
    if kind == "text":
        return TextBlock(text=data["text"], extra=extra)
    if kind == "tool_use":
        return ToolUseBlock(id=data["id"], name=data["name"], input=data["input"], extra=extra)
    if kind == "tool_result":
        content = data["content"]
        return ToolResultBlock(
            tool_use_id=data["tool_use_id"],
            content=content
            if isinstance(content, str)
            else tuple(_block_from_plain(b) for b in content),
            is_error=bool(data.get("is_error", False)),
            extra=extra,
        )
    if kind == "thinking":
        return ThinkingBlock(thinking=data["thinking"], signature=data["signature"], extra=extra)
    if kind == "redacted_thinking":
        return RedactedThinkingBlock(data=data["data"], extra=extra)
    if kind == "image":
        return ImageBlock(source=data["source"], extra=extra)
    raise KeyError(f"unknown block type {kind!r}")


def message_to_plain(message: Message, *, with_tags: bool = False) -> dict[str, Any]:
    """The body of ``message`` as plain data (its compression tags only ``with_tags``)."""
    out: dict[str, Any] = {
        "id": message.id,
        "role": message.role.value,
        "content": [_block_to_plain(b) for b in message.content],
    }
    if message.timestamp is not None:
        out["timestamp"] = message.timestamp
    if message.metadata:
        out["metadata"] = message.metadata
    if message.important:
        out["important"] = True
    if with_tags and message.hidden:
        out["tags"] = [message.condense_parent, message.truncation_parent]
    return out


def message_from_plain(
    data: Mapping[str, Any],
    *,
    condense_parent: str | None = None,
    truncation_parent: str | None = None,
) -> Message:
    """Rebuild a message from :func:`message_to_plain`'s output, with the given tags.

    Tags stored in the body itself (``with_tags``) take precedence.
    """
    try:
        if data.get("tags"):
            condense_parent, truncation_parent = data["tags"]
        return Message(
            id=data["id"],
            role=data["role"],
            content=tuple(_block_from_plain(b) for b in data["content"]),
            timestamp=data.get("timestamp"),
            metadata=data.get("metadata") or {},
            important=bool(data.get("important", False)),
            condense_parent=condense_parent,
            truncation_parent=truncation_parent,
        )
    except (KeyError, TypeError, AttributeError, InvalidMessage) as exc:
        raise CorruptCheckpoint(
            f"a stored message body must describe a valid message ({exc})", rule="body"
        ) from None


def body_hash(body: Mapping[str, Any]) -> str:
    """The content address of a body: blake2b-128 of its msgpack bytes, base64url (22 chars)."""
    packed = msgpack.packb(body, use_bin_type=True)
    digest = hashlib.blake2b(packed, digest_size=16).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
