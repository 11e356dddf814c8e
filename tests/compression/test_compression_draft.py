"""The draft: planned changes, and commit as one batched call per kind of change."""

from __future__ import annotations

from collections.abc import Callable

from _builders import chat

from ctxflow.compression import Draft
from ctxflow.model import Message


def test_hiding_a_summary_planned_in_the_same_run_never_writes_it(
    measure: Callable[[Message], int],
) -> None:
    """A planned summary hidden again leaves no orphan: its span is hidden under the tag."""
    conversation = chat(6, measure=measure)
    draft = Draft.of(conversation)
    summary = Message.user("[Summary of 4 earlier messages]\nshort", id="sum1")
    condensed = draft.with_summary(1, 5, summary)
    assert [m.id for m in condensed.view][:2] == ["sys", "sum1"]
    reset = condensed.without([1, 2], "reset1")
    assert reset.summaries == ()
    assert set(reset.hidden) == {"u0", "b0", "u1", "b1", "u2"}
    assert set(reset.hidden.values()) == {"reset1"}
    reset.commit(conversation)
    assert not conversation.summaries()
    assert [m.id for m in conversation.effective()] == [m.id for m in reset.view]
    assert conversation.effective_tokens == reset.total


def test_commit_reproduces_the_planned_view_and_tokens(measure: Callable[[Message], int]) -> None:
    """After commit the conversation shows exactly the draft's view and token total."""
    conversation = chat(8, measure=measure)
    draft = Draft.of(conversation)
    summary = Message.user("[Summary of 3 earlier messages]\nabout bookings", id="sum2")
    planned = draft.with_summary(1, 4, summary).without([3, 4], "trunc1")
    planned.commit(conversation)
    assert [m.id for m in conversation.effective()] == [m.id for m in planned.view]
    assert conversation.effective_tokens == planned.total
    assert conversation.check(api="anthropic").ok
