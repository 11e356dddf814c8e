"""Messages as plain data, and the content hash that keys a stored body.

A *body* is a message without its compression tags (``condense_parent``,
``truncation_parent``): tagging a message later does not change its body, so
the body is stored once and the tag change costs a few bytes in the manifest.

Restoring a checkpoint rebuilds every message of the log, so the common body
shapes (text, tool_use and tool_result blocks without extras) take a quick
path: the field values the constructors' converters would give are set
directly, and the message's own ``__attrs_post_init__`` still validates it and
derives its tool blocks. Anything else, including anything the quick path
cannot read, goes through the constructors, which raise the typed errors. The
quick path runs only while the model classes have exactly the fields it sets
and no validators (checked at import; a test fails when it is off).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import msgpack

from ctxflow.errors import CorruptCheckpoint, InvalidMessage
from ctxflow.model import (
    Block,
    ImageBlock,
    Message,
    RedactedThinkingBlock,
    Role,
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
        if QUICK:
            quick = _quick_message(data, condense_parent, truncation_parent)
            if quick is not None:
                return quick
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
    except (KeyError, TypeError, ValueError, AttributeError, InvalidMessage) as exc:
        raise CorruptCheckpoint(
            f"a stored message body must describe a valid message ({exc})", rule="body"
        ) from None


_new = object.__new__
_put = object.__setattr__
_ROLES = {role.value: role for role in Role}


def _quick_text(data: Mapping[str, Any]) -> TextBlock:
    block = _new(TextBlock)
    _put(block, "text", data["text"])
    _put(block, "extra", {})
    _put(block, "type", "text")
    return block


def _quick_use(data: Mapping[str, Any]) -> ToolUseBlock:
    block = _new(ToolUseBlock)
    _put(block, "id", data["id"])
    _put(block, "name", data["name"])
    _put(block, "input", data["input"])
    _put(block, "extra", {})
    _put(block, "type", "tool_use")
    return block


def _quick_result(data: Mapping[str, Any]) -> ToolResultBlock:
    content = data["content"]
    if not isinstance(content, str):
        raise TypeError("block content takes the constructors")
    block = _new(ToolResultBlock)
    _put(block, "tool_use_id", data["tool_use_id"])
    _put(block, "content", content)
    _put(block, "is_error", bool(data.get("is_error", False)))
    _put(block, "extra", {})
    _put(block, "type", "tool_result")
    return block


_QUICK_BLOCKS: dict[str, Callable[[Mapping[str, Any]], Block]] = {
    "text": _quick_text,
    "tool_use": _quick_use,
    "tool_result": _quick_result,
}


def _quick_message(
    data: Mapping[str, Any], condense_parent: str | None, truncation_parent: str | None
) -> Message | None:
    """The message of a common body shape, or None (then the constructors decide)."""
    try:
        content = []
        for plain in data["content"]:
            if "extra" in plain:
                return None
            content.append(_QUICK_BLOCKS[plain["type"]](plain))
        metadata = data.get("metadata")
        message = _new(Message)
        _put(message, "role", _ROLES[data["role"]])
        _put(message, "content", tuple(content))
        _put(message, "id", data["id"])
        _put(message, "timestamp", data.get("timestamp"))
        _put(message, "metadata", dict(metadata) if metadata else {})
        _put(message, "important", bool(data.get("important", False)))
        _put(message, "condense_parent", condense_parent)
        _put(message, "truncation_parent", truncation_parent)
        message.__attrs_post_init__()
    except (KeyError, TypeError, ValueError, AttributeError, InvalidMessage):
        return None
    return message


def _quick_fits() -> bool:
    """True while the model classes have exactly the fields the quick path sets."""
    expected = {
        Message: (
            "role",
            "content",
            "id",
            "timestamp",
            "metadata",
            "important",
            "condense_parent",
            "truncation_parent",
            "_uses",
            "_results",
        ),
        TextBlock: ("text", "extra", "type"),
        ToolUseBlock: ("id", "name", "input", "extra", "type"),
        ToolResultBlock: ("tool_use_id", "content", "is_error", "extra", "type"),
    }
    for cls, names in expected.items():
        fields = attrs.fields(cls)
        if tuple(f.name for f in fields) != names or any(f.validator for f in fields):
            return False
    return callable(getattr(Message, "__attrs_post_init__", None))


#: Whether :func:`message_from_plain` may take the quick path (see the module docstring).
QUICK = _quick_fits()


def body_hash(body: Mapping[str, Any]) -> str:
    """The content address of a body: blake2b-128 of its msgpack bytes, base64url (22 chars)."""
    packed = msgpack.packb(body, use_bin_type=True)
    digest = hashlib.blake2b(packed, digest_size=16).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
