"""LangChain messages ↔ ctxflow messages, lossless both ways.

ctxflow keeps the conservative form every API accepts: user and assistant
alternate, and a tool's results travel in the user message after the call
(the Anthropic shape). LangChain keeps one message per tool result
(``ToolMessage``) and allows two human messages in a row. So consecutive
LangChain messages that land on the same ctxflow role are *merged* into one
ctxflow message, and each ctxflow message records where its blocks came from
in ``metadata["langchain"]``: per LangChain message its type, its other fields
(ids, names, ``additional_kwargs``, ``response_metadata``, usage, artifacts,
as JSON), how many blocks it gave, and the content blocks ctxflow does not
model (kept verbatim at their positions). :func:`from_ctxflow` splits them
back, so ``from_ctxflow(to_ctxflow(messages))`` equals ``messages``.

A message ctxflow made or changed (a summary, a cleared or trimmed tool
result, a message whose blocks the window dropped) converts by its role:
system → ``SystemMessage``, assistant → ``AIMessage`` with ``tool_calls``,
user → its tool results as ``ToolMessage``\\ s and its other blocks as one
``HumanMessage``, keeping what the record still says of them.

Tool call ids must match ``[A-Za-z0-9_.:-]+`` in ctxflow; another id is
replaced by a stable digest and kept in the block's ``extra`` to be given
back.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from ctxflow.errors import InvalidMessage
from ctxflow.model import (
    Block,
    ImageBlock,
    Message,
    Role,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    new_id,
)

__all__ = ["from_ctxflow", "to_ctxflow"]

#: The metadata key of the record of where a message's blocks came from.
KEY = "langchain"
_TOOL_ID = re.compile(r"^[A-Za-z0-9_.:-]+$")
_ROLES = {"human": Role.USER, "tool": Role.USER, "ai": Role.ASSISTANT, "system": Role.SYSTEM}
_OWN = {"content", "type", "tool_calls", "tool_call_id", "status"}


def tool_id(original: str) -> str:
    """The ctxflow form of a tool call id: itself when it fits, else a stable digest."""
    if _TOOL_ID.match(original):
        return original
    return "lc_" + hashlib.blake2b(original.encode(), digest_size=12).hexdigest()


def _fields(message: BaseMessage) -> dict[str, Any]:
    dumped: dict[str, Any] = message.model_dump(mode="json", exclude=_OWN)
    return {k: v for k, v in dumped.items() if v not in (None, {}, [])}


def _content_blocks(content: str | list[Any]) -> tuple[list[Block], dict[str, Any]]:
    """ctxflow blocks of a LangChain content value, and the raw blocks kept aside (by
    position)."""
    if isinstance(content, str):
        return ([TextBlock(text=content)] if content else []), {}
    blocks: list[Block] = []
    raw: dict[str, Any] = {}
    for index, part in enumerate(content):
        if isinstance(part, str):
            blocks.append(TextBlock(text=part, extra={KEY: "str"}))
            continue
        kind = part.get("type") if isinstance(part, Mapping) else None
        rest = {k: v for k, v in part.items() if k != "type"} if kind else {}
        if kind == "text" and isinstance(part.get("text"), str):
            blocks.append(TextBlock(text=part["text"], extra={KEY: {**rest, "text": None}}))
        elif kind == "thinking" and isinstance(part.get("thinking"), str):
            signature = part.get("signature")
            blocks.append(
                ThinkingBlock(
                    thinking=part["thinking"],
                    signature=signature if isinstance(signature, str) else "",
                    extra={KEY: rest},
                )
            )
        elif kind in {"image", "image_url"}:
            blocks.append(ImageBlock(source=dict(part)))
        else:
            raw[str(index)] = part
    return blocks, raw


def _content_value(blocks: Sequence[Block], form: str, raw: Mapping[str, Any]) -> Any:
    """A LangChain content value from ctxflow blocks (and the raw ones at their places)."""
    if form == "str":
        return "".join(b.text for b in blocks if isinstance(b, TextBlock))
    parts: list[Any] = []
    for block in blocks:
        kept = block.extra.get(KEY) if block.extra else None
        if isinstance(block, TextBlock):
            if kept == "str":
                parts.append(block.text)
            elif isinstance(kept, Mapping):
                parts.append({"type": "text", **{**kept, "text": block.text}})
            else:
                parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ThinkingBlock):
            extra = dict(kept) if isinstance(kept, Mapping) else {}
            extra.update(thinking=block.thinking)
            if block.signature or "signature" in extra:
                extra["signature"] = block.signature
            parts.append({"type": "thinking", **extra})
        elif isinstance(block, ImageBlock):
            parts.append(dict(block.source))
    for position in sorted(raw, key=int):
        parts.insert(int(position), raw[position])
    return parts


def _result_content(content: str | list[Any]) -> tuple[str | tuple[Block, ...], dict[str, Any]]:
    if isinstance(content, str):
        return content, {}
    blocks, raw = _content_blocks(content)
    kept = [b for b in blocks if isinstance(b, TextBlock | ImageBlock)]
    if len(kept) != len(blocks):
        return "", {"content": content}
    return tuple(kept), raw


def _convert(message: BaseMessage) -> tuple[Role, list[Block], dict[str, Any]]:
    """One LangChain message: its ctxflow role, blocks and origin record."""
    kind = message.type
    role = _ROLES.get(kind)
    if role is None:
        raise InvalidMessage(
            f"a LangChain message must be human, ai, tool or system (got {kind!r})",
            rule="langchain_type",
            message_type=kind,
        )
    origin: dict[str, Any] = {"type": kind, "fields": _fields(message)}
    content = message.content
    if isinstance(message, ToolMessage):
        value, raw = _result_content(content)
        original = message.tool_call_id
        extra: dict[str, Any] = {} if tool_id(original) == original else {KEY: original}
        block = ToolResultBlock(
            tool_use_id=tool_id(original),
            content=value,
            is_error=message.status == "error",
            extra=extra,
        )
        origin.update(n=1, form="str" if isinstance(content, str) else "list")
        if raw:
            origin["raw"] = raw
        return role, [block], origin
    blocks, raw = _content_blocks(content)
    origin.update(n=len(blocks), form="str" if isinstance(content, str) else "list")
    if raw:
        origin["raw"] = raw
    if isinstance(message, AIMessage) and message.tool_calls:
        for call in message.tool_calls:
            original = call.get("id") or ""
            extra = {} if tool_id(original) == original else {KEY: original}
            blocks.append(
                ToolUseBlock(
                    id=tool_id(original) if original else new_id("call"),
                    name=call["name"],
                    input=dict(call["args"]),
                    extra=extra,
                )
            )
        origin["calls"] = len(message.tool_calls)
    return role, blocks, origin


def to_ctxflow(messages: Sequence[BaseMessage]) -> list[Message]:
    """ctxflow messages for LangChain ones: same-role neighbours merged, origins recorded."""
    out: list[Message] = []
    role: Role | None = None
    blocks: list[Block] = []
    origins: list[dict[str, Any]] = []
    first_id: str | None = None

    def close() -> None:
        if role is None:
            return
        out.append(
            Message(
                role=role,
                content=tuple(blocks),
                id=first_id or new_id(),
                metadata={KEY: list(origins)},
            )
        )

    for message in messages:
        kind, converted, origin = _convert(message)
        merge = kind is role and kind is not Role.SYSTEM
        if not merge:
            close()
            role, blocks, origins, first_id = kind, [], [], message.id
        blocks.extend(converted)
        origins.append(origin)
    close()
    return out


def _rebuild(origin: Mapping[str, Any], blocks: Sequence[Block]) -> BaseMessage:
    """One LangChain message from its origin record and the blocks it gave."""
    kind, fields = origin["type"], dict(origin.get("fields") or {})
    raw = origin.get("raw") or {}
    if kind == "tool":
        (block,) = blocks
        assert isinstance(block, ToolResultBlock)
        original = block.extra.get(KEY) if block.extra else None
        call_id = original if isinstance(original, str) else block.tool_use_id
        if "content" in raw:
            content: Any = raw["content"]
        elif isinstance(block.content, str):
            content = block.content if origin.get("form") == "str" else [block.content]
        else:
            content = _content_value(block.content, "list", raw)
        status = "error" if block.is_error else "success"
        return ToolMessage(content=content, tool_call_id=call_id, status=status, **fields)
    calls = origin.get("calls", 0)
    text = blocks[: len(blocks) - calls] if calls else blocks
    content = _content_value(text, origin.get("form", "list"), raw)
    if kind == "ai":
        tool_calls = [
            {
                "name": b.name,
                "args": dict(b.input),
                "id": _call_id(b),
                "type": "tool_call",
            }
            for b in blocks[len(text) :]
            if isinstance(b, ToolUseBlock)
        ]
        return AIMessage(content=content, tool_calls=tool_calls, **fields)
    if kind == "system":
        return SystemMessage(content=content, **fields)
    return HumanMessage(content=content, **fields)


def _call_id(block: ToolUseBlock) -> str:
    original = block.extra.get(KEY) if block.extra else None
    return original if isinstance(original, str) else block.id


def _by_role(message: Message) -> list[BaseMessage]:
    """LangChain messages for a ctxflow message without a usable origin record; the first
    keeps the message's id, a further one ``<id>.<k>``."""
    made = _by_role_unnamed(message)
    for k, converted in enumerate(made):
        converted.id = message.id if k == 0 else f"{message.id}.{k}"
    return made


