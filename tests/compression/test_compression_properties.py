"""Invariants of the ladder over random valid conversations."""

from __future__ import annotations

import warnings
from collections.abc import Callable

from _convgen import conversations
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctxflow.compression import CLEARED, OVERLAY_KIND, TRIMMED, Ladder, recall, undo
from ctxflow.errors import BudgetExceeded, CtxflowWarning
from ctxflow.layers import LayeredState
from ctxflow.model import Conversation, Message, Role, TextBlock, ToolResultBlock, check


def _snapshot(conversation: Conversation) -> tuple[object, ...]:
    return (
        [m.id for m in conversation.effective()],
        [(m.id, m.condense_parent, m.truncation_parent) for m in conversation],
        conversation.overlays,
        len(conversation),
        conversation.effective_tokens,
    )


def _fixed(conversation: Conversation) -> int:
    """Tokens of the system prompt and the first user message (the uncompressible part)."""
    view = conversation.effective()
    first = 1 if view and view[0].role is Role.SYSTEM else 0
    return sum(conversation.tokens(m.id) for m in view[: first + 1])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=conversations(), fraction=st.floats(0.05, 0.9), runs=st.integers(1, 3))
def test_any_valid_conversation_compresses_validly_or_raises_unchanged(
    messages: list[Message], fraction: float, runs: int, measure: Callable[[Message], int]
) -> None:
    """Each run leaves a view valid for both APIs within the hard limit, or raises unchanged."""
    conversation = Conversation(messages, measure=measure)
    originals = {m.id: m for m in messages}
    ladder = Ladder()
    state = LayeredState()
    fixed = _fixed(conversation)
    compressible = max(1, conversation.effective_tokens - fixed)
    budget = max(1, int(fraction * compressible / 0.5))
    for turn in range(runs):
        before = _snapshot(conversation)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CtxflowWarning)
            try:
                result = ladder.run(conversation, state, budget=budget, fixed=fixed, turn=turn)
            except BudgetExceeded:
                assert _snapshot(conversation) == before
                assert not caught
                break
        state = result.state
        report = result.report
        for api in ("anthropic", "openai"):
            outcome = check(conversation.effective(), api=api)  # type: ignore[arg-type]
            assert outcome.ok, outcome.violations
        assert conversation.effective_tokens <= report.hard_limit
        assert report.tokens_after == conversation.effective_tokens
        if not report.reached_target:
            assert report.warnings
        assert len(caught) == (not report.reached_target)  # one CtxflowWarning when short
        for message in messages:
            if message.important:
                assert not conversation.original(message.id).hidden
        for message_id, original in originals.items():
            assert recall(conversation, message_id).content == original.content
        budget = max(1, budget * 2 // 3)


@settings(max_examples=40, deadline=None)
@given(messages=conversations(), fraction=st.floats(0.05, 0.6))
def test_undo_of_a_run_restores_the_effective_view(
    messages: list[Message], fraction: float, measure: Callable[[Message], int]
) -> None:
    """Undoing a run's report shows exactly the messages shown before it."""
    conversation = Conversation(messages, measure=measure)
    before = [(m.id, m.content) for m in conversation.effective()]
    fixed = _fixed(conversation)
    budget = max(1, int(fraction * max(1, conversation.effective_tokens - fixed) / 0.5))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CtxflowWarning)
        try:
            result = Ladder().run(conversation, LayeredState(), budget=budget, fixed=fixed)
        except BudgetExceeded:
            return
    assert len(caught) == (not result.report.reached_target)
    undo(conversation, result.report)
    assert [(m.id, m.content) for m in conversation.effective()] == before


def _latest_user_text(messages: list[Message]) -> str | None:
    for message in reversed(messages):
        if message.role is Role.USER and any(
            isinstance(b, TextBlock) and b.text for b in message.content
        ):
            return message.id
    return None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=conversations(text_high=3_000), fraction=st.floats(0.05, 0.9))
def test_compression_cuts_only_text_and_never_the_latest_user_text(
    messages: list[Message], fraction: float, measure: Callable[[Message], int]
) -> None:
    """Thinking, tool_use inputs and the latest user text show as written; any cut is marked."""
    conversation = Conversation(messages, measure=measure)
    originals = {m.id: m for m in messages}
    latest = _latest_user_text(messages)
    fixed = _fixed(conversation)
    budget = max(1, int(fraction * max(1, conversation.effective_tokens - fixed) / 0.5))
    refusal: BudgetExceeded | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CtxflowWarning)
        try:
            Ladder().run(conversation, LayeredState(), budget=budget, fixed=fixed)
        except BudgetExceeded as error:
            refusal = error
    if refusal is not None:
        assert refusal.rule == "hard_limit"
        assert f"hard limit of {refusal.details['hard_limit']:,} tokens" in str(refusal)
        return
    for shown in conversation.effective():
        original = originals.get(shown.id)
        if original is None:
            continue  # a summary this run wrote
        kept = [b for b in shown.content if not isinstance(b, TextBlock | ToolResultBlock)]
        assert kept == [
            b for b in original.content if not isinstance(b, TextBlock | ToolResultBlock)
        ]
        if shown.id == latest:
            texts = [b for b in shown.content if isinstance(b, TextBlock)]
            assert texts == [b for b in original.content if isinstance(b, TextBlock)]
        for block, before in zip(shown.content, original.content, strict=True):
            if block != before:
                cut = block.text if isinstance(block, TextBlock | ToolResultBlock) else ""
                assert "by ctxflow" in cut
                assert shown.metadata[OVERLAY_KIND] in (TRIMMED, CLEARED)
        assert recall(conversation, shown.id) == original
