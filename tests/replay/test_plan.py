"""Tests for deriving phase events from a recorded conversation."""

from __future__ import annotations

import pytest

from ctxflow.engine import load_chart
from ctxflow.errors import ChartError
from ctxflow.model import Message, ToolResultBlock, ToolUseBlock, Transcript
from ctxflow.replay.plan import fit_plan, plan_replay


def call(i: int) -> Message:
    return Message(
        role="assistant", content=(ToolUseBlock(id=f"t{i}", name="bash", input={"c": i}),)
    )


def result(i: int) -> Message:
    return Message(role="user", content=(ToolResultBlock(tool_use_id=f"t{i}", content="ok"),))


def events(messages: list[Message], **kw: int) -> list[str]:
    return [s.event or s.kind for s in plan_replay(messages, **kw) if s.kind != "message"]


def test_planning_then_execution_with_steps() -> None:
    """Text turns plan; the first tool call moves to execution; later turns are steps."""
    msgs = [
        Message.system("s"),
        Message.user("task"),
        Message.assistant("plan"),
        Message.user("ok"),
    ]
    msgs += [call(1), result(1), call(2), result(2), Message.assistant("done")]
    assert events(msgs) == [
        "start",
        "window",
        "plan_ready",
        "window",
        "step",
        "window",
        "step",
        "window",
        "finish",
    ]


def test_reflection_every_k_steps() -> None:
    """Every K steps a turn is built in reflection, and the next one returns to execution."""
    msgs = [Message.user("task")]
    for i in range(6):
        msgs += [call(i), result(i)]
    got = [e for e in events(msgs, reflect_every=2) if e != "window"]
    assert got == ["start", "plan_ready", "step", "step", "reflect", "execute", "step", "finish"]


def test_no_tool_calls_still_finishes() -> None:
    """A conversation without tool calls passes through execution to finish."""
    got = events([Message.user("hi"), Message.assistant("hello")])
    assert got == ["start", "window", "plan_ready", "finish"]


def test_every_message_fed_once_in_order() -> None:
    """The plan feeds each non-system message exactly once, in order."""
    msgs = [Message.system("s"), Message.user("task"), call(1), result(1)]
    fed = [s.message for s in plan_replay(msgs) if s.kind == "message"]
    assert fed == msgs[1:]


def test_negative_reflect_every_rejected() -> None:
    """reflect_every below zero is refused."""
    with pytest.raises(ValueError, match="reflect_every"):
        list(plan_replay([], reflect_every=-1))


@pytest.mark.corpus
def test_every_corpus_conversation_plans_a_legal_path(corpus: list[Transcript]) -> None:
    """Every corpus conversation yields a path the default chart's event table allows."""
    allowed = {
        ("idle", "start"): "planning",
        ("planning", "plan_ready"): "execution",
        ("execution", "step"): "execution",
        ("execution", "reflect"): "reflection",
        ("reflection", "execute"): "execution",
        ("execution", "finish"): "done",
        ("reflection", "finish"): "done",
    }
    for transcript in corpus:
        phase = "idle"
        for step in plan_replay(transcript.messages, reflect_every=5):
            if step.kind == "event":
                assert step.event is not None
                phase = allowed[(phase, step.event)]
        assert phase == "done", transcript.id


def _fitted(chart: str, msgs: list[Message], **kw: int) -> list[str]:
    plan = fit_plan(plan_replay(msgs, **kw), load_chart(chart))
    return [s.event for s in plan if s.kind == "event" and s.event is not None]


def test_fit_keeps_the_default_charts_events() -> None:
    """On the default chart the fitted plan is the plan."""
    msgs = [Message.user("task")] + [m for i in range(4) for m in (call(i), result(i))]
    assert _fitted("agent_loop", msgs, reflect_every=2) == [
        e for e in events(msgs, reflect_every=2) if e != "window"
    ]


def test_fit_routes_finish_through_review() -> None:
    """review_loop has no 'finish': the fit takes its route to done (submit, approve)."""
    msgs = [Message.user("task"), call(1), result(1), Message.assistant("done")]
    assert _fitted("review_loop", msgs) == ["start", "plan_ready", "step", "submit", "approve"]


def test_fit_from_reflection_takes_the_shortest_route() -> None:
    """Finishing from reflection in review_loop goes back to execution, then through review."""
    msgs = [Message.user("task")] + [m for i in range(4) for m in (call(i), result(i))]
    got = _fitted("review_loop", msgs, reflect_every=2)
    assert got[-4:] == ["reflect", "execute", "submit", "approve"]


def test_fit_names_every_missing_event_at_once() -> None:
    """A chart lacking the replay's events is refused with each event and its phase named."""
    chart = load_chart(
        {
            "name": "bare",
            "states": {
                "idle": {"initial": True, "transitions": [{"event": "start", "target": "work"}]},
                "work": {"transitions": [{"event": "wrap_up", "target": "done"}]},
                "done": {"final": True},
            },
        }
    )
    msgs = [Message.user("task"), call(1), result(1), call(2), result(2)]
    with pytest.raises(ChartError, match="'plan_ready' in phase 'work', 'step' in phase 'work'"):
        fit_plan(plan_replay(msgs), chart)
    # 'finish' has a route (wrap_up), so it is not among the missing.
    with pytest.raises(ChartError) as caught:
        fit_plan(plan_replay(msgs), chart)
    assert caught.value.details["missing"] == ["plan_ready", "step"]