def _by_role_unnamed(message: Message) -> list[BaseMessage]:
    blocks = list(message.content)
    if message.role is Role.SYSTEM:
        return [SystemMessage(content=message.text)]
    if message.role is Role.ASSISTANT:
        calls = [b for b in blocks if isinstance(b, ToolUseBlock)]
        rest = [b for b in blocks if not isinstance(b, ToolUseBlock)]
        content = _content_value(rest, "list", {})
        return [
            AIMessage(
                content=content,
                tool_calls=[
                    {"name": c.name, "args": dict(c.input), "id": _call_id(c), "type": "tool_call"}
                    for c in calls
                ],
            )
        ]
    out: list[BaseMessage] = []
    for block in blocks:
        if isinstance(block, ToolResultBlock):
            out.append(_rebuild({"type": "tool", "form": "str"}, [block]))
    others: list[Block] = [b for b in blocks if not isinstance(b, ToolResultBlock)]
    if others:
        out.append(HumanMessage(content=_content_value(others, "list", {})))
    return out


def from_ctxflow(messages: Sequence[Message]) -> list[BaseMessage]:
    """LangChain messages for ctxflow ones (each split back into the messages it merged)."""
    out: list[BaseMessage] = []
    for message in messages:
        origins = message.metadata.get(KEY) if message.metadata else None
        blocks = list(message.content)
        if (
            isinstance(origins, list)
            and origins
            and sum(o.get("n", 0) + o.get("calls", 0) for o in origins) == len(blocks)
            and _fits(origins, blocks)
        ):
            at = 0
            for origin in origins:
                size = origin.get("n", 0) + origin.get("calls", 0)
                out.append(_rebuild(origin, blocks[at : at + size]))
                at += size
            continue
        out.extend(_by_role(message))
    return out


def _fits(origins: Sequence[Mapping[str, Any]], blocks: Sequence[Block]) -> bool:
    """Whether each origin's share of the blocks has the kinds it gave (tool results for a
    tool message, tool calls last for an AI message)."""
    at = 0
    for origin in origins:
        size = origin.get("n", 0) + origin.get("calls", 0)
        share = blocks[at : at + size]
        at += size
        if origin.get("type") == "tool":
            if len(share) != 1 or not isinstance(share[0], ToolResultBlock):
                return False
        elif any(isinstance(b, ToolResultBlock) for b in share):
            return False
        calls = origin.get("calls", 0)
        if calls and not all(isinstance(b, ToolUseBlock) for b in share[-calls:]):
            return False
    return True
