"""The pytest kit: recorder, assertion helper, event paths and the transition cover."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxflow.engine import Engine, EventNotAllowed, load_chart
from ctxflow.model import Message, ToolUseBlock
from ctxflow.testing import FixedCounter
from ctxflow.testing._engine import (
    TransitionRecorder,
    assert_transition,
    event_paths,
    expected_phases,
    transition_cover,
)

AGENT = load_chart("agent_loop")
REVIEW = load_chart("review_loop")


def test_assert_transition_reports_every_mismatch() -> None:
    """A failed expectation names what was expected and what happened."""
    engine = Engine(counter=FixedCounter())
    engine.send("start", task="t")
    with pytest.raises(AssertionError) as caught:
        assert_transition(engine, "plan_ready", from_="idle", to="execution", checkpoint=False)
    text = str(caught.value)
    assert "the last event was 'start'" in text
    assert "to: expected 'execution', got 'planning'" in text
    assert "checkpoint: expected none" in text


def test_assert_transition_checks_budget_and_pairs() -> None:
    """within_budget and pairs_intact look at the effective conversation."""
    engine = Engine(counter=FixedCounter())
    engine.send("start", task="t")
    engine.add_message(Message.user("hi"))
    engine.add_message(
        Message(role="assistant", content=(ToolUseBlock(id="t1", name="x", input={}),))
    )
    engine.send("plan_ready")
    assert_transition(engine, "plan_ready", within_budget=True, pairs_intact=True)
    with pytest.raises(AssertionError, match="within_budget"):
        assert_transition(engine, "plan_ready", within_budget=False)


def test_assert_transition_needs_an_event() -> None:
    """With no event applied yet the helper says so."""
    with pytest.raises(AssertionError, match="no event"):
        assert_transition(Engine(counter=FixedCounter()), "start")


def test_event_paths_have_the_asked_depth_or_end_final() -> None:
    """Paths have exactly `depth` events unless they reach a final state."""
    paths = event_paths(AGENT, depth=4)
    assert len(paths) == len(set(paths))
    for path in paths:
        phases = expected_phases(AGENT, path)
        assert len(path) == 4 or phases[-1] in AGENT.finals
    with pytest.raises(ValueError, match="depth"):
        event_paths(AGENT, depth=0)


@pytest.mark.parametrize("chart", [AGENT, REVIEW], ids=lambda c: c.name)
def test_transition_cover_fires_every_transition(chart: Any) -> None:
    """The cover's paths together fire every (source, event) pair of the chart."""
    fired: set[tuple[str, str]] = set()
    for path in transition_cover(chart):
        engine = Engine(chart, counter=FixedCounter())
        for event in path:
            source = engine.phase
            engine.send(event)
            spec = next(s for s in chart.transitions_from(source) if s.event == event)
            fired.add((spec.source, spec.event))
    assert fired == {(t.source, t.event) for t in chart.transitions}


def test_expected_phases_rejects_impossible_paths() -> None:
    """A path with an event impossible in its phase is a ValueError."""
    with pytest.raises(ValueError, match="not possible"):
        expected_phases(AGENT, ["plan_ready"])


def test_recorder_collects_steps_checkpoints_and_path() -> None:
    """The recorder keeps records, checkpoints and the path of events."""
    recorder = TransitionRecorder()
    engine = Engine(counter=FixedCounter(), listeners=[recorder])
    for event in ("start", "plan_ready", "step"):
        engine.send(event)
    assert recorder.path == [
        ("start", "idle", "planning"),
        ("plan_ready", "planning", "execution"),
        ("step", "execution", "execution"),
    ]
    assert recorder.records == engine.records
    assert [c[2] for c in recorder.checkpoints] == ["planning", "execution"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(AGENT.events), max_size=12))
def test_any_event_sequence_follows_the_chart(events: list[str]) -> None:
    """Allowed events land where the chart says; refused ones change nothing; restore is exact."""
    engine = Engine(AGENT, counter=FixedCounter())
    applied: list[str] = []
    for event in events:
        before = (engine.configuration, engine.history, engine.state, len(engine.records))
        try:
            engine.send(event)
        except EventNotAllowed:
            assert (engine.configuration, engine.history, engine.state, len(engine.records)) == (
                before
            )
            continue
        applied.append(event)
        assert engine.phase == expected_phases(AGENT, applied)[-1]
    checkpoint = engine.checkpoint()
    twin = Engine.from_checkpoint(checkpoint, chart=AGENT, checkpointer=engine.checkpointer)
    assert (twin.configuration, twin.history, twin.state) == (
        engine.configuration,
        engine.history,
        engine.state,
    )
