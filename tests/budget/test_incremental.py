"""Cached builds: after appends, summaries and overlays they equal a build from scratch."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctxflow.budget import build_window
from ctxflow.errors import BudgetExceeded
from ctxflow.model import Conversation, Message, Role, check

from .conftest import conversations, state_for
from .test_window import COUNTER, MEASURE, counted


def _build(conversation: Conversation, budget: int) -> object:
    try:
        return build_window(
            state_for(), conversation, phase="execution", counter=COUNTER, budget=budget
        )
    except BudgetExceeded as exc:
        return str(exc)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations(max_tasks=5), st.floats(0.02, 1.0), st.data())
def test_cached_build_equals_fresh_build(
    messages: list[Message], fraction: float, data: st.DataObject
) -> None:
    """Appending, then condensing any span, gives the same window as a fresh conversation."""
    budget = 300 + int(sum(MEASURE(m) for m in messages) * fraction)
    half = len(messages) // 2
    cached = Conversation(messages[:half], measure=MEASURE)
    _build(cached, budget)
    cached.extend(messages[half:])
    _build(cached, budget)
    start = data.draw(st.integers(0, len(messages) - 1))
    end = data.draw(st.integers(start, len(messages) - 1))
    covers = [m.id for m in messages[start : end + 1] if not m.important]
    role = data.draw(st.sampled_from([Role.USER, Role.ASSISTANT]))
    summary = Message(role=role, content="summary of earlier work", id="summary-1")
    fresh = Conversation(messages, measure=MEASURE)
    if covers:
        cached.add_summary(summary, covers)
        fresh.add_summary(summary, covers)
    window = _build(cached, budget)
    assert window == _build(fresh, budget)
    if not isinstance(window, str):
        for api in ("anthropic", "openai"):
            assert check(window.messages, api=api, tools=window.tools).ok  # type: ignore[attr-defined]
        assert counted(window) <= budget
