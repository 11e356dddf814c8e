"""Messages and content blocks: frozen values, validated on construction.

A message is a role plus a tuple of content blocks. Blocks mirror the Anthropic
Messages API (the richest of the formats ctxflow speaks); fields a block does
not model are kept in ``extra`` so that a round trip through a provider format
is lossless. Values never change after construction: use ``attrs.evolve``.

The non-destructive tags ``condense_parent`` and ``truncation_parent`` name the
summary (or truncation event) that hides a message from the effective view. The
original is never removed; see :class:`ctxflow.model.Conversation`.

Each block checks the types of its own fields when it is made; a message checks
its blocks against its role and refuses any string it holds (nested tool input
and metadata included) that is not valid Unicode, naming the message, the field
and the offset (see ``_checks``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, TypeAlias

import attrs

from ctxflow.errors import InvalidMessage
from ctxflow.model._checks import (
    MAX_NESTING,
    Fault,
    nested,
    text_fault,
    to_extra,
    to_metadata,
    wrong_type,
)

__all__ = [
    "Block",
    "ImageBlock",
    "Message",
    "RedactedThinkingBlock",
    "Role",
    "TextBlock",
    "ThinkingBlock",
    "ToolResultBlock",
    "ToolUseBlock",
    "new_id",
]

_TOOL_ID = re.compile(r"^[A-Za-z0-9_.:-]+$")


def new_id(prefix: str = "msg") -> str:
    """Return a fresh, unguessable id with a readable prefix."""
    return f"{prefix}_{uuid.uuid4().hex}"


class Role(StrEnum):
    """Who wrote a message."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


@attrs.frozen(kw_only=True)
class TextBlock:
    """Plain text."""

    text: str
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=to_extra, repr=False)
    type: str = attrs.field(default="text", init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise wrong_type("a text block's", "text", "a string", self.text)


@attrs.frozen(kw_only=True)
class ToolUseBlock:
    """A call the assistant asks the caller to run; ``input`` is a JSON object."""

    id: str
    name: str
    input: Mapping[str, Any]
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=to_extra, repr=False)
    type: str = attrs.field(default="tool_use", init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.id, str):
            raise wrong_type("a tool_use block's", "id", "a string", self.id)
        if not isinstance(self.name, str):
            raise wrong_type("a tool_use block's", "name", "a string", self.name)
        if type(self.input) is not dict and not isinstance(self.input, Mapping):
            raise InvalidMessage(
                f"tool_use {self.id!r} 'input' must be a JSON object "
                f"(got {type(self.input).__name__})",
                rule="tool_input_not_object",
                field="input",
                got=type(self.input).__name__,
            )


@attrs.frozen(kw_only=True)
class ToolResultBlock:
    """The answer to a tool_use: text, or a tuple of text/image blocks."""

    tool_use_id: str
    content: str | tuple[Block, ...] = ""
    is_error: bool = False
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=to_extra, repr=False)
    type: str = attrs.field(default="tool_result", init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.tool_use_id, str):
            raise wrong_type("a tool_result block's", "tool_use_id", "a string", self.tool_use_id)
        content: object = self.content  # a list is taken as a tuple; anything else refused
        if type(content) is not str and not isinstance(content, str | tuple):
            if not isinstance(content, list):
                raise wrong_type(
                    "a tool_result block's", "content", "a string or a tuple of blocks", content
                )
            object.__setattr__(self, "content", tuple(content))
        if self.is_error is not False and self.is_error is not True:
            raise wrong_type("a tool_result block's", "is_error", "a bool", self.is_error)

    @property
    def text(self) -> str:
        """The result's text content (block content joined by newlines)."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(b.text for b in self.content if isinstance(b, TextBlock))


@attrs.frozen(kw_only=True)
class ThinkingBlock:
    """Extended-thinking output; must stay with its tool loop."""

    thinking: str
    signature: str = ""
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=to_extra, repr=False)
    type: str = attrs.field(default="thinking", init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.thinking, str):
            raise wrong_type("a thinking block's", "thinking", "a string", self.thinking)
        if not isinstance(self.signature, str):
            raise wrong_type("a thinking block's", "signature", "a string", self.signature)


@attrs.frozen(kw_only=True)
class RedactedThinkingBlock:
    """Thinking the provider returned encrypted; opaque ``data``."""

    data: str
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=to_extra, repr=False)
    type: str = attrs.field(default="redacted_thinking", init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.data, str):
            raise wrong_type("a redacted_thinking block's", "data", "a string", self.data)


@attrs.frozen(kw_only=True)
class ImageBlock:
    """An image by reference: ``source`` is the provider's source object (url, base64, file)."""

    source: Mapping[str, Any]
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=to_extra, repr=False)
    type: str = attrs.field(default="image", init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.source, Mapping):
            raise wrong_type("an image block's", "source", "a mapping", self.source)


