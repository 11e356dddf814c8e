"""Tests for the validity checker (DESIGN.md invariant 1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxflow.errors import InvalidConversation
from ctxflow.model import (
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    Transcript,
    check,
    validate,
)


def call(*ids: str, text: str | None = "calling") -> Message:
    blocks: list[TextBlock | ToolUseBlock] = [TextBlock(text=text)] if text else []
    blocks += [ToolUseBlock(id=i, name="bash", input={"command": i}) for i in ids]
    return Message(role="assistant", content=tuple(blocks))


def results(*ids: str) -> Message:
    return Message(
        role="user", content=tuple(ToolResultBlock(tool_use_id=i, content="ok") for i in ids)
    )


def test_valid_conversation_passes_both_apis() -> None:
    """A clean tool loop is valid for Anthropic and OpenAI."""
    msgs = [Message.system("s"), Message.user("do"), call("a", "b"), results("a", "b")]
    for api in ("anthropic", "openai"):
        report = check(msgs, api=api)
        assert report.ok and report.pending == ()


def test_trailing_call_is_pending_not_violation() -> None:
    """A final unanswered tool_use is reported as pending."""
    report = check([Message.user("do"), call("a")])
    assert report.ok
    assert report.pending == ("a",)


def test_orphan_result() -> None:
    """A tool_result answering nothing is an orphan."""
    report = check([Message.user("do"), Message.assistant("ok"), results("zz")])
    assert report.rules() == {"orphan_tool_result"}
    assert report.violations[0].index == 2
    assert report.violations[0].ids == ("zz",)


def test_result_not_adjacent() -> None:
    """A result two messages after its call breaks adjacency and leaves the call unanswered."""
    msgs = [
        Message.user("do"),
        call("a"),
        Message.user("wait"),
        Message.assistant("k"),
        results("a"),
    ]
    rules = check(msgs).rules()
    assert "result_not_adjacent" in rules
    assert "unanswered_tool_use" in rules


def test_batch_split() -> None:
    """Answering only part of a parallel batch is a batch split."""
    report = check([Message.user("do"), call("a", "b"), results("a")])
    assert "batch_split" in report.rules()


def test_duplicate_ids() -> None:
    """Reused message ids and tool ids are reported."""
    m = Message.user("do")
    msgs = [m, call("a"), results("a"), call("a")]
    assert "duplicate_tool_use_id" in check(msgs).rules()
    assert "duplicate_message_id" in check([m, Message.assistant("x"), m]).rules()


def test_roles_and_order() -> None:
    """First message must be user, roles alternate, system only first."""
    assert "first_not_user" in check([Message.assistant("x")]).rules()
    assert "role_alternation" in check([Message.user("a"), Message.user("b")]).rules()
    assert "system_position" in check([Message.user("a"), Message.system("s")]).rules()


def test_empty_text_and_block_order() -> None:
    """Empty text, results after text, thinking after text are violations."""
    assert "empty_text" in check([Message.user("")]).rules()
    late_result = Message(
        role="user", content=(TextBlock(text="x"), ToolResultBlock(tool_use_id="a"))
    )
    assert "tool_result_order" in check([Message.user("d"), call("a"), late_result]).rules()
    late_thinking = Message(
        role="assistant", content=(TextBlock(text="x"), ThinkingBlock(thinking="t"))
    )
    assert "thinking_order" in check([Message.user("d"), late_thinking]).rules()


def test_tools_required_with_tool_blocks() -> None:
    """Tool blocks without tool definitions are flagged when tools are given."""
    msgs = [Message.user("do"), call("a"), results("a")]
    assert "tools_missing" in check(msgs, tools=[]).rules()
    assert check(msgs, tools=[{"name": "bash"}]).ok


def test_validate_raises_with_every_violation() -> None:
    """validate raises InvalidConversation listing all violations."""
    with pytest.raises(InvalidConversation, match="and 1 more") as info:
        validate([Message.assistant("x"), Message.assistant("y")])
    assert len(info.value.violations) == 2


def test_unknown_api_rejected() -> None:
    """Only anthropic and openai are known targets."""
    with pytest.raises(ValueError, match="'api' must be one of"):
        check([], api="gemini")  # type: ignore[arg-type]


@st.composite
def valid_dialogues(draw: st.DrawFn) -> list[Message]:
    msgs: list[Message] = [Message.user("task")]
    n = 0
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.booleans()):
            ids = [f"t{n + k}" for k in range(draw(st.integers(1, 3)))]
            n += len(ids)
            msgs += [call(*ids), results(*ids)]
        else:
            msgs += [Message.assistant("answer"), Message.user("more")]
    return msgs


@given(valid_dialogues(), st.data())
@settings(max_examples=60, deadline=None)
def test_checker_finds_any_removed_result(msgs: list[Message], data: st.DataObject) -> None:
    """Valid dialogues pass; removing any result message makes them invalid (unless last)."""
    assert check(msgs).ok and check(msgs, api="openai").ok
    result_positions = [i for i, m in enumerate(msgs) if m.tool_results]
    if result_positions:
        i = data.draw(st.sampled_from(result_positions))
        broken = msgs[:i] + msgs[i + 1 :]
        report = check(broken)
        assert not report.ok or (i == len(msgs) - 1 and report.pending)


@pytest.mark.corpus
def test_every_corpus_conversation_is_valid(corpus: list[Transcript]) -> None:
    """All 276 corpus conversations pass both APIs; only the 19 trailing calls are pending."""
    assert len(corpus) == 276
    pending = 0
    for transcript in corpus:
        for api in ("anthropic", "openai"):
            report = check(transcript.messages, api=api)
            assert report.ok, (transcript.id, report.violations[:3])
        pending += bool(check(transcript.messages).pending)
    assert pending == 19
