"""The summarizers: the offline extractive default, its bounds, and fact extraction."""

from __future__ import annotations

import pytest

from ctxflow.compression import ExtractiveSummarizer, extract_facts, render
from ctxflow.compression._summarizers import checked_summary
from ctxflow.errors import CompressionError
from ctxflow.model import Message, Role, TextBlock, ToolResultBlock, ToolUseBlock
from ctxflow.protocols import Summarizer


def _span() -> list[Message]:
    return [
        Message.user("Please fix the crash in src/app/models.py when saving users.", id="u0"),
        Message(
            role=Role.ASSISTANT,
            id="a0",
            content=(
                TextBlock(text="I will read the file first."),
                ToolUseBlock(id="t0", name="bash", input={"command": "cat src/app/models.py"}),
            ),
        ),
        Message(
            role=Role.USER,
            id="r0",
            content=(
                ToolResultBlock(
                    tool_use_id="t0",
                    content="Traceback (most recent call last):\nValueError: bad user id",
                    is_error=True,
                ),
                TextBlock(text="Decision: keep the public API stable.\nShould we add a migration?"),
            ),
        ),
        Message.assistant(
            "Understood. Remember: the customer's reservation code is QX7P2L", id="a1"
        ),
    ]


def test_extractive_summary_keeps_request_decisions_files_errors_tools_and_questions() -> None:
    """Every section the ladder relies on is present for a typical span."""
    summary = ExtractiveSummarizer().summarize(_span(), max_tokens=400)
    assert isinstance(ExtractiveSummarizer(), Summarizer)
    assert "Request:" in summary
    assert "fix the crash" in summary
    assert "Decision: keep the public API stable." in summary
    assert "QX7P2L" in summary
    assert "src/app/models.py" in summary
    assert "ValueError: bad user id" in summary
    assert "bash x1 (1 failed)" in summary
    assert "Should we add a migration?" in summary


def test_extractive_summary_is_bounded_and_deterministic() -> None:
    """A small max_tokens gives a short summary, the same every time."""
    span = _span() * 1
    first = ExtractiveSummarizer().summarize(span, max_tokens=30)
    assert len(first) <= 30 * 3
    assert first == ExtractiveSummarizer().summarize(span, max_tokens=30)


def test_extract_facts_keys_by_label_and_sources_the_message() -> None:
    """Decision and remember lines become facts sourced to their message, tool output unread."""
    facts = extract_facts(_span())
    assert [(f.key.split(":")[0], f.source) for f in facts] == [
        ("decision", "r0"),
        ("remember", "a1"),
    ]
    assert facts[1].value == "Remember: the customer's reservation code is QX7P2L"


def test_render_is_bounded_and_keeps_both_ends() -> None:
    """A long transcript is cut in the middle, keeping the request and the latest message."""
    long = [Message.user("first request"), *[Message.assistant("x" * 1_000) for _ in range(50)]]
    long.append(Message.user("the latest question"))
    text = render(long, max_chars=2_000)
    assert len(text) < 2_200
    assert "first request" in text
    assert "the latest question" in text
    assert "omitted" in text


@pytest.mark.parametrize("bad", ["", "   \n", None, 3, ["text"]])
def test_checked_summary_refuses_empty_or_non_text(bad: object) -> None:
    """Empty or non-string output is a CompressionError at the summarizer boundary."""
    with pytest.raises(CompressionError) as caught:
        checked_summary(bad)
    assert caught.value.rule == "summarizer_output"


def test_extract_details_keeps_stated_details_verbatim_and_skips_chatter() -> None:
    """User sentences with codes, numbers, paths or "my X is" become facts; chatter does not."""
    from ctxflow.compression import extract_details

    said = [
        "Hi. my user id is mia_li_3668",
        "Please use version 2.4.1 of the client.",
        "Yes, use the blue-green strategy",
        "Logs go to /var/log/amber/app.log",
        "hello, how are you today",
        "The code is QX7P2L",
        "The code is QX7P2L",
    ]
    messages = [Message.user(text, id=f"u{i}") for i, text in enumerate(said)]
    messages.append(Message.assistant("the port is 9999 on my side", id="a0"))
    values = [f.value for f in extract_details(messages)]
    assert values == [
        "my user id is mia_li_3668",
        "Please use version 2.4.1 of the client.",
        "Yes, use the blue-green strategy",
        "Logs go to /var/log/amber/app.log",
        "The code is QX7P2L",
    ]
    assert len(extract_details(messages, limit=2)) == 2


def test_extractive_summary_keeps_unlabelled_user_details() -> None:
    """A detail a user states without a label survives in the bounded summary."""
    span = [*_span(), Message.user("my employee number is 551234", id="u9")]
    summary = ExtractiveSummarizer().summarize(span, max_tokens=400)
    assert "my employee number is 551234" in summary


def test_long_lines_of_keywords_are_read_in_linear_time() -> None:
    """One long line holding many keywords once cost a scan of the line per keyword.

    Nothing is timed: at this size a quadratic reading would hold the suite
    up for minutes. The facts found are the same as on a short line.
    """
    lines = [
        "decided " * 25_000,
        "go with " * 25_000,
        " " * 100_000 + "we decided to ship. " * 5_000,
        "Note: keep it. " * 12_000,
    ]
    for line in lines:
        message = Message.user(line, id="u1")
        facts = extract_facts([message])
        assert all(len(f.value) <= 400 for f in facts)
        ExtractiveSummarizer().summarize(
            [Message.user("Fix it.", id="u0"), Message.assistant("ok", id="a0"), message],
            max_tokens=300,
        )
    assert [f.value for f in extract_facts([Message.user(lines[2], id="u2")])] == [
        ("we decided to ship. " * 20)[:400]
    ]
