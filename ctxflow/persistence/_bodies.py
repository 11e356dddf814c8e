"""Messages as plain data, and the content hash that keys a stored body.

A *body* is a message without its compression tags (``condense_parent``,
``truncation_parent``): tagging a message later does not change its body, so
the body is stored once and the tag change costs a few bytes in the manifest.

Restoring a checkpoint rebuilds every message of the log, so the common body
shapes (text, tool_use and tool_result blocks without extras) take a quick
path: the field values the constructors' converters would give are set into
the slots directly, and the message's and blocks' own ``__attrs_post_init__``
still validate them (the message's also derives its tool blocks). Anything else, including anything
the quick path cannot read, goes through the constructors, which raise the
typed errors. The quick path exists only while the model classes have exactly
the slotted fields it sets and no validators (checked at import; a test fails
when it is off).
"""

from __future__ import annotations

import base64
import hashlib
import types
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import msgpack

from ctxflow.errors import CorruptCheckpoint, InvalidMessage
from ctxflow.model import Block, Message, Role
from ctxflow.model import _messages as m

__all__ = ["body_digest", "body_hash", "message_from_plain", "message_to_plain"]


def _block_to_plain(block: Block) -> dict[str, Any]:
    if isinstance(block, m.TextBlock):
        out: dict[str, Any] = {"type": "text", "text": block.text}
    elif isinstance(block, m.ToolUseBlock):
        out = {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    elif isinstance(block, m.ToolResultBlock):
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
    elif isinstance(block, m.ThinkingBlock):
        out = {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    elif isinstance(block, m.RedactedThinkingBlock):
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
        return m.TextBlock(text=data["text"], extra=extra)
    if kind == "tool_use":
        return m.ToolUseBlock(id=data["id"], name=data["name"], input=data["input"], extra=extra)
    if kind == "tool_result":
        content = data["content"]
        return m.ToolResultBlock(
            tool_use_id=data["tool_use_id"],
            content=content
            if isinstance(content, str)
            else tuple(_block_from_plain(b) for b in content),
            is_error=bool(data.get("is_error", False)),
            extra=extra,
        )
    if kind == "thinking":
        return m.ThinkingBlock(thinking=data["thinking"], signature=data["signature"], extra=extra)
    if kind == "redacted_thinking":
        return m.RedactedThinkingBlock(data=data["data"], extra=extra)
    if kind == "image":
        return m.ImageBlock(source=data["source"], extra=extra)
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
    return rebuild(data, condense_parent, truncation_parent)


def rebuild(
    data: Mapping[str, Any], condense_parent: str | None, truncation_parent: str | None
) -> Message:
    """:func:`message_from_plain` with positional tags (it runs for every restored message)."""
    try:
        if data.get("tags"):
            condense_parent, truncation_parent = data["tags"]
        if QUICK is not None:
            quick = QUICK(data, condense_parent, truncation_parent)
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


Quick = Callable[[Mapping[str, Any], str | None, str | None], Message | None]

_FIELDS: dict[type, tuple[str, ...]] = {
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
    m.TextBlock: ("text", "extra", "type"),
    m.ToolUseBlock: ("id", "name", "input", "extra", "type"),
    m.ToolResultBlock: ("tool_use_id", "content", "is_error", "extra", "type"),
}


def _slots(cls: type) -> dict[str, Callable[[Any, Any], None]]:
    """The setters of a class's field slots, or KeyError when its fields are not the expected.

    A slot's own setter skips the frozen class's refusing ``__setattr__`` (what
    attrs' generated ``__init__`` does too), and costs less than
    ``object.__setattr__``.
    """
    fields = attrs.fields(cls)
    if tuple(f.name for f in fields) != _FIELDS[cls] or any(f.validator for f in fields):
        raise KeyError(cls.__name__)
    slots = {name: cls.__dict__.get(name) for name in _FIELDS[cls]}
    if not all(isinstance(slot, types.MemberDescriptorType) for slot in slots.values()):
        raise KeyError(cls.__name__)
    return {name: slot.__set__ for name, slot in slots.items()}  # type: ignore[union-attr]


def _unchecked(block: Any) -> None:
    """What a block class without checks of its own runs after construction."""


def _make_quick() -> Quick | None:
    """The quick path over the model as it is, or None when it does not fit (module docstring)."""
    text_block, use_block, result_block = m.TextBlock, m.ToolUseBlock, m.ToolResultBlock
    try:
        msg, t, u, r = (_slots(cls) for cls in (Message, text_block, use_block, result_block))
    except KeyError:
        return None
    if not callable(getattr(Message, "__attrs_post_init__", None)):
        return None
    new = object.__new__
    roles = {role.value: role for role in Role}
    text_text, text_extra, text_type = t["text"], t["extra"], t["type"]
    use_id, use_name, use_input, use_extra, use_type = (
        u["id"], u["name"], u["input"], u["extra"], u["type"]
    )  # fmt: skip
    result_id, result_content, result_error, result_extra, result_type = (
        r["tool_use_id"], r["content"], r["is_error"], r["extra"], r["type"]
    )  # fmt: skip
    m_role, m_content, m_id, m_time, m_meta, m_important, m_condense, m_truncation = (
        msg["role"], msg["content"], msg["id"], msg["timestamp"], msg["metadata"],
        msg["important"], msg["condense_parent"], msg["truncation_parent"],
    )  # fmt: skip

    post_init = Message.__attrs_post_init__
    # A block class's own checks run as its constructor would run them.
    text_check, use_check, result_check = (
        getattr(cls, "__attrs_post_init__", _unchecked)
        for cls in (text_block, use_block, result_block)
    )

    def block(data: Mapping[str, Any]) -> Block:
        kind = data["type"]
        if "extra" in data:
            raise LookupError("extras take the constructors")
        if kind == "text":
            text = new(text_block)
            text_text(text, data["text"])
            text_extra(text, {})
            text_type(text, "text")
            text_check(text)
            return text
        if kind == "tool_use":
            use = new(use_block)
            use_id(use, data["id"])
            use_name(use, data["name"])
            use_input(use, data["input"])
            use_extra(use, {})
            use_type(use, "tool_use")
            use_check(use)
            return use
        if kind == "tool_result" and isinstance(content := data["content"], str):
            result = new(result_block)
            result_id(result, data["tool_use_id"])
            result_content(result, content)
            result_error(result, bool(data.get("is_error", False)))
            result_extra(result, {})
            result_type(result, "tool_result")
            result_check(result)
            return result
        raise LookupError(f"{kind!r} blocks take the constructors")

    def quick(
        data: Mapping[str, Any], condense_parent: str | None, truncation_parent: str | None
    ) -> Message | None:
        try:
            content = tuple([block(plain) for plain in data["content"]])
            metadata = data.get("metadata")
            message = new(Message)
            m_role(message, roles[data["role"]])
            m_content(message, content)
            m_id(message, data["id"])
            m_time(message, data.get("timestamp"))
            m_meta(message, dict(metadata) if metadata else {})
            m_important(message, bool(data.get("important", False)))
            m_condense(message, condense_parent)
            m_truncation(message, truncation_parent)
            post_init(message)
        except (LookupError, TypeError, ValueError, AttributeError, InvalidMessage):
            return None
        return message

    return quick


#: The quick path of :func:`message_from_plain` (None when the model does not fit it).
QUICK = _make_quick()


def body_hash(body: Mapping[str, Any]) -> str:
    """The content address of a body: blake2b-128 of its msgpack bytes, base64url (22 chars)."""
    return body_digest(body)[0]


def body_digest(body: Mapping[str, Any]) -> tuple[str, int]:
    """A body's :func:`body_hash` and the size of its msgpack bytes, packed once."""
    packed = msgpack.packb(body, use_bin_type=True)
    digest = hashlib.blake2b(packed, digest_size=16).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii"), len(packed)
