"""build_window never trusts counts taken with another measure than its own."""

from __future__ import annotations

from ctxflow.budget import build_window, window_measure
from ctxflow.layers import LayeredState
from ctxflow.model import Conversation, Message
from ctxflow.tokens import counter_for, get_profile

PROFILE = get_profile("claude-sonnet-4-5")
COUNTER = counter_for(PROFILE.encoding)
MEASURE = window_measure(COUNTER, overhead=PROFILE.per_message_overhead)


def dialogue(turns: int) -> list[Message]:
    out = []
    for i in range(turns):
        # Digits and punctuation: chars/4 underestimates these by far.
        out.append(Message.user(f"check {i}: " + " ".join(f"{j}.{j * 7}%" for j in range(60))))
        out.append(Message.assistant(f"done {i}: " + ",".join(str(j * 13) for j in range(60))))
    return out


def test_a_conversation_counted_with_chars_is_recounted_and_fits() -> None:
    """A Conversation made without a measure still gets a window within the budget."""
    messages = dialogue(40)
    conversation = Conversation(messages)  # counts chars/4: far too low here
    assert conversation.measure_key is None
    window = build_window(
        LayeredState(),
        conversation,
        phase="execution",
        counter=COUNTER,
        profile=PROFILE,
        budget=6_000,
    )
    exact = sum(MEASURE(m) for m in window.messages)
    assert window.tokens <= window.input_budget == 6_000
    assert exact <= window.tokens
    again = build_window(
        LayeredState(),
        Conversation(messages, measure=MEASURE),
        phase="execution",
        counter=COUNTER,
        profile=PROFILE,
        budget=6_000,
    )
    assert [m.id for m in window.messages] == [m.id for m in again.messages]
    assert window.tokens == again.tokens


def test_the_recounted_copy_follows_appends_and_leaves_the_conversation_alone() -> None:
    """Appending after a build is seen by the next build; the caller's counts are untouched."""
    conversation = Conversation(dialogue(5))
    before = [conversation.tokens(m.id) for m in conversation]
    first = build_window(
        LayeredState(), conversation, phase="execution", counter=COUNTER, profile=PROFILE
    )
    conversation.extend(dialogue(1)[:1])
    second = build_window(
        LayeredState(), conversation, phase="execution", counter=COUNTER, profile=PROFILE
    )
    assert len(second.messages) == len(first.messages) + 1
    assert [conversation.tokens(m.id) for m in conversation][:10] == before
