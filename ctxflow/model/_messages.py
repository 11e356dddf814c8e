"""Messages and content blocks: frozen values, validated on construction.

A message is a role plus a tuple of content blocks. Blocks mirror the Anthropic
Messages API (the richest of the formats ctxflow speaks); fields a block does
not model are kept in ``extra`` so that a round trip through a provider format
is lossless. Values never change after construction: use ``attrs.evolve``.

The non-destructive tags ``condense_parent`` and ``truncation_parent`` name the
summary (or truncation event) that hides a message from the effective view. The
original is never removed; see :class:`ctxflow.model.Conversation`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, TypeAlias

import attrs

from ctxflow.errors import InvalidMessage

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


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(value) if value else {}


@attrs.frozen(kw_only=True)
class TextBlock:
    """Plain text."""

    text: str
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping, repr=False)
    type: str = attrs.field(default="text", init=False, repr=False)


@attrs.frozen(kw_only=True)
class ToolUseBlock:
    """A call the assistant asks the caller to run; ``input`` is a JSON object."""

    id: str
    name: str
    input: Mapping[str, Any]
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping, repr=False)
    type: str = attrs.field(default="tool_use", init=False, repr=False)


@attrs.frozen(kw_only=True)
class ToolResultBlock:
    """The answer to a tool_use: text, or a tuple of text/image blocks."""

    tool_use_id: str
    content: str | tuple[Block, ...] = ""
    is_error: bool = False
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping, repr=False)
    type: str = attrs.field(default="tool_result", init=False, repr=False)

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
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping, repr=False)
    type: str = attrs.field(default="thinking", init=False, repr=False)


@attrs.frozen(kw_only=True)
class RedactedThinkingBlock:
    """Thinking the provider returned encrypted; opaque ``data``."""

    data: str
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping, repr=False)
    type: str = attrs.field(default="redacted_thinking", init=False, repr=False)


@attrs.frozen(kw_only=True)
class ImageBlock:
    """An image by reference: ``source`` is the provider's source object (url, base64, file)."""

    source: Mapping[str, Any]
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping, repr=False)
    type: str = attrs.field(default="image", init=False, repr=False)


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
    if isinstance(value, str):
        return (TextBlock(text=value),)
    return tuple(value)


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
        if not isinstance(block.input, Mapping):
            raise InvalidMessage(
                f"tool_use {block.id!r} input must be a JSON object "
                f"(got {type(block.input).__name__})",
                rule="tool_input_not_object",
                block=position,
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
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)
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
        uses: list[ToolUseBlock] = []
        results: list[ToolResultBlock] = []
        for position, block in enumerate(self.content):
            _check_block(block, self.role, position)
            if isinstance(block, ToolUseBlock):
                uses.append(block)
            elif isinstance(block, ToolResultBlock):
                results.append(block)
        object.__setattr__(self, "_uses", tuple(uses))
        object.__setattr__(self, "_results", tuple(results))

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
        blocks = tuple(content)
        uses: list[ToolUseBlock] = []
        results: list[ToolResultBlock] = []
        for position, block in enumerate(blocks):
            _check_block(block, self.role, position)
            if isinstance(block, ToolUseBlock):
                uses.append(block)
            elif isinstance(block, ToolResultBlock):
                results.append(block)
        copy = self.with_tags(
            condense_parent=self.condense_parent, truncation_parent=self.truncation_parent
        )
        setter = object.__setattr__
        setter(copy, "content", blocks)
        setter(copy, "_uses", tuple(uses))
        setter(copy, "_results", tuple(results))
        if metadata is not None:
            setter(copy, "metadata", _frozen_mapping(metadata))
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
