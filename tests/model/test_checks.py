"""Messages and blocks check their fields' types, and refuse text that is not valid Unicode."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from ctxflow.errors import InvalidMessage
from ctxflow.model import (
    ImageBlock,
    Message,
    RedactedThinkingBlock,
    Role,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    load_transcript,
)
from ctxflow.model._checks import MAX_NESTING

Build = Callable[[], object]
WRONG_TYPES: list[tuple[str, Build, str, str]] = [
    ("text int", lambda: Message.user(123), "text", "int"),  # type: ignore[arg-type]
    ("text None", lambda: Message.user(None), "text", "NoneType"),  # type: ignore[arg-type]
    ("content int", lambda: Message(role="user", content=123), "content", "int"),  # type: ignore[arg-type]
    ("content bytes", lambda: Message(role="user", content=b"x"), "content", "bytes"),  # type: ignore[arg-type]
    ("content dict", lambda: Message(role="user", content={"a": 1}), "content", "dict"),  # type: ignore[arg-type]
    ("tool_use id", lambda: ToolUseBlock(id=1, name="x", input={}), "id", "int"),  # type: ignore[arg-type]
    ("tool_use name", lambda: ToolUseBlock(id="t", name=None, input={}), "name", "NoneType"),  # type: ignore[arg-type]
    ("tool_use input", lambda: ToolUseBlock(id="t", name="x", input="{}"), "input", "str"),  # type: ignore[arg-type]
    ("result id", lambda: ToolResultBlock(tool_use_id=7), "tool_use_id", "int"),  # type: ignore[arg-type]
    ("result content", lambda: ToolResultBlock(tool_use_id="t", content=5), "content", "int"),  # type: ignore[arg-type]
    ("result is_error", lambda: ToolResultBlock(tool_use_id="t", is_error="no"), "is_error", "str"),  # type: ignore[arg-type]
    ("thinking", lambda: ThinkingBlock(thinking=1), "thinking", "int"),  # type: ignore[arg-type]
    ("signature", lambda: ThinkingBlock(thinking="x", signature=None), "signature", "NoneType"),  # type: ignore[arg-type]
    ("redacted", lambda: RedactedThinkingBlock(data=b"x"), "data", "bytes"),  # type: ignore[arg-type]
    ("image source", lambda: ImageBlock(source="http://x"), "source", "str"),  # type: ignore[arg-type]
    ("extra list", lambda: TextBlock(text="x", extra=[1]), "extra", "list"),  # type: ignore[arg-type]
    ("metadata list", lambda: Message.user("x", metadata=[1]), "metadata", "list"),
    ("metadata key", lambda: Message.user("x", metadata={1: "a"}), "metadata", "int"),
    ("metadata empty list", lambda: Message.user("x", metadata=[]), "metadata", "list"),
    ("timestamp", lambda: Message.user("x", timestamp="now"), "timestamp", "str"),
    ("timestamp bool", lambda: Message.user("x", timestamp=True), "timestamp", "bool"),
    ("important", lambda: Message.user("x", important="yes"), "important", "str"),
]


@pytest.mark.parametrize(
    ("build", "field", "got"),
    [case[1:] for case in WRONG_TYPES],
    ids=[case[0] for case in WRONG_TYPES],
)
def test_a_field_of_the_wrong_type_is_refused_when_made(build: Build, field: str, got: str) -> None:
    """A field of the wrong type raises InvalidMessage naming the field and the value's type."""
    with pytest.raises(InvalidMessage) as caught:
        build()
    assert caught.value.details["field"] == field
    assert caught.value.details["got"] == got
    assert f"'{field}'" in str(caught.value) and got in str(caught.value)
    assert caught.value.rule in ("field_type", "tool_input_not_object")


def test_a_compression_tag_of_the_wrong_type_is_refused_when_made() -> None:
    """A tag that is neither a string nor None is refused by the constructor, as by with_tags."""
    with pytest.raises(InvalidMessage) as caught:
        Message.user("x", condense_parent=3)  # type: ignore[arg-type]
    assert caught.value.rule == "tag"


def test_values_of_the_right_types_are_kept() -> None:
    """Right types pass: an int timestamp, a mapping subclass, a list of result blocks."""
    message = Message.user("x", timestamp=5, metadata={"k": [1, {"n": None}]}, important=True)
    assert message.timestamp == 5 and message.metadata == {"k": [1, {"n": None}]}
    result = ToolResultBlock(tool_use_id="t", content=[TextBlock(text="a")])  # type: ignore[arg-type]
    assert result.content == (TextBlock(text="a"),)
    assert result == ToolResultBlock(tool_use_id="t", content=(TextBlock(text="a"),))
    assert Message(role="user", content=iter([TextBlock(text="y")])).text == "y"