Block: TypeAlias = (
    TextBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock | ImageBlock
)

_BLOCK_TYPES = (
    TextBlock,
    ToolUseBlock,
    ToolResultBlock,
    ThinkingBlock,
    RedactedThinkingBlock,
    ImageBlock,
)

# Which block types each role may carry.
_ALLOWED: dict[Role, tuple[type, ...]] = {
    Role.SYSTEM: (TextBlock,),
    Role.USER: (TextBlock, ToolResultBlock, ImageBlock),
    Role.ASSISTANT: (TextBlock, ToolUseBlock, ThinkingBlock, RedactedThinkingBlock),
}


def _to_role(value: Role | str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidMessage(
            f"'role' must be one of system, user, assistant (got {value!r})",
            rule="unknown_role",
            role=value,
        ) from None


def _to_content(value: Iterable[Block] | str) -> tuple[Block, ...]:
    if type(value) is tuple:
        return value
    if isinstance(value, str):
        return (TextBlock(text=value),)
    # bytes and mappings iterate, but into ints and keys, never into blocks
    if isinstance(value, Iterable) and not isinstance(value, bytes | bytearray | Mapping):
        return tuple(value)
    raise wrong_type("a message's", "content", "a string or an iterable of blocks", value)


def _block_fault(block: Block) -> Fault | None:
    """The first string of ``block`` that is not valid Unicode (path from the block), or None."""
    fault: Fault | None = None
    if isinstance(block, TextBlock):
        fault = text_fault(".text", block.text)
    elif isinstance(block, ToolUseBlock):
        if not (block.id.isascii() and block.name.isascii()):
            fault = text_fault(".id", block.id) or text_fault(".name", block.name)
        if fault is None and block.input:
            fault = nested(".input", block.input)
    elif isinstance(block, ToolResultBlock):
        if not block.tool_use_id.isascii():
            fault = text_fault(".tool_use_id", block.tool_use_id)
        if fault is None:
            if isinstance(block.content, str):
                if not block.content.isascii():
                    fault = text_fault(".content", block.content)
            else:
                for index, inner in enumerate(block.content):
                    fault = _block_fault(inner)
                    if fault is not None:
                        fault[0].append(f".content[{index}]")
                        break
    elif isinstance(block, ThinkingBlock):
        fault = text_fault(".thinking", block.thinking) or text_fault(".signature", block.signature)
    elif isinstance(block, RedactedThinkingBlock):
        fault = text_fault(".data", block.data)
    elif isinstance(block, ImageBlock):
        fault = nested(".source", block.source)
    if fault is None and block.extra:
        fault = nested(".extra", block.extra)
    return fault


def _refuse_fault(message: Message, fault: Fault, where: str = "") -> InvalidMessage:
    path, at = fault
    where += "".join(reversed(path))
    named = f"{where} of the {message.role.value} message {message.id!r}"
    if at < 0:
        return InvalidMessage(
            f"{named} must nest at most {MAX_NESTING} levels (got deeper, or a cycle)",
            rule="too_deep",
            message_id=message.id,
            where=where,
        )
    return InvalidMessage(
        f"{named} must be valid Unicode text (got a lone surrogate at offset {at})",
        rule="lone_surrogate",
        message_id=message.id,
        where=where,
        offset=at,
    )


def _check_block(block: object, role: Role, position: int) -> None:
    if not isinstance(block, _BLOCK_TYPES):
        raise InvalidMessage(
            f"content[{position}] must be a content block (got {type(block).__name__})",
            rule="unknown_block",
            block=position,
        )
    if not isinstance(block, _ALLOWED[role]):
        raise InvalidMessage(
            f"a {role.value} message may not carry a {block.type} block (content[{position}])",
            rule="block_not_allowed",
            block=position,
            block_type=block.type,
        )
    if isinstance(block, ToolUseBlock):
        if not block.id or not _TOOL_ID.match(block.id):
            raise InvalidMessage(
                f"tool_use id must match {_TOOL_ID.pattern} (got {block.id!r})",
                rule="tool_use_id",
                block=position,
            )
        if not block.name:
            raise InvalidMessage(
                f"tool_use {block.id!r} must have a name", rule="tool_use_name", block=position
            )
    elif isinstance(block, ToolResultBlock):
        if not block.tool_use_id:
            raise InvalidMessage(
                "tool_result must name the tool_use_id it answers",
                rule="tool_result_id",
                block=position,
            )
        if not isinstance(block.content, str):
            for inner in block.content:
                if not isinstance(inner, TextBlock | ImageBlock):
                    raise InvalidMessage(
                        f"tool_result {block.tool_use_id!r} may hold only text and image "
                        f"blocks (got {type(inner).__name__})",
                        rule="tool_result_content",
                        block=position,
                    )


@attrs.frozen(kw_only=True)
class Message:
    """One message of a conversation: a role and its content blocks.

    ``important`` pins the message: compression never hides it. ``metadata``
    is free-form and travels with the message through every format.
    """

    role: Role = attrs.field(converter=_to_role)
    content: tuple[Block, ...] = attrs.field(converter=_to_content)
    id: str = attrs.field(factory=new_id)
    timestamp: float | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=to_metadata)
    important: bool = False
    condense_parent: str | None = None
    truncation_parent: str | None = None
    # Derived once from ``content`` (read on every check, index and compression pass).
    _uses: tuple[ToolUseBlock, ...] = attrs.field(init=False, eq=False, repr=False)
    _results: tuple[ToolResultBlock, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise InvalidMessage(
                f"message id must be a non-empty string (got {self.id!r})", rule="message_id"
            )
        timestamp = self.timestamp
        if (
            timestamp is not None
            and type(timestamp) is not float
            and (not isinstance(timestamp, int | float) or isinstance(timestamp, bool))
        ):
            raise wrong_type("a message's", "timestamp", "a number or None", timestamp)
        if self.important is not False and self.important is not True:
            raise wrong_type("a message's", "important", "a bool", self.important)
        condense, truncation = self.condense_parent, self.truncation_parent
        if (condense is not None and not isinstance(condense, str)) or (
            truncation is not None and not isinstance(truncation, str)
        ):
            raise InvalidMessage(
                f"compression tags must be strings or None (got {condense!r}, {truncation!r})",
                rule="tag",
            )
        if (
            not self.id.isascii()
            or self.metadata
            or (condense is not None and not condense.isascii())
            or (truncation is not None and not truncation.isascii())
        ):
            fault = (
                text_fault("id", self.id)
                or nested("metadata", self.metadata)
                or text_fault("condense_parent", condense or "")
                or text_fault("truncation_parent", truncation or "")
            )
            if fault is not None:
                raise _refuse_fault(self, fault)
        uses, results = self._checked(self.content)
        object.__setattr__(self, "_uses", uses)
        object.__setattr__(self, "_results", results)

    def _checked(
        self, content: tuple[Block, ...]
    ) -> tuple[tuple[ToolUseBlock, ...], tuple[ToolResultBlock, ...]]:
        """Check ``content`` for this message; its tool_use and tool_result blocks."""
        uses: list[ToolUseBlock] = []
        results: list[ToolResultBlock] = []
        for position, block in enumerate(content):
            _check_block(block, self.role, position)
            if isinstance(block, ToolUseBlock):
                uses.append(block)
            elif isinstance(block, ToolResultBlock):
                results.append(block)
                result = block.content
                if (
                    isinstance(result, str)
                    and result.isascii()
                    and block.tool_use_id.isascii()
                    and not block.extra
                ):
                    continue  # the common result, checked in place
            elif type(block) is TextBlock and block.text.isascii() and not block.extra:
                continue  # the most common block, checked in place
            fault = _block_fault(block)
            if fault is not None:
                raise _refuse_fault(self, fault, f"content[{position}]")
        return tuple(uses), tuple(results)

    @property
    def hidden(self) -> bool:
        """True when a compression tag hides this message from the effective view."""
        return self.condense_parent is not None or self.truncation_parent is not None

    @property
    def text(self) -> str:
        """The concatenated text blocks (tool results and calls excluded)."""
        return "\n".join(b.text for b in self.content if isinstance(b, TextBlock))

    @property
    def tool_uses(self) -> tuple[ToolUseBlock, ...]:
        """The tool_use blocks, in order."""
        return self._uses

    @property
    def tool_results(self) -> tuple[ToolResultBlock, ...]:
        """The tool_result blocks, in order."""
        return self._results

    def with_content(
        self, content: Iterable[Block], *, metadata: Mapping[str, Any] | None = None
    ) -> Message:
        """A copy with new content blocks (checked) and optionally new metadata; id and tags kept.

        Compression derives a replacement for each cleared or trimmed result;
        this checks the blocks as the constructor does, without the rest of
        ``attrs.evolve``'s work.
        """
        blocks = _to_content(content)
        uses, results = self._checked(blocks)
        if metadata is not None:
            metadata = to_metadata(metadata)
            fault = nested("metadata", metadata) if metadata else None
            if fault is not None:
                raise _refuse_fault(self, fault)
        copy = self.with_tags(
            condense_parent=self.condense_parent, truncation_parent=self.truncation_parent
        )
        setter = object.__setattr__
        setter(copy, "content", blocks)
        setter(copy, "_uses", uses)
        setter(copy, "_results", results)
        if metadata is not None:
            setter(copy, "metadata", metadata)
        return copy

    def with_tags(self, *, condense_parent: str | None, truncation_parent: str | None) -> Message:
        """A copy carrying these compression tags (the content, already checked, is shared).

        Compression retags thousands of messages at a time; this skips the
        content validation that ``attrs.evolve`` would repeat for each.
        """
        if not isinstance(condense_parent, str | None) or not isinstance(
            truncation_parent, str | None
        ):
            raise InvalidMessage(
                f"compression tags must be strings or None (got {condense_parent!r}, "
                f"{truncation_parent!r})",
                rule="tag",
            )
        if (condense_parent is not None and not condense_parent.isascii()) or (
            truncation_parent is not None and not truncation_parent.isascii()
        ):
            fault = text_fault("condense_parent", condense_parent or "") or text_fault(
                "truncation_parent", truncation_parent or ""
            )
            if fault is not None:
                raise _refuse_fault(self, fault)
        copy = object.__new__(Message)
        setter = object.__setattr__
        # Unrolled: a loop over the fields costs twice as much (a test checks all are copied).
        setter(copy, "role", self.role)
        setter(copy, "content", self.content)
        setter(copy, "id", self.id)
        setter(copy, "timestamp", self.timestamp)
        setter(copy, "metadata", self.metadata)
        setter(copy, "important", self.important)
        setter(copy, "condense_parent", condense_parent)
        setter(copy, "truncation_parent", truncation_parent)
        setter(copy, "_uses", self._uses)
        setter(copy, "_results", self._results)
        return copy

    @classmethod
    def user(cls, text: str, **kwargs: Any) -> Message:
        """A user message holding one text block."""
        return cls(role=Role.USER, content=(TextBlock(text=text),), **kwargs)

    @classmethod
    def assistant(cls, text: str, **kwargs: Any) -> Message:
        """An assistant message holding one text block."""
        return cls(role=Role.ASSISTANT, content=(TextBlock(text=text),), **kwargs)

    @classmethod
    def system(cls, text: str, **kwargs: Any) -> Message:
        """A system message holding one text block."""
        return cls(role=Role.SYSTEM, content=(TextBlock(text=text),), **kwargs)
