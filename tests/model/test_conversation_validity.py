"""The Conversation's incremental validity: it always agrees with a full check of the view."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxflow.errors import InvalidConversation, InvalidMessage
from ctxflow.model import (
    Conversation,
    Message,
    Role,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    check,
)

OPS = (
    "user",
    "assistant",
    "call",
    "result",
    "empty",
    "hide",
    "summary",
    "unhide",
    "overlay",
    "blank_overlay",
    "lift",
    "apply_valid",
    "hide_summary",
    "unhide_summary",
)


def _base() -> Conversation:
    return Conversation(
        [
            Message.system("You help.", id="s"),
            Message.user("Do the task.", id="u0"),
            Message(role=Role.ASSISTANT, content=(ToolUseBlock(id="c0", name="bash", input={}),)),
            Message(role=Role.USER, content=(ToolResultBlock(tool_use_id="c0", content="ok"),)),
            Message.assistant("Done.", id="a0"),
        ]
    )


def _snapshot(conversation: Conversation) -> tuple[object, ...]:
    return (
        [(m.id, m.content) for m in conversation.effective()],
        [(m.id, m.condense_parent, m.truncation_parent) for m in conversation],
        conversation.overlays,
        conversation.effective_tokens,
        conversation.effective_counts(),
    )


def _open_call(conversation: Conversation) -> str | None:
    for pair in conversation.pairs():
        if pair.result_message is None:
            return pair.tool_use_id
    return None


def _apply(conversation: Conversation, op: str, a: int, b: int, n: int) -> None:
    log = list(conversation)
    first, last = sorted((a % len(log), b % len(log)))
    span = [m.id for m in log[first : last + 1] if m.role is not Role.SYSTEM]
    target = log[a % len(log)]
    if op == "user":
        conversation.append(Message.user(f"note {n}"))
    elif op == "assistant":
        conversation.append(Message.assistant(f"reply {n}"))
    elif op == "call":
        use = ToolUseBlock(id=f"t{n}", name="bash", input={"n": n})
        conversation.append(Message(role=Role.ASSISTANT, content=(use,)))
    elif op == "result":
        open_call = _open_call(conversation)
        if open_call is not None:
            block = ToolResultBlock(tool_use_id=open_call, content=f"out {n}")
            conversation.append(Message(role=Role.USER, content=(block,)))
    elif op == "empty":
        conversation.append(Message(role=Role.USER, content=(TextBlock(text=""),)))
    elif op == "hide" and span:
        conversation.hide(span, truncation_parent=f"trunc{n}")
    elif op == "summary" and span:
        conversation.add_summary(Message.user(f"summary {n}"), span)
    elif op == "unhide" and span:
        conversation.unhide(span)
    elif op in ("overlay", "blank_overlay"):
        text = "" if op == "blank_overlay" else f"shown {n}"
        blocks = [
            ToolResultBlock(tool_use_id=block.tool_use_id, content=text or "x")
            if isinstance(block, ToolResultBlock)
            else block
            for block in target.content
            if not isinstance(block, TextBlock)
        ]
        if not target.tool_results:
            blocks.append(TextBlock(text=text))
        conversation.set_overlay(target.id, target.with_content(blocks))
    elif op == "lift":
        conversation.remove_overlay(target.id)
    elif op in ("hide_summary", "unhide_summary"):
        summaries = conversation.summaries()
        if summaries:
            chosen = summaries[a % len(summaries)].id
            if op == "hide_summary":
                conversation.hide([chosen], truncation_parent=f"trunc{n}")
            else:
                conversation.unhide([chosen])
    elif op == "apply_valid" and span:
        before = _snapshot(conversation)
        cut = b % (len(span) + 1)
        summaries = ((Message.user(f"gist {n}", id=f"g{n}"), span[:cut]),) if cut else ()
        try:
            conversation.apply(
                hidden=dict.fromkeys(span[cut:], f"trunc{n}"),
                summaries=summaries,
                keep_valid=True,
            )
        except InvalidConversation:
            assert _snapshot(conversation) == before
            assert f"g{n}" not in conversation


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(OPS), st.integers(0, 40), st.integers(0, 40), st.booleans()),
        max_size=25,
    ),
    every=st.booleans(),
)
def test_incremental_validity_always_matches_a_full_check(
    steps: list[tuple[str, int, int, bool]], every: bool
) -> None:
    """After any appends, hides, summaries, overlays and undos, check() equals a full check.

    Checking after every step keeps what is known current; checking now and
    then lets several changes pile up on an older check.
    """
    conversation = _base()
    for n, (op, a, b, ask) in enumerate(steps):
        # A refused change (pinned, unknown id, orphan) changes nothing.
        with contextlib.suppress(InvalidMessage):
            _apply(conversation, op, a, b, n)
        if every or ask or n == len(steps) - 1:
            view = conversation.effective()
            for api in ("anthropic", "openai"):
                assert conversation.check(api=api) == check(view, api=api)  # type: ignore[arg-type]
                assert conversation.valid_for(api) == check(view, api=api).ok  # type: ignore[arg-type]
        assert conversation.effective_counts() == [
            conversation.tokens(m.id) for m in conversation.effective()
        ]
        assert conversation.effective_tokens == sum(conversation.effective_counts())


def test_a_compression_that_would_break_a_pair_is_refused_unchanged() -> None:
    """apply(keep_valid=True) refuses hiding a call without its result and changes nothing."""
    conversation = _base()
    assert conversation.valid_for("anthropic")
    before = _snapshot(conversation)
    call_id = conversation.effective()[2].id
    with pytest.raises(InvalidConversation) as caught:
        conversation.apply(
            hidden={call_id: "t"},
            summaries=((Message.user("gist", id="g"), ["u0"]),),
            keep_valid=True,
        )
    assert caught.value.rule == "invalid_result"
    assert _snapshot(conversation) == before
    assert "g" not in conversation  # the summary never entered the log
    assert conversation.valid_for("anthropic")


def test_apply_checks_everything_before_changing_anything() -> None:
    """A pinned message among the hidden ones refuses the whole call, overlays included."""
    conversation = Conversation(
        [Message.user("task", id="u0", important=True), Message.assistant("ok", id="a0")]
    )
    before = _snapshot(conversation)
    with pytest.raises(InvalidMessage) as caught:
        conversation.apply(
            overlays={"a0": Message.assistant("short", id="a0")},
            hidden={"u0": "t"},
        )
    assert caught.value.rule == "pinned"
    assert _snapshot(conversation) == before


def test_an_invalid_view_reports_every_violation() -> None:
    """When the view is not valid, check() gives the full report with indices."""
    conversation = _base()
    conversation.append(Message.assistant("again", id="a1"))
    report = conversation.check()
    assert not report.ok
    assert [(v.index, v.rule) for v in report.violations] == [(5, "role_alternation")]


def test_showing_a_message_again_checks_the_pair_after_it() -> None:
    """Unhiding a call alone leaves it unanswered before the next shown message: invalid."""
    conversation = _base()
    conversation.extend([Message.user("more", id="u1"), Message.assistant("fine", id="a1")])
    log = [m.id for m in conversation]
    conversation.hide(log[2:6], truncation_parent="t")
    assert conversation.valid_for("anthropic")
    conversation.unhide([log[2]])
    assert not conversation.valid_for("anthropic")
    rules = {v.rule for v in conversation.check().violations}
    assert rules == {"role_alternation", "unanswered_tool_use"}
