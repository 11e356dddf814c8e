"""Conversion between messages and the OpenAI Chat Completions format.

The OpenAI format carries less than ctxflow's model. What it cannot carry:

- ``is_error`` on tool results (OpenAI ``tool`` messages have no error flag);
- thinking and redacted-thinking blocks;
- the split of an assistant's text into several text blocks (they are joined
  with a blank line), and block ``extra`` fields;
- ctxflow's own fields: message ids, timestamps, metadata, ``important``, tags;
- which user message a ``tool`` message belonged to (tool results sit in
  ``tool`` messages; consecutive ones, and a user message right after them,
  are grouped into one ctxflow user message when read back).

:func:`to_openai` returns the request messages *and* a side mapping (plain
JSON-able data) holding exactly what was lost; :func:`from_openai` given that
mapping restores the original messages exactly. Without it, reading an OpenAI
conversation still works and yields fresh ids and no thinking.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from ctxflow.errors import CtxflowError, InvalidMessage
from ctxflow.model import _messages as m
from ctxflow.model._anthropic import block_from_anthropic, block_to_anthropic, dumps_input
from ctxflow.model._messages import Block, Message, Role, new_id

__all__ = ["from_openai", "to_openai"]

_JOIN = "\n\n"


def _image_part(block: m.ImageBlock) -> dict[str, Any]:
    source = block.source
    if source.get("type") == "url":
        url = str(source.get("url", ""))
    elif source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    else:
        url = str(source.get("url") or source.get("file_id") or "")
    return {"type": "image_url", "image_url": {"url": url}}


def _user_content(blocks: Sequence[Block]) -> str | list[dict[str, Any]]:
    if len(blocks) == 1 and isinstance(blocks[0], m.TextBlock):
        return blocks[0].text
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, m.TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, m.ImageBlock):
            parts.append(_image_part(block))
    return parts


def _message_side(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "timestamp": message.timestamp,
        "metadata": dict(message.metadata),
        "important": message.important,
        "condense_parent": message.condense_parent,
        "truncation_parent": message.truncation_parent,
        # The exact blocks, in ctxflow's own (Anthropic-shaped) form, so a
        # round trip restores thinking, is_error, text splits and extras.
        "blocks": [
            block_to_anthropic(b) | {"ctxflow.extra": dict(b.extra)} for b in message.content
        ],
    }


def to_openai(messages: Iterable[Message]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Render messages as OpenAI chat messages, plus the side mapping of what was lost."""
    out: list[dict[str, Any]] = []
    spans: list[dict[str, Any]] = []
    for message in messages:
        start = len(out)
        if message.role is Role.SYSTEM:
            out.append({"role": "system", "content": message.text})
        elif message.role is Role.USER:
            rest: list[Block] = []
            for block in message.content:
                if isinstance(block, m.ToolResultBlock):
                    out.append(
                        {"role": "tool", "tool_call_id": block.tool_use_id, "content": block.text}
                    )
                else:
                    rest.append(block)
            if rest:
                out.append({"role": "user", "content": _user_content(rest)})
        else:
            texts = [b.text for b in message.content if isinstance(b, m.TextBlock)]
            entry: dict[str, Any] = {
                "role": "assistant",
                "content": _JOIN.join(texts) if texts else None,
            }
            calls = [
                {
                    "id": b.id,
                    "type": "function",
                    "function": {"name": b.name, "arguments": dumps_input(b.input)},
                }
                for b in message.tool_uses
            ]
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
        spans.append({"count": len(out) - start, **_message_side(message)})
    return out, {"format": "ctxflow.openai-side", "version": 1, "messages": spans}


def tool_arguments(
    raw: Any, where: str, *, error: type[CtxflowError] = InvalidMessage
) -> dict[str, Any]:
    """A tool call's ``arguments`` as a dict: a mapping as it is, a JSON object text parsed.

    None or blank text is ``{}``; anything else raises ``error`` (the model's
    ``InvalidMessage`` for a stored transcript, the adapters' ``ResponseError``
    for a provider's response) naming ``where``.
    """
    if isinstance(raw, Mapping):
        return dict(raw)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    if not isinstance(raw, str):
        problem, rule = f"must be a JSON string (got {type(raw).__name__})", "tool_arguments_json"
    else:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            problem = f"must be valid JSON ({exc.msg} at position {exc.pos})"
            rule = "tool_arguments_json"
        else:
            if isinstance(value, dict):
                return value
            problem = f"must be a JSON object (got {type(value).__name__})"
            rule = "tool_input_not_object"
    raise error(f"'{where}' {problem}", rule=rule, field=where, where=where)


def _content_blocks(content: Any, where: str) -> list[Block]:
    if content is None:
        return []
    if isinstance(content, str):
        return [m.TextBlock(text=content)] if content else []
    if not isinstance(content, list):
        raise InvalidMessage(
            f"{where}: content must be a string, a list of parts or null",
            rule="content_type",
            where=where,
        )
    blocks: list[Block] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            blocks.append(m.TextBlock(text=str(part.get("text", ""))))
        elif kind == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            blocks.append(m.ImageBlock(source={"type": "url", "url": url}))
        else:
            raise InvalidMessage(
                f"{where}.content[{i}]: unknown content part type {kind!r}",
                rule="unknown_block_type",
                where=where,
            )
    return blocks