SURROGATES: list[tuple[str, Build, str, int]] = [
    ("text", lambda: Message.user("ab\ud800", id="m1"), "content[0].text", 2),
    (
        "text after non-ascii",
        lambda: Message.user("é\udfff", id="m1"),
        "content[0].text",
        1,
    ),
    (
        "tool name",
        lambda: Message(
            role=Role.ASSISTANT,
            content=(ToolUseBlock(id="t1", name="b\ud800", input={}),),
            id="m1",
        ),
        "content[0].name",
        1,
    ),
    (
        "tool input nested",
        lambda: Message(
            role=Role.ASSISTANT,
            content=(
                TextBlock(text="go"),
                ToolUseBlock(id="t1", name="bash", input={"a": [1, {"b": "xy\ud800"}]}),
            ),
            id="m1",
        ),
        "content[1].input['a'][1]['b']",
        2,
    ),
    (
        "tool input key",
        lambda: Message(
            role=Role.ASSISTANT,
            content=(ToolUseBlock(id="t1", name="bash", input={"k\ud800": 1}),),
            id="m1",
        ),
        "content[0].input key 'k\\ud800'",
        1,
    ),
    (
        "tool result id",
        lambda: Message(role=Role.USER, content=(ToolResultBlock(tool_use_id="t\ud800"),), id="m1"),
        "content[0].tool_use_id",
        1,
    ),
    (
        "tool result text",
        lambda: Message(
            role=Role.USER,
            content=(ToolResultBlock(tool_use_id="t1", content="out\ud800"),),
            id="m1",
        ),
        "content[0].content",
        3,
    ),
    (
        "tool result block",
        lambda: Message(
            role=Role.USER,
            content=(
                ToolResultBlock(
                    tool_use_id="t1", content=(TextBlock(text="ok"), TextBlock(text="\ud800"))
                ),
            ),
            id="m1",
        ),
        "content[0].content[1].text",
        0,
    ),
    (
        "thinking",
        lambda: Message(
            role=Role.ASSISTANT, content=(ThinkingBlock(thinking="\ud800", signature="s"),), id="m1"
        ),
        "content[0].thinking",
        0,
    ),
    (
        "signature",
        lambda: Message(
            role=Role.ASSISTANT,
            content=(ThinkingBlock(thinking="t", signature="s\ud800"),),
            id="m1",
        ),
        "content[0].signature",
        1,
    ),
    (
        "redacted",
        lambda: Message(
            role=Role.ASSISTANT, content=(RedactedThinkingBlock(data="\udc00"),), id="m1"
        ),
        "content[0].data",
        0,
    ),
    (
        "image source",
        lambda: Message(role=Role.USER, content=(ImageBlock(source={"url": "u\ud800"}),), id="m1"),
        "content[0].source['url']",
        1,
    ),
    (
        "extra",
        lambda: Message(
            role=Role.USER, content=(TextBlock(text="x", extra={"k": "\ud800"}),), id="m1"
        ),
        "content[0].extra['k']",
        0,
    ),
    (
        "metadata",
        lambda: Message.user("x", id="m1", metadata={"note": ["ok", "no\ud800"]}),
        "metadata['note'][1]",
        2,
    ),
    ("tag", lambda: Message.user("x", id="m1", condense_parent="s\ud800"), "condense_parent", 1),
]


@pytest.mark.parametrize(
    ("build", "where", "offset"),
    [case[1:] for case in SURROGATES],
    ids=[case[0] for case in SURROGATES],
)
def test_a_lone_surrogate_is_refused_when_the_message_is_made(
    build: Build, where: str, offset: int
) -> None:
    """A lone surrogate anywhere in a message is refused, naming message, field and offset."""
    with pytest.raises(InvalidMessage) as caught:
        build()
    assert caught.value.rule == "lone_surrogate"
    assert (caught.value.details["where"], caught.value.details["offset"]) == (where, offset)
    assert caught.value.details["message_id"] == "m1"
    assert "'m1'" in str(caught.value) and f"offset {offset}" in str(caught.value)


def test_a_lone_surrogate_in_the_id_is_refused() -> None:
    """A message id holding a lone surrogate is refused, named as the id."""
    with pytest.raises(InvalidMessage) as caught:
        Message.user("x", id="m\ud800")
    assert (caught.value.rule, caught.value.details["where"]) == ("lone_surrogate", "id")


def test_with_content_and_with_tags_refuse_a_lone_surrogate() -> None:
    """The copies compression makes check their new text as the constructor does."""
    message = Message(
        role=Role.USER, content=(ToolResultBlock(tool_use_id="t1", content="x"),), id="m1"
    )
    with pytest.raises(InvalidMessage) as caught:
        message.with_content((ToolResultBlock(tool_use_id="t1", content="\ud800"),))
    assert caught.value.details["where"] == "content[0].content"
    with pytest.raises(InvalidMessage) as caught:
        message.with_content(message.content, metadata={"why": "\ud800"})
    assert caught.value.details["where"] == "metadata['why']"
    with pytest.raises(InvalidMessage) as caught:
        message.with_tags(condense_parent=None, truncation_parent="t\udfff")
    assert caught.value.details["where"] == "truncation_parent"


def test_valid_unicode_is_kept() -> None:
    """Non-ascii text that is valid Unicode passes everywhere a surrogate is refused."""
    text = "héllo wörld 😀 漢字"
    message = Message(
        role=Role.ASSISTANT,
        content=(ToolUseBlock(id="t1", name="naïve", input={"ключ": [text, {"x": text}]}),),
        metadata={text: text},
    )
    assert message.tool_uses[0].input["ключ"][0] == text


def test_an_escaped_lone_surrogate_in_a_transcript_is_refused_with_its_place() -> None:
    """JSON may escape a lone surrogate: reading it gives a typed error naming the line."""
    line = json.loads('{"id": "t", "messages": [{"role": "user", "content": "hi \\ud800"}]}')
    with pytest.raises(InvalidMessage, match=r"f\.jsonl:3") as caught:
        load_transcript(line, where="f.jsonl:3")
    assert caught.value.rule == "lone_surrogate"


def _deep(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value]
    return value


def test_nesting_is_walked_to_a_bound() -> None:
    """Nested input deeper than the bound, or holding itself, is refused (no RecursionError)."""
    assert Message.user("x", metadata={"deep": _deep(MAX_NESTING - 2)})
    with pytest.raises(InvalidMessage) as caught:
        Message.user("x", id="m1", metadata={"deep": _deep(MAX_NESTING + 5)})
    assert caught.value.rule == "too_deep"
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    with pytest.raises(InvalidMessage) as caught:
        Message(role=Role.ASSISTANT, content=(ToolUseBlock(id="t1", name="n", input=cycle),))
    assert caught.value.rule == "too_deep"
