"""Tests for messages and content blocks."""

from __future__ import annotations

import attrs
import pytest

from ctxflow.errors import InvalidMessage
from ctxflow.model import (
    ImageBlock,
    Message,
    Role,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)


def test_text_shortcuts_build_one_text_block() -> None:
    """Message.user/assistant/system wrap a string in one text block."""
    message = Message.user("hi")
    assert message.role is Role.USER
    assert message.content == (TextBlock(text="hi"),)
    assert message.text == "hi"


def test_string_content_is_converted() -> None:
    """A plain string given as content becomes one text block."""
    assert Message(role="assistant", content="ok").content == (TextBlock(text="ok"),)


def test_messages_are_frozen_and_evolve() -> None:
    """Messages cannot be changed in place; evolve gives a new value with the same id."""
    message = Message.user("hi")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        message.important = True  # type: ignore[misc]
    pinned = attrs.evolve(message, important=True)
    assert pinned.id == message.id and pinned.important


def test_ids_are_unique_and_unguessable() -> None:
    """Fresh message ids differ and carry 128 bits of randomness."""
    ids = {Message.user("x").id for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i.split("_")[1]) == 32 for i in ids)


def test_unknown_role_is_rejected() -> None:
    """An unknown role is an InvalidMessage naming the value."""
    with pytest.raises(InvalidMessage, match="'role' must be one of") as info:
        Message(role="tool", content="x")
    assert info.value.rule == "unknown_role"


def test_block_of_wrong_kind_for_role_is_rejected() -> None:
    """A user message cannot carry a tool_use block."""
    with pytest.raises(InvalidMessage, match="content\\[0\\]") as info:
        Message(role="user", content=(ToolUseBlock(id="t1", name="x", input={}),))
    assert info.value.rule == "block_not_allowed"


def test_non_block_content_is_rejected() -> None:
    """Content must be blocks, not dicts."""
    with pytest.raises(InvalidMessage) as info:
        Message(role="user", content=({"type": "text", "text": "x"},))  # type: ignore[arg-type]
    assert info.value.rule == "unknown_block"


def test_tool_use_without_id_is_rejected() -> None:
    """A tool_use block needs a non-empty id of safe characters."""
    with pytest.raises(InvalidMessage) as info:
        Message(role="assistant", content=(ToolUseBlock(id="", name="x", input={}),))
    assert info.value.rule == "tool_use_id"


def test_tool_input_must_be_object() -> None:
    """A tool_use input that is not a JSON object is rejected."""
    with pytest.raises(InvalidMessage) as info:
        Message(
            role="assistant",
            content=(ToolUseBlock(id="t", name="x", input=["a"]),),  # type: ignore[arg-type]
        )
    assert info.value.rule == "tool_input_not_object"


def test_tool_result_content_blocks_are_limited() -> None:
    """A tool result may hold text and images, not nested tool results."""
    inner = ToolResultBlock(tool_use_id="a")
    with pytest.raises(InvalidMessage) as info:
        Message(role="user", content=(ToolResultBlock(tool_use_id="b", content=(inner,)),))
    assert info.value.rule == "tool_result_content"


def test_accessors() -> None:
    """tool_uses, tool_results and text pick the right blocks."""
    use = ToolUseBlock(id="t1", name="bash", input={"command": "ls"})
    thinking = ThinkingBlock(thinking="hmm", signature="s")
    assistant = Message(role="assistant", content=(thinking, TextBlock(text="go"), use))
    assert assistant.tool_uses == (use,)
    result = ToolResultBlock(
        tool_use_id="t1",
        content=(TextBlock(text="a"), ImageBlock(source={"type": "url", "url": "u"})),
    )
    user = Message(role="user", content=(result,))
    assert user.tool_results == (result,)
    assert result.text == "a"
    assert not user.hidden
    assert attrs.evolve(user, truncation_parent="t").hidden


def test_with_tags_copies_every_field_but_the_tags() -> None:
    """with_tags equals attrs.evolve on the tags, with every other field (derived ones too) kept."""
    use = ToolUseBlock(id="t1", name="bash", input={"c": "ls"})
    message = Message(
        role=Role.ASSISTANT,
        content=(TextBlock(text="look"), use),
        timestamp=1.5,
        metadata={"k": "v"},
        important=True,
    )
    tagged = message.with_tags(condense_parent="s1", truncation_parent=None)
    assert tagged == attrs.evolve(message, condense_parent="s1")
    assert tagged.tool_uses == (use,)
    assert all(
        getattr(tagged, f.name) is getattr(message, f.name)
        for f in attrs.fields(Message)
        if f.name not in ("condense_parent", "truncation_parent")
    )
    with pytest.raises(InvalidMessage) as caught:
        message.with_tags(condense_parent=3, truncation_parent=None)  # type: ignore[arg-type]
    assert caught.value.rule == "tag"


def test_with_content_checks_the_new_blocks_and_rederives_the_tool_blocks() -> None:
    """with_content validates like the constructor and keeps id and tags."""
    message = Message(
        role=Role.USER,
        content=(ToolResultBlock(tool_use_id="t1", content="long output"),),
        truncation_parent="tr",
    )
    short = ToolResultBlock(tool_use_id="t1", content="[cleared]")
    changed = message.with_content((short,), metadata={"why": "cleared"})
    assert changed == attrs.evolve(message, content=(short,), metadata={"why": "cleared"})
    assert changed.tool_results == (short,)
    assert message.tool_results[0].content == "long output"
    with pytest.raises(InvalidMessage) as caught:
        message.with_content((ToolUseBlock(id="t2", name="bash", input={}),))
    assert caught.value.rule == "block_not_allowed"
