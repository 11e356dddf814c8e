"""Tests for the Anthropic, OpenAI and transcript JSONL formats."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxflow.errors import FormatError, InvalidMessage
from ctxflow.model import (
    Message,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    Transcript,
    dump_transcript,
    from_openai,
    messages_from_anthropic,
    messages_to_anthropic,
    read_transcripts,
    to_openai,
    write_transcripts,
)

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def dialogues(draw: st.DrawFn) -> list[Message]:
    """Valid dialogues with text, thinking, tool batches, errors and pins."""
    msgs: list[Message] = []
    if draw(st.booleans()):
        msgs.append(Message.system(draw(text)))
    msgs.append(Message.user(draw(text), important=draw(st.booleans())))
    n = 0
    for _ in range(draw(st.integers(0, 5))):
        blocks: list[ThinkingBlock | RedactedThinkingBlock | TextBlock | ToolUseBlock] = []
        if draw(st.booleans()):
            blocks.append(ThinkingBlock(thinking=draw(text), signature=draw(text)))
        if draw(st.booleans()):
            blocks.append(RedactedThinkingBlock(data=draw(text)))
        for _ in range(draw(st.integers(0, 2))):
            blocks.append(TextBlock(text=draw(text)))
        ids = [f"t{n + k}" for k in range(draw(st.integers(0, 3)))]
        n += len(ids)
        inputs = st.dictionaries(text, json_values, max_size=3)
        blocks += [ToolUseBlock(id=i, name="tool", input=draw(inputs)) for i in ids]
        if not blocks:
            blocks.append(TextBlock(text="ok"))
        msgs.append(Message(role="assistant", content=tuple(blocks), timestamp=1.5))
        results = [
            ToolResultBlock(tool_use_id=i, content=draw(text), is_error=draw(st.booleans()))
            for i in ids
        ]
        tail = [TextBlock(text=draw(text))] if draw(st.booleans()) or not results else []
        msgs.append(Message(role="user", content=(*results, *tail), metadata={"k": draw(text)}))
    return msgs


@given(dialogues())
@settings(max_examples=60, deadline=None)
def test_openai_round_trip_with_side_mapping_is_exact(msgs: list[Message]) -> None:
    """ctxflow → OpenAI → ctxflow with the side mapping restores every field."""
    items, side = to_openai(msgs)
    json.dumps([items, side])  # both halves are plain JSON
    assert from_openai(items, side) == msgs


@given(dialogues())
@settings(max_examples=60, deadline=None)
def test_openai_without_side_keeps_structure(msgs: list[Message]) -> None:
    """Without the side mapping roles, calls and result texts survive."""
    back = from_openai(to_openai(msgs)[0])
    assert [m.role for m in back] == [m.role for m in msgs]
    assert [[u.id for u in m.tool_uses] for m in back] == [
        [u.id for u in m.tool_uses] for m in msgs
    ]
    assert [[r.text for r in m.tool_results] for m in back] == [
        [r.text for r in m.tool_results] for m in msgs
    ]


@given(dialogues())
@settings(max_examples=60, deadline=None)
def test_anthropic_round_trips(msgs: list[Message]) -> None:
    """ctxflow → Anthropic → ctxflow keeps content; Anthropic → ctxflow → Anthropic is exact."""
    rendered = messages_to_anthropic(msgs)
    back = messages_from_anthropic(rendered, ids=[m.id for m in msgs])
    assert [(m.role, m.content) for m in back] == [(m.role, m.content) for m in msgs]
    assert messages_to_anthropic(back) == rendered


def test_anthropic_string_content_and_extras_survive() -> None:
    """String content stays a string and unmodelled block fields are kept."""
    raw = [
        {"role": "user", "content": "hello"},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
        },
    ]
    assert messages_to_anthropic(messages_from_anthropic(raw)) == raw


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        ({"role": "tool", "content": "x"}, "unknown_role"),
        ({"role": "user", "content": [{"type": "video"}]}, "unknown_block_type"),
        (
            {"role": "assistant", "content": [{"type": "tool_use", "name": "x", "input": {}}]},
            "tool_use_id",
        ),
        (
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "a", "name": "x", "input": "ls"}],
            },
            "tool_input_not_object",
        ),
        ("not a message", "message_not_object"),
    ],
)
def test_bad_anthropic_input_names_the_message(raw: object, rule: str) -> None:
    """Each kind of bad message is a typed error naming its index."""
    with pytest.raises(InvalidMessage, match="message 1") as info:
        messages_from_anthropic([{"role": "user", "content": "ok"}, raw])
    assert info.value.rule == rule


def test_openai_bad_arguments_are_typed() -> None:
    """Malformed tool-call arguments name the call."""
    items = [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}
            ],
        },
    ]
    with pytest.raises(InvalidMessage, match=r"tool_calls\[0\]") as info:
        from_openai(items)
    assert info.value.rule == "tool_arguments_json"


def _line(**overrides: object) -> bytes:
    record = {"id": "c1", "messages": [{"role": "user", "content": "hi"}]}
    record.update(overrides)
    return (json.dumps(record) + "\n").encode()


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    """Invalid UTF-8, non-JSON, non-object and bad messages name file and line."""
    cases = {
        b"\xff\xfe\n": "utf8",
        b"{not json\n": "json",
        b"[1, 2]\n": "not_an_object",
        _line(messages="x"): "no_messages",
    }
    for raw, rule in cases.items():
        path = tmp_path / "t.jsonl"
        path.write_bytes(_line() + raw)
        with pytest.raises(FormatError, match=":2: ") as info:
            list(read_transcripts(path))
        assert info.value.rule == rule


def test_jsonl_orphan_result_is_rejected(tmp_path: Path) -> None:
    """A transcript whose tool_result answers nothing is refused with its line."""
    bad = _line(
        messages=[
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "x", "content": ""}],
            }
        ]
    )
    path = tmp_path / "t.jsonl"
    path.write_bytes(bad)
    with pytest.raises(InvalidMessage, match=":1: ") as info:
        list(read_transcripts(path))
    assert info.value.rule == "orphan_tool_result"


def test_jsonl_stream_and_id_filter() -> None:
    """Transcripts can be read from a binary stream and picked by id."""
    stream = io.BytesIO(_line() + _line(id="c2"))
    assert [t.id for t in read_transcripts(stream, ids=["c2"])] == ["c2"]


@pytest.mark.corpus
def test_corpus_round_trips_through_every_format(corpus: list[Transcript], tmp_path: Path) -> None:
    """All 276 corpus conversations survive JSONL, Anthropic and OpenAI round trips exactly."""
    path = tmp_path / "out.jsonl"
    write_transcripts(path, corpus)
    again = list(read_transcripts(path))
    assert again == corpus
    for transcript in corpus:
        items, side = to_openai(transcript.messages)
        assert tuple(from_openai(items, side)) == transcript.messages
        assert dump_transcript(transcript)["messages"] == messages_to_anthropic(transcript.messages)