def _group(items: Sequence[Any]) -> list[tuple[int, int]]:
    """Split OpenAI messages into ctxflow message spans (tool runs merge with a user turn)."""
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(items):
        role = items[i].get("role") if isinstance(items[i], Mapping) else None
        j = i + 1
        if role == "tool":
            while j < len(items) and isinstance(items[j], Mapping):
                if items[j].get("role") != "tool":
                    break
                j += 1
            if j < len(items) and isinstance(items[j], Mapping) and items[j].get("role") == "user":
                j += 1
        spans.append((i, j))
        i = j
    return spans


def _from_span(items: Sequence[Any], start: int, end: int) -> Message:
    blocks: list[Block] = []
    role = Role.USER
    for index in range(start, end):
        where = f"message {index}"
        item = items[index]
        if not isinstance(item, Mapping):
            raise InvalidMessage(
                f"{where}: message must be an object", rule="message_not_object", index=index
            )
        kind = item.get("role")
        if kind in ("system", "developer"):
            role = Role.SYSTEM
            blocks.extend(_content_blocks(item.get("content"), where))
        elif kind == "user":
            blocks.extend(_content_blocks(item.get("content"), where))
        elif kind == "tool":
            call_id = item.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise InvalidMessage(
                    f"{where}: tool message has no tool_call_id", rule="tool_result_id", index=index
                )
            content = item.get("content")
            text = (
                content
                if isinstance(content, str)
                else "\n".join(
                    b.text for b in _content_blocks(content, where) if isinstance(b, m.TextBlock)
                )
            )
            blocks.append(m.ToolResultBlock(tool_use_id=call_id, content=text))
        elif kind == "assistant":
            role = Role.ASSISTANT
            blocks.extend(_content_blocks(item.get("content"), where))
            for c, call in enumerate(item.get("tool_calls") or ()):
                fn = call.get("function") if isinstance(call, Mapping) else None
                call_id = call.get("id") if isinstance(call, Mapping) else None
                if not isinstance(fn, Mapping) or not isinstance(call_id, str) or not call_id:
                    raise InvalidMessage(
                        f"{where}.tool_calls[{c}]: a tool call needs an id and a function",
                        rule="tool_use_id",
                        index=index,
                    )
                blocks.append(
                    m.ToolUseBlock(
                        id=call_id,
                        name=str(fn.get("name", "")),
                        input=tool_arguments(fn.get("arguments"), f"{where}.tool_calls[{c}]"),
                    )
                )
        else:
            raise InvalidMessage(
                f"{where}: unknown role {kind!r}", rule="unknown_role", index=index
            )
    try:
        return Message(role=role, content=tuple(blocks), id=new_id())
    except InvalidMessage as exc:
        raise InvalidMessage(
            f"message {start}: {exc.message}", rule=exc.rule, index=start
        ) from None


def _restore(side: Mapping[str, Any], role: Role) -> Message:
    blocks = []
    for raw in side["blocks"]:
        raw = dict(raw)
        extra = raw.pop("ctxflow.extra", {})
        for key in extra:
            raw.pop(key, None)
        blocks.append(attrs.evolve(block_from_anthropic(raw), extra=extra))
    return Message(
        role=role,
        content=tuple(blocks),
        id=side["id"],
        timestamp=side.get("timestamp"),
        metadata=side.get("metadata") or {},
        important=bool(side.get("important")),
        condense_parent=side.get("condense_parent"),
        truncation_parent=side.get("truncation_parent"),
    )


def from_openai(items: Sequence[Any], side: Mapping[str, Any] | None = None) -> list[Message]:
    """Read OpenAI chat messages; with the side mapping from :func:`to_openai`, exactly."""
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):
        raise InvalidMessage("OpenAI messages must be a list", rule="not_a_list")
    if side is None:
        return [_from_span(items, s, e) for s, e in _group(items)]
    spans = side.get("messages") if isinstance(side, Mapping) else None
    if not isinstance(spans, list) or sum(int(s.get("count", 0)) for s in spans) != len(items):
        raise InvalidMessage(
            "the side mapping does not match these OpenAI messages", rule="side_mismatch"
        )
    out: list[Message] = []
    start = 0
    for span in spans:
        end = start + int(span["count"])
        parsed = _from_span(items, start, end)
        restored = _restore(span, parsed.role)
        _check_same_calls(parsed, restored, start)
        out.append(restored)
        start = end
    return out


def _check_same_calls(parsed: Message, restored: Message, index: int) -> None:
    """The side mapping may add what OpenAI lost, never contradict what it kept."""
    got = [(u.id, u.name, dict(u.input)) for u in parsed.tool_uses]
    want = [(u.id, u.name, dict(u.input)) for u in restored.tool_uses]
    got_results = sorted((r.tool_use_id, r.text) for r in parsed.tool_results)
    want_results = sorted((r.tool_use_id, r.text) for r in restored.tool_results)
    if got != want or got_results != want_results:
        raise InvalidMessage(
            f"message {index}: the side mapping contradicts the OpenAI messages",
            rule="side_mismatch",
            index=index,
        )
